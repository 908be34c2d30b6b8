"""Storage faults degrade the daemon, never kill it (issue 13, finding 3).

A full disk is a real one: the state directory is a small tmpfs (the tests
run as root, as CI does) that a filler file fills to the last byte, then
frees. The daemon, rrdcached and SQLite are the real ones, the board is the
fake board on a pty.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap.config import parse_config
from gridtap.daemon import Daemon
from gridtap.store.epochs import CounterStore
from gridtap.store.faults import GuardedSpool, StorageHealth
from gridtap.store.rrd import pid_gone
from gridtap.store.spool import Spool
from gridtap_fw import wire
from tests.support.daemon import IMP, PULSE, config_text, running_daemon
from tests.support.disk import fill, small_tmpfs
from tests.support.fakeboard import FakeBoard

FLUKSO = """
[flukso]
base_url = "http://127.0.0.1:9/"
key_env = "GRIDTAP_TEST_FLUKSO_KEY"
interval_s = 3600
"""


@pytest.fixture
def small_disk(short_tmp: Path) -> Iterator[Path]:
    """A 6 MB tmpfs as the daemon's state directory, unmounted afterwards."""
    with small_tmpfs(short_tmp / "state") as mnt:
        yield mnt


def test_full_disk_holds_acks_and_recovers(
    small_disk: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDTAP_TEST_FLUKSO_KEY", "00" * 16)
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, small_disk) + FLUKSO
    t0 = int(time.time()) - 600
    with running_daemon(board, text, short_tmp) as rig:
        d = rig.daemon
        spool = d.spool
        spool.commit_interval = 0.2  # commit (and ACK) at once, not every 30 s
        for i in range(5):
            board.step(t0 + i, power_w=[1000.0], pulses=[1], gauges=False)
        assert board.wait_acked(10)
        rrdcached = d.cached.pid if d.cached else None

        filler = fill(small_disk)
        # A board reset while the disk is full: a new epoch that must be written at once.
        board.save_eeprom()
        board.reset("eeprom", t=t0 + 10)
        for i in range(11, 31):
            board.step(t0 + i, power_w=[1000.0], pulses=[1], gauges=False)
        time.sleep(2.0)  # several writes, commit tries and board resends later
        assert rig.thread.is_alive(), "the daemon died of a full disk"
        # Nothing stored durably, so nothing ACKed: the board still holds every tuple it sent.
        assert board.unacked() >= 20
        status = d.status()["storage"]
        assert status["degraded"] and status["faults"] >= 1, status
        assert "full" in " ".join(status["failing"].values()), status
        assert rrdcached is not None and not pid_gone(rrdcached)

        filler.unlink()
        assert board.wait_acked(20), "the board's tuples were not ACKed once space returned"
        rig.wait(lambda: not d.status()["storage"]["degraded"], 10)
        assert rig.total(IMP) == board.ct[0][0]
        assert rig.total(PULSE) == board.pulse[0]
        got = dict(spool.pending("flukso", IMP, limit=100))
        assert all(t in got for t in range(t0 + 11, t0 + 31)), sorted(got)  # resent, spooled, then ACKed

        # Full again when the daemon stops: it still stops cleanly and takes its rrdcached along.
        filler = fill(small_disk)
        board.step(t0 + 31, power_w=[1000.0], gauges=False)
        time.sleep(0.5)
        rig.daemon.request_stop()
        rig.thread.join(5)
        rig.daemon.close()
        assert pid_gone(rrdcached), "rrdcached outlived its daemon"
        filler.unlink()
    store = CounterStore(small_disk / "counters.sqlite")
    try:
        saved = store.total(IMP)
        assert saved is not None and saved >= board.ct[0][0] - 1000
    finally:
        store.close()


def test_a_daemon_started_on_a_full_disk_waits_for_space(small_disk: Path, short_tmp: Path) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, small_disk)
    t0 = int(time.time()) - 600
    with running_daemon(board, text, short_tmp):
        board.step(t0, power_w=[1000.0], gauges=False)
        assert board.wait_acked(10)
    filler = fill(small_disk)  # procd restarts the daemon onto a full disk
    board = FakeBoard(short_tmp)
    board.ct[0][0] = 1000 * 1000 // 3600
    board.appear()
    d = Daemon(parse_config(text, short_tmp / "gridtap.toml"))
    stop = threading.Event()

    def main() -> None:
        d.start(stop)
        d.run(stop)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not d.status()["storage"]["degraded"] and time.monotonic() < deadline:
            time.sleep(0.02)
        board.step(t0 + 10, power_w=[1000.0], gauges=False)
        time.sleep(1.0)
        assert thread.is_alive(), "the daemon gave up on a full disk"
        assert "counter store" in d.status()["storage"]["failing"]
        assert board.unacked() == 1
        filler.unlink()
        assert board.wait_acked(20), "the daemon did not start once space returned"
        assert d.store is not None and d.store.total(IMP) == board.ct[0][0]
        assert not d.status()["storage"]["degraded"]
    finally:
        d.request_stop()
        thread.join(10)
        d.close()
        board.close()


