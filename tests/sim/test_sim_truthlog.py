"""The simulator's per-second ground truth stays exact and compact over long runs."""

from __future__ import annotations

import numpy as np

from gridtap_sim.engine import TruthLog
from gridtap_sim.model import WINDOWS_PER_S, Chunk


def chunk(k: int) -> Chunk:
    e = np.array([k, -k, 0.5 * k])
    return Chunk(k, np.zeros((0, 4), np.uint16), np.maximum(e, 0), np.maximum(-e, 0), e,
                 np.zeros((WINDOWS_PER_S, 3)), 230.0 + k % 7, np.abs(e) / 230.0, 50.0 + (k % 3) / 10, -e)


def test_rows_survive_growth_in_order() -> None:
    log = TruthLog(3)
    for k in range(5000):          # crosses the 1024, 2048 and 4096 row doublings
        log.append(chunk(k))
    assert len(log) == 5000
    ks = np.arange(5000, dtype=np.float64)
    np.testing.assert_array_equal(log.column("e_net")[:, 0], ks)
    np.testing.assert_array_equal(log.column("e_exp")[:, 1], ks)
    np.testing.assert_array_equal(log.column("e_q")[:, 2], -0.5 * ks)
    np.testing.assert_array_equal(log.column("vrms"), 230.0 + ks % 7)
    assert log.column("freq", 10).shape == (10,) and log.column("irms", 99999).shape == (5000, 3)


def test_a_second_costs_under_a_hundred_and_forty_bytes() -> None:
    log = TruthLog(3)
    for k in range(4096):
        log.append(chunk(k))
    held = sum(a.nbytes for a in log.per_ct.values()) + log.vrms.nbytes + log.freq.nbytes
    assert held / len(log) <= 17 * 8      # 5 x 3 CT numbers + vrms + freq, float64, no slack when full


def test_growing_keeps_every_value_and_reallocates_logarithmically() -> None:
    from gridtap_sim.model import Growing

    g = Growing([1.0, 2.0])
    buffers = set()
    for k in range(100_000):
        g.append(float(k))
        buffers.add(id(g.buf))
    assert len(g) == 100_002 and g[0] == 1.0 and g[-1] == 99_999.0
    np.testing.assert_array_equal(g.view()[2:], np.arange(100_000, dtype=np.float64))
    assert len(buffers) <= 12          # 64 -> 131072 by doubling: the cost of a second stays flat


def test_mains_knots_are_views_not_copies() -> None:
    # the per-second lookup arrays must not be rebuilt from the whole history every second
    # (that made a week-long soak five times slower by its end)
    from gridtap_sim.model import Mains

    m = Mains(np.random.default_rng(1))
    m.ensure(5000)
    f = m._f
    m.ensure(5001)
    assert np.shares_memory(f, m._f) and len(m._f) == len(f) + 1


def test_outage_lookup_matches_the_full_parity_rule() -> None:
    from gridtap_sim.model import Outages

    rng = np.random.default_rng(4)
    starts = np.cumsum(rng.uniform(0.5, 30.0, 400))
    spans = [(float(a), float(a + rng.uniform(0.01, 0.4))) for a in starts]
    out = Outages(spans)
    edges = np.asarray(spans).ravel()
    for k in range(0, int(starts[-1]) + 2, 7):
        t = k + (np.arange(4800) + 0.5) / 4800
        full = (np.searchsorted(edges, t, side="right") % 2 == 0).astype(np.float64)
        np.testing.assert_array_equal(out.on(t), full)
    assert out.failing_between(starts[10], starts[13]) == spans[10:13]
