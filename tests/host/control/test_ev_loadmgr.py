"""The load manager and the charging rules, without a network (gridtap.control.ev)."""

from __future__ import annotations

import math
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.control.ev.charging import ChargeRule
from gridtap.control.ev.controller import BoxMeasure, BoxPlan, Controller
from gridtap.control.ev.loadmgr import BoxInput, BoxSpec, LoadManager

BOXES = [BoxSpec("a", max_a=16), BoxSpec("b", max_a=16), BoxSpec("c", max_a=16)]


def lm(**kw: object) -> LoadManager:
    return LoadManager(BOXES, 25.0, min_on_s=0, min_off_s=0, **kw)  # type: ignore[arg-type]


def test_three_boxes_share_a_25_a_connection_fairly() -> None:
    g = lm().step(0, 0.0, {n: BoxInput(True, 16.0) for n in "abc"})
    assert [g[n].amps for n in "abc"] == [8.3, 8.3, 8.3]


def test_house_load_leaves_room_for_two_and_the_newest_pauses() -> None:
    m = lm()
    m.step(0, 0.0, {"a": BoxInput(True, 16.0)})
    m.step(1, 0.0, {"a": BoxInput(True, 16.0, 16.0), "b": BoxInput(True, 16.0)})
    now = {"a": BoxInput(True, 16.0, 12.5), "b": BoxInput(True, 16.0, 9.0), "c": BoxInput(True, 16.0)}
    g = m.step(2, 10.0, now)
    assert g["a"].amps == 7.5 and g["b"].amps == 7.5 and g["c"].amps == 0.0


def test_a_wish_below_the_minimum_pauses_and_nan_or_negative_pause_with_a_log() -> None:
    logs: list[str] = []
    m = LoadManager(BOXES, 25.0, min_on_s=0, min_off_s=0, log=logs.append)
    g = m.step(0, 0.0, {"a": BoxInput(True, 5.9), "b": BoxInput(True, math.nan), "c": BoxInput(True, -3.0)})
    assert all(g[n].amps == 0 for n in "abc")
    assert sum("pausing" in s for s in logs) == 2


def test_hysteresis_and_dwell_keep_a_cloud_from_cycling_the_contactor() -> None:
    m = LoadManager(BOXES[:1], 25.0, hysteresis_a=1.0, min_on_s=300, min_off_s=300)
    assert m.step(0, 0, {"a": BoxInput(True, 6.5)})["a"].amps == 0        # below min + hysteresis
    assert m.step(10, 0, {"a": BoxInput(True, 8.0)})["a"].amps == 8.0
    for t in range(20, 300, 10):                                             # a cloud: held at the minimum
        assert m.step(t, 0, {"a": BoxInput(True, 2.0)})["a"].amps == 6.0
    assert m.step(320, 0, {"a": BoxInput(True, 2.0)})["a"].amps == 0.0
    assert m.step(400, 0, {"a": BoxInput(True, 12.0)})["a"].amps == 0.0    # min_off_s not over
    assert m.step(630, 0, {"a": BoxInput(True, 12.0)})["a"].amps == 12.0
    assert m.cycles == 2


def test_one_phase_when_the_surplus_is_too_small_for_three() -> None:
    m = LoadManager([BoxSpec("a", switch_phases=True)], 25.0, min_on_s=0, min_off_s=0)
    g = m.step(0, 0, {"a": BoxInput(True, 3.0)})                            # 2 kW: 9 A on one phase
    assert (g["a"].amps, g["a"].phases) == (9.0, 1)
    g = m.step(10, 0, {"a": BoxInput(True, 10.0)})
    assert (g["a"].amps, g["a"].phases) == (10.0, 3)


def test_emergency_stop_pauses_everything_at_once() -> None:
    stop = SimpleNamespace(stop_consumption=False)
    m = LoadManager(BOXES, 25.0, min_on_s=900, min_off_s=0, limits=lambda: stop)
    assert m.step(0, 0, {"a": BoxInput(True, 10.0)})["a"].amps == 10.0
    stop.stop_consumption = True
    assert m.step(1, 0, {"a": BoxInput(True, 10.0, 10.0)})["a"].amps == 0.0


def test_a_wallbox_that_ignores_its_profile_is_counted_at_its_draw() -> None:
    logs: list[str] = []
    m = LoadManager(BOXES, 25.0, min_on_s=0, min_off_s=0, log=logs.append)
    for t in range(5):
        g = m.step(t, 0, {"a": BoxInput(True, 16.0, 16.0 if t else 0.0), "b": BoxInput(True, 16.0, 8.0)})
    assert m.ignoring("a") and any("ignores its charging profile" in s for s in logs)
    assert g["b"].amps <= 25.0 - 16.0


