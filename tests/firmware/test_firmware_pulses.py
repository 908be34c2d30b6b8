"""S0 pulse debouncing and totals: never a double count under 5 ms contact bounce."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap_fw import wire
from gridtap_fw.config import PulseConfig
from gridtap_fw.pulses import PulseInput
from tests.support.fwtest.pulsetrain import count, train
from tests.support.mpy import ROOT, run_micropython

FWTEST = ROOT / "tests" / "support" / "fwtest"


def make(trigger: int, debounce_ms: int, meter_const_milli: int = 1_000_000) -> PulseInput:
    cfg = PulseConfig()
    cfg.trigger = trigger
    cfg.debounce_ms = debounce_ms
    cfg.meter_const_milli = meter_const_milli
    return PulseInput(cfg)


def test_thousands_of_bouncing_pulses_under_micropython() -> None:
    script = """
import json
from pulsetrain import train, count
from gridtap_fw.config import PulseConfig
from gridtap_fw.pulses import PulseInput
out = []
for trigger in (0, 1):
    for debounce in (10, 20):
        for seed in (1, 2):
            cfg = PulseConfig()
            cfg.trigger = trigger
            cfg.debounce_ms = debounce
            inp = PulseInput(cfg)
            edges = train(seed * 7 + debounce, 2500, 5000)
            out.append([trigger, debounce, len(edges), count(inp, edges, 7000)])
print(json.dumps(out))
"""
    res = json.loads(run_micropython(script, extra_path=[FWTEST]))
    assert len(res) == 8
    for trigger, debounce, n_edges, got in res:
        assert n_edges > 2 * 2500 * 2  # the bounce is really there
        assert got == 2500, f"trigger {trigger}, debounce {debounce} ms: {got} pulses counted, 2500 real"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), trigger=st.sampled_from([wire.TRIGGER_EDGE, wire.TRIGGER_LEVEL]),
       debounce=st.integers(10, 25), poll=st.sampled_from([0, 1000, 20000]))
def test_count_is_exact_whatever_the_bounce_and_batching(seed: int, trigger: int, debounce: int,
                                                         poll: int) -> None:
    edges = train(seed, 60, 5000)
    assert count(make(trigger, debounce), edges, poll) == 60


def test_bounce_without_debounce_would_double_count() -> None:
    # The guard is real: with a 1 ms debounce the same train miscounts.
    edges = train(3, 200, 5000)
    assert count(make(wire.TRIGGER_EDGE, 1), edges) > 200


def test_edge_mode_stamps_the_first_falling_edge_level_mode_needs_stability() -> None:
    edge = make(wire.TRIGGER_EDGE, 20)
    assert edge.edge(1_000_000, 0) is True
    assert edge.last_us == 1_000_000
    level = make(wire.TRIGGER_LEVEL, 20)
    level.edge(1_000_000, 0)
    level.edge(1_005_000, 1)  # a 5 ms glitch: not a pulse
    level.poll(2_000_000)
    assert level.pulses == 0
    level.edge(2_000_000, 0)
    level.poll(2_019_000)
    assert level.pulses == 0
    level.poll(2_020_000)
    assert level.pulses == 1 and level.last_us == 2_000_000


@given(n=st.integers(0, 10**7), const=st.integers(1000, 100_000_000))
def test_total_is_exact_integer_arithmetic(n: int, const: int) -> None:
    inp = make(wire.TRIGGER_EDGE, 20, const)
    inp.pulses = n
    assert inp.total_milli() == n * 10**9 // const
    # 800 imp/kWh: 1.25 Wh per pulse, exactly
    inp800 = make(wire.TRIGGER_EDGE, 20, 800_000)
    inp800.pulses = n
    assert inp800.total_milli() == n * 1250


@given(a=st.integers(0, 10**6), b=st.integers(0, 10**6), c1=st.integers(1000, 10**8),
       c2=st.integers(1000, 10**8))
def test_changing_the_meter_constant_keeps_the_total(a: int, b: int, c1: int, c2: int) -> None:
    inp = make(wire.TRIGGER_EDGE, 20, c1)
    inp.pulses = a
    before = inp.total_milli()
    inp.set_meter_const(c2)
    assert inp.total_milli() == before
    inp.pulses += b
    if c1 == c2:  # nothing changed: still one exact formula from 0
        assert inp.total_milli() == (a + b) * 10**9 // c1
    else:
        assert inp.total_milli() == before + b * 10**9 // c2


def test_counts_are_32_bit_safe_on_the_wire() -> None:
    inp = make(wire.TRIGGER_EDGE, 20, 1_000_000)
    inp.pulses = 2**32 + 5
    values = inp.tuple_values(1)
    wire.encode(wire.PULSE, 0, values)  # fits the u32 fields
    assert values[5] == 5
