"""Wire codec throughput: the C decoder, the Python decoder and the UART's own ceiling.

All rates decode the same buffer of COUNTER frames (distinct values and seqs)
in the same run on one core; each is the best of several repetitions, and the
ratios divide rates by the link ceiling computed from the encoded COUNTER frame.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gridtap.board import native
from gridtap_fw import wire

ffi, lib = native.ffi, native.lib
GT_WIRE_C = Path(__file__).resolve().parents[1] / "native" / "gt_wire.c"

N_DISTINCT = 4096
N_C = 200_000  # frames in the one-call C decode
N_PY = 40_000  # frames for the rates that build Python objects
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop

ANCHORS = {
    "codec.c.decode_frames_per_s": "goal >= 1,000,000 frames/s",
    "codec.c.ratio_vs_460800_ceiling": "goal >= 50x the link; Flukso FLM02: CRC-8 over hex text, "
                                       "667 Hz/channel sampling",
    "codec.python.ratio_vs_460800_ceiling": "goal >= 5x the link; Flukso FLM03: Fletcher-16",
    "link.frames_per_s_ceiling_460800": "docs/protocol.md: 1486.5 frames/s",
    "link.frames_per_s_ceiling_115200": "docs/protocol.md: 371.6 frames/s",
}
HOW = {
    "codec.c.decode_frames_per_s":
        "one gt_decoder_feed call (COBS, CRC-32, checks, typed gt_msg out) over %d COUNTER frames "
        "in one buffer, best of 7" % N_C,
    "codec.c.decode_to_python_frames_per_s":
        "gridtap.board.native.NativeDecoder.feed over %d COUNTER frames, wire.Message objects out, "
        "best of 5" % N_PY,
    "codec.python.decode_frames_per_s":
        "gridtap_fw.wire.Decoder.feed (the reference codec, CPython) over %d COUNTER frames, "
        "best of 5" % N_PY,
    "link.frames_per_s_ceiling_115200": "115200 / (encoded COUNTER frame bytes x 10 bit times)",
    "link.frames_per_s_ceiling_460800": "460800 / (encoded COUNTER frame bytes x 10 bit times)",
    "link.counter_frame_bytes": "len(wire.encode(COUNTER, ...)), both delimiters included",
    "codec.c.ratio_vs_460800_ceiling": "codec.c.decode_frames_per_s / link.frames_per_s_ceiling_460800",
    "codec.python.ratio_vs_460800_ceiling":
        "codec.python.decode_frames_per_s / link.frames_per_s_ceiling_460800",
    "codec.c.m0plus_code_bytes":
        "flash bytes (.text + .rodata incl. the 1 KiB CRC table) of gt_wire.c built for the RP2040: "
        "clang --target=thumbv6m-none-eabi -mcpu=cortex-m0plus -Os -ffreestanding",
    "codec.c.m0plus_instructions_per_counter_decode":
        "Thumb instructions executed by gt_decoder_feed per COUNTER frame (100 frames in one call), "
        "counted in the unicorn Cortex-M0 emulator; results checked against the host build",
    "codec.c.m0plus_instructions_per_counter_encode":
        "Thumb instructions executed by one gt_encode of a COUNTER message, counted likewise; "
        "output checked against wire.encode",
}


def counter_frames(n: int) -> bytes:
    """n COUNTER frames with distinct values, as the board would send them."""
    distinct = []
    for i in range(N_DISTINCT):
        values = (i % 3, 1_700_000_000 + i // 3, (i * 37) % 1000, 12_345 + i * 7, (i * 11) % 1000,
                  i // 5, (i * 3) % 1000)
        distinct.append(wire.encode(wire.COUNTER, i, values))
    reps, rest = divmod(n, N_DISTINCT)
    return b"".join(distinct) * reps + b"".join(distinct[:rest])


def best_time(fn: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def c_one_call(data: bytes, n: int) -> float:
    dec = ffi.new("gt_decoder *")
    out = ffi.new("gt_msg[]", n)
    src = ffi.from_buffer("uint8_t[]", data)
    used = ffi.new("size_t *")

    def once() -> None:
        lib.gt_decoder_init(dec)
        got = lib.gt_decoder_feed(dec, src, len(data), out, n, used)
        if got != n or dec.counts[wire.C_OK] != n or used[0] != len(data):
            raise AssertionError("C decoder did not deliver every frame")

    once()  # fault the output pages in before timing
    return n / best_time(once, 7)


def decoder_rate(make: Callable[[], object], data: bytes, n: int) -> float:
    def once() -> None:
        dec = make()
        if len(dec.feed(data)) != n:  # type: ignore[attr-defined]
            raise AssertionError("decoder did not deliver every frame")

    return n / best_time(once, 5)


# ------------------------------------------------- Cortex-M0+ instruction counts

FLASH, FLASH_SIZE = 0x10000000, 0x10000  # RP2040 XIP flash window
RAM, RAM_SIZE = 0x20000000, 0x40000
STOP = FLASH + FLASH_SIZE - 0x10  # the return address; reaching it ends a call
M0_CFLAGS = ["--target=thumbv6m-none-eabi", "-mcpu=cortex-m0plus", "-Os", "-ffreestanding", "-std=c99",
             "-Wall", "-Wextra", "-Werror", "-fno-unwind-tables", "-fno-asynchronous-unwind-tables"]
LINK_SCRIPT = ("SECTIONS { . = 0x%08x; .text : { *(.text*) *(.rodata*) } /DISCARD/ : { *(.ARM.exidx*) } }\n"
               % FLASH)


def m0_tools_missing() -> list[str]:
    return [t for t in ("clang", "ld.lld", "llvm-objcopy", "llvm-nm") if shutil.which(t) is None]


def m0_build(tmp: Path) -> tuple[bytes, dict[str, int]]:
    """gt_wire.c as the board builds it: flat flash image and symbol addresses."""
    obj, elf, img, lds = tmp / "gt_wire.o", tmp / "gt_wire.elf", tmp / "gt_wire.bin", tmp / "flash.ld"
    lds.write_text(LINK_SCRIPT)
    for cmd in (["clang", *M0_CFLAGS, "-c", str(GT_WIRE_C), "-o", str(obj)],
                ["ld.lld", "-T", str(lds), "--no-undefined", "-e", "gt_decoder_feed",
                 "-o", str(elf), str(obj)],
                ["llvm-objcopy", "-O", "binary", "-j", ".text", str(elf), str(img)]):
        subprocess.run(cmd, check=True, capture_output=True)
    nm = subprocess.run(["llvm-nm", "--defined-only", str(elf)], check=True, capture_output=True,
                        text=True).stdout
    symbols = {p[2]: int(p[0], 16) for p in (line.split() for line in nm.splitlines()) if len(p) == 3}
    return img.read_bytes(), symbols


class M0Wire:
    """The board build of gt_wire.c in unicorn's Cortex-M0, counting executed instructions."""

    DEC, USED, OUT, DATA, MSG = RAM, RAM + 0x200, RAM + 0x300, RAM + 0x1000, RAM + 0x4000
    SP = RAM + RAM_SIZE - 0x100

    def __init__(self, image: bytes, symbols: dict[str, int]) -> None:
        from unicorn import UC_ARCH_ARM, UC_HOOK_CODE, UC_MODE_MCLASS, UC_MODE_THUMB, Uc, arm_const

        self.arm = arm_const
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(arm_const.UC_CPU_ARM_CORTEX_M0)
        self.uc.mem_map(FLASH, FLASH_SIZE)
        self.uc.mem_map(RAM, RAM_SIZE)
        if len(image) > STOP - FLASH:
            raise RuntimeError("M0+ image does not fit the flash window")
        self.uc.mem_write(FLASH, image)
        self.sym = symbols
        self.count = 0
        self.uc.hook_add(UC_HOOK_CODE, self._tick, begin=FLASH, end=FLASH + FLASH_SIZE - 1)

    def _tick(self, uc: object, address: int, size: int, user: object) -> None:
        self.count += 1

    def call(self, name: str, *args: int) -> tuple[int, int]:
        """AAPCS call: r0-r3, then the stack. Returns (r0, instructions executed)."""
        a = self.arm
        sp = self.SP
        self.uc.mem_write(sp, struct.pack("<%dI" % len(args[4:]), *args[4:]))
        regs = (a.UC_ARM_REG_R0, a.UC_ARM_REG_R1, a.UC_ARM_REG_R2, a.UC_ARM_REG_R3)
        for reg, val in zip(regs, args[:4], strict=False):
            self.uc.reg_write(reg, val)
        self.uc.reg_write(a.UC_ARM_REG_SP, sp)
        self.uc.reg_write(a.UC_ARM_REG_LR, STOP | 1)
        before = self.count
        self.uc.emu_start(self.sym[name] | 1, STOP, count=50_000_000)
        if self.uc.reg_read(a.UC_ARM_REG_PC) & ~1 != STOP or self.uc.reg_read(a.UC_ARM_REG_SP) != sp:
            raise RuntimeError("%s did not return cleanly on the M0+" % name)
        return self.uc.reg_read(a.UC_ARM_REG_R0), self.count - before


