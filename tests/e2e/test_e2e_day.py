"""`make test`'s end-to-end proof: the whole chain under one fault of each kind (docs/e2e.md).

The board, the daemon, rrdcached, mosquitto and both upload servers run as in
`make soak`, over a shorter span: GRIDTAP_E2E_SIM_S simulated seconds (default
one day, 4-6 minutes at the chain's 200-300x on this machine; `make soak` runs
a month).

Every stage must end on the firmware's last register within the documented
rounding, the pulse inputs must match the recorded pulses exactly, and a CT
register may not lose energy across a reset. Two integration bugs found by
this harness are known (docs/e2e.md "Findings"); when only they show up the
test reports xfail with the evidence instead of hiding it, and anything else fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.e2e.harness import day_plan, run

SIM_S = float(os.environ.get("GRIDTAP_E2E_SIM_S", "86400"))

# stage -> why a difference there is a known, open bug (reported to the lead; docs/e2e.md "Findings").
# Finding 5 (a lost HELLO double counts) shows up only when a burst hits the HELLO; it is pinned in
# test_e2e_findings.py and deliberately not tolerated here.
KNOWN: dict[str, str] = {}


@pytest.mark.slow
def test_whole_chain_loses_no_wh_under_one_fault_of_each_kind(tmp_path: Path) -> None:
    plan = day_plan(sim_s=SIM_S, seed=7, outage_s=min(4 * 3600.0, SIM_S / 8))
    plan.wall_limit_s = 1200.0
    plan.settle_wall_s = 60.0
    res = run(plan, tmp_path / "e2e", keep=True)
    what = [e["what"] for e in res["events"]]
    assert what.count("daemon kill -9") == 2
    assert "daemon now owns its rrdcached" in what and res["kills_own_rrdcached"] == 1
    assert "upload servers down" in what and "upload servers up" in what
    assert "broker restarted" in what and "rrdcached restarted" in what
    assert what.count("board started") == 2  # the board reset: a second simulator process from the EEPROM
    boards = res["board"]
    assert sum(b["brownouts"] for b in boards) >= 3  # the planned brownout, its flicker, the unplug
    assert sum(b["brownouts_in_eeprom_write"] for b in boards) >= 1  # the flicker hit the boot record write
    assert boards[0]["uart"]["from_board"]["bits_flipped"] > 0  # the burst happened
    assert res["late_stamped_tuples"] > 0  # the fast board clock was set back (TIME_SET) at least once
    per = res["per_series"]
    assert len(per) == 7
    for row in per.values():
        fw = row["firmware"]
        if "pulses" in fw:  # S0 inputs: exact
            lo, hi = fw["truth_pulses"]
            assert lo <= fw["pulses"] <= hi, row
            assert fw["register_matches_pulses"], row
    assert res["settle"]["flukso_ok"], res["settle"]
    unknown = [f for f in res["failures"] if not any(f" {stage}:" in f for stage in KNOWN)]
    assert not unknown, f"{unknown}; details in {tmp_path / 'e2e' / 'result.json'}"
    if res["failures"]:
        stages = sorted({stage for f in res["failures"] for stage in KNOWN if f" {stage}:" in f})
        pytest.xfail("known: " + "; ".join(KNOWN[s] for s in stages) + " -- " + "; ".join(res["failures"]))
