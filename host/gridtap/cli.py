"""`gridtap`: the single command-line entry point.

Each subcommand lives in its own module that exposes `register(subparsers)`.
Only the module of the command being run is imported: the daemon on a router
must not load the simulator, the flasher or the calibration code just to
build a parser. The other commands appear in `gridtap --help` with the
one-line summary from `COMMANDS` (tests/host/commands/test_cli.py keeps those
equal to each module's own help). A command whose install extra is missing
stays listed and says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gridtap import __version__
from gridtap.errors import UserError


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    summary: str
    needs: tuple[str, ...] = ()  # top-level modules the command cannot run without
    extra: str = ""  # the install extra that brings them
    own_parser: bool = False  # the module parses its own arguments: parse(argv) -> a callable to run


SIM_EXTRA = "sim"
COMMANDS = (
    Command("wire", "gridtap.commands.wire", "decode or build gridtap link frames"),
    Command("sim", "gridtap_sim.cli", "run the firmware on the virtual board (needs numpy)",
            ("numpy",), SIM_EXTRA),
    Command("rules", "gridtap.commands.rules",
            "check or evaluate upload rules (Flukso CUSTOM_RULES or cFos formulas)"),
    Command("daemon", "gridtap.commands.daemon", "run the host daemon: board link, RRDs, REST API"),
    Command("graph", "gridtap.commands.graph", "draw a sensor's power (import and export) as a PNG"),
    Command("flash", "gridtap.commands.flash",
            "compile the firmware to .mpy, deploy it to a board and wait for HELLO"),
    Command("calibrate", "gridtap.commands.calibrate",
            "compute and write V/I gain and phase from a reference meter"),
    Command("demo", "gridtap_sim.demo", "run board, daemon, REST API and graphs on the virtual board, "
            "then report energy against the simulator's truth (needs numpy)", ("numpy",), SIM_EXTRA),
    Command("control", "gridtap.commands.control", "battery control: show the planner's next 24 h "
            "(table and PNG)"),
    Command("hub", "gridtap_hub.cli", "the community hub: Flukso server API, peers, dashboard "
            "(gridtap hub --help)", ("gridtap_hub", "psycopg"), "hub", own_parser=True),
)


def missing(command: Command) -> list[str]:
    """The modules `command` needs that are not installed."""
    return [m for m in command.needs if importlib.util.find_spec(m) is None]


def install_hint(extra: str, what: str) -> str:
    return (f"{what} needs the [{extra}] extra: pip install 'gridtap[{extra}]' "
            f"(from a checkout: pip install -e '.[{extra}]')")


def chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of the command in `argv` only (of every one when None)."""
    parser = argparse.ArgumentParser(
        prog="gridtap",
        description="gridtap: home energy metering, from sensor board to uploads.",
    )
    parser.add_argument("--version", action="version", version=f"gridtap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    name = None if argv is None else chosen(argv)
    for cmd in COMMANDS:
        if (argv is None or cmd.name == name) and not missing(cmd) and not cmd.own_parser:
            importlib.import_module(cmd.module).register(sub)
            continue
        # Listed with its summary; run without its extra, it says how to install it, whatever the options.
        p = sub.add_parser(cmd.name, help=cmd.summary, add_help=False)
        p.set_defaults(func=_unavailable(cmd), unavailable=True)
    return parser


def _unavailable(cmd: Command) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        hint = install_hint(cmd.extra, f"gridtap {cmd.name}")
        raise UserError(f"{hint}; missing: {', '.join(missing(cmd))}")

    return run


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    own = next((c for c in COMMANDS if c.own_parser and words[:1] == [c.name] and not missing(c)), None)
    if own is not None:  # e.g. `gridtap hub ...`: parsed by gridtap_hub.cli itself
        run = importlib.import_module(own.module).parse(words[1:])
    else:
        parser = build_parser(words)
        args, rest = parser.parse_known_args(words)
        if rest and not getattr(args, "unavailable", False):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
