"""Cortex-M0+ build of native/gt_kernel.c, run in the unicorn emulator.

`build()` cross-compiles the kernel exactly as the board would run it
(clang --target=thumbv6m-none-eabi -mcpu=cortex-m0plus -O2, freestanding, no
libc), links it with ld.lld at the RP2040's XIP flash address and flattens it
with llvm-objcopy. `M0Kernel` loads that image into unicorn (Cortex-M0 CPU
model, Thumb), calls gt_kernel_block with the AAPCS convention (four
arguments in r0-r3, the other two on the stack) and counts every executed
instruction with a code hook. Counts are repeatable, unlike times.

`mains_signal()` synthesises realistic blocks: V + CTs at 50 Hz, 96 sets per
cycle (4,800 sets/s), with harmonics, a mid-scale offset, ADC noise and a
phase-shifted load current, quantised to 12 bits.

Run `python native/m0plus/harness.py` to build, print the disassembly path and
the instruction count for a one-second realistic run.
"""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parent
FLASH = 0x10000000   # RP2040 XIP flash
FLASH_SIZE = 0x10000
RETURN_ADDR = FLASH + FLASH_SIZE - 0x100  # lr points here; reaching it ends a call
RAM = 0x20000000     # RP2040 SRAM
RAM_SIZE = 0x42000   # 264 KiB
STACK_TOP = RAM + RAM_SIZE
MAX_SETS = 256
OUT_WORDS = 2 + 6 * 4
STATE_LEN = 201      # int32 words: 9 header + 384 u16 of V history (gt_kernel.h)

CFLAGS = ["--target=thumbv6m-none-eabi", "-mcpu=cortex-m0plus", "-O2", "-ffreestanding", "-nostdlib",
          "-std=c99", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-fno-unwind-tables",
          "-fno-asynchronous-unwind-tables", "-fomit-frame-pointer"]
TOOLS = ("clang", "ld.lld", "llvm-objcopy", "llvm-nm", "llvm-objdump")


def toolchain_missing() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


@dataclass
class Build:
    elf: Path
    image: bytes
    entry: int           # address of gt_kernel_block (even; call with |1)
    code_bytes: int      # size of gt_kernel_block in bytes
    disassembly: str


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


# The board's own compiler: the rp2 port (and a native .mpy module) builds with arm-none-eabi-gcc,
# whose inline asm takes another syntax by default; -Os as MicroPython builds, libgcc for its
# Thumb-1 switch tables.
GCC_CFLAGS = ["-mcpu=cortex-m0plus", "-mthumb", "-Os", "-ffreestanding", "-nostdlib", "-std=c99",
              "-Wall", "-Wextra", "-Werror"]
GCC_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-ld", "arm-none-eabi-objcopy", "arm-none-eabi-nm",
             "arm-none-eabi-objdump")


def build(outdir: Path, gcc: bool = False) -> Build:
    """Cross-compile gt_kernel.c for the M0+ into outdir and return the flat image
    (clang -O2, or with gcc=True arm-none-eabi-gcc -Os)."""
    missing = [t for t in GCC_TOOLS if shutil.which(t) is None] if gcc else toolchain_missing()
    if missing:
        raise RuntimeError(f"M0+ toolchain missing: {', '.join(missing)} (run `make setup`)")
    outdir.mkdir(parents=True, exist_ok=True)
    obj, elf, binf = outdir / "gt_kernel.o", outdir / "gt_kernel.elf", outdir / "gt_kernel.bin"
    src = ["-I", str(NATIVE), "-c", str(NATIVE / "gt_kernel.c"), "-o", str(obj)]
    if gcc:
        _run(["arm-none-eabi-gcc", *GCC_CFLAGS, *src])
        libgcc = _run(["arm-none-eabi-gcc", *GCC_CFLAGS[:2], "-print-libgcc-file-name"]).strip()
        _run(["arm-none-eabi-ld", f"-Ttext=0x{FLASH:08x}", "-e", "gt_kernel_block", "-o", str(elf), str(obj),
              libgcc])
        tool = "arm-none-eabi-"
    else:
        _run(["clang", *CFLAGS, *src])
        _run(["ld.lld", f"-Ttext=0x{FLASH:08x}", "-e", "gt_kernel_block", "--no-undefined",
              "-o", str(elf), str(obj)])
        tool = "llvm-"
    _run([f"{tool}objcopy", "-O", "binary", "-j", ".text", "-j", ".rodata", str(elf), str(binf)])
    entry = size = -1
    for line in _run([f"{tool}nm", "-S", "--defined-only", str(elf)]).splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == "gt_kernel_block":
            entry, size = int(parts[0], 16), int(parts[1], 16)
    if entry < 0:
        raise RuntimeError("gt_kernel_block not found in the M0+ build")
    image = binf.read_bytes()
    if len(image) > RETURN_ADDR - FLASH:
        raise RuntimeError("M0+ image too large for the harness flash window")
    dis = _run([f"{tool}objdump", "-d", "--no-show-raw-insn", str(elf)])
    (outdir / "gt_kernel.dis").write_text(dis)
    return Build(elf=elf, image=image, entry=entry & ~1, code_bytes=size, disassembly=dis)


