"""`gridtap graph <sensor> --interval day -o power.png`: a power graph from the sensor's RRDs.

Import is drawn above the axis and export below it in its own colour; the
legend gives the energy of each over the interval (rrdtool's TOTAL of the
stored rate), so the picture and the meter can be compared at a glance.

With a daemon running, its rrdcached writes the cached updates first; a
socket nobody serves (a daemon that has stopped) is ignored. The PNG is drawn
into a temporary file and renamed only when rrdtool succeeded: a failed graph
leaves no file (and the exit status is 2).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from gridtap.config import Config, SensorConfig, load_config
from gridtap.errors import UserError
from gridtap.store.rrd import DS_NAME, RrdStore, rrdtool_exe, socket_served

SPANS = {"hour": 3600, "day": 86400, "week": 604800, "month": 2419200, "year": 31536000}
IMPORT_COLOUR = "#D9480F"
EXPORT_COLOUR = "#2B8A3E"
PULSE_COLOUR = "#1864AB"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="draw a sensor's power (import and export) as a PNG")
    p.add_argument("sensor", help="sensor name or 32-hex id from the config")
    p.add_argument("-c", "--config", required=True, type=Path, help="gridtap.toml")
    p.add_argument("--interval", default="day", choices=list(SPANS), help="how far back (default day)")
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--end", type=int, default=None, help="Unix time of the right edge (default now)")
    p.add_argument("--width", type=int, default=800)
    p.add_argument("--height", type=int, default=250)
    p.set_defaults(func=run)


def graph_args(
    cfg: Config, s: SensorConfig, interval: str, out: Path, end: int | None, width: int, height: int
) -> list[str]:
    rrd = RrdStore(cfg.daemon.rrd_dir, None)
    end_s = "now" if end is None else str(end)
    start_s = f"end-{SPANS[interval]}"
    water = s.kind == "pulse" and s.unit == "litre"
    label = "L/min" if water else "W"
    scale = 0.06 if water else 3.6  # thousandths per second -> L/min or W
    args = [
        rrdtool_exe(),
        "graph",
        str(out),
        "--imgformat",
        "PNG",
        "--start",
        start_s,
        "--end",
        end_s,
        "--width",
        str(width),
        "--height",
        str(height),
        "--vertical-label",
        label,
        "--title",
        f"{s.name} ({interval})",
        "--slope-mode",
    ]
    series: list[tuple[str, str, str, int]] = []  # (id, vname, legend, sign)
    if s.kind == "ct":
        series.append((s.id, "imp", "Import", 1))
        if s.export_id:
            series.append((s.export_id, "exp", "Export", -1))
    else:
        series.append((s.id, "pls", "Water" if water else "Energy", 1))
    found = False
    for sid, v, legend, sign in series:
        path = rrd.path(sid)
        if not path.exists():
            continue
        found = True
        colour = {"imp": IMPORT_COLOUR, "exp": EXPORT_COLOUR}.get(v, PULSE_COLOUR)
        total_unit, total_div = ("L", 1000) if water else ("kWh", 1_000_000)
        args += [
            f"DEF:{v}={path}:{DS_NAME}:AVERAGE",
            f"CDEF:{v}p={v},{scale * sign},*",
            f"CDEF:{v}e={v},{total_div},/",
            f"VDEF:{v}t={v}e,TOTAL",
            f"VDEF:{v}m={v},MAXIMUM",
            f"AREA:{v}p{colour}:{legend:<7}",
            f"GPRINT:{v}t:%8.3lf {total_unit}",
            f"CDEF:{v}w={v},{scale},*",
            f"VDEF:{v}pk={v}w,MAXIMUM",
            f"GPRINT:{v}pk:peak %6.0lf {label}\\l",
        ]
    if not found:
        raise UserError(f"sensor {s.name} has no RRD under {cfg.daemon.rrd_dir} yet: run the daemon first")
    args.append("HRULE:0#000000")
    return args


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    s = cfg.sensor(args.sensor)
    if not 100 <= args.width <= 4000 or not 50 <= args.height <= 2000:
        raise UserError("--width must be 100..4000 and --height 50..2000 pixels")
    sock = cfg.daemon.rrdcached_socket or cfg.daemon.state_dir / "rrdcached.sock"
    out: Path = args.output
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = graph_args(cfg, s, args.interval, tmp, args.end, args.width, args.height)
    if socket_served(sock) is not None:  # a daemon runs: have its rrdcached write its cache first
        cmd[3:3] = ["--daemon", f"unix:{sock}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not tmp.exists():
            raise UserError(f"rrdtool graph failed: {res.stderr.strip() or 'no image written'}; "
                            f"{out} not written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {out}")
    return 0
