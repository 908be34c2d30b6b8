"""Plain-Python reference for the per-sample kernel, and loaders for its C build.

The reference follows docs/kernel.md literally: one pass over the sets in
order, one set at a time, with Python's unbounded ints wrapped to int32 only
when written to `out`/`state`. It shares no structure with the C kernel (which
makes one pass for V and one per CT) or the viper kernel, which is what makes
the differential tests in test_kernel.py worth having.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
MAX_SETS = 256
MIDSCALE = 2048
HIST_KEEP = 128  # V history ages kept across calls (D, Q <= 127)
HIST_LEN = HIST_KEEP + MAX_SETS  # u16 entries
HIST_WORD = 9  # state word where the history starts
STATE_LEN = HIST_WORD + HIST_LEN // 2  # 201 int32
FILL = 4  # state[4]: history fill position
DELAY = 4  # state[4 + k]: delays of CT k = 1..4, D in bits 0..6, Q in bits 8..14
QSHIFT = 8


def wrap32(x: int) -> int:
    """Two's-complement int32 value of x (what a store to an int32 word keeps)."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def out_len(nch: int) -> int:
    return 2 + 6 * (nch - 1)


def hist_get(state: list[int]) -> list[int]:
    """The state's V history as u16 values (little-endian halves of the int32 words)."""
    h: list[int] = []
    for word in state[HIST_WORD:STATE_LEN]:
        u = word & 0xFFFFFFFF
        h += [u & 0xFFFF, u >> 16]
    return h


def hist_put(state: list[int], h: list[int]) -> None:
    for j in range(HIST_LEN // 2):
        state[HIST_WORD + j] = wrap32(h[2 * j] | (h[2 * j + 1] << 16))


def new_state(hyst: int = 0, pol: int = 0, delays: tuple[int, ...] = (), v_raw: int = MIDSCALE,
              fill: int = HIST_KEEP) -> list[int]:
    """A state whose history holds v_raw everywhere (what the firmware starts from)."""
    state = [0] * STATE_LEN
    state[1], state[2], state[FILL] = pol, hyst, fill
    for k, d in enumerate(delays):
        state[DELAY + 1 + k] = d
    hist_put(state, [v_raw] * HIST_LEN)
    return state


def ref_block(samples: list[int], start: int, nsets: int, nch: int, state: list[int],
              out: list[int]) -> int:
    """The contract, written out. samples: raw u16 values, nch per set."""
    state[3] = 0
    if not 2 <= nch <= 5:
        return 0
    stop = min(nsets, start + MAX_SETS)
    avail = max(0, stop - start)
    pol = 1 if state[1] != 0 else 0
    hyst = max(state[2], 0)
    hist = hist_get(state)
    w = state[FILL]
    if not HIST_KEEP <= w <= HIST_LEN:
        w = HIST_KEEP
    if w + avail > HIST_LEN:
        hist[:HIST_KEEP] = hist[w - HIST_KEEP:w]
        w = HIST_KEEP
    delays = [state[DELAY + k] & 127 for k in range(1, nch)]
    qdelays = [(state[DELAY + k] >> QSHIFT) & 127 for k in range(1, nch)]
    sums = [0] * out_len(nch)
    consumed = 0
    for s in range(start, stop):
        raw = samples[s * nch:(s + 1) * nch]
        v = raw[0] - MIDSCALE
        if pol == 0 and v > hyst:
            pol = 1
            state[3] = 1
            break
        if pol == 1 and v < -hyst:
            pol = 0
        hist[w + consumed] = raw[0]  # this set's v is age 0, the one before it age 1
        sums[0] += v
        sums[1] += v * v
        for k in range(nch - 1):
            i = raw[1 + k] - MIDSCALE
            v_d = hist[w + consumed - delays[k]] - MIDSCALE
            v_q = hist[w + consumed - qdelays[k]] - MIDSCALE
            sums[2 + 6 * k] += i
            sums[3 + 6 * k] += i * i
            sums[4 + 6 * k] += i * v_d
            sums[5 + 6 * k] += i * v_q
            sums[6 + 6 * k] += v_d
            sums[7 + 6 * k] += v_q
        consumed += 1
    if consumed:
        state[0] = wrap32(hist[w + consumed - 1] - MIDSCALE)
    state[1] = pol
    state[FILL] = w + consumed
    hist_put(state, hist)
    out[:len(sums)] = [wrap32(x) for x in sums]
    return consumed


KernelFn = Callable[[list[int], int, int, int, list[int], list[int]], int]


def _load_module(name: str, directory: Path) -> ModuleType:
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))


def build_cffi_kernel(tmpdir: Path) -> Any:
    """A private cffi build of native/gt_kernel.c as it is now, in tmpdir.

    Tests use this rather than gridtap.board._native (built by `make native`), which
    can be older than the source being edited; installed_native() is checked
    against it separately.
    """
    import cffi

    ffi = cffi.FFI()
    ffi.cdef((NATIVE / "gt_kernel.cdef").read_text())
    ffi.set_source("_gt_kernel_test", '#include "gt_kernel.h"', sources=[str(NATIVE / "gt_kernel.c")],
                   include_dirs=[str(NATIVE)],
                   extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"])
    ffi.compile(tmpdir=str(tmpdir), verbose=False)
    return _load_module("_gt_kernel_test", tmpdir)


def installed_native() -> Any | None:
    """gridtap.board._native (native/build_ffi.py) if it is built, else None."""
    try:
        return importlib.import_module("gridtap.board._native")
    except ImportError:
        return None


def c_kernel(mod: Any) -> KernelFn:
    """Wrap the cffi module's gt_kernel_block in the same list-based signature as ref_block."""
    ffi, lib = mod.ffi, mod.lib

    def call(samples: list[int], start: int, nsets: int, nch: int, state: list[int],
             out: list[int]) -> int:
        cbuf = ffi.new("uint16_t[]", samples or [0])
        cstate = ffi.new("int32_t[]", state)
        cout = ffi.new("int32_t[]", out)
        got = int(lib.gt_kernel_block(cbuf, start, nsets, nch, cstate, cout))
        state[:] = list(cstate)
        out[:] = list(cout)
        return got

    return call


def have_clang() -> bool:
    try:
        return subprocess.run(["clang", "--version"], capture_output=True).returncode == 0
    except OSError:
        return False
