"""The durable spool: batching, the ACK rule, aging, kill -9 and power-loss recovery."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.store.spool import FLUKSO_AGING, MIN_TS, Spool, check_aging
from tests.support.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000
S1 = "1994ad6054785f2db8f726086c486ca9"
S2 = "c1411c6b4f9910bbbab09f145f8533b9"


def test_only_committed_points_are_pending_and_tokens_come_back_in_order(tmp_path: Path) -> None:
    seen: list[list[object]] = []
    sp = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=(), on_commit=seen.append)
    sp.add(S1, T0, 100, token=7)
    sp.add(S1, T0 + 10, 105, token=8)
    sp.add(S2, T0 + 5, 3.5)
    assert sp.pending("flukso", S1) == []
    assert sp.uncommitted() == 3
    assert sp.commit() == [7, 8]
    assert seen == [[7, 8]]
    assert sp.uncommitted() == 0
    for dest in ("flukso", "pvoutput"):
        assert sp.pending(dest, S1) == [(T0, 100), (T0 + 10, 105)]
        assert sp.pending(dest, S2) == [(T0 + 5, 3.5)]
        assert sp.sensors(dest) == sorted([S1, S2])
    sp.close()


def test_commit_is_bounded_by_age_and_size(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=(), commit_interval=30, commit_points=5, clock=clock)
    sp.add(S1, T0, 1, token=1)
    assert not sp.commit_due() and sp.maybe_commit() == []
    clock.t += 29.9
    sp.add(S1, T0 + 1, 2, token=2)
    assert sp.maybe_commit() == []
    clock.t += 0.1
    assert sp.maybe_commit() == [1, 2]
    for i in range(4):
        sp.add(S1, T0 + 10 + i, 10 + i, token=10 + i)
        assert sp.maybe_commit() == []
    sp.add(S1, T0 + 20, 20, token=20)
    assert sp.maybe_commit() == [10, 11, 12, 13, 20]
    assert sp.commits == 2
    sp.close()


def test_ack_clears_one_destination_and_sets_a_high_water_mark(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=())
    for i in range(5):
        sp.add(S1, T0 + i, 10 * i)
    sp.commit()
    assert sp.ack("flukso", S1, T0 + 2) == 3
    assert sp.pending("flukso", S1) == [(T0 + 3, 30), (T0 + 4, 40)]
    assert len(sp.pending("pvoutput", S1)) == 5
    # the board replays tuples the server already has: they are not queued again
    sp.add(S1, T0 + 1, 10)
    sp.add(S1, T0 + 5, 50)
    sp.commit()
    assert sp.pending("flukso", S1) == [(T0 + 3, 30), (T0 + 4, 40), (T0 + 5, 50)]
    assert sp.acked_ts("flukso", S1) == T0 + 2
    # an older ack never lowers the mark
    sp.ack("flukso", S1, T0)
    assert sp.acked_ts("flukso", S1) == T0 + 2
    sp.close()
    # the mark is durable
    sp2 = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=())
    assert sp2.acked_ts("flukso", S1) == T0 + 2
    sp2.add(S1, T0 + 2, 20)
    sp2.commit()
    assert sp2.pending("flukso", S1)[0] == (T0 + 3, 30)
    sp2.close()


def test_same_timestamp_keeps_the_higher_counter(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    sp.add(S1, T0, 10)
    sp.commit()
    sp.add(S1, T0, 12)
    sp.add(S1, T0, 11)
    sp.commit()
    assert sp.pending("flukso", S1) == [(T0, 12)]
    sp.close()


def test_newest_is_the_newest_committed_points_any_destination_still_holds(tmp_path: Path) -> None:
    """What a restarted daemon takes up from (board/session.py): committed points only, a second's
    highest counter, the newest first, whichever destination still holds them."""
    sp = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=())
    assert sp.newest(S1) == []
    for i, c in enumerate((10, 20, 30)):
        sp.add(S1, T0 + i, c)
    sp.add(S2, T0 + 9, 5)
    sp.commit()
    sp.add(S1, T0 + 2, 35)   # placed in the newest second: the higher counter stands
    sp.commit()
    sp.add(S1, T0 + 3, 40)   # not committed: the board still holds it
    assert sp.newest(S1) == [(T0 + 2, 35), (T0 + 1, 20)]
    sp.ack("flukso", S1, T0 + 2)   # uploaded to one destination: the other still holds them
    assert sp.newest(S1, 3) == [(T0 + 2, 35), (T0 + 1, 20), (T0, 10)]
    sp.ack("pvoutput", S1, T0 + 1)
    assert sp.newest(S1) == [(T0 + 2, 35)]
    sp.close()


def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"])
    with pytest.raises(ValueError, match="clock is not set"):
        sp.add(S1, MIN_TS, 1)
    with pytest.raises(ValueError, match="integer Unix seconds"):
        sp.add(S1, T0 + 0.5, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        sp.add(S1, T0, float("nan"))
    with pytest.raises(ValueError, match="must be a number"):
        sp.add(S1, T0, "12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sensor id"):
        sp.add("", T0, 1)
    with pytest.raises(ValueError, match="unknown destination 'pvoutput'"):
        sp.pending("pvoutput", S1)
    with pytest.raises(ValueError, match="span must be"):
        check_aging([(0, 10)])
    with pytest.raises(ValueError, match="duplicate destination"):
        Spool(tmp_path / "t.db", ["a", "a"])
    assert sp.uncommitted() == 0
    sp.close()


def test_a_failed_commit_keeps_the_batch_and_acks_nothing(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    sp.add(S1, T0, 1, token=1)
    sp.commit()
    # another process holds the write lock: the commit fails with "database is locked"
    other = sqlite3.connect(str(tmp_path / "s.db"), timeout=0)
    other.execute("BEGIN IMMEDIATE")
    sp._db.execute("PRAGMA busy_timeout=0")
    sp.add(S1, T0 + 1, 2, token=2)
    with pytest.raises(sqlite3.OperationalError):
        sp.commit()
    assert sp.uncommitted() == 1
    other.execute("ROLLBACK")
    other.close()
    assert sp.commit() == [2]
    assert sp.pending("flukso", S1) == [(T0, 1), (T0 + 1, 2)]
    sp.close()


# -- aging -------------------------------------------------------------------

def reference_buckets(points: Sequence[tuple[int, object]], span: int, lo: int,
                      hi: int) -> dict[int, list[int]]:
    """Timestamps of points with lo <= ts < hi, grouped by floor(ts / span)."""
    out: dict[int, list[int]] = {}
    for ts, _c in points:
        if lo <= ts < hi:
            out.setdefault(ts // span, []).append(ts)
    return out


@settings(max_examples=25, deadline=None)
@given(gaps=st.lists(st.integers(1, 4000), min_size=1, max_size=300),
       steps=st.lists(st.integers(0, 50), min_size=300, max_size=300),
       back=st.integers(0, 300_000))
def test_aging_keeps_first_and_last_per_bucket_so_energy_is_exact(
        tmp_path_factory: pytest.TempPathFactory, gaps: list[int], steps: list[int], back: int) -> None:
    ts, counter = T0, 0
    points = []
    for g, s in zip(gaps, steps, strict=False):
        ts += g
        counter += s
        points.append((ts, counter))
    now = ts + back
    sp = Spool(tmp_path_factory.mktemp("age") / "s.db", ["flukso"], wall_clock=lambda: float(now))
    for p in points:
        sp.add(S1, *p)
    sp.commit()
    sp.age(now)
    kept = sp.pending("flukso", S1, limit=10_000)
    sp.close()
    kept_ts = {t for t, _ in kept}
    assert set(kept) <= set(points)
    assert kept[0] == points[0] and kept[-1] == points[-1]
    cuts = [now - off for _span, off in FLUKSO_AGING]
    for i, (span, _off) in enumerate(FLUKSO_AGING):
        # at most two points per bucket wherever the filter applies
        for members in reference_buckets(kept, span, 0, cuts[i]).values():
            assert len(members) <= 2
        # every bucket that no coarser filter reaches keeps its first and last point,
        # so its energy (last - first counter) is exactly what the board measured
        lo = cuts[i + 1] if i + 1 < len(cuts) else 0
        full = reference_buckets(points, span, 0, 2**62)
        for b, members in full.items():
            if b * span >= lo:
                assert members[0] in kept_ts and members[-1] in kept_ts
    # points too recent for any filter are all kept
    assert {p for p in points if p[0] >= now} <= set(kept)


def test_a_long_outage_shrinks_to_the_flukso_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    wall = FakeClock(float(T0))
    sp = Spool(tmp_path / "s.db", ["flukso"], commit_interval=3600, age_interval=60, clock=clock,
               wall_clock=wall)
    counter = 0
    first = (T0, 0)
    days = 2
    for i in range(days * 86400 // 10):
        ts = T0 + 10 * i
        counter += 3 + (i * 7919) % 5
        clock.t = wall.t = float(ts)
        sp.add(S1, ts, counter)
        sp.maybe_commit()
        if i == 0:
            first = (ts, counter)
    sp.commit()
    sp.age(wall.t)
    kept = sp.pending("flukso", S1, limit=100_000)
    sp.close()
    # last 2 h: two per minute; 2 h..48 h: two per quarter hour; older: two per day (+ bucket edges)
    budget = 2 * (7200 // 60 + 1) + 2 * ((172800 - 7200) // 900 + 1) + 2 * (days + 1)
    assert len(kept) <= budget
    assert kept[0] == first and kept[-1] == (ts, counter)


# -- crash and power loss ------------------------------------------------------

DAEMON = textwrap.dedent("""
    import sys
    from gridtap.store.spool import Spool
    sp = Spool(sys.argv[1], ["flukso"], aging=(), commit_interval=3600, commit_points=int(sys.argv[2]))
    for line in sys.stdin:
        seq, ts, counter = (int(x) for x in line.split())
        sp.add("%s", ts, counter, token=seq)
        for tok in sp.maybe_commit():
            sys.stdout.write("%%d\\n" %% tok)
        sys.stdout.flush()
    for tok in sp.close():
        sys.stdout.write("%%d\\n" %% tok)