def thumb_cycles(hw: int) -> tuple[int, bool]:
    """Cortex-M0+ cycles of one 16-bit Thumb instruction (Cortex-M0+ TRM, table 3-1,
    with the RP2040's single-cycle multiplier), and whether it is a conditional
    branch (2 cycles when taken, 1 when not; the caller adds the 1 when taken).
    The first halfword of a 32-bit BL counts 3 and its second 0.
    """
    top5 = hw >> 11
    if 0x4800 <= hw < 0x5000 or 0x5000 <= hw < 0xA000:
        return 2, False          # LDR/STR (literal, register, immediate, SP-relative), any width
    if (hw & 0xFE00) == 0xB400:  # PUSH {list, lr?}: 1 + N
        return 1 + bin(hw & 0x1FF).count("1"), False
    if (hw & 0xFE00) == 0xBC00:  # POP {list, pc?}: 1 + N, or 3 + N with pc
        n = bin(hw & 0xFF).count("1")
        return (3 + n if hw & 0x100 else 1 + n), False
    if top5 in (0x18, 0x19):     # STM/LDM: 1 + N
        return 1 + bin(hw & 0xFF).count("1"), False
    if (hw & 0xF000) == 0xD000 and (hw & 0x0F00) < 0x0E00:
        return 1, True           # B<cond>
    if top5 == 0x1C or (hw & 0xFF00) == 0x4700:
        return 2, False          # B, BX/BLX
    if top5 == 0x1E:
        return 3, False          # BL, first half
    if top5 in (0x1D, 0x1F):
        return 0, False          # BL, second half (counted with the first)
    if (hw & 0xFF00) in (0x4400, 0x4600) and (hw & 0x87) == 0x87:
        return 2, False          # ADD/MOV to pc
    return 1, False


class M0Kernel:
    """gt_kernel_block running on an emulated Cortex-M0; counts executed instructions
    and estimates Cortex-M0+ cycles with thumb_cycles()."""

    BUF = RAM
    STATE = RAM + 0x40000
    OUT = STATE + 4 * STATE_LEN

    def __init__(self, b: Build) -> None:
        from unicorn import UC_ARCH_ARM, UC_HOOK_CODE, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
        from unicorn import arm_const as arm

        self._arm = arm
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(arm.UC_CPU_ARM_CORTEX_M0)
        self.uc.mem_map(FLASH, FLASH_SIZE)
        self.uc.mem_map(RAM, RAM_SIZE)
        self.uc.mem_write(FLASH, b.image)
        self.entry = b.entry
        self.instructions = 0
        self.cycles = 0
        # Cycle cost and "is a conditional branch" per halfword address of the image.
        self._cost: dict[int, tuple[int, bool]] = {}
        for off in range(0, len(b.image) - 1, 2):
            self._cost[FLASH + off] = thumb_cycles(int.from_bytes(b.image[off:off + 2], "little"))
        self._prev_cond = -1  # address of the last conditional branch executed, if it was the last insn
        self.uc.hook_add(UC_HOOK_CODE, self._count, begin=FLASH, end=FLASH + FLASH_SIZE - 1)

    def _count(self, uc: object, address: int, size: int, user: object) -> None:
        self.instructions += 1
        if self._prev_cond >= 0 and address != self._prev_cond + 2:
            self.cycles += 1  # the conditional branch before this one was taken
        cost, cond = self._cost.get(address, (1, False))
        self.cycles += cost
        self._prev_cond = address if cond else -1

    def call(self, samples: bytes, start: int, nsets: int, nch: int, state: list[int],
             out: list[int]) -> tuple[int, int]:
        """One gt_kernel_block call; samples are u16 LE bytes. Updates state/out in place.

        Returns (return value, instructions executed by the call).
        """
        if len(samples) > self.STATE - self.BUF:
            raise ValueError("block too large for the emulated RAM")
        arm, uc = self._arm, self.uc
        uc.mem_write(self.BUF, samples)
        if len(state) != STATE_LEN:
            raise ValueError(f"state must hold {STATE_LEN} int32")
        uc.mem_write(self.STATE, struct.pack(f"<{STATE_LEN}i", *state))
        uc.mem_write(self.OUT, struct.pack(f"<{len(out)}i", *out))
        sp = STACK_TOP - 64
        uc.mem_write(sp, struct.pack("<2I", self.STATE, self.OUT))  # 5th and 6th arguments
        for reg, val in ((arm.UC_ARM_REG_R0, self.BUF), (arm.UC_ARM_REG_R1, start),
                         (arm.UC_ARM_REG_R2, nsets), (arm.UC_ARM_REG_R3, nch),
                         (arm.UC_ARM_REG_SP, sp), (arm.UC_ARM_REG_LR, RETURN_ADDR | 1)):
            uc.reg_write(reg, val)
        before = self.instructions
        uc.emu_start(self.entry | 1, RETURN_ADDR, count=10_000_000)
        if uc.reg_read(arm.UC_ARM_REG_PC) & ~1 != RETURN_ADDR:
            raise RuntimeError("gt_kernel_block did not return")
        if uc.reg_read(arm.UC_ARM_REG_SP) != sp:
            raise RuntimeError("gt_kernel_block unbalanced the stack")
        state[:] = struct.unpack(f"<{STATE_LEN}i", uc.mem_read(self.STATE, 4 * STATE_LEN))
        out[:] = struct.unpack(f"<{len(out)}i", uc.mem_read(self.OUT, 4 * len(out)))
        return int(uc.reg_read(arm.UC_ARM_REG_R0)), self.instructions - before


