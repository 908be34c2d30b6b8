"""`gridtap daemon -c gridtap.toml`: run the host daemon (or only check its config).

gridtap daemon -c /etc/gridtap.toml                 # log to stderr at info
gridtap daemon -c gridtap.toml --syslog --log-level warning
gridtap daemon -c gridtap.toml --check              # validate the config and exit
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from gridtap.config import load_config
from gridtap.errors import UserError

LEVELS = ("debug", "info", "warning", "error")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="run the host daemon: board link, RRDs, REST API",
                       description="Run the host daemon on a gridtap.toml: the board link (HELLO, clock and "
                                   "sensor config, ACKed counters), counter epochs, the RRDs through "
                                   "rrdcached (or batched), the REST API and the configured uplinks "
                                   "(MQTT, Flukso, PVOutput). Stops cleanly on SIGTERM or Ctrl-C.")
    p.add_argument("-c", "--config", required=True, type=Path, help="gridtap.toml")
    p.add_argument("--log-level", default="info", choices=LEVELS, help="least important messages logged")
    p.add_argument("--syslog", action="store_true", help="log to syslog (/dev/log) instead of stderr")
    p.add_argument("--check", action="store_true", help="only validate the config file, then exit")
    p.add_argument("--clock-file", type=Path, default=None, metavar="PATH",
                   help="take Unix time from a simulated clock (`gridtap sim --clock-file PATH`) instead of "
                        "the system clock: board TIME_SET, PVOutput intervals, spool aging, the REST API")
    p.add_argument("--time-sync-s", default=None, metavar="S",
                   help="re-set the board clock when it is off by at least S seconds (default 1); raise it "
                        "with a sped-up simulated clock, e.g. 5 at 60x")
    p.set_defaults(func=run)


def setup_logging(level: str, use_syslog: bool, now: Callable[[], float] | None = None) -> None:
    """Log to syslog or stderr; stderr lines are stamped by `now` when given (the daemon's clock, so a
    daemon on a simulated clock logs simulated instants, as its data carries them)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if use_syslog:
        if not os.path.exists("/dev/log"):
            raise UserError("--syslog: there is no syslog socket /dev/log on this system")
        # Imported only here: logging.handlers loads pickle and more, a megabyte stderr logging does without.
        from logging.handlers import SysLogHandler

        handler = SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("gridtap[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if now is not None:
            clock_now = now

            def stamp(_created: float | None) -> time.struct_time:
                return time.localtime(clock_now())

            formatter.converter = stamp  # type: ignore[method-assign]
        handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def _seconds(name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise UserError(f"{name} must be a number of seconds, got {text!r}") from exc
    if not 0 < v <= 86400:
        raise UserError(f"{name} must be more than 0 and at most 86400 seconds, got {text}")
    return v


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    sync_text = getattr(args, "time_sync_s", None)
    sync_s = None if sync_text is None else _seconds("--time-sync-s", sync_text)
    clock = None
    if getattr(args, "clock_file", None) is not None and not args.check:
        from gridtap.simclock import ClockReader

        clock = ClockReader(args.clock_file)  # the daemon's clock object: nothing else sees it
    from gridtap.daemon import Daemon, check

    if sync_s is not None:
        import gridtap.board.session

        gridtap.board.session.TIME_SYNC_S = sync_s

    check(cfg)
    if args.check:
        n = sum(len(s.series) for s in cfg.all_sensors)
        names = ", ".join(s.name for s in cfg.virtual)
        virtual = f" and {len(cfg.virtual)} virtual ({names})" if cfg.virtual else ""
        print(f"{args.config}: ok ({len(cfg.sensors)} sensors{virtual}, {n} series, "
              f"board on {cfg.board.port})")
        return 0
    setup_logging(args.log_level, args.syslog, None if clock is None else clock.now)
    stop = threading.Event()

    d = Daemon(cfg, clock=clock)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("gridtap.daemon").info("signal %d: stopping", signum)
        stop.set()
        d.link.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        d.start(stop)
        d.run(stop)
    finally:
        d.close()
    return 0
