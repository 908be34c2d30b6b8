"""Generate bench/fixtures/agile-2026-01.csv once: a month of half-hour prices shaped like Octopus Agile.

Run ``python bench/make_agile_fixture.py`` (numpy); the benchmark reads only the CSV it writes.

Agile's published formula (AGILE-24-10-01, region C): price = min(100, 2.2 x W + 12 p during
16:00-19:00) incl. 5 % VAT, where W is the day-ahead wholesale price in p/kWh; no floor, so a
negative wholesale price gives a negative Agile price. W follows the GB day-ahead daily shape
(night trough 01-05, morning ramp 07-09, midday dip, evening peak 17-19) scaled by a per-day level
that wanders (gas price, demand) and drops on windy days, when nights and some afternoons go
negative. Seeded: the file is reproducible.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "fixtures" / "agile-2026-01.csv"
START = datetime(2026, 1, 1, tzinfo=UTC)  # January: UK local time = UTC, no DST change
DAYS = 31
# wholesale shape by half hour (relative to the day's level), GB winter day-ahead
SHAPE = np.array([
    0.95, 0.90, 0.85, 0.80, 0.75, 0.72, 0.70, 0.70, 0.72, 0.75,  # 00:00-04:30
    0.80, 0.88, 0.98, 1.08, 1.15, 1.18, 1.15, 1.10, 1.05, 1.00,  # 05:00-09:30
    0.97, 0.94, 0.92, 0.90, 0.90, 0.92, 0.95, 1.00, 1.08, 1.18,  # 10:00-14:30
    1.28, 1.38, 1.45, 1.48, 1.45, 1.38, 1.28, 1.18, 1.10, 1.05,  # 15:00-19:30
    1.02, 1.00, 0.98, 0.97, 1.00, 1.02, 0.99, 0.96,              # 20:00-23:30
])


def main() -> None:
    rng = np.random.default_rng(20260101)
    level = 8.0
    rows = ["valid_from,value_inc_vat"]
    for day in range(DAYS):
        level = float(np.clip(level + rng.normal(0, 0.8), 5.0, 11.0))
        windy = rng.random() < 0.25
        w = level * SHAPE + rng.normal(0, 0.45, SHAPE.size)
        if windy:
            # wind: the whole day lower, nights and early afternoon below zero
            w = w - level * 0.55 - rng.uniform(1.0, 3.5) * (SHAPE < 0.9)
        for i, wp in enumerate(w):
            peak = 12.0 if 32 <= i < 38 else 0.0
            p = min(100.0, (2.2 * wp + peak)) * 1.05 if wp >= 0 else 2.2 * wp * 1.05
            t = START.timestamp() + day * 86400 + i * 1800
            rows.append(f"{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ},{p:.2f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(rows) + "\n")
    print(f"wrote {OUT} ({len(rows) - 1} slots)")


if __name__ == "__main__":
    main()