""" % S1)


def run_daemon(db: Path, lines: list[str], kill_after_acks: int | None, commit_points: int) -> list[int]:
    """Feed tuples to a daemon process; return the ACKs it sent before it died or ended."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "firmware")]))
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(db), str(commit_points)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    acks: list[int] = []
    try:
        if kill_after_acks is None:
            out, _ = proc.communicate("".join(lines), timeout=60)
            return [int(x) for x in out.split()]
        for line in lines:
            proc.stdin.write(line)
        proc.stdin.flush()
        while len(acks) < kill_after_acks:
            got = proc.stdout.readline()
            assert got, "daemon ended early"
            acks.append(int(got))
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is still reading and committing
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        return acks
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_9_loses_no_acked_point_and_the_board_ring_refills_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    rng = random.Random(5)
    tuples = {}
    counter = 0
    for seq in range(4000):
        counter += rng.randint(0, 9)
        tuples[seq] = (T0 + 10 * seq, counter)
    ring = dict(tuples)  # the board keeps every tuple until the host ACKs it

    def lines(seqs: list[int]) -> list[str]:
        return ["%d %d %d\n" % (s, *tuples[s]) for s in seqs]

    acked_total: set[int] = set()
    for kill_at in (700, 900):
        acks = run_daemon(db, lines(sorted(ring)), kill_after_acks=kill_at, commit_points=37)
        # everything the dead daemon ACKed is on disk
        sp = Spool(db, ["flukso"], aging=())
        on_disk = dict(sp.pending("flukso", S1, limit=100_000))
        sp.close()
        for seq in acks:
            assert on_disk[tuples[seq][0]] == tuples[seq][1]
        acked_total.update(acks)
        for seq in acks:
            ring.pop(seq)
    assert ring, "the kills must leave unACKed tuples in the ring"
    # the board resends its ring to the restarted daemon, which now runs to the end
    acks = run_daemon(db, lines(sorted(ring)), kill_after_acks=None, commit_points=37)
    assert set(acks) == set(ring)
    sp = Spool(db, ["flukso"], aging=())
    final = sp.pending("flukso", S1, limit=100_000)
    sp.close()
    assert final == sorted(tuples.values())


