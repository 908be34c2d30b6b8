"""`gridtap control plan -c gridtap.toml`: the next 24 h of the planner as a table and a PNG.

Prices come from the [prices] cache, fetched first when the feed is due (`--no-fetch` uses the
cache alone). The plan is the [control] planner's (with its battery, target and export price);
the table shows each slot's price, planned battery power, expected grid power and SOC. With
``-o plan.png`` the same plan is drawn by rrdtool (rrdtool 1.0 graph syntax, as `gridtap graph`):
prices as a line, planned charge (up) and discharge (down) as an area in % of the battery's
power, and the SOC in %. The plan is drawn from a temporary RRD that is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from gridtap.config import load_config
from gridtap.control.planner import REF_S, Forecast, Plan, PlannerPolicy, PlanSlot
from gridtap.control.settings import ControlSettings
from gridtap.errors import UserError
from gridtap.inputs.prices import PriceSettings
from gridtap.store.rrd import rrdtool_exe

HORIZON_S = 86400


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "control",
        help="battery control: show the planner's next 24 h (table and PNG)",
        description="Battery control from electricity prices ([prices], [control]; docs/control.md).",
    )
    csub = p.add_subparsers(dest="control_command", metavar="ACTION", required=True)
    plan = csub.add_parser(
        "plan",
        help="print the next 24 h of the plan; -o draws it as a PNG",
        description="Fetch prices when due, plan the battery over the next 24 h with the [control] planner, "
        "print the plan as a table and, with -o, draw prices, charge/discharge and SOC with rrdtool.",
    )
    plan.add_argument("-c", "--config", required=True, type=Path, help="gridtap.toml")
    plan.add_argument("--soc", type=float, default=None, help="battery SOC now in %% (default: soc_min)")
    plan.add_argument("-o", "--output", type=Path, default=None, help="PNG file to write")
    plan.add_argument("--no-fetch", action="store_true", help="use cached prices only")
    plan.add_argument("--now", type=float, default=None, help=argparse.SUPPRESS)
    plan.set_defaults(func=run_plan)


def _settings(path: Path) -> tuple[PriceSettings, ControlSettings, Path]:
    cfg = load_config(path)
    prices = cfg.sections.get("prices")
    control = cfg.sections.get("control")
    if not isinstance(prices, PriceSettings):
        raise UserError(f"{path.name} has no [prices] section: the planner needs prices")
    if not isinstance(control, ControlSettings):
        raise UserError(f"{path.name} has no [control] section")
    return prices, control, cfg.daemon.state_dir / "prices.sqlite"


def _forecast(control: ControlSettings, state_dir: Path) -> Forecast | None:
    """The house forecast the daemon has learned (state_dir/forecast.json), with grid_sensor."""
    if control.grid_sensor is None:
        return None
    from gridtap.control.forecast import ProfileForecast

    f = ProfileForecast(control.forecast_days, control.tz, control.planner.house_load_w)
    f.load(state_dir / "forecast.json")
    return f


def run_plan(args: argparse.Namespace) -> int:
    prices, control, cache = _settings(args.config)
    now = time.time() if args.now is None else args.now
    feed = prices.feed(cache)
    try:
        if not args.no_fetch:
            feed.poll(now)
        status = feed.status(now)
        series = feed.series()
    finally:
        feed.close()
    b = control.battery
    soc = b.soc_min if args.soc is None else args.soc
    if not 0 <= soc <= 100:
        raise UserError(f"--soc must be 0..100, got {soc:g}")
    print(f"prices: {status.describe()}")
    slots = series.ahead(now)
    slots = [s for s in slots if s.start < slots[0].start + HORIZON_S] if slots else []
    if not slots:
        print(
            "no price known for the current slot: the policy holds the safe state "
            "(no AC charge, no forced discharge, no export limit)"
        )
        return 1
    planner = PlannerPolicy(control.planner, control.tz, _forecast(control, cache.parent))
    # The daemon values the energy left at the horizon's end against the prices from REF_S ago on
    # (PlannerPolicy.decide); the table does the same so it shows what the daemon will do.
    reference = [sl.price for sl in series.window(now - REF_S, float("inf")).slots]
    plan = planner.plan(slots, soc, now, reference)
    print(table(plan, series.unit, control, soc, args.soc is None))
    if args.output is not None:
        draw(plan, args.output, series.unit, b.charge_kw, b.discharge_kw)
        print(f"wrote {args.output}")
    return 0


def table(plan: Plan, unit: str, control: ControlSettings, soc: float, assumed: bool) -> str:
    tz = control.tz
    head = f"plan from SOC {soc:.0f} %{' (assumed: pass --soc)' if assumed else ''}"
    if control.planner.target_soc is not None and control.planner.target_dayminute is not None:
        m = control.planner.target_dayminute
        head += f", target {control.planner.target_soc:.0f} % by {m // 60:02d}:{m % 60:02d}"
        head += "" if plan.target_met else " (not reachable)"
    lines = [head, f"{'slot':<12} {'price ' + unit:>12} {'battery W':>10} {'grid W':>8} {'SOC %':>6}  action"]
    for s in plan.slots:
        when = datetime.fromtimestamp(s.start, tz).strftime("%a %H:%M")
        lines.append(
            f"{when:<12} {s.price:>12.2f} {s.battery_w:>10.0f} {s.grid_w:>8.0f} {s.soc_end:>6.0f}"
            f"  {_action(s)}"
        )
    lines.append(f"expected cost {plan.cost:.2f} ({unit} x kWh), planned in {plan.ms:.1f} ms")
    return "\n".join(lines)


def _action(s: PlanSlot) -> str:
    """The slot's move; a slot shared in time says its parts, e.g. `export 5 min, then charge 25 min`."""
    if not s.phases:
        return s.action
    return ", then ".join(f"{p.action} {round((p.end - p.start) / 60)} min" for p in s.phases)