def mains_signal(nsets: int, nch: int = 4, seed: int = 1, sets_per_cycle: float = 96.0) -> list[int]:
    """Realistic raw 12-bit samples, interleaved V, CT1.. per set.

    V: 230 V mains near full scale with 3rd and 5th harmonics; each CT a load
    current with its own amplitude, phase lag and harmonics; all with a small
    offset error and ±2 LSB noise, clipped to 0..4095 like the ADC.
    """
    rng = random.Random(seed)
    w = 2 * math.pi / sets_per_cycle
    cts = [(rng.uniform(200, 1900), rng.uniform(-0.6, 0.9), rng.uniform(0, 0.25), rng.uniform(-20, 20))
           for _ in range(nch - 1)]
    v_off = rng.uniform(-15, 15)
    out: list[int] = []
    for s in range(nsets):
        t = w * s
        v = 1650 * math.sin(t) + 60 * math.sin(3 * t + 0.3) + 25 * math.sin(5 * t) + v_off
        vals = [v]
        for amp, lag, h3, off in cts:
            vals.append(amp * (math.sin(t - lag) + h3 * math.sin(3 * (t - lag) + 1.0)) + off)
        for x in vals:
            raw = int(round(2048 + x + rng.gauss(0, 1.2)))
            out.append(min(4095, max(0, raw)))
    return out


def pack(samples: list[int]) -> bytes:
    return struct.pack(f"<{len(samples)}H", *samples)


def initial_state(hyst: int, delays: tuple[int, ...]) -> list[int]:
    """The state the firmware starts from: history at mid-scale, fill 128, the CTs' delays."""
    state = [0] * STATE_LEN
    state[2], state[4] = hyst, 128
    for k, d in enumerate(delays):
        state[5 + k] = d
    mid = 2048 | (2048 << 16)
    for j in range(9, STATE_LEN):
        state[j] = mid
    return state


def drive(kernel: M0Kernel, samples: list[int], nch: int, hyst: int = 8,
          block_sets: int = 96,
          delays: tuple[int, ...] = (0 | 24 << 8, 32 | 56 << 8, 64 | 88 << 8)) -> tuple[int, int, int]:
    """Feed a signal as the firmware core would: DMA blocks of block_sets sets,
    each consumed in calls that stop at rising crossings and at 256 sets. The
    CTs' V delays default to a three-phase board's (L1, L2 = T/3 and L3 = 2T/3
    at 96 sets per cycle), each with its reactive-power delay a quarter period
    (24 sets) later in bits 8..14.

    Returns (sets consumed, calls, instructions); kernel.cycles grows by the
    estimated cycles.
    """
    total_sets = len(samples) // nch
    state = initial_state(hyst, delays[:nch - 1])
    out = [0] * (2 + 6 * (nch - 1))
    sets = calls = instr = 0
    for b0 in range(0, total_sets, block_sets):
        blk = pack(samples[b0 * nch:(b0 + block_sets) * nch])
        nblk = len(blk) // (2 * nch)
        pos = 0
        while pos < nblk:
            n, cost = kernel.call(blk, pos, nblk, nch, state, out)
            pos += n
            sets += n
            calls += 1
            instr += cost
    return sets, calls, instr


def main() -> int:
    outdir = NATIVE / "build" / "m0plus"
    b = build(outdir)
    k = M0Kernel(b)
    nch = 4
    for block_sets in (48, 96):
        k.cycles = 0
        sets, calls, instr = drive(k, mains_signal(4800, nch), nch, block_sets=block_sets)
        pairs = sets * (nch - 1)
        print(f"{block_sets}-set blocks: {sets} sets, {calls} calls, {instr} instructions, "
              f"~{k.cycles} cycles: {instr / pairs:.2f} instructions, ~{k.cycles / pairs:.2f} cycles "
              f"per V/I sample pair")
    print(f"gt_kernel_block: {b.code_bytes} bytes of Thumb code; disassembly in {outdir / 'gt_kernel.dis'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
