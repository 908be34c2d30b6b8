"""S0 pulses with contact bounce at up to 10 Hz on both inputs: zero miscounts against the truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hil.campaigns import pulses

pytestmark = pytest.mark.usefixtures("virtual_only")


def test_every_pulse_counted_once(tmp_path: Path, long_run: bool) -> None:
    n = 100_000 if long_run else 3_000
    res = pulses(tmp_path, n)
    assert res.pulses_true >= n
    # every PULSE tuple's count equals the true pulses up to its stamp, and the totals agree
    assert res.tuples > res.pulses_true / 20
    assert res.tuples_wrong == 0
    assert res.pulses_counted == res.pulses_true
    assert res.miscounts == 0
