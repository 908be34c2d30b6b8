"""OpenWrt readiness: no numpy in the daemon, and the procd script runs a command the CLI accepts."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from gridtap.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "tools" / "openwrt" / "feed" / "gridtap" / "files" / "gridtap.init"


def test_daemon_runs_without_numpy() -> None:
    """numpy is made unimportable; the CLI, the daemon and all its outputs must still load and run."""
    example = ROOT / "docs" / "gridtap.example.toml"
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from gridtap.cli import main\n"
        f"assert main(['daemon', '-c', {str(example)!r}, '--check']) == 0\n"
        "import gridtap.daemon, gridtap.outputs.restapi, gridtap.commands.graph\n"
        "import gridtap.store.rrd, gridtap.store.spool\n"
        "import gridtap.outputs.flukso, gridtap.outputs.mqtt, gridtap.outputs.pvoutput.output\n"
        "import gridtap.control.service, gridtap.control.luxpower.config\n"
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
    argv = [w.replace("$CONF", "/etc/gridtap/gridtap.toml") for w in words[1:]]
    args = build_parser().parse_args(argv)
    assert args.command == "daemon" and args.syslog and args.log_level == "info"
    check = next(x for x in text.splitlines() if "--check" in x)
    assert "daemon -c" in check


FEED = ROOT / "tools" / "openwrt" / "feed" / "gridtap"
PACKAGES = ROOT / "tools" / "openwrt" / "packages.txt"
OURS = {"gridtap", "gridtap_fw"}

# Started the way the package runs it (`gridtap daemon`, batched RRDs through the rrdtool 1.0
# wrapper), with every optional output configured; prints the top-level modules it loaded.
CLOSURE_SCRIPT = """
import sys
before = set(sys.modules)
# what the router lacks cannot be imported (ImportError, as there): the numpy of the virtual board,
# the C decoder (the package ships none: the pure Python one is used), and every module of a
# package gridtap does not depend on (argv[2:]); nor PySocks, which paho takes if present (the dev
# venv has it through selenium, for the hub's browser tests)
for name in ["numpy", "gridtap.board._native", "socks", *sys.argv[2:]]:
    sys.modules[name] = None
import threading
from pathlib import Path
from gridtap.cli import main
from gridtap.config import load_config
path = Path(sys.argv[1])
assert main(["daemon", "-c", str(path), "--check"]) == 0
from gridtap.daemon import Daemon
d = Daemon(load_config(path))
d.start()
try:
    d.run(threading.Event(), max_seconds=0.5)
finally:
    d.close()
import gridtap.commands.graph  # `gridtap graph` on the router
loaded = {m for m, mod in sys.modules.items() if mod is not None} - before
print(" ".join(sorted({m.split(".")[0] for m in loaded})))
"""


def _feed_depends() -> list[str]:
    text = (FEED / "Makefile").read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.strip().startswith("DEPENDS:="))
    return [w.lstrip("+") for w in line.split(":=", 1)[1].split()]


def _packages() -> tuple[dict[str, tuple[str, set[str]]], dict[str, set[str]], set[str]]:
    """packages.txt: name -> (feed path, modules); name -> its own dependencies; absent modules."""
    pkgs: dict[str, tuple[str, set[str]]] = {}
    needs: dict[str, set[str]] = {}
    absent: set[str] = set()
    for raw in PACKAGES.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "package":
            pkgs[words[1]] = (words[2], set(words[3:]))
        elif words[0] == "needs":
            needs[words[1]] = set(words[2:])
        elif words[0] == "absent":
            absent |= set(words[1:])
    return pkgs, needs, absent


def provider(module: str, pkgs: dict[str, tuple[str, set[str]]], absent: set[str]) -> str | None:
    """The OpenWrt package that ships a top-level module, or None if none does."""
    for name, (_path, mods) in pkgs.items():
        if module in mods:
            return name
    if module in absent:
        return None
    if module in sys.stdlib_module_names or module in sys.builtin_module_names:
        return "python3-light"
    if module.startswith("_sysconfigdata_"):  # python3-base (PYTHON3_BASE_LIB_FILES)
        return "python3-light"
    return None


def test_feed_dependencies_exist_in_openwrt_feeds_and_the_readme_names_them() -> None:
    pkgs, needs, _ = _packages()
    depends = _feed_depends()
    assert "rrdtool1" in depends and "python3-light" in depends
    readme = (ROOT / "tools" / "openwrt" / "README.md").read_text()
    for dep in depends + [d for p in depends for d in needs.get(p, ())]:
        assert dep in pkgs, f"{dep} is not an OpenWrt package (tools/openwrt/packages.txt)"
        assert f"`{dep}`" in readme and f"`{pkgs[dep][0]}`" in readme, f"README lacks {dep} and its feed path"
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and f"PKG_VERSION:={version.group(1)}" in (FEED / "Makefile").read_text()


def test_daemon_import_closure_is_shipped_by_the_package_dependencies(short_tmp: Path) -> None:
    """Every module the daemon loads, with each optional output configured, comes from gridtap itself
    or from a package its feed Makefile depends on: a new import of a module OpenWrt does not ship
    (or ships in a package gridtap does not depend on) fails here."""
    from tests.support.daemon import RRDTOOL1, config_text

    cfg = short_tmp / "gridtap.toml"
    cfg.write_text(config_text(short_tmp / "tty", short_tmp / "state", rrd_mode="batched") + """
