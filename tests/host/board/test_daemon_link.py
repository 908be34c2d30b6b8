"""The daemon against a fake board on a real pty: ACKs, clock, config push, resets, reconnects."""

from __future__ import annotations

import time
from pathlib import Path

from gridtap_fw import wire
from tests.support.daemon import EXP, IMP, IMP2, PULSE, Rig
from tests.support.fakeboard import FakeBoard

T0 = 1_790_000_000


def test_hello_sets_clock_and_pushes_config(rig: Rig) -> None:
    b = rig.board
    rig.wait(lambda: b.commits >= 1)
    assert b.clock_set and abs(b.board_time() - time.time()) < 0.5
    ct0 = b.config[(wire.TARGET_CT, 0)]
    assert ct0[wire.P_ENABLED] == 1
    assert ct0[wire.P_SENSOR_ID] == bytes.fromhex(IMP)
    assert ct0[wire.P_SENSOR_ID_EXPORT] == bytes.fromhex(EXP)
    assert ct0[wire.P_GAIN_E6] == 1002500 and ct0[wire.P_PHASE_MDEG] == -4200
    assert b.config[(wire.TARGET_CT, 2)] == {wire.P_ENABLED: 0}  # not in the config: switched off
    assert b.config[(wire.TARGET_PULSE, 1)][wire.P_UNIT] == 1
    assert b.config[(wire.TARGET_PULSE, 0)][wire.P_METER_CONST_MILLI] == 1_000_000
    # COMMIT comes after every CONFIG_SET was ACKed
    kinds = [m.mtype for m in b.received if m.mtype in (wire.CONFIG_SET, wire.COMMIT)]
    assert kinds[-1] == wire.COMMIT and kinds.count(wire.COMMIT) == 1


def test_tuples_are_acked_and_counted(rig: Rig) -> None:
    b = rig.board
    for i in range(20):
        b.step(T0 + i, power_w=[1800.0, 360.0], pulses=[1, 0])
    assert b.wait_acked()
    rig.wait(lambda: rig.total(IMP) == 20 * 500)
    assert rig.total(IMP2) == 20 * 100
    assert rig.total(PULSE) == 20 * 1000
    assert rig.total(EXP) == 0


def test_time_drift_gets_a_time_set(rig: Rig) -> None:
    b = rig.board
    rig.wait(lambda: b.clock_set)
    before = len(b.got(wire.TIME_SET))
    b.send_time()  # in sync: nothing
    time.sleep(0.3)
    assert len(b.got(wire.TIME_SET)) == before
    b.clock_offset += 2.5
    b.send_time()
    rig.wait(lambda: len(b.got(wire.TIME_SET)) == before + 1)
    rig.wait(lambda: abs(b.clock_offset) < 0.5)


def test_unanswered_config_is_retried(rig: Rig) -> None:
    b = rig.board
    rig.wait(lambda: b.commits >= 1)
    b.answer = False
    n = len(b.received)
    b.config.clear()  # this reset lost the board's configuration
    b.reset("eeprom")
    time.sleep(0.7)
    b.answer = True  # the board listens again: the retried command gets through
    rig.wait(lambda: b.commits >= 2)
    retx = [m for m in b.received[n:] if m.mtype == wire.CONFIG_GET and m.flags & wire.FLAG_RETX]
    assert retx, "no CONFIG_GET was sent again"
    assert b.config[(wire.TARGET_CT, 0)][wire.P_SENSOR_ID] == bytes.fromhex(IMP)


def test_unchanged_config_is_not_written_again(rig: Rig) -> None:
    b = rig.board
    rig.wait(lambda: b.commits >= 1)
    sets = len(b.got(wire.CONFIG_SET))
    b.reset("eeprom")  # the board kept its configuration
    rig.wait(lambda: len(b.got(wire.CONFIG_GET)) >= 2 * len(b.config))
    time.sleep(0.3)
    assert b.commits == 1 and len(b.got(wire.CONFIG_SET)) == sets
    b.config[(wire.TARGET_CT, 1)][wire.P_GAIN_E6] = 999_000  # one value drifted
    b.reset("eeprom")
    rig.wait(lambda: b.commits == 2)
    new_sets = b.got(wire.CONFIG_SET)[sets:]
    assert [(m.values[0], m.values[1]) for m in new_sets] == [(wire.TARGET_CT, 1)]
    assert b.config[(wire.TARGET_CT, 1)][wire.P_GAIN_E6] == 1_000_000


