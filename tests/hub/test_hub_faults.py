"""kill -9 of the hub and of the MQTT ingester, PostgreSQL and broker restarts, a home offline for a
day: no point lost, none doubled (a short run; bench/bench_hub.py runs a longer one)."""

from __future__ import annotations

from pathlib import Path

from tests.hub.faultrun import run


def test_no_point_lost_or_doubled_across_faults(tmp_path: Path) -> None:
    out = run(tmp_path, http_homes=4, rounds=15, mqtt_points=30)
    assert len(out.faults) == 5
    assert out.generated > 5 * 8640  # the day offline alone
    assert (out.lost, out.doubled) == (0, 0), out
    assert out.stored == out.generated
