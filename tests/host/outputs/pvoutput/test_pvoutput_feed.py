"""PVOutput as a destination of the one durable spool (#14 item 2) and its restart (finding 13.5).

A real Spool and the PVOutput-compatible server; "the board" adds a tuple every
10 s with its seq as token and counts as ACKed only the tokens a commit returned.
A crash drops the objects without closing them: what was not committed was never
ACKed, so the board sends it again after the restart.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gridtap.outputs.pvoutput import PVOutputUploader, parse_settings
from gridtap.outputs.pvoutput.feed import DEST, SpoolFeed
from gridtap.store.faults import RETRY_CAP_S, StorageHealth
from gridtap.store.spool import Spool
from tests.host.outputs.pvoutput.conftest import SID, Clock, at
from tests.support.disk import fill, small_tmpfs
from tests.support.pvoutput_server import PVOutputServer


def _power(t: float) -> float:
    return 300.0 + 200.0 * (int(t // 300) % 3)   # a new level every 5 minutes


class Board:
    """Cumulative register of one sensor; tuples stay until a commit hands back their seq."""

    def __init__(self, t: float) -> None:
        self.t, self.wh, self.seq = t, 1000.0, 0
        self.unacked: dict[int, tuple[int, float]] = {}

    def second(self, dt: int = 10) -> None:
        self.t += dt
        self.wh += _power(self.t - 1) * dt / 3600.0
        self.seq += 1
        self.unacked[self.seq] = (int(self.t), self.wh)

    def send(self, spool: Spool) -> None:
        for seq, (ts, wh) in sorted(self.unacked.items()):
            if ts > spool.acked_ts(DEST, "s1"):
                spool.add("s1", ts, wh, token=seq)

    def acked(self, tokens: list[int]) -> None:
        for seq in tokens:
            self.unacked.pop(seq, None)


@pytest.fixture
def rig(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch,
        server: PVOutputServer) -> tuple[Path, Clock, PVOutputServer]:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "c0ffee0123456789abcdef0123456789deadbeef")
    return tmp_path, clock, server


def _open(tmp: Path, clock: Clock, server: PVOutputServer) -> tuple[Spool, PVOutputUploader, SpoolFeed]:
    settings = parse_settings({"system_id": SID, "timezone": "Europe/Brussels", "base_url": server.url,
                               "interval": 5, "v4": "house:power", "v3": "house:energy", "settle_s": 10})
    # a commit interval far longer than the test: only the feed's sync() makes points durable
    spool = Spool(tmp / "spool.sqlite", ["flukso", DEST], commit_interval=3600.0, aging=(),
                  wall_clock=clock)
    up = PVOutputUploader(settings, tmp / "pvoutput.sqlite", clock=clock, rng=random.Random(1))
    return spool, up, SpoolFeed(up, spool, {"s1": "house"})


def _run(board: Board, clock: Clock, spool: Spool, feed: SpoolFeed, seconds: int) -> None:
    end = board.t + seconds
    while board.t < end:
        board.second()
        board.send(spool)
        board.acked(spool.maybe_commit())
        clock.t = board.t
        feed.step()


def test_counters_reach_pvoutput_only_through_the_spool_and_survive_a_crash(
        rig: tuple[Path, Clock, PVOutputServer]) -> None:
    tmp, clock, server = rig
    board = Board(at(2024, 6, 15, 12, 0, 0))         # samples on the 10 s grid: boundaries hit exactly
    spool, up, feed = _open(tmp, clock, server)
    _run(board, clock, spool, feed, 12 * 60)                    # 12:00:10 .. 12:12:00
    st_ = server.statuses[str(SID)]
    assert sorted(st_) == [("20240615", "12:05"), ("20240615", "12:10")]
    # the ACK rule covers PVOutput: a tuple is ACKed only once a commit made it durable, and
    # what is still unACKed is exactly what came after the last commit
    assert board.unacked and all(ts > int(at(2024, 6, 15, 12, 10, 10)) for ts, _ in board.unacked.values())
    # the spool keeps PVOutput's points after the last saved boundary, not before it
    kept = spool.pending(DEST, "s1")
    assert kept and kept[0][0] > at(2024, 6, 15, 12, 10)
    # kill -9 at 12:12: nothing is closed; down until 12:26 while the board keeps counting
    del spool, up, feed
    for _ in range(14 * 6):
        board.second()
    clock.t = board.t
    spool, up, feed = _open(tmp, clock, server)
    board.send(spool)                                           # the board replays its ring
    board.acked(spool.maybe_commit())
    _run(board, clock, spool, feed, 10 * 60)
    for m in (15, 20, 25, 30, 35):
        s = st_[("20240615", f"12:{m:02d}")]
        assert s["v4"] == str(round(_power(at(2024, 6, 15, 12, m) - 1))), m
    # every Wh arrived once: energy today at 12:35 is the register's advance since the first sample
    # (12:00:10), nothing counted twice by the replay, nothing lost by the crash
    advance = sum(_power(at(2024, 6, 15, 12, 0, 0) + 10 * k - 1) * 10 / 3600 for k in range(2, 35 * 6 + 1))
    assert st_[("20240615", "12:35")]["v3"] == str(round(advance))
    spool.close()
    up.close()


def test_a_full_disk_under_the_spool_is_a_storage_fault_not_an_exception(
        rig: tuple[Path, Clock, PVOutputServer]) -> None:
    """The feed commits the spool before it closes an interval; on a full disk that commit raised
    sqlite3.OperationalError out of the PVOutput thread (a traceback, integrity campaign disk_full).
    It is a storage fault like the ingest thread's: reported to StorageHealth (logged once, counted,
    retried with backoff), no interval closed meanwhile; once space returns the interval closes."""
    tmp, clock, server = rig
    mono = Clock(0.0)
    health = StorageHealth(mono=mono)
    settings = parse_settings({"system_id": SID, "timezone": "Europe/Brussels", "base_url": server.url,
                               "interval": 5, "v4": "house:power", "v3": "house:energy", "settle_s": 10})
    with small_tmpfs(tmp / "disk") as disk:
        spool = Spool(disk / "spool.sqlite", [DEST], commit_interval=3600.0, aging=(), wall_clock=clock)
        up = PVOutputUploader(settings, tmp / "pvoutput.sqlite", clock=clock, rng=random.Random(1))
        feed = SpoolFeed(up, spool, {"s1": "house"}, health)
        board = Board(at(2024, 6, 15, 12, 0, 0))
        _run(board, clock, spool, feed, 6 * 60)
        st_ = server.statuses[str(SID)]
        assert sorted(st_) == [("20240615", "12:05")]
        filler = fill(disk)
        _run(board, clock, spool, feed, 5 * 60)     # 12:10 is due: the feed's commit fails
        assert health.degraded and "spool" in health.failing and health.faults >= 1
        assert sorted(st_) == [("20240615", "12:05")] and board.unacked
        filler.unlink()
        mono.t += RETRY_CAP_S                       # the retry is due
        _run(board, clock, spool, feed, 60)
        assert not health.degraded and health.recoveries == 1
        assert ("20240615", "12:10") in st_
        assert st_[("20240615", "12:10")]["v4"] == str(round(_power(at(2024, 6, 15, 12, 10) - 1)))
        spool.close()
        up.close()
