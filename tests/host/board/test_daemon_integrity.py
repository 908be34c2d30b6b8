"""Hostile and faulty board input (issue #13, findings 1, 2 and the board part of 9), through the real
daemon against the fake board on a pty: nothing implausible is stored, nothing good is lost, every
refusal is counted and logged once with its numbers, and the board is not left resending."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap.board.session import Session
from gridtap.store.rrd import STEP, rrdtool_exe
from gridtap.store.spool import Spool
from gridtap_fw import wire
from tests.support.broker import Collector, Mosquitto, wait_until
from tests.support.daemon import IMP, PULSE, Recorder, Rig, config_text, running_daemon
from tests.support.fakeboard import FakeBoard

DAY = 86400


def session(rig: Rig) -> Session:
    assert rig.daemon.session is not None
    return rig.daemon.session


def counter(board: FakeBoard, t: int, imp_milli: int, ms: int = 0) -> None:
    """A COUNTER of CT channel 0 with these registers, whatever the fake board's own are."""
    board.send(wire.COUNTER, (0, t, ms, imp_milli // 1000, imp_milli % 1000, 0, 0), True)


class ImportRecorder(Recorder):
    """Every (t, total) the outputs get for the import series of CT channel 0."""

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        if sensor == IMP:
            super().counter(sensor, role, t, total_milli)


def warnings(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and word in r.getMessage()]


def rrd_file_last(rig: Rig, sensor: str) -> int:
    rig.daemon.rrd.flush_all()
    out = subprocess.run([rrdtool_exe(), "last", str(rig.daemon.rrd.path(sensor))],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


# ------------------------------------------------------------------ finding 1: stamps from the future


def test_a_tuple_from_the_future_is_refused_and_storage_keeps_going(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """One CRC-valid COUNTER stamped in 2100 once set the RRD's last update and the newest-out mark
    to 2100, and every later point was discarded. It is refused (counted, warned with its numbers,
    ACKed), the board clock is set again, and the points after it are stored."""
    caplog.set_level(logging.WARNING)
    b = int(time.time()) // STEP * STEP  # the last tuple opens an RRD step: written at once
    rig.board.step(b - 5, power_w=[3600.0])
    rig.wait(lambda: rig.total(IMP) == 1000)
    sets_before = len(rig.board.got(wire.TIME_SET))
    counter(rig.board, 4_102_444_800, 2000)  # 2100-01-01, one more Wh
    assert rig.board.wait_acked(5)  # refused, and ACKed: resending cannot make it true
    for i in range(4):
        rig.board.step(b - 3 + i, power_w=[3600.0])
    rig.wait(lambda: rig.total(IMP) == 5000)
    rig.wait_rrd(IMP, b)
    assert rig.daemon.rrd.last[IMP] == b and rrd_file_last(rig, IMP) == b
    assert session(rig).newest_out[IMP] == b * 1000
    assert session(rig).stats.rejected_future == 1
    rig.wait(lambda: len(rig.board.got(wire.TIME_SET)) > sets_before)
    [w] = warnings(caplog, "ahead of the host clock")
    assert "4102444800" in w and "COUNTER" in w


class SteppedClock:
    """The daemon's Unix clock: the host's plus an offset the test moves (NTP stepping it)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def test_the_host_clock_stepping_back_rewinds_every_store(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A host clock a day ahead stamps a day of marks in the future (board clock, RRD last update,
    counter store, newest-out marks); NTP then steps it back. The daemon refuses what the board
    still stamps ahead, sets the board clock, and rewinds every store, so the next readings are
    stored at once instead of being discarded for a day."""
    caplog.set_level(logging.WARNING)
    clock = SteppedClock(DAY)
    board = FakeBoard(short_tmp)
    board.appear()
    with running_daemon(board, config_text(board.path, short_tmp / "state"), short_tmp, clock) as rig:
        rig.wait(lambda: board.clock_set)
        ahead = int(board.board_time()) // STEP * STEP
        assert ahead > time.time() + DAY - 60
        for i in range(5):
            board.step(ahead - 4 + i, power_w=[3600.0])
        rig.wait_rrd(IMP, ahead)
        assert rig.total(IMP) == 5000
        clock.offset = 0.0  # NTP corrects the host clock: a day back
        board.step(int(board.board_time()), power_w=[3600.0])  # the board still runs a day ahead
        rig.wait(lambda: session(rig).stats.rejected_future == 1)
        rig.wait(lambda: abs(board.clock_offset) < 5)  # set again from the corrected host clock
        nb = int(time.time()) // STEP * STEP + STEP  # at most 10 s ahead: within the tolerance
        for i in range(5):
            board.step(nb - 4 + i, power_w=[3600.0])
        rig.wait(lambda: rig.total(IMP) == 11_000)  # the refused tuple's Wh came with the next one
        rig.wait(lambda: rig.daemon.rrd.last.get(IMP) == nb)  # not still the day-ahead mark
        rig.wait_rrd(IMP, nb)
        assert rrd_file_last(rig, IMP) == nb
        assert session(rig).newest_out[IMP] == nb * 1000
        assert rig.daemon.store is not None and rig.daemon.store.state[IMP].t == nb
        assert session(rig).stats.clock_steps_back == 1
        assert board.wait_acked(5)
    assert warnings(caplog, "the clock stepped back")


def test_an_unset_host_clock_neither_refuses_nor_rewinds(short_tmp: Path) -> None:
    """A router before NTP reads 1970: it cannot judge the board's stamps, and must not take a
    stored reading of today for a clock step and rewind every store to 1970."""
    clock = SteppedClock(1000.0 - time.time())
    board = FakeBoard(short_tmp)
    board.appear()
    with running_daemon(board, config_text(board.path, short_tmp / "state"), short_tmp, clock) as rig:
        b = int(time.time()) // STEP * STEP
        for i in range(5):
            board.step(b - 4 + i, power_w=[3600.0])
        rig.wait(lambda: rig.total(IMP) == 5000)
        rig.wait(lambda: rig.daemon.rrd.last.get(IMP) == b)
        assert session(rig).stats.rejected_future == 0 and session(rig).stats.clock_steps_back == 0
        assert rrd_file_last(rig, IMP) == b


def test_spool_rewind_drops_future_points_and_lowers_its_marks(tmp_path: Path) -> None:
    """The spool's part of a clock step: acked_ts from a clock that ran ahead no longer swallows the
    points stamped after the step, and points stamped by that clock are dropped (later cumulative
    points carry their energy)."""
    now = 1_790_000_000
    sp = Spool(tmp_path / "spool.sqlite", ["flukso"], commit_interval=0)
    sp.add(PULSE, now - 10, 1.0)
    sp.add(PULSE, now + DAY, 5.0)
    sp.commit()
    sp.ack("flukso", PULSE, now + DAY - 100)  # the server confirmed the older one and a future one
    sp.add(PULSE, now + 1, 6.0)
    sp.commit()
    assert sp.pending("flukso", PULSE) == [(now + DAY, 5.0)]  # swallowed: "older" than acked_ts
    assert sp.rewind(now) == 1
    assert sp.acked_ts("flukso", PULSE) == now and sp.pending("flukso", PULSE) == []
    sp.add(PULSE, now + 1, 6.0)
    sp.commit()
    assert sp.pending("flukso", PULSE) == [(now + 1, 6.0)]
    sp.close()


# ------------------------------------------------------------------ finding 2: plausibility


def test_a_register_beyond_what_the_channel_can_deliver_is_refused(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """0xFFFFFFFF Wh once added 4.29 GWh to the stored total for good. A step above the channel's
    full-scale power over the interval (board.json) is refused with its numbers and ACKed; the
    readings after it count on from the last good one."""
    caplog.set_level(logging.WARNING)
    rec = ImportRecorder()
    session(rig).sinks.append(rec)
    now = int(time.time())
    rig.board.step(now - 5, power_w=[3600.0])
    rig.wait(lambda: rig.total(IMP) == 1000)
    rig.board.send(wire.COUNTER, (0, now - 4, 0, 0xFFFFFFFF, 999, 0, 0), True)
    assert rig.board.wait_acked(5)
    for i in range(3):
        rig.board.step(now - 3 + i, power_w=[60_000.0])  # 60 kW is still under full scale (62.6 kW)
    rig.wait(lambda: rig.total(IMP) == 1000 + 3 * 16_667)
    assert max(total for _t, total in rec.calls) == 1000 + 3 * 16_667
    assert rig.board.wait_acked(5) and session(rig).stats.rejected_step == 1
    [w] = warnings(caplog, "more than the channel can deliver")
    assert "4294967295.999" in w and "at most 52.302" in w and IMP in w


def test_a_register_lower_than_the_last_of_the_same_boot_is_refused(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A register that fell within one boot was passed on as a lower total, silently."""
    caplog.set_level(logging.WARNING)
    rec = ImportRecorder()
    session(rig).sinks.append(rec)
    now = int(time.time())
    counter(rig.board, now - 5, 5000)
    rig.wait(lambda: rig.total(IMP) == 5000)
    counter(rig.board, now - 4, 3000)
    assert rig.board.wait_acked(5)
    counter(rig.board, now - 3, 5500)
    rig.wait(lambda: rig.total(IMP) == 5500)
    totals = [total for _t, total in rec.calls]
    assert totals == sorted(totals) and 3000 not in totals
    assert rig.board.wait_acked(5) and session(rig).stats.rejected_backwards == 1
    [w] = warnings(caplog, "same boot")
    assert "3.000" in w and "5.000" in w
    # A resend of an older tuple whose stamp a board clock, set back since, made look newer: its
    # energy is in the later reading; dropped quietly, not a fault.
    dups = session(rig).stats.duplicates
    rig.board._write(wire.encode(wire.COUNTER, 999, (0, now - 2, 0, 5, 200, 0, 0), wire.FLAG_RETX))
    rig.wait(lambda: session(rig).stats.duplicates > dups)
    assert rig.total(IMP) == 5500 and max(t for t, _total in rec.calls) == now - 3
    assert session(rig).stats.rejected_backwards == 1 and len(warnings(caplog, "same boot")) == 1


def test_a_higher_register_stamped_before_the_newest_reading_is_refused(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A COUNTER stamped 30 days back whose register is 0.5 Wh above the last one moved the total
    forwards at a time before readings already stored, and reached the spool as its oldest point,
    above the real ones after it (integrity campaign, past_stamp). It is refused, counted, warned
    with its numbers and ACKed; the next reading carries the energy."""
    caplog.set_level(logging.WARNING)
    now = int(time.time())
    counter(rig.board, now - 5, 5000)
    rig.wait(lambda: rig.total(IMP) == 5000)
    counter(rig.board, now - 30 * DAY, 5500)
    assert rig.board.wait_acked(5)
    assert rig.total(IMP) == 5000 and rig.daemon.store is not None
    assert rig.daemon.store.state[IMP].t == now - 5
    assert session(rig).stats.rejected_backwards == 1
    [w] = warnings(caplog, "before 5.000")
    assert "5.500" in w and str(now - 30 * DAY) in w
    # A board clock a drift correction set back a few seconds: taken, not refused (its stamp is off
    # by less than a minute; the e2e day checks every stage against such readings).
    counter(rig.board, now - 7, 5800)
    assert rig.board.wait_acked(5)
    assert rig.total(IMP) == 5800
    assert session(rig).stats.rejected_backwards == 1 and len(warnings(caplog, "before 5.000")) == 1
    counter(rig.board, now - 4, 6000)
    rig.wait(lambda: rig.total(IMP) == 6000)


def test_an_unset_clock_tuple_moves_no_stored_state(rig: Rig) -> None:
    """A tuple stamped before TIME_SET (1970 + uptime) raised the stored high-water mark; when the
    board then rebooted onto its EEPROM copy, the host took the copy for lost registers and kept
    the phantom step. It is ACKed and stores nothing; the host total follows the board's registers."""
    now = int(time.time())
    rig.board.step(now - 10, power_w=[3600.0])
    rig.board.save_eeprom()
    rig.wait(lambda: rig.total(IMP) == 1000)
    assert rig.daemon.store is not None
    before = vars(rig.daemon.store.state[IMP]).copy()
    counter(rig.board, 1000, 51_000)  # 50 Wh more, stamped with an unset clock
    assert rig.board.wait_acked(5)
    assert vars(rig.daemon.store.state[IMP]) == before and session(rig).stats.unsynced >= 1
    rig.board.reset(restore="eeprom", t=now - 5)  # back to the saved 1 Wh: nothing was lost after it
    rig.wait(lambda: len(session(rig).stats.epochs) == 2)
    rig.board.step(now - 4, power_w=[3600.0])
    rig.wait(lambda: rig.total(IMP) == 2000)
    time.sleep(0.3)
    assert rig.total(IMP) == 2000


# ------------------------------------------------------------------ finding 9: the board's words


def test_event_text_is_escaped_and_rate_limited(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """A newline and ANSI escapes in EVENT text forged a CRITICAL log line, and 2,000 events wrote
    520 KB in a second. The text is escaped, the lines rate-limited; every event is still ACKed."""
    caplog.set_level(logging.DEBUG, logger="gridtap.board.session")
    now = int(time.time())
    rig.board.event(now, 1, wire.EV_RESTORED, "ok\n2026-12-06 CRITICAL gridtap.daemon: forged\x1b[2J")
    rig.wait(lambda: session(rig).stats.events == 1)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("board event")]
    assert "\n" not in line and "\x1b" not in line and "\\n2026" in line and "\\x1b[2J" in line
    for i in range(2000):
        rig.board.event(now, 3, wire.EV_BROWNOUT_SAVE, f"flood {i}")
    rig.wait(lambda: session(rig).stats.events >= 2001 and not rig.board.unacked(), timeout=20)
    lines = [r for r in caplog.records if r.getMessage().startswith("board event")]
    assert len(lines) <= 30
    assert session(rig).stats.events_not_logged >= 1970
    assert rig.board.wait_acked(10)


def test_hello_channels_are_bounded_by_the_board_file(short_tmp: Path) -> None:
    """A HELLO claiming 255 CTs made the daemon send 2,550 CONFIG_GETs; board.json has 3 and 2."""
    board = FakeBoard(short_tmp, n_ct=255)
    board.appear()
    with running_daemon(board, config_text(board.path, short_tmp / "state"), short_tmp) as rig:
        rig.wait(lambda: session(rig).stats.config_pushes == 1 and not session(rig).config_wait)
        gets = board.got(wire.CONFIG_GET)
        assert {m.values[1] for m in gets if m.values[0] == wire.TARGET_CT} == {0, 1, 2}
        assert len(gets) == 5
        assert session(rig).stats.hello_channels_clamped == 1


@pytest.fixture
def mqtt_rig(short_tmp: Path) -> Iterator[tuple[Rig, Mosquitto]]:
    board = FakeBoard(short_tmp)
    board.appear()
    with Mosquitto(short_tmp) as broker:
        text = config_text(board.path, short_tmp / "state") + f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
device_id = "gridtap-test"
"""
        with running_daemon(board, text, short_tmp) as r:
            yield r, broker


def test_decoder_and_refusal_counters_are_published(
        mqtt_rig: tuple[Rig, Mosquitto], caplog: pytest.LogCaptureFixture) -> None:
    """docs/protocol.md says the host publishes the decoder's counters: in the log, at GET /status,
    and as Home Assistant diagnostic entities over MQTT."""
    rig, broker = mqtt_rig
    caplog.set_level(logging.WARNING)
    sub = Collector(broker.port)
    try:
        frame = bytearray(wire.encode(wire.GAUGE, 7, (0, int(time.time()), 0, 0, 0, 0, 0, 0, 50000,
                                                      0, 0, 0, 0, 0)))
        frame[5] ^= 0x40  # one flipped bit: a CRC error
        rig.board._write(bytes(frame) + b"\x00\x05\x01\x02\x03\x04\x00")  # and a COBS one
        rig.wait(lambda: rig.daemon.link.counters()["bad_crc"] == 1)
        rig.daemon.next_diag = 0.0  # the next pass publishes (normally at most once a minute)
        rig.board.step(int(time.time()), power_w=[100.0])
        topic = "/device/gridtap-test/diagnostics"
        assert wait_until(lambda: (sub.last_json(topic) or {}).get("bad_crc") == 1, timeout=10)
        cfg = sub.last_json("homeassistant/sensor/gridtap_gridtap-test_bad_crc/config")
        assert cfg["entity_category"] == "diagnostic" and cfg["state_topic"] == topic
        conn = http.client.HTTPConnection("127.0.0.1", rig.daemon.api.port, timeout=10)
        conn.request("GET", "/status")
        status = json.loads(conn.getresponse().read())
        conn.close()
        assert status["decoder"]["bad_crc"] == 1 and "rejected_step" in status["session"]
        assert [w for w in warnings(caplog, "board link:") if "1 bad_crc" in w]
    finally:
        sub.close()
