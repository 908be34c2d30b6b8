"""Every subcommand says what it does in its --help, and every option has a help text (issue #15,
item 10: `gridtap daemon` and `gridtap calibrate` had no description, graph --width/--height and
calibrate --baud no help)."""

from __future__ import annotations

import argparse

from gridtap.cli import build_parser


def _walk(name: str, parser: argparse.ArgumentParser) -> list[str]:
    if not parser.add_help:  # only listed here, parsed by its own module (`gridtap hub`: gridtap_hub.cli)
        return []
    missing = [] if parser.description else [f"{name}: no description"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                missing += _walk(f"{name} {sub}", p)
        elif not action.help:
            missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: no help")
    return missing


def test_every_command_and_option_is_described() -> None:
    assert _walk("gridtap", build_parser()) == []
