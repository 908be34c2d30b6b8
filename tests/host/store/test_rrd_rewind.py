"""An RRD whose last update a clock running ahead put in the future is moved back (gridtap.store.rrd)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gridtap.store.rrd import RrdStore, rrdtool_exe
from gridtap.store.rrdbatch import BatchedRrdStore

SID = "e" * 32
T0 = 1_790_000_000 - 1_790_000_000 % 3600
AHEAD = 1200  # within the 10 s archive's hour, so the rows before the rewind are still there


@pytest.mark.parametrize("batched", [False, True], ids=["rrdtool", "batched"])
def test_rewind_drops_the_rows_after_it_and_takes_updates_from_there(tmp_path: Path, batched: bool) -> None:
    # rrdtool on the file itself, or the batched writer (values held up to an hour) of a router
    # without rrdcached, whose held values stamped ahead must not put the file back in the future
    rrd = BatchedRrdStore(tmp_path, 3600) if batched else RrdStore(tmp_path, None)
    for i in range(1, 31):  # 1 mWh/s for 300 s, then 2 mWh/s stamped 20 minutes ahead
        assert rrd.update(SID, T0 + 10 * i, 10 * i)
    rrd.flush_all()
    for i in range(1, 31):
        assert rrd.update(SID, T0 + AHEAD + 10 * i, 300 + 20 * i)
    assert not rrd.update(SID, T0 + 310, 1000)  # older than the last update: refused
    assert rrd.rewind(SID, T0 + 300)
    assert not rrd.rewind(SID, T0 + 300)  # nothing after it any more
    last = subprocess.run([rrdtool_exe(), "last", str(rrd.path(SID))], capture_output=True, text=True)
    assert int(last.stdout) == T0 + 300
    for i in range(1, 31):  # the corrected clock's readings: 3 mWh/s, counter on from the last one (900)
        assert rrd.update(SID, T0 + 300 + 10 * i, 900 + 30 * i)
    assert rrd.flush_all()
    got = rrd.fetch(SID, "AVERAGE", T0, T0 + 600, 10).values
    rates = {t: v for t, v in got if T0 < t <= T0 + 600}
    assert all(rates[T0 + 10 * i] == 1.0 for i in range(2, 31))  # kept
    # the counter carries on from the last one written, so the new readings' rate is exact. Written
    # rows stamped ahead (and their 600 mWh) are gone from the RRD, the counter store keeps the total;
    # values the batched writer still held never reached the file, so their energy lands in the
    # first step after the rewind
    assert rates[T0 + 310] == (63.0 if batched else 3.0)
    assert all(rates[T0 + 300 + 10 * i] == 3.0 for i in range(2, 31))
    ahead = rrd.fetch(SID, "AVERAGE", T0 + AHEAD + 10, T0 + AHEAD + 300, 10).values
    assert [v for t, v in ahead if T0 + 600 < t] and all(v is None for t, v in ahead if T0 + 600 < t)
