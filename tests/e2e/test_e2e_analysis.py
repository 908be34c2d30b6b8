"""The e2e comparison itself, on hand-made runs whose answer is known (fast; no processes)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gridtap.store.rrd import create_args
from tests.support.e2e.analysis import (
    Reference,
    Truth,
    firmware_finals,
    firmware_stage,
    flukso_check,
    host_reference,
    host_series,
    interp_register,
    late_stamped,
    pvoutput_check,
    rrd_rows,
    rrd_rows_check,
    series_reference,
)
from tests.support.e2e.simboard import TupleTap

SENSORS = (("load", "ct", 0, "b" * 32, None), ("meter", "pulse", 0, "c" * 32, None))


def _truth(n: int = 1000, dead: int = 500) -> Truth:
    imp = np.full((n, 1), 3600.0)     # 1 Wh every second
    imp[dead] = 0.0                   # the mains is off for this second
    arrays = {"e_imp_j": imp, "e_exp_j": np.zeros((n, 1)),
              "pulse_t_s": np.array([1.5, 3.2, dead + 0.8]), "pulse_input": np.array([0, 0, 0])}
    summary: dict[str, Any] = {"boots": [(0.0, 1), (dead + 1.0, 2)]}
    return Truth([(0.0, arrays, summary)], boot_s=0.3)


def _tuples(lost_mwh: int, n: int = 1000, dead: int = 500) -> list[dict[str, Any]]:
    out = []
    for s in range(1, n):
        if s in (dead, dead + 1):
            continue
        boot = 1 if s < dead else 2
        if s < dead:
            reg = s * 1000
        else:  # after the reset: the saved register (all of the energy up to the failure) minus a loss
            reg = dead * 1000 - lost_mwh + (s - dead - 1) * 1000
        out.append({"k": "c", "i": 0, "gt": float(s), "seg": 0, "boot": boot, "retx": 0, "imp": reg,
                    "exp": 0, "t": 1_700_000_000 + s, "ms": 0})
    out.append({"k": "p", "i": 0, "gt": 10.0, "seg": 0, "boot": 1, "retx": 0, "reg": 2000, "pulses": 2,
                "t": 1_700_000_010, "ms": 0})
    return out


def test_observable_truth_leaves_out_the_boot_window() -> None:
    tr = _truth()
    assert tr.energy(0.0, 10.0, 0, "imp") == pytest.approx(10_000.0)
    # the boot window [500.7, 501.0] lies in the dead second: nothing to subtract there;
    assert tr.energy(499.0, 502.0, 0, "imp") == pytest.approx(2000.0)
    assert tr.energy(2.25, 2.75, 0, "imp") == pytest.approx(500.0)
    # the third pulse starts while the board boots: no board could count it
    assert tr.pulses_between(0, -1.0, 1000.0) == 2


@pytest.mark.parametrize("lost", [0, 600, 1500])
def test_a_register_that_restarts_low_is_counted_as_firmware_loss(lost: int) -> None:
    res = firmware_stage(_tuples(lost), _truth(), SENSORS)
    row = res["b" * 32]
    assert row["resets"] == 1
    assert row["lost_wh"] == pytest.approx(lost / 1000.0, abs=0.01)
    assert res["c" * 32]["lost_wh"] == 0.0 and res["c" * 32]["extra_wh"] == 0.0


def test_resent_tuples_do_not_count_as_the_final_register() -> None:
    tuples = _tuples(0)
    last = max(t["imp"] for t in tuples if t["k"] == "c")
    tuples.append({"k": "c", "i": 0, "gt": 2000.0, "seg": 0, "boot": 2, "retx": 1, "imp": 5, "exp": 0,
                   "t": 1_700_000_003, "ms": 0})
    assert firmware_finals(tuples, SENSORS)["b" * 32] == last


def test_interpolation_uses_whole_second_stamps() -> None:
    tuples = _tuples(0)
    assert interp_register(tuples, "c", 0, "imp", 1_700_000_010.5) == pytest.approx(10_500.0)
    assert interp_register(tuples, "c", 0, "imp", 1_600_000_000.0) is None
    assert interp_register(tuples, "c", 0, "imp", 1_700_000_020.0) == 20_000.0  # a stamp on the instant
    # the tap keeps only the pair around a boundary (PULSE stamps are the last pulse's): linear between
    sparse = [t for t in tuples if t["k"] == "c" and t["gt"] in (5.0, 400.0)]
    assert interp_register(sparse, "c", 0, "imp", 1_700_000_100.0) == pytest.approx(100_000.0)


@pytest.mark.parametrize("lost", [0, 600, 3000])
def test_outputs_are_held_to_the_epoch_rule_not_to_a_register_that_fell(lost: int) -> None:
    tuples = _tuples(lost)
    final = firmware_finals(tuples, SENSORS)["b" * 32]
    ref = host_reference(tuples, SENSORS)["b" * 32]
    first_after = 500_000 - lost + 1_000  # the first tuple after the reset, one second into the boot
    if first_after < 499_000:  # the register restarted below its last value: the host keeps its total
        assert ref == final + (499_000 - first_after)
    else:                      # restored and carried on: the reference is the register itself
        assert ref == final


# ---- the time series (issue 13, finding 6) ------------------------------------------------------

T0 = 1_780_000_200  # a multiple of 300: PVOutput's and the RRD's grids start here
P_W = 1200.0        # a steady 1.2 kW: 20 Wh a minute


def _steady(minutes: int = 60, w: float = P_W) -> Reference:
    """Host totals (mWh) every second at a steady power."""
    return Reference([(float(T0 + s), int(s * w / 3.6)) for s in range(minutes * 60 + 1)])


def _rows(minutes: int = 60, w: float = P_W) -> dict[int, float | None]:
    return {T0 + 60 * m: w / 3.6 for m in range(1, minutes + 1)}   # rate in mWh/s


def test_rrd_rows_that_match_the_registers_pass() -> None:
    res = rrd_rows_check(_rows(), _steady())
    assert (res["rows_checked"], res["rows_missing"], res["rows_wrong"]) == (60, 0, 0)


def test_a_nan_hole_where_the_board_counted_is_found() -> None:
    rows = _rows()
    for m in range(20, 32):   # 12 minutes of NaN: what an orphaned rrdcached's cache leaves behind
        rows[T0 + 60 * m] = None
    res = rrd_rows_check(rows, _steady())
    assert res["rows_missing"] == 12
    assert res["holes"] == [(T0 + 60 * 19, T0 + 60 * 31)]
    # rows outside what the board reported are not the RRD's to fill
    early = {T0 - 60 * m: None for m in range(5)}
    assert rrd_rows_check({**_rows(), **early}, _steady())["rows_missing"] == 0


def test_a_row_off_the_registers_is_found() -> None:
    rows = _rows()
    rows[T0 + 600] = 2 * P_W / 3.6   # this minute says 40 Wh where the board counted 20
    res = rrd_rows_check(rows, _steady())
    assert res["rows_wrong"] == 1 and res["rows_missing"] == 0


def _statuses(ends: list[int], ref: Reference, minutes_avg: dict[int, int] | None = None
              ) -> dict[tuple[str, str], dict[str, str]]:
    """Statuses as the PVOutput server keeps them: v1 the lifetime Wh, v2 the power; minutes_avg
    makes a status average over that many minutes instead of its 5 (finding 5's bug)."""
    out = {}
    for end in ends:
        span = 60 * (minutes_avg or {}).get(end, 5)
        a, b = ref.at(end - span), ref.at(end)
        assert a is not None and b is not None
        out[_key(end)] = {
            "v1": str(round(b / 1000.0)), "v2": str(round((b - a) / 1000.0 * 3600.0 / span))}
    return out


def _key(end: int) -> tuple[str, str]:
    d = datetime.fromtimestamp(end, UTC)
    return d.strftime("%Y%m%d"), d.strftime("%H:%M")


def _ramp() -> Reference:
    """PV in the morning: power rising by 40 W a minute from 500 W (a status averaged over 10
    minutes instead of 5 is 6-7 % off, as in the issue)."""
    pts, total = [], 0.0
    for s in range(3601):
        pts.append((float(T0 + s), int(total)))
        total += (500.0 + 40.0 * (s // 60)) / 3.6
    return Reference(pts)


def test_pvoutput_statuses_on_their_grid_pass() -> None:
    ref = _ramp()
    ends = list(range(T0 + 300, T0 + 3601, 300))
    res = pvoutput_check(_statuses(ends, ref), {"v1": ref}, ("v2", ref), 300)
    assert (res["intervals_missing"], res["intervals_mislabelled"], res["energy_wrong"]) == (0, 0, 0)
    assert res["statuses_checked"] == 12


def test_a_ten_minute_status_labelled_five_minutes_is_found() -> None:
    ref = _ramp()
    ends = [e for e in range(T0 + 300, T0 + 3601, 300) if e != T0 + 1500]   # the daemon was down at 25 min
    st = _statuses(ends, ref, minutes_avg={T0 + 1800: 10})  # and folded its energy into the next status
    res = pvoutput_check(st, {"v1": ref}, ("v2", ref), 300)
    assert res["intervals_missing"] == 1 and res["missing_spans"] == [(T0 + 1200, T0 + 1500)]
    assert res["intervals_mislabelled"] == 1
    assert res["mislabelled_examples"][0]["end"] == T0 + 1800
    assert res["energy_wrong"] == 0   # the lifetime energy is right: only the series shows it
    # a board that sent nothing in that span: no uploader could know the power in time
    hushed = pvoutput_check(st, {"v1": ref}, ("v2", ref), 300, quiet=[(T0 + 1250.0, T0 + 1550.0)])
    assert hushed["intervals_missing"] == 0 and hushed["intervals_mislabelled"] == 0
    # the other form: ten minutes of energy over a five-minute span (413 W against a true 195 W)
    late = _key(T0 + 2400)
    st[late]["v2"] = str(2 * int(st[late]["v2"]))
    assert pvoutput_check(st, {"v1": ref}, ("v2", ref), 300)["intervals_mislabelled"] == 2


def test_a_wrong_energy_in_a_status_is_found() -> None:
    ref = _ramp()
    st = _statuses(list(range(T0 + 300, T0 + 3601, 300)), ref)
    key = min(st)
    st[key]["v1"] = str(float(st[key]["v1"]) + 4_294_967)   # 0xFFFFFFFF mWh stored as a step
    res = pvoutput_check(st, {"v1": ref}, ("v2", ref), 300)
    assert res["energy_wrong"] == 1


def test_flukso_points_are_held_to_the_registers_around_them() -> None:
    ref = _steady(10)
    good = [(T0 + s, int(s * P_W / 3600.0)) for s in range(1, 600, 7)]
    assert flukso_check(good, ref)["points_wrong"] == 0
    bad = [*good[:10], (good[10][0], good[10][1] + 4_294_967), *good[11:]]
    res = flukso_check(bad, ref)
    assert res["points_wrong"] == 2   # the implausible point, and the next one going back from it
    assert flukso_check([(T0 + 5, 1), (T0 + 4, 1)], ref)["points_wrong"] == 1
    assert flukso_check([(T0 - 50, 0)], ref)["points_wrong"] == 1   # a stamp before any tuple


def test_a_nan_hole_in_a_real_rrd_is_found(tmp_path: Path) -> None:
    """rrd_rows reads a file made as the daemon makes it; unknown updates in the middle (what an
    update lost between two rrdcacheds leaves) show as NaN rows where the board counted."""
    p = tmp_path / "s.rrd"
    subprocess.run(create_args(p, T0 - 10), check=True, capture_output=True)
    ref = _steady(60)
    ups = [f"{T0 + s}:{'U' if 1200 <= s < 1800 else int(s * P_W / 3.6)}" for s in range(10, 3601, 10)]
    for i in range(0, len(ups), 50):
        subprocess.run(["rrdtool", "update", str(p), *ups[i:i + 50]], check=True, capture_output=True)
    rows = rrd_rows(p)
    assert max(rows) == T0 + 3600 and len(rows) >= 59
    res = rrd_rows_check(rows, ref)
    assert res["rows_missing"] >= 9 and res["holes"][0][0] >= T0 + 1200 - 60
    whole = {t: v for t, v in rows.items() if not T0 + 1200 <= t <= T0 + 1860}
    assert rrd_rows_check(whole, ref)["rows_missing"] == 0


def _stepped_back(step_s: int = 8, at: int = 100, n: int = 200) -> list[dict[str, Any]]:
    """1 Wh a second; the board clock runs step_s ahead until a TIME_SET sets it back after `at`."""
    base = 1_700_000_000
    return [{"k": "c", "i": 0, "gt": float(s), "seg": 0, "boot": 1, "retx": 0, "imp": s * 1000, "exp": 0,
             "t": base + s + (step_s if s <= at else 0), "ms": 0} for s in range(1, n + 1)]


def test_a_board_clock_set_back_gives_a_reference_that_only_grows() -> None:
    """After a TIME_SET moves the board clock back, the next readings carry higher registers under
    stamps before the newest one. The daemon places them right after the newest reading; the
    reference kept their own stamps, and sorted by stamp it went back and forth, so the e2e day
    found Flukso points and PVOutput statuses off it differently from run to run."""
    tuples = _stepped_back()
    ser = host_series(tuples, "c", 0, "imp")
    ref = Reference(ser)
    assert ref.ts == sorted(ref.ts) and ref.vs == sorted(ref.vs)
    base = 1_700_000_000
    assert ser == ([(float(base + s + 8), s * 1000) for s in range(1, 101)]
                   + [(float(base + 108), s * 1000) for s in range(101, 109)]  # placed after the newest
                   + [(float(base + s), s * 1000) for s in range(109, 201)])
    assert host_reference(tuples, SENSORS)["b" * 32] == 200_000  # no energy lost or doubled
    # What the daemon uploads: a point per reading, a late one at the newest second; the spool keeps
    # the highest of a second, and the uploader may have sent an earlier one of it.
    newest = 0
    points = []
    for r in tuples:
        newest = max(newest, r["t"])
        points.append((newest, r["imp"] // 1000))
    sent = [p for n, p in enumerate(points) if n + 1 == len(points) or points[n + 1][0] > p[0]]
    assert flukso_check(sent, ref)["points_wrong"] == 0
    early = [*sent[:99], (base + 108, 100), *sent[100:]]  # that second uploaded before the rest came
    assert flukso_check(early, ref)["points_wrong"] == 0
    # A status at a boundary inside the overlap carries the total the spool's points interpolate.
    assert ref.at(base + 105.0) == pytest.approx(97_000.0)
    assert ref.at(base + 108.5) == pytest.approx(108_500.0)
    # A refused reading (stamped more than a minute before the newest) does not move the total either.
    far = Reference(host_series(_stepped_back(step_s=90), "c", 0, "imp"))
    assert far.vs == sorted(far.vs) and far.vs[-1] == 200_000


def test_the_tap_writes_every_tuple_around_a_board_clock_set_back() -> None:
    """The tap keeps only the tuples around each minute boundary; across a TIME_SET that set the board
    clock back it dropped the newest tuple and the late ones after it, so the reference could not
    know where the daemon places them. It writes them all, and still thins the steady stretches."""
    got: list[dict[str, Any]] = []
    tap = TupleTap(got.append)
    tap.hello(1)
    for r in _stepped_back(step_s=8, at=100, n=200):
        if r["gt"] == 102.0:
            tap.hello(1)   # the daemon restarted and asked for a HELLO: the same boot
        tap.tuple(r)
    tap.flush()
    written = [r["gt"] for r in got]
    assert written == sorted(written) and len(written) < 40
    assert {float(s) for s in range(100, 109)} <= set(written)   # the newest, the late ones, the next
    thin = Reference(host_series(got, "c", 0, "imp"))
    full = Reference(host_series(_stepped_back(), "c", 0, "imp"))
    assert thin.vs[-1] == full.vs[-1] == 200_000
    assert thin.at(1_700_000_108.0) == full.at(1_700_000_108.0) == 108_000
    assert full.bracket(1_700_000_108.0) == (100_000, 109_000)   # any reading placed in that second
    assert (thin.bracket(1_700_000_108.0) or (0, 0))[0] == 100_000


def test_late_stamped_tuples_are_counted_per_series_and_boot() -> None:
    tuples = _stepped_back()
    assert late_stamped(tuples) == 7   # 101..107 stamped before the newest (108)
    assert late_stamped(_tuples(0)) == 0


def test_a_stage_that_got_the_late_readings_first_keeps_their_stamps() -> None:
    """A daemon that was down across the step gets the newest reading before it only as a resend,
    after the late ones: it drops that one and keeps the late ones at their own stamps. Both are
    right; any total up to a late reading's is accepted between its stamp and the newest."""
    tuples = _stepped_back()
    ref = series_reference(tuples, "c", 0, "imp")
    base = 1_700_000_000
    seen = [(base + s + 8, s) for s in range(1, 93)] + [(base + s, s) for s in range(101, 201)]
    assert flukso_check(seen, ref)["points_wrong"] == 0
    assert flukso_check(seen, Reference(host_series(tuples, "c", 0, "imp")))["points_wrong"] > 0
    assert flukso_check([(base + 95, 150)], ref)["points_wrong"] == 1   # beyond any late reading
