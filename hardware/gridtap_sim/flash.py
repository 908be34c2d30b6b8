"""`gridtap flash --virtual DIR`: deploy the firmware to a directory that plays a virtual board's filesystem.

The compile and board-file steps are `gridtap.commands.flash`'s, shared with a
real board; what is here needs the simulator (numpy): the unix-port target, the
virtual board's `main.py`, and booting it until its HELLO.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridtap.commands.flash import (
    PACKAGE,
    QUERY,
    Target,
    check_target,
    compile_firmware,
    load_board_file,
    mpy_cross_exe,
    mpy_cross_version,
    parse_target,
)
from gridtap.errors import UserError

VIRTUAL_MAIN = """\
# gridtap virtual board entry, written by `gridtap flash --virtual`.
# Like a Pico's flash, this directory is the board's whole filesystem: the
# firmware is imported from the .mpy files next to this file and nowhere else.
import sys

sys.path[:] = [sys.path[0], ".frozen"]
from gridtap_fw import app, hal_virtual

app.App(hal_virtual.VirtualHal()).run()
"""


def micropython_target() -> Target:
    from gridtap_sim.runner import micropython_exe

    proc = subprocess.run([micropython_exe(), "-c", QUERY], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"the local MicroPython does not run: {proc.stderr.strip()}")
    return parse_target(proc.stdout)


def populate(fs: Path, board_path: Path, progress: Callable[[str], None] = print) -> Target:
    """Make fs the virtual board's filesystem: .mpy files, main.py, board.json."""
    load_board_file(board_path)
    target = micropython_target()
    check_target(target, "linux", mpy_cross_version(mpy_cross_exe()))
    if fs.exists() and not fs.is_dir():
        raise UserError(f"--virtual {fs}: exists and is not a directory")
    fs.mkdir(parents=True, exist_ok=True)
    pkg = fs / PACKAGE
    if pkg.is_dir():
        for old in pkg.iterdir():
            if old.suffix in (".py", ".mpy"):
                old.unlink()
    files = compile_firmware(fs, target.arch, "virtual", progress)
    (fs / "main.py").write_text(VIRTUAL_MAIN)
    shutil.copyfile(board_path, fs / "board.json")
    total = sum((fs / f).stat().st_size for f in files)
    progress(f"{fs}: {len(files)} .mpy files ({total:,} bytes), main.py, board.json")
    return target


def boot_virtual(fs: Path, timeout: float, scenario: str = "steady", seed: int = 1,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Boot the virtual board from fs and return the HELLO it sends on its pty."""
    from gridtap_sim.board import BoardError, load_board
    from gridtap_sim.engine import Simulation
    from gridtap_sim.runner import VirtualBoard

    main = fs / "main.py"
    if not main.is_file():
        raise UserError(f"{fs} holds no main.py: run gridtap flash --virtual {fs} first")
    try:
        board = load_board(fs / "board.json")
    except BoardError as exc:
        raise UserError(str(exc)) from exc
    sim = Simulation(board, scenario, seed)

    class Board(VirtualBoard):
        stop = threading.Event()

        def _on_adc(self, payload: bytes) -> bool:
            if self.stop.is_set():   # HELLO is in: end the run at the next ADC block
                raise _Stop()
            return super()._on_adc(payload)

    vb = Board(sim, firmware=main, speed=1.0, fw_log=fs / "firmware.log")
    failure: list[BaseException] = []

    def body() -> None:
        try:
            vb.run(math.inf)
        except _Stop:
            pass
        except BaseException as exc:  # reported below
            failure.append(exc)

    th = threading.Thread(target=body, daemon=True)
    progress(f"booting the virtual board from {fs} in real time; its link is {vb.pty_path}")
    th.start()
    assert vb.pty_path is not None
    from gridtap.board.client import BoardClient

    progress(f"waiting for HELLO on {vb.pty_path}")
    client = BoardClient.open(vb.pty_path, board.baud)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and th.is_alive():
            hello = client.wait_hello(min(1.0, deadline - time.monotonic()))
            if hello is not None:
                return hello
        if not failure:
            raise UserError(f"no HELLO from the virtual board within {timeout:g} s "
                            f"(firmware log: {fs / 'firmware.log'})")
        raise UserError("the virtual board stopped before HELLO")
    finally:
        client.close()
        vb.stop.set()
        th.join(timeout=10)
        vb.close()
        if failure:
            hint = " (firmware log: %s)" % (fs / "firmware.log")
            raise UserError(f"the virtual board failed: {failure[0]}{hint}")


class _Stop(Exception):
    pass
