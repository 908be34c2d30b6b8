"""Build gridtap.board._native: every native/gt_*.c behind the cdefs of every native/*.cdef.

cffi API mode, out of line: the C sources are compiled with the project's strict
flags into one extension module, which is copied next to host/gridtap/__init__.py
(`make native` runs this; `make clean` removes it). Run it as

    .venv/bin/python native/build_ffi.py
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cffi

NATIVE = Path(__file__).resolve().parent
ROOT = NATIVE.parent
BUILD = NATIVE / "build"
TARGET_DIR = ROOT / "host" / "gridtap" / "board"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def make_ffi() -> cffi.FFI:
    ffi = cffi.FFI()
    cdefs = sorted(NATIVE.glob("*.cdef"))
    sources = sorted(NATIVE.glob("gt_*.c"))
    headers = sorted(NATIVE.glob("gt_*.h"))
    if not cdefs or not sources:
        raise SystemExit("native/: no *.cdef or gt_*.c files to build")
    ffi.cdef("\n".join(p.read_text() for p in cdefs))
    ffi.set_source(
        "gridtap.board._native",
        "\n".join(f'#include "{h.name}"' for h in headers),
        sources=[str(p) for p in sources],
        include_dirs=[str(NATIVE)],
        extra_compile_args=CFLAGS,
        # The wrapper cffi generates is compiled with the same flags, so every
        # line of C in the module is warning-free under -Wall -Wextra -Werror.
        depends=[str(p) for p in headers + cdefs],
    )
    return ffi


def main() -> int:
    BUILD.mkdir(exist_ok=True)
    ffi = make_ffi()
    try:
        built = Path(ffi.compile(tmpdir=str(BUILD), verbose=False))
    except (cffi.CDefError, cffi.VerificationError) as exc:
        print(f"native: build failed: {exc}", file=sys.stderr)
        return 1
    for old in TARGET_DIR.glob("_native*.so"):
        old.unlink()
    dest = TARGET_DIR / built.name
    shutil.copy2(built, dest)
    print(f"native: built {dest.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
