"""`gridtap graph <sensor> --interval day -o power.png`: a power graph from the sensor's RRDs.

Import is drawn above the axis and export below it in its own colour, from 0;
the legend gives the energy of each over the drawn window: the counter's delta
between the window's ends, summed from the finest rows the RRD holds for each
part of it and the step in progress (gridtap.store.rrd.stored_rates), not from
the curve's consolidation, so the legend and the meter agree to the Wh. The
title names the window with its date and time zone (the host's, as the axis).
The window is the --interval before --end (default now), or --start..--end.

Only rrdtool 1.0's graph syntax is used (no VDEF, no --slope-mode, no
--daemon), so the same command draws on OpenWrt's rrdtool1. Values the
daemon still holds are written first: FLUSH over the rrdcached socket, or
over the daemon's own flush socket in batched mode (gridtap.store.rrdbatch).

The PNG is drawn into a temporary file and renamed only when rrdtool
succeeded: a failed graph leaves no file (and the exit status is 2).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import time
from pathlib import Path

from gridtap.config import Config, SensorConfig, load_config
from gridtap.errors import UserError
from gridtap.store.rrd import DS_NAME, CacheClient, RrdStore, rrdtool_exe, stored_rates, window_energy

SPANS = {"hour": 3600, "day": 86400, "week": 604800, "month": 2419200, "year": 31536000}
IMPORT_COLOUR = "#D9480F"
EXPORT_COLOUR = "#2B8A3E"
PULSE_COLOUR = "#1864AB"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graph", help="draw a sensor's power (import and export) as a PNG",
                       description="Draw a sensor's power from its RRDs as a PNG: import above the axis, "
                                   "export below it, each with its exact energy over the window.")
    p.add_argument("sensor", help="sensor name or 32-hex id from the config")
    p.add_argument("-c", "--config", required=True, type=Path, help="gridtap.toml")
    p.add_argument("--interval", default="day", choices=list(SPANS),
                   help="how far back from --end (default day; ignored with --start)")
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")
    p.add_argument("--start", type=parse_time, default=None,
                   help="left edge: Unix time or local ISO time, e.g. 2026-12-06T11:00 (default: --end "
                        "minus --interval)")
    p.add_argument("--end", type=parse_time, default=None,
                   help="right edge: Unix time or local ISO time (default now)")
    p.add_argument("--width", type=int, default=800, help="plot width in pixels, 100..4000 (default 800)")
    p.add_argument("--height", type=int, default=250, help="plot height in pixels, 50..2000 (default 250)")
    p.set_defaults(func=run)


def parse_time(text: str) -> int:
    """A Unix time, or an ISO 8601 date and time (local time unless it names its offset)."""
    if text.strip().isdigit():
        return int(text)
    try:
        return int(datetime.datetime.fromisoformat(text.strip()).timestamp())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a Unix time nor an ISO time like 2026-12-06T11:00") from exc


def window_title(name: str, start: int, end: int) -> str:
    """'<name>, 2026-12-06 11:00 - 13:00 UTC': the window in the host's time zone, as the axis."""
    a, b = time.localtime(start), time.localtime(end)
    left = time.strftime("%Y-%m-%d %H:%M", a)
    right = time.strftime("%H:%M %Z" if a[:3] == b[:3] else "%Y-%m-%d %H:%M %Z", b)
    return f"{name}, {left} - {right}"


def series_energy(path: Path, start: int, end: int) -> float:
    """Thousandths (mWh, mL) the RRD at path holds over (start, end]: its counter's delta."""
    res = subprocess.run([rrdtool_exe(), "dump", str(path)], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise UserError(f"rrdtool dump {path}: {res.stderr.strip()}")
    return window_energy(stored_rates(res.stdout), start, end)


def graph_args(
    cfg: Config, s: SensorConfig, interval: str, out: Path, end: int | None, width: int, height: int,
    start: int | None = None,
) -> list[str]:
    """The `rrdtool graph` command line; the RRDs must be on disk (flush_for_reading)."""
    rrd = RrdStore(cfg.daemon.rrd_dir, None)
    end_t = int(time.time()) if end is None else end
    start_t = end_t - SPANS[interval] if start is None else start
    if start_t >= end_t:
        raise UserError("the graph's --start must be before its --end")
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
        str(start_t),
        "--end",
        str(end_t),
        "--width",
        str(width),
        "--height",
        str(height),
        "--vertical-label",
        label,
        "--lower-limit",  # areas from 0: without --rigid this widens, never clips, the axis
        "0",
        "--upper-limit",
        "0",
        "--title",
        window_title(s.name, start_t, end_t),
    ]
    series: list[tuple[str, str, str, int]] = []  # (id, vname, legend, sign)
    if s.kind == "ct":
        series.append((s.id, "imp", "Import", 1))
        if s.export_id:
            series.append((s.export_id, "exp", "Export", -1))
    else:
        series.append((s.id, "pls", "Water" if water else "Power", 1))
    found = False
    for sid, v, legend, sign in series:
        path = rrd.path(sid)
        if not path.exists():
            continue
        found = True
        colour = {"imp": IMPORT_COLOUR, "exp": EXPORT_COLOUR}.get(v, PULSE_COLOUR)
        total_unit, total_div = ("L", 1000) if water else ("kWh", 1_000_000)
        energy = series_energy(path, start_t, end_t) / total_div
        args += [
            f"DEF:{v}={path}:{DS_NAME}:AVERAGE",
            f"CDEF:{v}p={v},{scale * sign},*",
            f"AREA:{v}p{colour}:{legend:<7}",
            f"COMMENT:{energy:8.3f} {total_unit}  ",
            f"CDEF:{v}w={v},{scale},*",
            f"GPRINT:{v}w:MAX:peak %6.0lf {label}\\l",
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
    out: Path = args.output
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    flush_for_reading(cfg, [RrdStore(cfg.daemon.rrd_dir, None).path(sid) for sid, _role in s.series])
    cmd = graph_args(cfg, s, args.interval, tmp, args.end, args.width, args.height, args.start)
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


def flush_for_reading(cfg: Config, paths: list[Path]) -> None:
    """Have the writer of these RRDs put what it still holds on disk, so a reader sees it all.

    The writer is rrdcached (its socket) or, in batched mode, the daemon itself
    (its flush socket): both take rrdcached's `FLUSH <file>`. With neither
    running, the files are complete already.
    """
    from gridtap.store.rrdbatch import SOCKET_NAME

    d = cfg.daemon
    for sock in (d.rrdcached_socket or d.state_dir / "rrdcached.sock", d.state_dir / SOCKET_NAME):
        if not sock.exists():
            continue
        client = CacheClient(sock)
        try:
            for p in paths:
                if p.exists():
                    client.command(f"FLUSH {p}")
        except (OSError, ConnectionError, ValueError):
            continue  # a stale socket of a writer that is gone: nothing is held
        finally:
            client.close()
