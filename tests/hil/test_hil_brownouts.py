"""Mains failures at random instants: the counters across every reboot, against the truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hil.campaigns import brownouts

pytestmark = pytest.mark.usefixtures("virtual_only")


def test_brownouts_within_the_holdup_budget(tmp_path: Path, long_run: bool) -> None:
    """board.json's 120 ms hold-up: every brownout save completes, nothing goes backwards."""
    n = 200 if long_run else 6
    res = brownouts(tmp_path, n, seed=1)
    assert res.outages >= n and res.boots == res.outages + 1
    assert res.torn_pages == 0
    assert res.decreases == 0
    assert res.fresh_starts == 0
    assert res.over_truth == 0
    # No Wh lost: what remains is the scoring's own resolution, one 10 ms ADC block of the
    # largest load per outage (where a register's instant is known from) plus 1 mWh.
    assert res.wh_lost_per_outage_max <= 0.015 * res.second_wh_max + 0.002
    assert res.wh_lost <= 0.001 * res.outages
    # the reactive pair too: each boot starts its Q+/Q- where the last one's reports ended
    assert res.q_max_varh > 0.1 and res.q_decreases == 0 and res.q_restarts == 0, res.problems


def test_power_dies_during_eeprom_writes(tmp_path: Path, long_run: bool) -> None:
    """A 6 ms hold-up (the save needs 15 ms) and a save every Wh: pages are torn mid-write.

    Then the board must fall back to an intact older record: never accept a
    torn one (no value above the truth), never start from zero, and lose no
    more than the save policy allows (1 Wh) plus the second in progress.
    """
    n = 200 if long_run else 6
    res = brownouts(tmp_path, n, seed=2, holdup_ms=6.0, save_wh=1)
    assert res.torn_pages >= 2
    assert res.over_truth == 0
    assert res.fresh_starts == 0
    assert res.wh_lost_per_outage_max <= 1.0 + res.second_wh_max * 1.05 + 0.002
    # Q+/Q- fall back with the record they are in (the policy saves every varh too), never to 0
    assert res.q_max_varh > 0.1 and res.q_restarts == 0, res.problems
    assert res.varh_lost_per_outage_max <= 1.0 + res.second_varh_max * 1.05 + 0.002, res.problems
