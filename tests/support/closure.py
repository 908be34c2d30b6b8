"""What `gridtap daemon` loads: this project's source files imported by a started daemon.

The daemon runs as its own process against the fake board on a pty, with
only `[board]` and one sensor configured. Once it has greeted the board and
the first counter is ACKed, it is asked (SIGUSR1, a handler installed before
gridtap is imported) for its `sys.modules`; those are its closure: a
package's `__init__.py` is not counted, nor the C decoder (not a source file).
tests/host/test_daemon_closure.py holds it to a limit; bench/bench_host.py
reports it as `host.daemon_modules_loaded`.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gridtap_sim.procs import stop_process
from tests.support.fakeboard import FakeBoard

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("gridtap", "gridtap_fw", "gridtap_sim")
# Issue #14's goal is 15; the integrity work of #13 then added the board's plausibility limits
# (board/plausible.py) and storage-fault handling (store/faults.py) to every daemon (17), and the
# decoder choice (board/codec.py) went into the link that reads with it (16) and the REST API's read-only
# view (store/view.py) into the REST API, its one reader (15).
# The test fails when the closure grows past this; lower it when a module leaves.
LIMIT = 15
# Never in a daemon that only reads a board: numpy and the simulator, mpremote, the developer commands,
# and the rules engine (it loads only for a section that uses rules).
FORBIDDEN = ("numpy", "gridtap_sim", "mpremote", "gridtap.commands.flash", "gridtap.commands.calibrate",
             "gridtap.commands.graph", "gridtap.commands.rules", "gridtap.commands.wire", "gridtap.rules")
SENSOR_ID = "e" * 31 + "1"


@dataclass
class Closure:
    sources: list[str]  # this project's modules that are source files, in import order
    everything: list[str]  # every module imported, third-party and stdlib included

    def forbidden(self) -> list[str]:
        return [m for m in self.everything if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


def board_only_config(port: Path, state: Path) -> str:
    return (f'[daemon]\nstate_dir = "{state}"\nbind = "127.0.0.1"\nport = 0\n\n'
            f'[board]\nport = "{port}"\n\n'
            f'[[sensor]]\nname = "mains"\nkind = "ct"\nchannel = 0\nid = "{SENSOR_ID}"\n')


def is_source(module: str) -> bool:
    """A project module that is a .py file and not a package's __init__.py."""
    if module.split(".")[0] not in PROJECT:
        return False
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a C extension's attribute module (cffi's "._native.lib")
        return False
    if spec is None or spec.origin is None or spec.submodule_search_locations is not None:
        return False
    return spec.origin.endswith(".py")


# Run as the daemon's main: on SIGUSR1 it writes the names in sys.modules to the file in argv[1].
MAIN = """\
import signal, sys
out = sys.argv.pop(1)
def dump(signum, frame):
    with open(out + ".tmp", "w") as f:
        f.write("\\n".join(sys.modules))
    import os
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR1, dump)
from gridtap.cli import main
sys.exit(main())
"""


def daemon_closure(work: Path, config: str | None = None, timeout: float = 30.0, ack: bool = True) -> Closure:
    """Start `gridtap daemon` on a fake board in `work` (a short path: it holds unix sockets).

    ack=False: do not wait for the first counter's ACK (a spooled output holds it until the spool
    commits, up to 30 s); the daemon is given a second to handle it instead."""
    board = FakeBoard(work, n_ct=1, n_pulse=0, retx_s=5.0)
    board.appear()
    cfg = work / "gridtap.toml"
    cfg.write_text(config or board_only_config(board.path, work / "state"))
    out = work / "modules.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), str(ROOT / "firmware")]))
    proc = subprocess.Popen([sys.executable, "-c", MAIN, str(out), "daemon", "-c", str(cfg),
                             "--log-level", "warning"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not board.clock_set:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon did not start and greet the board")
            time.sleep(0.02)
        board.step(int(time.time()) - 1, power_w=[500.0])
        if not ack:
            time.sleep(1.0)
        elif not board.wait_acked(timeout):
            raise RuntimeError("the daemon did not ACK the first counter")
        proc.send_signal(signal.SIGUSR1)
        while not out.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon did not list its modules")
            time.sleep(0.02)
        everything = out.read_text().split("\n")
    finally:
        stop_process(proc, 30)
        board.close()
    return Closure([m for m in everything if is_source(m)], everything)
