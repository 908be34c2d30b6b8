"""cli.py: one subcommand module imported per run, the summaries in step with the modules, extras named."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from gridtap import cli

PROBE = ("import sys\nfrom gridtap.cli import main\n"
         "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print(' '.join(m for m in sys.modules if m.startswith(('gridtap', 'numpy', 'mpremote'))))\n")


def modules_after(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True)
    return set(out.stdout.splitlines()[-1].split())


def test_summaries_match_each_commands_own_help() -> None:
    parser = cli.build_parser()  # every module, as a full --help would need
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    own = {c.dest: c.help for c in sub._choices_actions}
    assert own == {c.name: c.summary for c in cli.COMMANDS}


def test_daemon_help_imports_no_other_command() -> None:
    loaded = modules_after("daemon", "--help")
    assert "gridtap.commands.daemon" in loaded
    others = {c.module for c in cli.COMMANDS} - {"gridtap.commands.daemon"}
    assert not loaded & others
    assert not {m for m in loaded if m.split(".")[0] in ("numpy", "mpremote", "gridtap_sim")}


def test_top_level_help_lists_every_command_and_imports_none() -> None:
    out = subprocess.run([sys.executable, "-m", "gridtap.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for c in cli.COMMANDS:
        assert c.name in out
    assert not modules_after("--help") & {c.module for c in cli.COMMANDS}


def test_a_command_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = cli.Command("sim", "gridtap_sim.cli", "run the firmware on the virtual board (needs numpy)",
                         ("no_such_module_for_gridtap",), "sim")
    monkeypatch.setattr(cli, "COMMANDS", (absent,))
    assert cli.main(["sim", "--scenario", "household"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gridtap[sim]'" in err and "no_such_module_for_gridtap" in err
    assert "sim" in cli.build_parser(["--help"]).format_help()
