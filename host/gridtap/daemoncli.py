"""`gridtap daemon -c gridtap.toml`: run the host daemon (or only check its config).

gridtap daemon -c /etc/gridtap.toml                 # log to stderr at info
gridtap daemon -c gridtap.toml --syslog --log-level warning
gridtap daemon -c gridtap.toml --check              # validate the config and exit
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from gridtap.config import load_config
from gridtap.errors import UserError

LEVELS = ("debug", "info", "warning", "error")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="run the host daemon: board link, RRDs, REST API")
    p.add_argument("-c", "--config", required=True, type=Path, help="gridtap.toml")
    p.add_argument("--log-level", default="info", choices=LEVELS, help="least important messages logged")
    p.add_argument("--syslog", action="store_true", help="log to syslog (/dev/log) instead of stderr")
    p.add_argument("--check", action="store_true", help="only validate the config file, then exit")
    p.set_defaults(func=run)


def setup_logging(level: str, use_syslog: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if use_syslog:
        if not os.path.exists("/dev/log"):
            raise UserError("--syslog: there is no syslog socket /dev/log on this system")
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("gridtap[%(process)d]: %(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    from gridtap.daemon import Daemon, check_features

    check_features(cfg)
    if args.check:
        n = sum(len(s.series) for s in cfg.sensors)
        print(f"{args.config}: ok ({len(cfg.sensors)} sensors, {n} series, board on {cfg.board.port})")
        return 0
    setup_logging(args.log_level, args.syslog)
    stop = threading.Event()

    d = Daemon(cfg)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("gridtap.daemon").info("signal %d: stopping", signum)
        stop.set()
        d.link.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        d.start()
        d.run(stop)
    finally:
        d.close()
    return 0
