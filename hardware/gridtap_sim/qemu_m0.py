"""The virtual board's firmware on an emulated Cortex-M0 (QEMU `-M microbit`).

`VirtualBoard(..., command=qemu_m0.command())` boots every firmware process as
`qemu-system-arm` running gridtap's MicroPython port (firmware/ports/qemu_m0,
built by `make m0`) instead of the MicroPython unix port. The port reaches the
simulator's three pipes through semihosting (hal_qemu), so the simulator, its
pty and everything on the host side are unchanged; `-icount shift=0` makes
the guest's clock count instructions (hardware/qemu-m0.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "m0"
ELF = {"single": BUILD / "sp" / "firmware.elf", "double": BUILD / "dp" / "firmware.elf"}
MPY_DIR = BUILD / "mpy"
CHECK_ELF = BUILD / "check.elf"   # native/m0plus/m0_check.c: the C kernel and codec
# the C kernel as a dynamic native module (firmware/ports/qemu_m0/natmod): gridtap_fw.power
# imports gtkernel when it is on sys.path, else the viper kernel
NATMOD_DIR = BUILD / "natmod"
KERNELS = ("viper", "c")
MAIN = "qemu_main"   # firmware/ports/qemu_m0/modules/qemu_main.py
# the nRF51's RAM and flash enlarged to hold a 192 KiB heap (the RP2040's) and the image
MACHINE = ["-M", "microbit", "-global", "nrf51-soc.flash-size=1048576",
           "-global", "nrf51-soc.sram-size=327680"]


class M0Missing(RuntimeError):
    pass


def qemu_exe() -> str:
    exe = shutil.which("qemu-system-arm")
    if exe is None:
        raise M0Missing("qemu-system-arm is not installed; run `make setup`")
    return exe


def elf(floats: str = "single") -> Path:
    path = ELF[floats]
    if not path.exists() or not (MPY_DIR / "gridtap_fw" / "app.mpy").exists():
        raise M0Missing(f"{path} or {MPY_DIR} is missing; run `make m0`")
    return path


def natmod_dir() -> Path:
    if not (NATMOD_DIR / "gtkernel.mpy").exists():
        raise M0Missing(f"{NATMOD_DIR}/gtkernel.mpy is missing; run `make m0`")
    return NATMOD_DIR


def argv(module: str, args: list[str], floats: str = "single", paths: list[Path] | None = None,
         kernel: str = "viper", code_in_heap: bool = False) -> list[str]:
    """qemu-system-arm running `import module` with sys.argv[1:] = args on the M0 port.

    kernel "c" puts the native module gtkernel.mpy on sys.path (power.py then uses it);
    code_in_heap loads the modules into the GC heap instead of the flash stand-in
    (firmware/ports/qemu_m0/main.c). Semihosting joins the arguments with spaces, so
    none may contain one; commas are doubled for QEMU's option parser.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
    extra = [natmod_dir()] if kernel == "c" else []
    words = ["gridtap", *(["--code-in-heap"] if code_in_heap else []),
             ":".join(str(p) for p in [MPY_DIR, *extra, *(paths or [])]), module, *args]
    return program_argv(elf(floats), words)


def program_argv(image: Path, words: list[str]) -> list[str]:
    """qemu-system-arm running an ELF for the micro:bit with `words` as its semihosting command line."""
    for w in words:
        if not w or " " in w:
            raise ValueError(f"semihosting argument {w!r} is empty or has a space")
    semi = "enable=on,target=native," + ",".join("arg=" + w.replace(",", ",,") for w in words)
    return [qemu_exe(), *MACHINE, "-nographic", "-monitor", "none", "-serial", "none",
            "-icount", "shift=0", "-semihosting-config", semi, "-kernel", str(image)]


def command(floats: str = "single", profile: bool = False, kernel: str = "viper",
            code_in_heap: bool = False) -> Callable[[Path], list[str]]:
    """A VirtualBoard `command`: the firmware (gridtap_fw.app on hal_qemu) for a boot directory."""
    argv(MAIN, ["-"], floats, kernel=kernel)   # fail now, not at the first boot

    def for_boot(sim_dir: Path) -> list[str]:
        return argv(MAIN, [str(sim_dir)] + (["profile"] if profile else []), floats, kernel=kernel,
                    code_in_heap=code_in_heap)
    return for_boot


# -- the firmware's budget lines (firmware/ports/qemu_m0/modules/m0budget.py) ----------------

PARTS = ("app", "hal", "kernel", "periods", "pulses", "link", "persist")
RP2040_HZ = 125e6
# Cycles per instruction assumed for the Cortex-M0+: loads, stores and taken branches take 2,
# the rest 1; the C kernel's estimate from the same timings is 1.45 (bench area kernel) and
# MicroPython's VM loads more than the kernel does.
CPI = 1.5


@dataclass
class Second:
    """One second of board time as the firmware on the M0 reported it."""
    sec: int
    parts: dict[str, int]        # instructions charged to each part
    blocks: int                  # adc_block calls
    gap_instr: int               # the longest gap between two adc_block calls: firmware instructions
    gap_ee_us: int               # and the EEPROM's bus + write-cycle time inside it
    gc_count: int                # cumulative since boot
    gc_instr: int
    gc_max_instr: int
    heap_live_max: int           # bytes, after a collection, since boot
    heap_total: int
    gc_max_sec_instr: int        # the longest collection in this second

    @property
    def firmware(self) -> int:
        return sum(v for k, v in self.parts.items() if k != "hal")

    @property
    def gap_ms(self) -> float:
        return self.gap_instr * CPI / RP2040_HZ * 1e3 + self.gap_ee_us / 1e3


def seconds(log: str) -> list[Second]:
    """Every M0STAT line of a firmware log (the last boot's lines last)."""
    out = []
    for line in log.splitlines():
        w = line.split()
        if len(w) != 18 or w[0] != "M0STAT":
            continue
        v = [int(x) for x in w[1:]]
        out.append(Second(v[0], dict(zip(PARTS, v[1:8], strict=True)), *v[8:]))
    return out


def ms(instructions: float) -> float:
    """Instructions as milliseconds of a 125 MHz Cortex-M0+ at CPI cycles each."""
    return instructions * CPI / RP2040_HZ * 1e3
