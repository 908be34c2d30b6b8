"""`gridtap demo --scenario ev`: three wallboxes charge from PV surplus under a 25 A connection limit.

The stack of `gridtap demo` (virtual board with the unmodified firmware, the daemon on the
simulated clock, rrdcached, mosquitto), with three simulated OCPP 1.6J wallboxes in the
simulator process (`gridtap sim --wallbox`, gridtap_sim.wallbox.Fleet) instead of the battery.
The daemon's `[ev]` central system sets their current from cFos charging rules and shares
the house connection; what the wallboxes then draw on L1 is a load on the virtual board's
grid CT, so the next control step sees it (closed loop). Each wallbox's meter is a sensor
(E1..E3, gridtap.inputs.virtual): the status lines read its power from the REST API.

At the end it adds to the demo's report what happened to the cars: the energy each took (the
wallbox's meter against the daemon's E<n> total), how much of it came from the house's own PV,
the highest current on any phase of the connection and the seconds above the limit.
"""

from __future__ import annotations

import csv
import json
import math
import urllib.request
from pathlib import Path
from typing import Any

from gridtap_sim.demo import Demo, daemon_toml, demo_series, free_port, hhmm, read_totals

LIMIT_A = 25.0
VOLTS = 230.0
# (charge point id, charging rule, minutes after the start when its car arrives, what the rule means);
# every wallbox can switch between 1 and 3 phases, so a few kW of surplus are enough to charge
WALLBOXES = (
    ("garage", "gridtap", 1, "min + PV (from 300 W of surplus), full current from 15:00"),
    ("carport", "gridtap", 5, "the same: two cars on full current from 15:00 meet the limit"),
    ("street", "surplus", 10, "PV surplus only"),
)


def ev_toml(port: int) -> list[str]:
    """The [ev] section: a central system on `port`, the three wallboxes, the 25 A connection."""
    lines = ["[ev]", 'bind = "127.0.0.1"', f"port = {port}", f"max_total_current_a = {LIMIT_A:g}",
             'grid_sensor = "grid"', "interval_s = 10", "min_on_s = 300", "min_off_s = 300", ""]
    for ident, rule, _at, _why in WALLBOXES:
        lines += ["[[ev.wallbox]]", f'id = "{ident}"', f'rule = "{rule}"', "max_a = 16",
                  "switch_phases = true",
                  "target_wh = 20000", 'departure = "07:00"', ""]
    return lines