def test_an_increase_waits_until_the_others_have_come_down() -> None:
    m = lm()
    m.step(0, 0, {"a": BoxInput(True, 16.0)})
    # a still draws 16 A: b may only get what is free now (25 - 16 = 9), not its fair 12.5
    g = m.step(1, 0, {"a": BoxInput(True, 16.0, 16.0), "b": BoxInput(True, 16.0)})
    assert g["a"].amps == 12.5 and g["b"].amps <= 9.0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40), st.floats(-5, 40), st.floats(-5, 40), st.floats(-5, 40)),
                min_size=1, max_size=30))
def test_grants_plus_house_never_exceed_the_connection(steps: list[tuple[float, ...]]) -> None:
    m = lm()
    drawn = {n: 0.0 for n in "abc"}
    for t, (house, *wishes) in enumerate(steps):
        inputs = {n: BoxInput(True, w, drawn[n]) for n, w in zip("abc", wishes, strict=True)}
        g = m.step(t * 10, house, inputs)
        # what the boxes are allowed to draw (they follow: a step later they draw their grant)
        assert sum(x.amps for x in g.values()) <= max(0.0, 25.0 - house) + 1e-9
        assert all(x.amps == 0 or 6.0 <= x.amps <= 16.0 for x in g.values())
        drawn = {n: g[n].amps for n in "abc"}


def test_rules_read_the_grid_meter_and_their_own_wallbox() -> None:
    rule = ChargeRule.compile("surplus")
    c = Controller([BoxPlan("a", 1, rule, BoxSpec("a", switch_phases=True))], 25.0, min_on_s=0, min_off_s=0)
    g = c.step(0, 12 * 60, 1, -2760.0, (-4.0, 0.0, 0.0), {"a": BoxMeasure(connected=True)})
    assert (g["a"].amps, g["a"].phases) == (12.0, 1)       # 2760 W export -> 12 A on one phase
    doc = ChargeRule.compile("date.dayminute >= 480 ? 8000 : 0")   # the cFos document's example
    assert doc.milliamps({"date.dayminute": 500})[0] == 8000


def test_a_failing_rule_pauses_and_is_counted() -> None:
    c = Controller([BoxPlan("a", 1, ChargeRule.compile("16000 / (M1.power_w - M1.power_w)"), BoxSpec("a"))],
                   25.0, min_on_s=0, min_off_s=0)
    g = c.step(0, 600, 1, 500.0, (2.0, 2.0, 2.0), {"a": BoxMeasure(connected=True)})
    assert g["a"].amps == 0 and c.rule_errors == 1


def test_surplus_rules_share_the_surplus_and_a_full_box_is_consumption() -> None:
    """Two surplus rules that each saw all of the surplus would take twice it (the rest from the grid);
    each sees its share, and a wallbox on a rule that ignores the surplus is no part of it."""
    surplus, full = ChargeRule.compile("surplus"), ChargeRule.compile("full")
    plans = [BoxPlan(n, i, r, BoxSpec(n, switch_phases=True)) for i, (n, r) in
             enumerate((("a", surplus), ("b", surplus), ("c", full)), 1)]
    c = Controller(plans, 63.0, min_on_s=0, min_off_s=0)
    cars = {n: BoxMeasure(connected=True) for n in "ab"}
    g = c.step(0, 12 * 60, 1, -2 * 2070.0, (-18.0, 0.0, 0.0), cars)   # 4140 W export
    assert [(g[n].amps, g[n].phases) for n in "ab"] == [(9.0, 1), (9.0, 1)]   # 2070 W each
    # the full box's 11 kW are consumption like the house's: they use the export up, none is surplus
    cars["c"] = BoxMeasure(connected=True, power_w=11040.0, currents=(16.0, 16.0, 16.0))
    env = c.variables(12 * 60, 1, 11040.0 - 2 * 2070.0, (12.0, 16.0, 16.0), cars)
    assert env["surplus_w"] == 2 * 2070.0 - 11040.0


def test_the_documents_weekend_rule_reads_its_date_names() -> None:
    """date.weekday as the document defines it (Sunday 0 … Saturday 6): its weekend example's `5 || 6`
    is Friday and Saturday; `6 || 0` is the weekend."""
    from datetime import UTC, datetime

    from gridtap.rules.cfos import date_env

    doc, weekend = (ChargeRule.compile(f"date.weekday == {a} || date.weekday == {b} ? 16000 : 0")
                    for a, b in ((5, 6), (6, 0)))
    cars = {"doc": BoxMeasure(connected=True), "we": BoxMeasure(connected=True)}
    for day, want in ((4, (16.0, 0.0)), (5, (16.0, 16.0)), (6, (0.0, 16.0))):   # Fri, Sat, Sun
        c = Controller([BoxPlan("doc", 1, doc, BoxSpec("doc")), BoxPlan("we", 2, weekend, BoxSpec("we"))],
                       63.0, min_on_s=0, min_off_s=0)
        t = datetime(2026, 12, day, 12, tzinfo=UTC).timestamp()
        g = c.step(t, 720, 0, 0.0, (0.0, 0.0, 0.0), cars, date=date_env(t, UTC))
        assert (g["doc"].amps, g["we"].amps) == want, day