def test_reset_with_eeprom_restore_keeps_energy(rig: Rig) -> None:
    b = rig.board
    for i in range(10):
        b.step(T0 + i, power_w=[3600.0], pulses=[2])
    b.save_eeprom()  # saved at 10 s
    for i in range(10, 15):
        b.step(T0 + i, power_w=[3600.0], pulses=[2])
    assert b.wait_acked()
    rig.wait(lambda: rig.total(IMP) == 15_000)
    # brownout save failed after 10 s: the board comes back with older registers
    b.reset("eeprom", t=T0 + 15)
    rig.wait(lambda: rig.daemon.session is not None and len(rig.daemon.session.stats.epochs) == 2)
    for i in range(15, 20):
        b.step(T0 + i, power_w=[3600.0], pulses=[2])
    assert b.wait_acked()
    # the 5 s that were counted twice on the board are counted once on the host
    rig.wait(lambda: rig.total(IMP) == 20_000)
    assert rig.total(PULSE) == 40_000


def test_reset_with_lost_registers_never_goes_negative(rig: Rig) -> None:
    b = rig.board
    for i in range(10):
        b.step(T0 + i, power_w=[-1800.0], pulses=[1])
    assert b.wait_acked()
    rig.wait(lambda: rig.total(EXP) == 5000)
    b.reset("lost", t=T0 + 10)
    seen: list[int] = []
    for i in range(10, 16):
        b.step(T0 + i, power_w=[-1800.0], pulses=[1])
        total = rig.total(EXP)
        assert total is not None
        seen.append(total)
    assert b.wait_acked()
    rig.wait(lambda: rig.total(EXP) == 8000)
    assert seen == sorted(seen) and min(seen) >= 5000
    assert rig.total(PULSE) == 16_000
    assert rig.daemon.store is not None
    epochs = rig.daemon.store.epochs_of(EXP)
    assert len(epochs) == 2 and epochs[1][3] is False  # recorded as a lost register


def test_pty_vanishes_and_comes_back(rig: Rig) -> None:
    b = rig.board
    b.step(T0, power_w=[3600.0])
    assert b.wait_acked()
    b.vanish()
    rig.wait(lambda: not rig.daemon.link.connected)
    b.appear()
    # frames sent while nobody listened are resent with RETX once the host is back
    rig.wait(
        lambda: (
            rig.daemon.link.connected
            and rig.daemon.session is not None
            and rig.daemon.session.epoch is not None
        ),
        timeout=15,
    )
    for i in range(1, 6):
        b.step(T0 + i, power_w=[3600.0])
    assert b.wait_acked()
    rig.wait(lambda: rig.total(IMP) == 6000)
    assert rig.daemon.link.reconnects >= 1


def test_frames_before_hello_are_resent_not_lost(rig: Rig) -> None:
    b = rig.board
    b.vanish()
    rig.wait(lambda: not rig.daemon.link.connected)
    b.answer = False  # the board will not answer HELLO_REQ at first
    b.appear()
    for i in range(5):
        b.step(T0 + i, power_w=[3600.0])
    time.sleep(0.5)
    assert rig.total(IMP) in (None, 0)  # not counted: the epoch is unknown
    assert b.unacked() >= 5
    b.answer = True
    assert b.wait_acked(15)
    rig.wait(lambda: rig.total(IMP) == 5000)


