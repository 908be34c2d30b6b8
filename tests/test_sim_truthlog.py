"""The simulator's per-second ground truth stays exact and compact over long runs."""

from __future__ import annotations

import numpy as np

from gridtap_sim.engine import TruthLog
from gridtap_sim.model import WINDOWS_PER_S, Chunk


def chunk(k: int) -> Chunk:
    e = np.array([k, -k, 0.5 * k])
    return Chunk(k, np.zeros((0, 4), np.uint16), np.maximum(e, 0), np.maximum(-e, 0), e,
                 np.zeros((WINDOWS_PER_S, 3)), 230.0 + k % 7, np.abs(e) / 230.0, 50.0 + (k % 3) / 10)


def test_rows_survive_growth_in_order() -> None:
    log = TruthLog(3)
    for k in range(5000):          # crosses the 1024, 2048 and 4096 row doublings
        log.append(chunk(k))
    assert len(log) == 5000
    ks = np.arange(5000, dtype=np.float64)
    np.testing.assert_array_equal(log.column("e_net")[:, 0], ks)
    np.testing.assert_array_equal(log.column("e_exp")[:, 1], ks)
    np.testing.assert_array_equal(log.column("vrms"), 230.0 + ks % 7)
    assert log.column("freq", 10).shape == (10,) and log.column("irms", 99999).shape == (5000, 3)


def test_a_second_costs_about_a_hundred_bytes() -> None:
    log = TruthLog(3)
    for k in range(4096):
        log.append(chunk(k))
    held = sum(a.nbytes for a in log.per_ct.values()) + log.vrms.nbytes + log.freq.nbytes
    assert held / len(log) <= 14 * 8      # 4 x 3 CT numbers + vrms + freq, float64, no slack when full