def draw(plan: Plan, out: Path, unit: str, charge_kw: float, discharge_kw: float) -> None:
    """The plan as a PNG through a temporary RRD (one row per slot)."""
    step = int(plan.slots[0].end - plan.slots[0].start)
    if any(int(s.end - s.start) != step for s in plan.slots):
        step = 900  # mixed slot lengths: write quarter hours
    start = int(plan.slots[0].start)
    end = int(plan.slots[-1].end)
    exe = rrdtool_exe()
    with tempfile.TemporaryDirectory(prefix="gridtap-plan-") as tmp:
        rrd = Path(tmp) / "plan.rrd"
        rows = (end - start) // step + 2
        _rrdtool(
            [
                exe,
                "create",
                str(rrd),
                "--start",
                str(start - step),
                "--step",
                str(step),
                f"DS:price:GAUGE:{2 * step}:U:U",
                f"DS:bat:GAUGE:{2 * step}:U:U",
                f"DS:soc:GAUGE:{2 * step}:0:100",
                f"RRA:AVERAGE:0.5:1:{rows}",
            ]
        )
        updates = []
        for s in plan.slots:
            pct = s.battery_w / (charge_kw * 10.0 if s.battery_w >= 0 else discharge_kw * 10.0)
            for t in range(int(s.start), int(s.end), step):
                updates.append(f"{t + step}:{s.price:.4f}:{pct:.2f}:{s.soc_end:.2f}")
        for i in range(0, len(updates), 100):
            _rrdtool([exe, "update", str(rrd), *updates[i : i + 100]])
        tmp_png = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        _rrdtool(
            [
                exe,
                "graph",
                str(tmp_png),
                "--imgformat",
                "PNG",
                "--start",
                str(start),
                "--end",
                str(end),
                "--width",
                "800",
                "--height",
                "300",
                "--title",
                "gridtap battery plan",
                "--vertical-label",
                f"% / {unit}",
                f"DEF:price={rrd}:price:AVERAGE",
                f"DEF:bat={rrd}:bat:AVERAGE",
                f"DEF:soc={rrd}:soc:AVERAGE",
                "AREA:bat#74C0FC:battery power (% of max, + charge)",
                "LINE2:soc#2B8A3E:SOC %",
                f"LINE2:price#D9480F:price {unit}\\l",
                "HRULE:0#000000",
            ]
        )
        if not tmp_png.exists():
            raise UserError(f"rrdtool graph wrote no image; {out} not written")
        os.replace(tmp_png, out)


def _rrdtool(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise UserError(f"rrdtool {cmd[1]} failed: {res.stderr.strip()}")
