"""`gridtap`: the single command-line entry point.

Each subcommand lives in its own module that exposes `register(subparsers)`.
A subcommand is listed here only once it works end to end.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gridtap import __version__
from gridtap.errors import UserError

SUBCOMMAND_MODULES = (
    "gridtap.commands.wire",
    "gridtap.commands.sim",
    "gridtap.commands.rules",
    "gridtap.commands.daemon",
    "gridtap.commands.graph",
    "gridtap.commands.flash",
    "gridtap.commands.calibrate",
    "gridtap.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridtap",
        description="gridtap: home energy metering, from sensor board to uploads.",
    )
    parser.add_argument("--version", action="version", version=f"gridtap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    if _hub_installed():  # listed here; `gridtap hub …` itself is parsed by gridtap_hub.cli (main)
        sub.add_parser("hub", add_help=False,
                       help="the community hub: Flukso server API, peers, dashboard (gridtap hub --help)")
    return parser


def _hub_installed() -> bool:
    """`gridtap hub` is offered only with the [hub] extra (psycopg); nothing is imported to find out,
    so the daemon's commands never load the hub."""
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in ("gridtap_hub", "psycopg"))


def main(argv: Sequence[str] | None = None) -> int:
    args_ = list(sys.argv[1:] if argv is None else argv)
    if args_[:1] == ["hub"] and _hub_installed():
        run = importlib.import_module("gridtap_hub.cli").parse(args_[1:])
    else:
        args = build_parser().parse_args(args_)
        run = lambda: args.func(args)  # noqa: E731
    try:
        return int(run() or 0)
    except UserError as exc:
        print(f"gridtap: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
