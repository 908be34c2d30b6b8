"""The board session without a port: ordering of outputs, the spool ACK rule, held RRD values."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gridtap.board.session import RETRY_S, Session, ack_frame
from gridtap.config import BoardConfig, SensorConfig
from gridtap.store.epochs import CounterStore
from gridtap.store.live import LiveStore
from gridtap.store.rrd import RrdSink
from gridtap.store.spool import Spool
from gridtap_fw import wire
from tests.support.daemon import Recorder

T = 1_790_000_000
SID = "e" * 32




class FakeSpool:
    def __init__(self) -> None:
        self.points: list[tuple[str, int, float, Any]] = []
        self.batch: list[Any] = []

    def add(self, sensor_id: str, ts: int, counter: int | float, token: Any = None) -> None:
        self.points.append((sensor_id, ts, counter, token))
        self.batch.append(token)

    def maybe_commit(self) -> list[Any]:
        out, self.batch = self.batch, []
        return out

    def commit_deadline(self) -> float | None:
        return 0.0 if self.batch else None

    def rewind(self, to_ts: int) -> int:
        kept = [p for p in self.points if p[1] <= to_ts]
        dropped = len(self.points) - len(kept)
        self.points = kept
        return dropped

    def newest(self, sensor_id: str, n: int = 2) -> list[tuple[int, int | float]]:
        best: dict[int, int | float] = {}
        for sensor, ts, counter, _token in self.points:
            if sensor == sensor_id:
                best[ts] = max(counter, best.get(ts, counter))
        return sorted(best.items(), reverse=True)[:n]


def session(tmp_path: Path, sinks: list[Any], spool: FakeSpool | None = None) -> tuple[Session, list[bytes]]:
    sent: list[bytes] = []

    def send(frame: bytes) -> bool:
        sent.append(frame)
        return True

    s = Session(
        BoardConfig(),
        (SensorConfig("grid", SID, "ct", 0),),
        CounterStore(tmp_path / "c.sqlite"),
        LiveStore(),
        send,
        sinks=sinks,
        spool=spool,
    )
    return s, sent


def feed(s: Session, mtype: int, seq: int, values: tuple[object, ...], flags: int = 0) -> None:
    for m in wire.Decoder().feed(wire.encode(mtype, seq, values, flags)):
        s.handle(m)


def acked(sent: list[bytes]) -> set[int]:
    out: set[int] = set()
    for m in wire.Decoder().feed(b"".join(sent)):
        if m.mtype == wire.ACK:
            out.update(m.values[0])
    return out


def test_a_resent_older_tuple_goes_to_the_spool_but_never_back_to_the_outputs(tmp_path: Path) -> None:
    rec = Recorder()
    spool = FakeSpool()
    s, sent = session(tmp_path, [rec], spool)
    feed(s, wire.HELLO, 0, (b"\x02" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0))
    feed(s, wire.COUNTER, 1, (0, T + 10, 0, 100, 0, 0, 0))
    feed(s, wire.COUNTER, 2, (0, T + 11, 0, 200, 0, 0, 0))
    feed(s, wire.COUNTER, 1, (0, T + 10, 0, 100, 0, 0, 0), wire.FLAG_RETX)
    feed(s, wire.COUNTER, 3, (0, T + 11, 500, 250, 0, 0, 0))  # later in the same second: passed on
    assert rec.calls == [(T + 10, 100_000), (T + 11, 200_000), (T + 11, 250_000)]
    assert [(p[1], p[2]) for p in spool.points] == [
        (T + 10, 100.0),
        (T + 11, 200.0),
        (T + 10, 100.0),
        (T + 11, 250.0),
    ]
    assert acked(sent) == set()  # nothing is ACKed before the spool commit
    s.tick()
    assert acked(sent) == {1, 2, 3}


def test_rrd_sink_holds_only_newer_values() -> None:
    class Store:
        def __init__(self) -> None:
            self.updates: list[tuple[int, int]] = []
            self.errors = 0

        def update(self, sensor: str, t: int, value: int) -> bool:
            self.updates.append((t, value))
            return True

    store = Store()
    sink = RrdSink(store)  # type: ignore[arg-type]
    sink.counter(SID, "import", T + 10, 1)  # the first: at the start of its minute and its second
    sink.counter(SID, "import", T + 15, 5)  # held
    sink.counter(SID, "import", T + 13, 3)  # older than the held one: ignored
    sink.counter(SID, "import", T + 5, 0)  # an earlier step: ignored
    sink.flush_held()
    assert store.updates == [(T - 20, 1), (T + 10, 1), (T + 15, 5)]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=wire.ACK_MAX))
def test_ack_frame_is_the_wire_encoding(seq: int, seqs: list[int]) -> None:
    assert ack_frame(seq, seqs) == wire.encode(wire.ACK, seq, (tuple(seqs),))


def test_wait_hint_is_the_earliest_deadline(tmp_path: Path) -> None:
    """The ingest loop sleeps until the next retry, ACK or spool commit, not on a fixed period."""
    spool = FakeSpool()
    s, _sent = session(tmp_path, [], spool)
    assert s.wait_hint(60.0) == 60.0  # nothing due: as long as the caller allows
    s.command(wire.HELLO_REQ)
    assert 0.0 < s.wait_hint(60.0) <= RETRY_S  # the retry of the unanswered command
    s.pending.clear()
    spool.batch.append(1)  # FakeSpool: a waiting batch is due at once
    assert s.wait_hint(60.0) == 0.0


def test_spool_commit_deadline(tmp_path: Path) -> None:
    now = [100.0]
    sp = Spool(tmp_path / "s.sqlite", ["x"], commit_interval=30.0, commit_points=3, clock=lambda: now[0])
    assert sp.commit_deadline() is None
    sp.add(SID, T, 1.0, token=1)
    now[0] = 105.0
    sp.add(SID, T + 1, 2.0, token=2)
    assert sp.commit_deadline() == 130.0  # the oldest point's age decides
    sp.add(SID, T + 2, 3.0, token=3)
    assert sp.commit_deadline() == 100.0  # full: due now
    assert sp.maybe_commit() == [1, 2, 3] and sp.commit_deadline() is None
    sp.close()


def test_board_events_are_logged_at_the_protocol_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """EVENT levels are 0 debug, 1 info, 2 notice, 3 warning, 4 critical (docs/protocol.md): a
    brownout save (3) is a warning in the log, not an error; an EEPROM failure (4) is critical."""
    s, _sent = session(tmp_path, [])
    caplog.set_level(logging.DEBUG, logger="gridtap.board.session")
    for seq, level in enumerate((0, 1, 2, 3, 4), start=1):
        feed(s, wire.EVENT, seq, (1_790_000_000, 0, level, 0x0100 + level, b"level %d" % level))
    got = {r.getMessage(): r.levelno for r in caplog.records if r.getMessage().startswith("board event")}
    assert got == {"board event 256: level 0": logging.DEBUG, "board event 257: level 1": logging.INFO,
                   "board event 258: level 2": logging.INFO, "board event 259: level 3": logging.WARNING,
                   "board event 260: level 4": logging.CRITICAL}


def test_a_second_reboot_during_the_config_check_leaves_no_false_failure(tmp_path: Path) -> None:
    """A flicker: the board reboots again while the daemon's config check of the first reboot is
    under way. The new boot gets a check of its own and answers it; the first check's requests
    went to a board that no longer exists and must not time out as "board did not answer"
    (the month soak logged 5 such errors after every flicker, and flagged the config as failed)."""
    now = [0.0]
    s = Session(BoardConfig(), (SensorConfig("grid", SID, "ct", 0),), CounterStore(tmp_path / "c.sqlite"),
                LiveStore(), lambda frame: True, mono=lambda: now[0])
    uid = b"\x03" * 8
    feed(s, wire.HELLO, 0, (uid, 0, 1, 0, 1, 7, 2, 1, 3, 2))
    first_check = set(s.config_wait)
    assert first_check
    feed(s, wire.HELLO, 0, (uid, 0, 1, 0, 1, 8, 2, 2, 3, 2))  # the mains failed again at once
    time_sets = [seq for seq, p in s.pending.items() if p.mtype == wire.TIME_SET]
    assert len(time_sets) == 1, "the new boot's clock is set afresh"
    feed(s, wire.ACK, 2, ((time_sets[0],),))
    for (target, index), (_seq, items, _what) in list(s.config_get.items()):
        feed(s, wire.CONFIG, 1, (target, index, items))  # the new boot already holds the config
    for _ in range(40):
        now[0] += RETRY_S
        s.tick()
    assert s.stats.gave_up == 0 and not s.config_failed
    assert not first_check & set(s.pending), "the first boot's config requests are still pending"


def test_a_board_clock_set_back_places_its_readings_right_after_the_newest(tmp_path: Path) -> None:
    """A drift correction (TIME_SET) moves a fast board clock back: the next readings carry higher
    registers under stamps before the newest one. Made into points at their stamps they put a total
    above points already spooled (or uploaded) after them, so the Flukso and PVOutput series went
    back and forth (the e2e day: 18 Flukso points off, a PVOutput export 82 Wh above its registers).
    They were read after the newest reading, so their points go right after it: every total arrives
    at once, and each series' stamps and counters only grow."""
    rec = Recorder()
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, sent = session(tmp_path, [rec], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, (b"\x04" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0))
    for seq, (t, wh) in enumerate([(10, 100), (16, 160), (18, 180), (20, 200)], start=1):
        feed(s, wire.COUNTER, seq, (0, T + t, 0, wh, 0, 0, 0))   # the board clock 5 s ahead
    feed(s, wire.COUNTER, 5, (0, T + 15, 0, 250, 0, 0, 0))  # the clock was set back 5 s
    feed(s, wire.COUNTER, 6, (0, T + 17, 0, 255, 0, 0, 0))
    feed(s, wire.COUNTER, 7, (0, T + 19, 900, 260, 0, 0, 0))
    feed(s, wire.COUNTER, 8, (0, T + 19, 900, 260, 0, 0, 0))  # nothing new: no point
    assert s.store.total(SID) == 260_000
    feed(s, wire.COUNTER, 9, (0, T + 25, 0, 300, 0, 0, 0))
    feed(s, wire.COUNTER, 4, (0, T + 20, 0, 200, 0, 0, 0), wire.FLAG_RETX)  # a resend: no step back
    # Resends of the late readings (their ACK waits for the spool commit), one whose first send was
    # lost: below the highest register by now, but read after the newest-stamped reading all the
    # same (the e2e day: they reached the spool at their own stamps, and PVOutput counted the dip
    # twice). A resend of an older reading keeps its own stamp.
    feed(s, wire.COUNTER, 5, (0, T + 15, 0, 250, 0, 0, 0), wire.FLAG_RETX)
    feed(s, wire.COUNTER, 10, (0, T + 18, 0, 258, 0, 0, 0), wire.FLAG_RETX)
    feed(s, wire.COUNTER, 2, (0, T + 16, 0, 160, 0, 0, 0), wire.FLAG_RETX)
    s.tick()
    sp.sync()
    assert sp.pending("flukso", SID) == [(T + 10, 100.0), (T + 16, 160.0), (T + 18, 180.0), (T + 20, 260.0),
                                         (T + 25, 300.0)]
    assert rec.calls == [(T + 10, 100_000), (T + 16, 160_000), (T + 18, 180_000), (T + 20, 200_000),
                         (T + 20, 250_000), (T + 20, 255_000), (T + 20, 260_000), (T + 25, 300_000)]
    assert s.newest_out[SID] == (T + 25) * 1000
    assert s.stats.late_stamped == 6 and s.stats.rejected_backwards == 0
    assert acked(sent) >= set(range(1, 11))  # taken, so ACKed: nothing for the board to resend
    sp.close()