def test_power_loss_leaves_whole_commits_only(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    sp = Spool(db, ["flukso"], aging=())
    commits: list[set[tuple[int, int]]] = [set()]
    for c in range(12):
        batch = {(T0 + 100 * c + i, 1000 * c + i) for i in range(40)}
        for p in sorted(batch):
            sp.add(S1, *p)
        sp.commit()
        commits.append(commits[-1] | batch)
    wal = Path(str(db) + "-wal")
    assert wal.stat().st_size > 0
    image_db, image_wal = db.read_bytes(), wal.read_bytes()
    sp.close()
    rng = random.Random(11)
    cuts = sorted({0, len(image_wal)} | {rng.randrange(len(image_wal)) for _ in range(25)})
    for n, cut in enumerate(cuts):
        d = tmp_path / f"cut{n}"
        d.mkdir()
        (d / "s.db").write_bytes(image_db)
        tail = image_wal[:cut]
        if n % 2:  # a torn sector: garbage after the cut instead of nothing
            tail += bytes(rng.randrange(256) for _ in range(min(600, len(image_wal) - cut)))
        (d / "s.db-wal").write_bytes(tail)
        got = Spool(d / "s.db", ["flukso"], aging=())
        pts = set(got.pending("flukso", S1, limit=100_000))
        got.close()
        assert pts in commits, f"cut at {cut} of {len(image_wal)} left a partial commit"
        if cut == len(image_wal):
            assert pts == commits[-1]
        shutil.rmtree(d)


def test_an_unreadable_file_is_moved_aside_and_metering_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not a database" * 400)
    sp = Spool(db, ["flukso"], wall_clock=lambda: float(T0))
    sp.add(S1, T0, 1)
    sp.commit()
    assert sp.pending("flukso", S1) == [(T0, 1)]
    sp.close()
    aside = tmp_path / f"s.db.corrupt-{T0}"
    assert aside.read_bytes().startswith(b"this is not a database")


def test_a_readers_sync_hands_its_tokens_to_the_acking_thread(tmp_path: Path) -> None:
    """An uploader may commit before closing an interval; the board's ACKs must still go out."""
    sp = Spool(tmp_path / "s.db", ["flukso", "pvoutput"], aging=(), commit_interval=3600.0)
    sp.add("a", MIN_TS + 10, 1, token=7)
    sp.add("a", MIN_TS + 20, 2, token=8)
    sp.sync()
    assert sp.pending("pvoutput", "a", after=MIN_TS + 10) == [(MIN_TS + 20, 2)]
    assert sp.commit_deadline() is not None      # the ingest loop wakes to ACK them
    assert sp.maybe_commit() == [7, 8]
    assert sp.maybe_commit() == [] and sp.commit_deadline() is None
    sp.close()