@pytest.mark.parametrize("damage", ["garbled", "truncated"])
def test_corrupt_counter_store_is_moved_aside_and_rebuilt(short_tmp: Path, damage: str) -> None:
    state = short_tmp / "state"
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, state)
    t0 = int(time.time()) - 600
    with running_daemon(board, text, short_tmp) as rig:
        for i in range(5):
            board.step(t0 + 10 * i, power_w=[2000.0], seconds=10, gauges=False)
        assert board.wait_acked(10)
        rig.wait_rrd(IMP, t0 + 40)
        before = rig.total(IMP)
    db = state / "counters.sqlite"
    if damage == "garbled":
        db.write_bytes(b"not a database, garbled by a power cut" * 200)
    else:
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2 + 100])
    board = FakeBoard(short_tmp, boot_count=1)
    board.ct[0][0] = before or 0
    board.appear()
    with running_daemon(board, text, short_tmp) as rig:
        board.step(t0 + 60, power_w=[2000.0], seconds=10, gauges=False)
        assert board.wait_acked(10)
        # Rebuilt from the board's registers: the total carries on from the register.
        assert rig.total(IMP) == board.ct[0][0]
        assert rig.daemon.status()["storage"]["rebuilt"] == ["counters"]
    aside = [p.name for p in state.iterdir() if p.name.startswith("counters.sqlite.corrupt-")]
    assert len(aside) == 1


def test_a_rebuilt_store_makes_no_point_of_a_resent_older_tuple(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuilt counter store continues from its RRD's last total; a tuple the board resends from
    before that time was mapped to that later total and spooled at its own, earlier stamp (the
    spool keeps the larger counter of a stamp), so PVOutput's status for an earlier interval carried
    energy from after its end (integrity campaign, corrupt_counters). It is ACKed and makes no point."""
    monkeypatch.setenv("GRIDTAP_TEST_FLUKSO_KEY", "00" * 16)
    state = short_tmp / "state"
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, state) + FLUKSO
    t0 = int(time.time()) - 600
    with running_daemon(board, text, short_tmp) as rig:
        assert rig.daemon.spool is not None
        rig.daemon.spool.commit_interval = 0.2
        rig.daemon.spool.aging = ()  # keep every point (Flukso is not reached): each stamp is checked
        for i in range(5):
            board.step(t0 + 10 * i, power_w=[3600.0], seconds=10, gauges=False)
        assert board.wait_acked(10)
        rig.wait_rrd(IMP, t0 + 40)
        last = rig.total(IMP)
    (state / "counters.sqlite").write_bytes(b"not a database, garbled by a power cut" * 200)
    board = FakeBoard(short_tmp, boot_count=1)
    board.ct[0][0] = last or 0
    board.appear()
    with running_daemon(board, text, short_tmp) as rig:
        spool = rig.daemon.spool
        assert spool is not None
        spool.commit_interval = 0.2
        spool.aging = ()
        before = dict(spool.pending("flukso", IMP, limit=100))
        old = t0 + 20
        reg = round(before[old] * 1000)  # mWh; 10 Wh a step: the seed (t0 + 40) is 20 Wh above it
        assert last is not None and reg == last - 20_000
        board.send(wire.COUNTER, (0, old, 0, reg // 1000, reg % 1000, 0, 0), True)  # resent
        assert board.wait_acked(10)
        board.step(t0 + 60, power_w=[3600.0], seconds=10, gauges=False)
        assert board.wait_acked(10)
        rig.wait(lambda: spool.pending("flukso", IMP, limit=100)[-1][0] == t0 + 60)
        after = dict(spool.pending("flukso", IMP, limit=100))
        assert after[old] == before[old] and rig.total(IMP) == board.ct[0][0]
        points = sorted(after.items())
        assert [c for _t, c in points] == sorted(c for _t, c in points)


def _page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big")


def test_corrupt_spool_keeps_its_readable_rows(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    t0 = 1_700_000_000
    with Spool(path, ["flukso"], commit_interval=0, aging=()) as sp:
        for sensor in (IMP, PULSE):
            for i in range(3000):
                sp.add(sensor, t0 + i, i * 10)
            sp.commit()
        sp.ack("flukso", PULSE, t0 + 99)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = _page_size(path)
    n_pages = path.stat().st_size // page
    raw = bytearray(path.read_bytes())
    victim = n_pages // 2  # one page in the middle of the points
    raw[victim * page : (victim + 1) * page] = b"\xff" * page
    path.write_bytes(bytes(raw))

    with Spool(path, ["flukso"], commit_interval=0, aging=()) as sp:
        imp = sp.pending("flukso", IMP, limit=10_000)
        pulse = sp.pending("flukso", PULSE, limit=10_000)
        kept = len(imp) + len(pulse)
        assert kept >= 5900 - 3 * 200, kept  # one page of points lost at most, not the whole spool
        assert all(c == (ts - t0) * 10 for ts, c in imp + pulse)  # salvaged rows are the true ones
        assert sp.acked_ts("flukso", PULSE) == t0 + 99  # the high-water mark survives: no re-upload
        assert all(ts > t0 + 99 for ts, _c in pulse)
    assert list(tmp_path.glob("spool.sqlite.corrupt-*"))


def test_a_spool_the_session_cannot_read_at_start_is_a_storage_fault(tmp_path: Path) -> None:
    """At start the session reads each series' newest spooled points (board/session.py, _take_up): a
    read that fails degrades the daemon (logged, counted, retried with the spool's commits) and the
    session starts from the counter store alone, instead of the daemon dying."""
    health = StorageHealth()
    sp = Spool(tmp_path / "spool.sqlite", ["flukso"], commit_interval=0, aging=())
    sp.add(IMP, 1_700_000_000, 1.0)
    sp.commit()
    assert GuardedSpool(sp, health).newest(IMP) == [(1_700_000_000, 1.0)]
    sp.close()  # a database that cannot be read
    assert GuardedSpool(sp, health).newest(IMP) == []
    assert "spool" in health.failing