def test_a_register_that_stood_still_is_judged_by_its_newest_reading(tmp_path: Path) -> None:
    """A series at 0 W (an export series while the house imports) gets readings with the same register
    and newer stamps; the board clock is then set back and the register moves at a stamp between
    the last move and the newest reading. It goes after the newest reading: at its own stamp it put
    a total above the point spooled after it (the newest stamp was the last register move's)."""
    rec = Recorder()
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, _sent = session(tmp_path, [rec], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, (b"\x06" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0))
    for seq, t in enumerate((10, 12, 14, 20), start=1):
        feed(s, wire.COUNTER, seq, (0, T + t, 0, 100, 0, 0, 0))   # standing still, 5 s ahead
    feed(s, wire.COUNTER, 5, (0, T + 16, 0, 150, 0, 0, 0))  # set back 5 s; the load comes on
    s.tick()
    sp.sync()
    assert sp.pending("flukso", SID) == [(T + 10, 100.0), (T + 12, 100.0), (T + 14, 100.0), (T + 20, 150.0)]
    assert rec.calls[-1] == (T + 20, 150_000) and s.stats.late_stamped == 1
    sp.close()


class MsRecorder(Recorder):
    """A sink that places a reading within its second, as the RRDs do (`counter_ms`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ms: list[tuple[int, int]] = []

    def counter_ms(self, sensor: str, role: str, t_ms: int, total_milli: int) -> None:
        self.ms.append((t_ms, total_milli))


def test_a_board_clock_set_back_onto_the_newest_stamp_places_the_reading_just_after_it(
        tmp_path: Path) -> None:
    """A set-back of exactly one reading interval: the next reading carries the newest reading's
    own stamp and a higher register. The RRDs take one update per millisecond, so at its own stamp
    it was dropped there and its energy drawn over the next interval instead (the integrity
    campaign's future_stamp case, under load: two RRD rows a step's energy apart). It was read
    after the newest reading, so it goes a millisecond after it, like a reading stamped before."""
    rec = MsRecorder()
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, _sent = session(tmp_path, [rec], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, (b"\x07" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0))
    feed(s, wire.COUNTER, 1, (0, T + 10, 0, 100, 0, 0, 0))
    feed(s, wire.COUNTER, 2, (0, T + 20, 0, 200, 0, 0, 0))
    feed(s, wire.COUNTER, 3, (0, T + 20, 0, 250, 0, 0, 0))  # set back 10 s: the newest's stamp again
    feed(s, wire.COUNTER, 4, (0, T + 30, 0, 350, 0, 0, 0))
    feed(s, wire.COUNTER, 3, (0, T + 20, 0, 250, 0, 0, 0), wire.FLAG_RETX)  # its resend: nothing new
    s.tick()
    sp.sync()
    assert rec.ms == [((T + 10) * 1000, 100_000), ((T + 20) * 1000, 200_000),
                      ((T + 20) * 1000 + 1, 250_000), ((T + 30) * 1000, 350_000)]
    assert sp.pending("flukso", SID) == [(T + 10, 100.0), (T + 20, 250.0), (T + 30, 350.0)]
    assert s.stats.late_stamped >= 1 and s.stats.rejected_backwards == 0
    sp.close()


def late_run(tmp_path: Path, steps: list[int], set_backs: list[tuple[int, int]], drops: list[int],
             delay: int, ms_step: int) -> list[tuple[int, float]]:
    """A board reading once a second whose clock is set back (at reading i, by s seconds) and whose
    dropped frames come again `delay` readings later as RETX; the spool's points after it."""
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, _sent = session(tmp_path, [Recorder()], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, (b"\x08" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0))
    raw, offset_ms, frames = 1_000_000, 5000, []
    for i, inc in enumerate(steps):
        offset_ms -= sum(back * 1000 for at, back in set_backs if at == i)
        raw += inc * 97
        stamp_ms = (100 + i) * 1000 + offset_ms + i * ms_step
        frames.append((i + 1, stamp_ms // 1000, stamp_ms % 1000, raw))
    order: list[tuple[tuple[int, int, int, int], int]] = []
    later: list[tuple[tuple[int, int, int, int], int]] = []
    for i, frame in enumerate(frames):
        if i in drops:
            later.append((frame, i + delay))
        else:
            order.append((frame, 0))
        order += [(f, wire.FLAG_RETX) for f, due in later if due <= i]
        later = [(f, due) for f, due in later if due > i]
    order += [(f, wire.FLAG_RETX) for f, _due in later]
    for (seq, t, ms, r), flags in order:
        feed(s, wire.COUNTER, seq, (0, T + t, ms, r // 1000, r % 1000, 0, 0), flags)
    s.tick()
    sp.sync()
    points: list[tuple[int, float]] = sp.pending("flukso", SID)
    sp.close()
    return points


@example(steps=[0] * 7 + [1, 0, 0, 0, 1], set_backs=[(8, 3)], drops=[8], delay=3, ms_step=1)
@example(steps=[0] * 10 + [1, 0, 0, 0, 1, 0], set_backs=[(10, 3), (15, 2)], drops=[10], delay=5,
         ms_step=0)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.integers(0, 3), min_size=12, max_size=30),
       set_backs=st.lists(st.tuples(st.integers(3, 25), st.integers(1, 8)), min_size=1, max_size=3),
       drops=st.lists(st.integers(0, 29), max_size=6), delay=st.integers(1, 12), ms_step=st.integers(0, 1))
def test_every_series_only_grows_through_board_clock_set_backs_and_resends(
        tmp_path_factory: pytest.TempPathFactory, steps: list[int], set_backs: list[tuple[int, int]],
        drops: list[int], delay: int, ms_step: int) -> None:
    """The e2e day failed once: after a set-back, the resend of a reading lost on the wire, at the
    register the newest had then, went to its own stamp, a Wh above the points after it (a Flukso
    series that went back). The same happened for the resend of a reading from before a second
    set-back. Whatever the steps, losses and resends, the spool's series only grows."""
    points = late_run(tmp_path_factory.mktemp("late"), steps, set_backs, drops, delay, ms_step)
    for a, b in zip(points, points[1:], strict=False):
        assert b[1] >= a[1], f"{b} after {a}: goes back ({points})"
    assert round(points[-1][1] * 1000) == 1_000_000 + 97 * sum(steps)  # and the last total is the register


def crash(s: Session, sp: Spool) -> None:
    """kill -9: what only RAM held is gone (the counter store's progress since its last flush, the
    spool's uncommitted batch, the session's marks); what SQLite committed stays."""
    s.store.db.close()
    sp._db.close()


def test_a_restart_after_the_board_clock_was_set_back_still_places_its_readings_after_the_newest(
        tmp_path: Path) -> None:
    """The daemon is killed (kill -9) between a board clock set back and the board's resends: the
    counter store on disk is its last flush (state_flush_s), older than the newest reading; the spool
    holds every reading up to its last commit, the late one placed after the newest among them. The
    restarted daemon takes its marks from the spool, so a resend (committed, its ACK lost with the
    daemon; or never committed) and the readings still stamped before the newest go right after it,
    not at their own stamps above the points already spooled after them (Flukso and PVOutput series
    that went back, #13)."""
    boot = (b"\x05" * 8, 1, 0, 0, 1, 7, 1, 0, 1, 0)
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, _sent = session(tmp_path, [Recorder()], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, boot)
    for seq, (t, wh) in enumerate([(10, 100), (16, 160), (18, 180)], start=1):
        feed(s, wire.COUNTER, seq, (0, T + t, 0, wh, 0, 0, 0))   # the board clock 5 s ahead
    s.store.flush()  # the counter store's last flush before the kill
    feed(s, wire.COUNTER, 4, (0, T + 19, 0, 190, 0, 0, 0))
    feed(s, wire.COUNTER, 5, (0, T + 20, 0, 200, 0, 0, 0))
    s.tick()  # committed and ACKed
    feed(s, wire.COUNTER, 6, (0, T + 15, 0, 250, 0, 0, 0))  # the clock was set back 5 s
    s.tick()  # committed; its ACK is lost with the daemon
    feed(s, wire.COUNTER, 7, (0, T + 17, 0, 255, 0, 0, 0))  # not committed
    crash(s, sp)

    rec = Recorder()
    sp = Spool(tmp_path / "s.sqlite", ["flukso"], aging=(), commit_interval=0.0)
    s, sent = session(tmp_path, [rec], sp)  # type: ignore[arg-type]
    feed(s, wire.HELLO, 0, boot)  # the same boot: the same epoch
    feed(s, wire.COUNTER, 6, (0, T + 15, 0, 250, 0, 0, 0), wire.FLAG_RETX)
    feed(s, wire.COUNTER, 7, (0, T + 17, 0, 255, 0, 0, 0), wire.FLAG_RETX)
    feed(s, wire.COUNTER, 8, (0, T + 19, 900, 260, 0, 0, 0))  # still stamped before the newest
    feed(s, wire.COUNTER, 9, (0, T + 25, 0, 300, 0, 0, 0))
    s.tick()
    sp.sync()
    assert sp.pending("flukso", SID) == [(T + 10, 100.0), (T + 16, 160.0), (T + 18, 180.0), (T + 19, 190.0),
                                         (T + 20, 260.0), (T + 25, 300.0)]
    assert rec.calls == [(T + 20, 255_000), (T + 20, 260_000), (T + 25, 300_000)]
    assert s.store.total(SID) == 300_000
    assert s.stats.late_stamped == 3 and s.stats.rejected_backwards == 0
    assert acked(sent) >= {6, 7, 8, 9}
    sp.close()