def test_daemon_restart_keeps_totals_and_rrd(rig: Rig) -> None:
    import subprocess
    import threading

    from gridtap.daemon import Daemon

    b = rig.board
    now = int(time.time())
    for i in range(30):
        b.step(now - 60 + i, power_w=[3600.0], pulses=[1], gauges=False)
    assert b.wait_acked()
    rig.wait(lambda: rig.total(IMP) == 30_000)
    rig.daemon.request_stop()
    rig.thread.join(timeout=5)
    cfg = rig.daemon.cfg
    rig.daemon.close()
    # on disk, without rrdcached: the RRD holds what was metered (1 Wh/s = 1000 mWh/s)
    out = subprocess.run(
        [
            "rrdtool",
            "fetch",
            str(rig.daemon.rrd.path(IMP)),
            "AVERAGE",
            "-r",
            "10",
            "-s",
            str(now - 50),
            "-e",
            str(now - 40),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "1.0000000000e+03" in out, out
    # a new daemon on the same state: same board boot, so the same epoch, and totals carry on
    d2 = Daemon(cfg)
    d2.start()
    stop = threading.Event()
    th = threading.Thread(target=d2.run, args=(stop,), daemon=True)
    th.start()
    rig.daemon, rig.stop, rig.thread = d2, stop, th
    rig.wait(rig.connected)
    assert rig.total(IMP) == 30_000
    for i in range(30, 40):
        b.step(now - 60 + i, power_w=[3600.0], pulses=[1], gauges=False)
    assert b.wait_acked()
    rig.wait(lambda: rig.total(IMP) == 40_000)
    assert rig.total(PULSE) == 40_000
    assert d2.session is not None and d2.session.stats.epochs == [1]


def test_rrdcached_is_restarted_if_it_dies(cached_rig: Rig) -> None:
    """The ingest loop sleeps in select() with rrdcached's pidfd: its exit wakes the loop at once."""
    rig = cached_rig
    cached = rig.daemon.cached
    assert cached is not None and cached.proc is not None
    old = cached.proc
    old.kill()
    rig.wait(lambda: cached.proc is not None and cached.proc is not old and cached.proc.poll() is None,
             timeout=5)
    assert not rig.daemon.check_rrdcached()  # already done: nothing to restart
    now = int(time.time())
    for i in range(3):
        rig.board.step(now - 30 + 10 * i, power_w=[3600.0], seconds=10, gauges=False)
    assert rig.board.wait_acked()
    rig.wait_rrd(IMP, now - 10)
    assert rig.daemon.rrd.errors == 0


def test_rrdcached_connection_is_let_go_after_a_batch(cached_rig: Rig) -> None:
    """An open connection wakes rrdcached twice a second: the daemon closes it 1 s after the updates."""
    rig = cached_rig
    now = int(time.time())
    for i in range(3):
        rig.board.step(now - 30 + 10 * i, power_w=[3600.0], seconds=10, gauges=False)
    assert rig.board.wait_acked()
    rig.wait_rrd(IMP, now - 10)
    client = rig.daemon.rrd.client
    assert client is not None
    rig.wait(lambda: client.sock is None, timeout=5)
    assert rig.daemon.rrd.errors == 0 and rig.daemon.rrd.updates >= 3


def test_read_more_takes_what_came_in_without_waiting(short_tmp: Path) -> None:
    from gridtap.board.link import SerialLink

    board = FakeBoard(short_tmp)
    board.appear()
    link = SerialLink(str(board.path), 115200)
    try:
        assert link.poll(0.0) == []  # opens the port
        board.send(wire.TIME, (1_790_000_000, 0, 5, 1))
        got = link.poll(2.0)
        assert [m.mtype for m in got] == [wire.TIME]
        assert link.read_more() == []  # nothing more: no wait, no error, still connected
        assert link.connected
        board.send(wire.TIME, (1_790_000_001, 0, 6, 1))
        board.send(wire.TIME, (1_790_000_002, 0, 7, 1))
        deadline = time.monotonic() + 2
        more: list[wire.Message] = []
        while len(more) < 2 and time.monotonic() < deadline:
            more += link.read_more()
        assert [m.values[2] for m in more] == [6, 7]
    finally:
        link.dispose()
        board.close()


def test_last_held_values_reach_an_external_rrdcached_at_shutdown(short_tmp: Path) -> None:
    """With rrdcached_socket (an rrdcached the daemon does not own), the held last values of every
    series are sent and taken before the daemon hangs up: the RRD ends on the daemon's total."""
    import subprocess

    from gridtap.config import parse_config
    from gridtap.store.rrd import RrdCached
    from tests.support.daemon import config_text, running_daemon

    board = FakeBoard(short_tmp)
    board.appear()
    sock = short_tmp / "ext.sock"
    text = config_text(board.path, short_tmp / "state").replace(
        "[daemon]\n", f'[daemon]\nrrdcached_socket = "{sock}"\n', 1)
    rrd_dir = parse_config(text, short_tmp / "gridtap.toml").daemon.rrd_dir
    cached = RrdCached(rrd_dir, sock, 3600)
    cached.start()
    try:
        with running_daemon(board, text, short_tmp) as r:
            assert r.daemon.cached is None  # not its own
            now = int(time.time()) // 10 * 10
            for i in range(15):  # the last 5 s are held within their 10 s step until shutdown
                board.step(now - 20 + i, power_w=[3600.0], pulses=[1], gauges=False)
            assert board.wait_acked()
            r.wait(lambda: r.total(IMP) == 15_000)
        out = subprocess.run(["rrdtool", "lastupdate", str(rrd_dir / f"{IMP}.rrd"), "--daemon",
                              f"unix:{sock}"], capture_output=True, text=True, check=True).stdout
        ts, value = out.strip().splitlines()[-1].split(":")
        assert (int(ts), int(value.strip())) == (now - 6, 15_000)
    finally:
        cached.stop()


def test_an_unplugged_board_does_not_spin_the_daemon(rig: Rig) -> None:
    # A command still waiting for its retry when the port vanishes must not turn the ingest
    # loop into a busy one (select with no timeout until the board is plugged in again).
    b = rig.board
    b.vanish()
    rig.wait(lambda: not rig.daemon.link.connected)
    b.answer = False  # HELLO_REQ stays unanswered: a command pending with a retry deadline
    b.appear()
    rig.wait(lambda: rig.daemon.link.connected and rig.daemon.session is not None
             and bool(rig.daemon.session.pending), timeout=15)
    b.vanish()
    rig.wait(lambda: not rig.daemon.link.connected)
    tid = rig.thread.native_id

    def cpu_s() -> float:
        return int(Path(f"/proc/self/task/{tid}/schedstat").read_text().split()[0]) / 1e9

    c0 = cpu_s()
    time.sleep(2.0)
    assert cpu_s() - c0 < 0.2  # a busy loop burns ~2 s here; a sleeping one milliseconds