def m0_counts() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        image, symbols = m0_build(Path(tmp))
    cpu = M0Wire(image, symbols)
    frames = 100
    data = counter_frames(frames)
    cpu.uc.mem_write(cpu.DATA, data)
    cpu.call("gt_decoder_init", cpu.DEC)
    got, dec_instr = cpu.call("gt_decoder_feed", cpu.DEC, cpu.DATA, len(data), cpu.MSG, frames + 1, cpu.USED)
    if got != frames or cpu.uc.mem_read(cpu.USED, 4) != struct.pack("<I", len(data)):
        raise RuntimeError("M0+ decoder delivered %d of %d frames" % (got, frames))
    host = native.NativeDecoder()
    want = host.feed(data)[-1]
    last = native.ffi.new("gt_msg *")
    stride = native.STRIDE
    raw = cpu.uc.mem_read(cpu.MSG + (frames - 1) * stride, stride)
    native.ffi.memmove(last, bytes(raw), stride)
    out: list = []
    native.to_messages(last, memoryview(native.ffi.buffer(last)), 1, out)
    if out != [want]:
        raise RuntimeError("M0+ decode differs from the host decode")
    # Encode that message back on the M0+.
    cpu.uc.mem_write(cpu.MSG, bytes(raw))
    n, enc_instr = cpu.call("gt_encode", cpu.MSG, cpu.OUT, 252)
    frame = bytes(cpu.uc.mem_read(cpu.OUT, n))
    if frame != wire.encode(want.mtype, want.seq, want.values, want.flags):
        raise RuntimeError("M0+ encode differs from wire.encode")
    return {
        "codec.c.m0plus_code_bytes": len(image),
        "codec.c.m0plus_instructions_per_counter_decode": round(dec_instr / frames),
        "codec.c.m0plus_instructions_per_counter_encode": enc_instr,
    }


def run() -> dict[str, object]:
    frame_bytes = len(counter_frames(1))
    ceiling_115 = 115200 / (frame_bytes * BITS_PER_BYTE)
    ceiling_460 = 460800 / (frame_bytes * BITS_PER_BYTE)
    c_rate = c_one_call(counter_frames(N_C), N_C)
    py_data = counter_frames(N_PY)
    c_py_rate = decoder_rate(native.NativeDecoder, py_data, N_PY)
    py_rate = decoder_rate(wire.Decoder, py_data, N_PY)
    return {
        "link.counter_frame_bytes": frame_bytes,
        "link.frames_per_s_ceiling_115200": round(ceiling_115, 1),
        "link.frames_per_s_ceiling_460800": round(ceiling_460, 1),
        "codec.c.decode_frames_per_s": round(c_rate),
        "codec.c.decode_to_python_frames_per_s": round(c_py_rate),
        "codec.python.decode_frames_per_s": round(py_rate),
        "codec.c.ratio_vs_460800_ceiling": round(c_rate / ceiling_460, 1),
        "codec.python.ratio_vs_460800_ceiling": round(py_rate / ceiling_460, 1),
    } | ({} if m0_tools_missing() else m0_counts())


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
