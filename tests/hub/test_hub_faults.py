"""kill -9 of the hub and of the MQTT ingester, PostgreSQL and broker restarts, a home offline for
hours: no point lost, none doubled (a short run; bench/bench_hub.py runs one with a day offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hub.faultrun import run


@pytest.mark.slow
def test_no_point_lost_or_doubled_across_faults(tmp_path: Path) -> None:
    out = run(tmp_path, http_homes=4, rounds=15, offline_s=6 * 3600, mqtt_points=30)
    assert len(out.faults) == 5
    assert out.generated > 5 * 6 * 360  # the hours offline alone
    assert (out.lost, out.doubled) == (0, 0), out
    assert out.stored == out.generated
