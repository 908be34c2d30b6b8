"""`gridtap demo`'s battery scenario: prices, the planner, the simulated LuxPower battery (issue #16).

The demo's daemon gets half-hour prices from a local server that answers Octopus' public
standard-unit-rates endpoint (`PriceServer`, the `[prices] base_url`), its `[control]` planner
decides from them every simulated minute, and its `[inverter]` controller writes the simulated
LuxPower inverter (gridtap sim --luxpower), whose AC power the virtual house's grid CT measures.

The prices (`demo_prices`) follow Agile's daily shape (night trough, 16:00-19:00 peak) and have a
windy spell in the middle of the demo's window: two half hours below zero. A cost-minded battery
charges from the grid there (and keeps room for it beforehand) and spends the energy in the
evening peak; `Tracker` collects the battery's and the grid CT's power per price slot from the
status lines, and `report()` says where the battery charged.
"""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from typing import Any

from gridtap_sim.localhttp import Answer, LocalApi

TARIFF = "E-1R-AGILE-24-10-01-C"
SLOT_S = 1800
JSON = {"Content-Type": "application/json"}
# p/kWh by hour of the day (UTC = UK time in winter): Agile's shape, peak 16:00-19:00
DAY_SHAPE = [14.5, 13.8, 13.0, 12.4, 12.1, 12.9, 15.2, 18.6, 21.0, 20.2, 19.1, 18.4,
             18.0, 18.3, 19.5, 22.8, 38.5, 41.2, 36.9, 24.7, 22.1, 20.6, 18.9, 16.2]


def demo_prices(t0: float, duration_s: float) -> list[tuple[float, float, float]]:
    """(start, end, p/kWh) of every half hour from the UTC midnight before t0 to two days on,
    the two half hours at the middle of the demo's window below zero."""
    day0 = t0 - t0 % 86400
    mid = t0 + duration_s / 2
    windy = mid - mid % SLOT_S
    out = []
    for i in range(2 * 86400 // SLOT_S):
        start = day0 + i * SLOT_S
        price = DAY_SHAPE[int(start % 86400) // 3600]
        if windy - SLOT_S <= start <= windy:
            price = -4.5 if start < windy else -2.8
        out.append((start, start + SLOT_S, price))
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PriceServer(LocalApi):
    """Octopus' standard-unit-rates endpoint on 127.0.0.1 for one tariff: the slots overlapping
    [period_from, period_to), newest first, in one page (the daemon asks for up to 1500)."""

    def __init__(self, prices: list[tuple[float, float, float]], tariff: str = TARIFF) -> None:
        self.prices = prices
        self.tariff = tariff
        super().__init__()

    def answer(self, path: str) -> Answer:
        parts = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        product = self.tariff.split("-")[2] + "-" + "-".join(self.tariff.split("-")[3:-1])
        want = f"/v1/products/{product}/electricity-tariffs/{self.tariff}/standard-unit-rates/"
        if parts.path != want:
            return 404, b'{"detail": "No ElectricityTariff matches the given query."}', JSON
        try:
            lo = datetime.fromisoformat(q["period_from"].replace("Z", "+00:00")).timestamp()
            hi = datetime.fromisoformat(q["period_to"].replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            return 400, b'{"detail": "period_from and period_to must be ISO 8601 times"}', JSON
        rows = [{"value_exc_vat": round(p / 1.05, 4), "value_inc_vat": p, "valid_from": _iso(a),
                 "valid_to": _iso(b), "payment_method": None}
                for a, b, p in reversed(self.prices) if b > lo and a < hi]
        doc = {"count": len(rows), "next": None, "previous": None, "results": rows}
        return 200, json.dumps(doc).encode(), JSON


def daemon_sections(lux_port: int, price_url: str, datalogger: str, inverter: str) -> list[str]:
    """gridtap.toml's [prices], [control] (the planner) and [inverter] for the demo."""
    return [
        "[prices]", 'source = "octopus"', f'tariff = "{TARIFF}"', f'base_url = "{price_url}"', "",
        "[control]", 'mode = "planner"', 'timezone = "UTC"', "export_price = 5.0", "interval_s = 5",
        "min_dwell_s = 60", 'grid_sensor = "grid"', "house_load_w = 500", "",
        "[control.battery]", "capacity_kwh = 10", "charge_kw = 3", "discharge_kw = 3", "efficiency = 0.9",
        "soc_min = 10", "soc_max = 100", "",
        "[inverter]", 'host = "127.0.0.1"', f"port = {lux_port}", f'datalogger_serial = "{datalogger}"',
        f'inverter_serial = "{inverter}"', 'timezone = "UTC"', "tick_s = 1", "",
    ]


class Tracker:
    """The battery's and the grid CT's power at each status line, by price slot."""

    def __init__(self, prices: list[tuple[float, float, float]]) -> None:
        self.prices = prices
        self.samples: list[tuple[float, float, float | None]] = []  # (t, battery W, grid W)

    def add(self, t: float, battery_w: float | None, grid_w: float | None) -> None:
        if battery_w is not None:
            self.samples.append((t, battery_w, grid_w))

    def slots(self) -> list[dict[str, Any]]:
        out = []
        for a, b, p in self.prices:
            got = [(bw, gw) for t, bw, gw in self.samples if a <= t < b]
            if not got:
                continue
            grid = [gw for _bw, gw in got if gw is not None]
            out.append({"start": _iso(a), "price": p, "samples": len(got),
                        "battery_w": round(sum(bw for bw, _ in got) / len(got)),
                        "grid_w": round(sum(grid) / len(grid)) if grid else None})
        return out

    def report(self) -> list[str]:
        rows = self.slots()
        if not rows:
            return []  # no battery in this demo (or no status line saw it)
        cheap = sorted(r["price"] for r in rows)[:2]
        lines = ["battery, by price slot (the planner decides; mean of the status lines in each slot):",
                 f"  {'slot (UTC)':<10} {'p/kWh':>7} {'battery W':>10} {'grid CT W':>10}"]
        for r in rows:
            mark = "  <- cheapest" if r["price"] in cheap and r["price"] < 0 else ""
            grid = "-" if r["grid_w"] is None else f"{r['grid_w']:+d}"
            lines.append(f"  {r['start'][11:16]:<10} {r['price']:>7.2f} {r['battery_w']:>+10d} {grid:>10}"
                         f"{mark}")
        return lines