[mqtt]
host = "127.0.0.1"
port = 9
[flukso]
base_url = "https://127.0.0.1:9/"
key_env = "GRIDTAP_TEST_KEY"
[pvoutput]
system_id = 4242
base_url = "https://127.0.0.1:9/"
v4 = "mains:power"
""")
    pkgs, needs, absent = _packages()
    shipped = set(_feed_depends())
    for p in list(shipped):
        shipped |= needs.get(p, set())
    unshipped = sorted({m for name, (_path, mods) in pkgs.items() if name not in shipped for m in mods}
                       | {m for m in sys.stdlib_module_names if provider(m, pkgs, absent) not in shipped})
    env = dict(os.environ, PATH=f"{RRDTOOL1}{os.pathsep}{os.environ['PATH']}",
               GRIDTAP_TEST_KEY="0" * 32, GRIDTAP_PVOUTPUT_KEY="c0ffee" * 6)
    out = subprocess.run([sys.executable, "-c", CLOSURE_SCRIPT, str(cfg), *unshipped], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    closure = set(out.stdout.splitlines()[-1].split())
    assert {"gridtap", "paho", "serial", "sqlite3", "http", "urllib"} <= closure  # it really ran them
    missing = {m: provider(m, pkgs, absent) for m in closure - OURS}
    missing = {m: p for m, p in missing.items() if p not in shipped}
    assert not missing, f"imported, but no dependency of the OpenWrt package ships it: {missing}"


def test_provider_lookup() -> None:
    pkgs, _, absent = _packages()
    assert provider("decimal", pkgs, absent) == "python3-decimal"
    assert provider("json", pkgs, absent) == "python3-light"
    assert provider("tkinter", pkgs, absent) is None and provider("numpy", pkgs, absent) is None
    assert provider("ssl", pkgs, absent) == "python3-openssl"


def test_the_package_config_is_the_example_with_state_on_the_overlay(tmp_path: Path) -> None:
    """Build/Prepare's sed turns docs/gridtap.example.toml into /etc/gridtap/gridtap.toml."""
    from gridtap.config import parse_config

    text = (FEED / "Makefile").read_text().replace("\\\n", " ")
    exprs = re.findall(r"-e '([^']+)'", text)
    assert len(exprs) == 3
    example = ROOT / "docs" / "gridtap.example.toml"
    out = subprocess.run(["sed", *(a for e in exprs for a in ("-e", e)), str(example)],
                         capture_output=True, text=True, check=True).stdout
    cfg = parse_config(out, Path("/etc/gridtap/gridtap.toml"))
    assert cfg.daemon.state_dir == Path("/srv/gridtap") and cfg.daemon.rrd_dir == Path("/srv/gridtap/rrd")
    assert cfg.daemon.rrd_mode == "auto"
    assert cfg.board.board_file == Path("/etc/gridtap/board.json")