class EvDemo(Demo):
    def __init__(self, opt: dict[str, Any], **kw: Any) -> None:
        super().__init__(opt, **kw)
        self.ev_port = free_port()
        self.wallbox_log = self.out / "wallboxes.csv"

    def sim_options(self) -> list[str]:
        boxes = [f"ws://127.0.0.1:{self.ev_port}/{ident}@{at * 60}" for ident, _r, at, _w in WALLBOXES]
        return [a for b in boxes for a in ("--wallbox", b)] + ["--wallbox-log", str(self.wallbox_log)]

    def config_text(self, tty: Path, api_port: int) -> str:
        return daemon_toml(self.out, tty, api_port, self.mqtt_port) + "\n" + "\n".join(ev_toml(self.ev_port))

    def attach(self) -> None:
        """The wallboxes connect by themselves (they retry until the daemon's central system listens)."""

    def say_devices(self) -> None:
        from gridtap.control.ev.config import sensor_id

        self.say(f"  wallboxes: three simulated OCPP 1.6J charge points (cars of 60 kWh at 30 %) on "
                 f"ws://127.0.0.1:{self.ev_port}/<id>, a {LIMIT_A:g} A connection; what they draw on L1 "
                 "is in the grid CT")
        assert self.api is not None
        for n, (ident, rule, at, why) in enumerate(WALLBOXES, 1):
            self.say(f"    E{n} {ident:<8} car at +{at} min, rule {rule!r}: {why}; "
                     f"{self.api.base}/sensor/{sensor_id(ident)}")

    def device_header(self) -> str:
        return "  ".join(f"{f'E{n} {ident}':>16}" for n, (ident, *_r) in enumerate(WALLBOXES, 1))

    def device_status(self) -> str:
        """Each wallbox's power from its E<n> sensor on the REST API, and the current it was granted."""
        from gridtap.control.ev.config import sensor_id

        assert self.api is not None
        boxes = self._ev_status().get("wallboxes", {})
        cols = []
        for ident, *_r in WALLBOXES:
            w = self.api.latest(sensor_id(ident))
            st = boxes.get(ident, {})
            amps = st.get("granted_a")
            grant = "" if amps is None else f" {amps:.1f}A/{st.get('phases')}"
            cols.append(f"{('-' if w is None else f'{w:.0f} W') + grant:>16}")
        return "  ".join(cols)

    def _ev_status(self) -> dict[str, Any]:
        assert self.api is not None
        try:
            with urllib.request.urlopen(f"{self.api.base}/status", timeout=3.0) as r:
                data = json.loads(r.read())
        except (OSError, ValueError):
            return {}
        ev = data.get("outputs", {}).get("ev") if isinstance(data, dict) else None
        return ev if isinstance(ev, dict) else {}

    def finish(self) -> dict[str, Any]:
        report = super().finish()
        report["ev"] = self.ev_summary()
        (self.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        self.print_ev(report["ev"])
        return report

    def ev_summary(self) -> dict[str, Any]:
        """What the cars took, from where, and the connection's highest phase current."""
        from gridtap.control.ev.config import sensor_id
        from gridtap_sim.engine import load_record

        rows = _read_log(self.wallbox_log)
        totals = read_totals(self.out / "state")
        boxes = []
        for n, (ident, rule, _at, _why) in enumerate(WALLBOXES, 1):
            mine = [r for r in rows if r["id"] == ident]
            got = totals.get(sensor_id(ident))
            boxes.append({"id": ident, "sensor": f"E{n}", "rule": rule,
                          "wallbox_wh": round(mine[-1]["energy_wh"], 1) if mine else 0.0,
                          "daemon_wh": None if got is None else round(got[0] / 1000.0, 1),
                          "max_a": max((r["amps"] for r in mine), default=0.0)})
        out: dict[str, Any] = {"limit_a": LIMIT_A, "wallboxes": boxes}
        if not self.record.exists() or not rows:
            return out
        _meta, arrays = load_record(self.record)
        grid = next(s.index for s in demo_series() if s.sensor == "grid")
        net = arrays["e_imp_j"][:, grid] - arrays["e_exp_j"][:, grid]   # J per second: W, import +
        out.update(connection(net, rows, self.t0))
        return out

    def print_ev(self, ev: dict[str, Any]) -> None:
        self.say("EV charging (three simulated wallboxes over OCPP, their meters the sensors E1..E3):")
        self.say(f"  {'wallbox':<8} {'sensor':<6} {'rule':<9} {'wallbox Wh':>11} {'daemon Wh':>10} "
                 f"{'max A':>6}")
        for b in ev["wallboxes"]:
            d = "-" if b["daemon_wh"] is None else f"{b['daemon_wh']:.1f}"
            self.say(f"  {b['id']:<8} {b['sensor']:<6} {b['rule']:<9} {b['wallbox_wh']:11.1f} {d:>10} "
                     f"{b['max_a']:6.1f}")
        if "max_phase_a" in ev:
            self.say(f"  from the house's own PV: {ev['pv_wh']:.0f} of {ev['ev_wh']:.0f} Wh "
                     f"({ev['pv_share_pct']:.0f} %, phases summed as the meter does); highest phase current "
                     f"at the connection {ev['max_phase_a']:.1f} A at {ev['max_at']} UTC (limit "
                     f"{ev['limit_a']:g} A): {ev['seconds_over_limit']} s over it")


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            try:
                rows.append({"t": float(r["t"]), "id": r["id"], "amps": float(r["amps"]),
                             "phases": int(r["phases"]), "power_w": float(r["power_w"]),
                             "energy_wh": float(r["energy_wh"])})
            except (KeyError, ValueError):
                continue   # a line cut short when the simulator stopped
    return rows


def connection(net_w: Any, rows: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """Per simulated second: the wallboxes' draw per phase (their reports held until the next), the
    grid CT's net power (L1, where the house is), the phase currents at the connection and the PV
    share of the cars' energy (the house's export without the cars, phases summed)."""
    import numpy as np

    n = len(net_w)
    secs = t0 + np.arange(n)
    phase = np.zeros((3, n))
    total = np.zeros(n)
    for ident in sorted({r["id"] for r in rows}):
        mine = [r for r in rows if r["id"] == ident]
        times = np.asarray([r["t"] for r in mine])
        k = np.searchsorted(times, secs, side="right") - 1
        ok = k >= 0
        amps = np.where(ok, np.asarray([r["amps"] for r in mine])[np.clip(k, 0, None)], 0.0)
        three = np.where(ok, np.asarray([r["phases"] for r in mine])[np.clip(k, 0, None)] == 3, False)
        phase[0] += amps
        phase[1] += amps * three
        phase[2] += amps * three
        total += amps * VOLTS * np.where(three, 3, 1)
    l1 = np.abs(net_w) / VOLTS                  # the grid CT carries the house, the PV and the cars' L1
    worst = np.maximum(l1, np.maximum(phase[1], phase[2]))
    house = net_w - phase[0] * VOLTS            # the house and PV alone
    pv = np.minimum(total, np.maximum(0.0, -house))
    i = int(np.argmax(worst)) if n else 0
    ev_wh = float(total.sum()) / 3600.0
    return {"max_phase_a": round(float(worst[i]), 1) if n else 0.0, "max_at": hhmm(t0 + i),
            "seconds_over_limit": int((worst > LIMIT_A + 0.5).sum()),
            "ev_wh": round(ev_wh, 1), "pv_wh": round(float(pv.sum()) / 3600.0, 1),
            "pv_share_pct": round(100.0 * float(pv.sum()) / 3600.0 / ev_wh, 1) if ev_wh > 0 else math.nan}
