"""OpenWrt readiness: no numpy in the daemon, and the procd script runs a command the CLI accepts."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from gridtap.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "tools" / "openwrt" / "gridtap.init"


def test_daemon_runs_without_numpy() -> None:
    """numpy is made unimportable; the CLI, the daemon and all its outputs must still load and run."""
    example = ROOT / "docs" / "gridtap.example.toml"
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from gridtap.cli import main\n"
        f"assert main(['daemon', '-c', {str(example)!r}, '--check']) == 0\n"
        "import gridtap.daemon, gridtap.outputs.restapi, gridtap.outputs.uplinks, gridtap.commands.graph\n"
        "import gridtap.store.rrd, gridtap.store.spool\n"
        "import gridtap.outputs.flukso, gridtap.outputs.mqtt, gridtap.outputs.pvoutput\n"
        "print('no numpy needed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "no numpy needed" in out.stdout


def test_init_script_is_valid_sh_and_its_command_parses() -> None:
    subprocess.run(["sh", "-n", str(INIT)], check=True)
    text = INIT.read_text()
    assert "USE_PROCD=1" in text and "procd_set_param respawn" in text
    line = next(x for x in text.splitlines() if "procd_set_param command" in x)
    words = shlex.split(line.split("procd_set_param command", 1)[1])
    assert words[0] == "$PROG"
    argv = [w.replace("$CONF", "/etc/gridtap.toml") for w in words[1:]]
    args = build_parser().parse_args(argv)
    assert args.command == "daemon" and args.syslog and args.log_level == "info"
    check = next(x for x in text.splitlines() if "--check" in x)
    assert "daemon -c" in check
