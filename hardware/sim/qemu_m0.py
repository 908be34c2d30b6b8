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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "m0"
ELF = {"single": BUILD / "sp" / "firmware.elf", "double": BUILD / "dp" / "firmware.elf"}
MPY_DIR = BUILD / "mpy"
MAIN = "qemu_main"   # firmware/ports/qemu_m0/modules/qemu_main.py
# the nRF51's RAM and flash enlarged to hold a 192 KiB heap (the RP2040's) and the image
MACHINE = ["-M", "microbit", "-global", "nrf51-soc.flash-size=1048576",
           "-global", "nrf51-soc.sram-size=262144"]


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


def argv(module: str, args: list[str], floats: str = "single", paths: list[Path] | None = None) -> list[str]:
    """qemu-system-arm running `import module` with sys.argv[1:] = args on the M0 port.

    Semihosting joins the arguments with spaces, so none may contain one; commas
    are doubled for QEMU's option parser.
    """
    words = ["gridtap", ":".join(str(p) for p in [MPY_DIR, *(paths or [])]), module, *args]
    for w in words:
        if not w or " " in w:
            raise ValueError(f"semihosting argument {w!r} is empty or has a space")
    semi = "enable=on,target=native," + ",".join("arg=" + w.replace(",", ",,") for w in words)
    return [qemu_exe(), *MACHINE, "-nographic", "-monitor", "none", "-serial", "none",
            "-icount", "shift=0", "-semihosting-config", semi, "-kernel", str(elf(floats))]


def command(floats: str = "single", profile: bool = False) -> Callable[[Path], list[str]]:
    """A VirtualBoard `command`: the firmware (gridtap_fw.app on hal_qemu) for a boot directory."""
    elf(floats)   # fail now, not at the first boot

    def for_boot(sim_dir: Path) -> list[str]:
        return argv(MAIN, [str(sim_dir)] + (["profile"] if profile else []), floats)
    return for_boot
