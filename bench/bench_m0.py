"""The firmware's budget on a Cortex-M0 core: QEMU -M microbit, -icount shift=0 (hardware/qemu-m0.md).

The unmodified firmware (gridtap_fw as armv6m .mpy, viper kernel, hal_qemu)
runs on gridtap's MicroPython port under QEMU against the virtual board:
household-pv from noon on hardware/board.json (V + 3 CT at 4,800 sets/s, 48-set
DMA blocks, two S0 meters), seed 1, with a host on the pty that ACKs every
tuple. The guest's clock counts instructions, and the firmware reports once
per second of board time (firmware/ports/qemu_m0/modules/m0budget.py):

* m0.firmware_cpu_pct_125mhz: the firmware's instructions per simulated second
  (mean over seconds 1..N; second 0 is the boot) x CPI 1.5 / 125 MHz. The
  emulation's transport (semihosting pipes, which DMA, the UART FIFO and I2C
  replace on a Pico) is not counted; everything else is: core, viper kernel,
  bytecode, the garbage collector, the HAL's bookkeeping.
* m0.firmware_instructions_per_s and .part_instructions_per_s.<part>: the same,
  and split into app glue, kernel, periods, pulses, link and persistence by a
  second, profiled run (each wrapped call adds its own cost, counted in the part).
* m0.kernel_instructions_per_sample_viper: gridtap_fw.kernel alone on the M0 over
  the C kernel's bench signal (native/m0plus/harness.py: 1 s of V + 3 CT, 48-set
  blocks split at crossings, delays 0/32/64), instructions per V/I pair, call included.
* m0.max_block_gap_ms: the longest firmware time between two adc_block calls
  (instructions x CPI at 125 MHz, plus I2C and write cycles of EEPROM writes in
  it), against two DMA blocks (20 ms) of slack.
  m0.max_block_gap_cpu_ms: the longest gap's instructions alone (the EEPROM
  waits are hal_rp2's ACK polling, time the CPU could spend elsewhere).
* m0.gc_pause_max_ms: the longest collection while blocks flow (seconds 1..N),
  same conversion; m0.gc_pause_max_boot_ms: the boot's longest (before the first
  block, when no DMA slack is at stake).
* m0.heap_high_water_kb: the most heap in use right after any collection (the
  live data and its fragmentation), of the rp2 port's 192,064-byte heap.
* m0.registers_equal_unix_port: the double-precision build's COUNTER and PULSE
  values over a minute equal the unix-port firmware's at every stamp both sent
  (at least 90 % of them), on the same seed.
* m0.natmod.*: the same figures with the C kernel as the dynamic native module
  gtkernel.mpy on sys.path (firmware/ports/qemu_m0/natmod; power.py prefers it):
  CPU, gap, GC pause, the kernel's instructions per pair, registers == unix port.
* m0.code_in_heap.*: the same firmware with its modules loaded into the GC heap
  (as .mpy files copied onto a Pico's littlefs would be) instead of in place from
  the flash stand-in (ROMFS or frozen code on a Pico): the before of the GC work.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_kernel import BLOCK_SETS, NCH, SETS, load_harness  # noqa: E402
from gridtap_sim import qemu_m0  # noqa: E402
from tests.support.hil.campaigns import accuracy  # noqa: E402
from tests.support.hil.rig import VirtualRig, same_registers  # noqa: E402

SECONDS = 60.0

ANCHORS = {
    "m0.firmware_cpu_pct_125mhz": "goal <= 15 (V+3CT at 4,800 sets/s, viper kernel)",
    "m0.kernel_instructions_per_sample_viper":
        "C kernel 34.79 (firmware.kernel.m0plus_instructions_per_sample)",
    "m0.max_block_gap_ms": "goal <= 15 (DMA slack: two 10 ms blocks)",
    "m0.gc_pause_max_ms": "goal <= 5",
    "m0.heap_high_water_kb": "goal <= 128 (rp2 heap 187.6 KiB)",
    "m0.registers_equal_unix_port": "goal: true",
    "m0.natmod.kernel_instructions_per_sample":
        "C kernel alone 34.79; viper: m0.kernel_instructions_per_sample_viper",
    "m0.code_in_heap.gc_pause_max_ms": "m0.gc_pause_max_ms (modules in place, as frozen/ROMFS)",
}

HOW = {
    "m0.firmware_cpu_pct_125mhz":
        "firmware on QEMU -M microbit -icount shift=0, household-pv 60 s seed 1, mean firmware instructions "
        "per simulated second (transport excluded) x CPI 1.5 / 125 MHz",
    "m0.firmware_instructions_per_s": "same run, mean instructions per simulated second",
    "m0.kernel_instructions_per_sample_viper":
        "gridtap_fw.kernel (viper, armv6m .mpy) on the emulated M0 over harness.mains_signal "
        "(1 s V+3CT, 48-set blocks split at crossings, delays 0/32/64), instructions / (sets x CTs)",
    "m0.max_block_gap_ms":
        "longest firmware time between adc_block calls, CPI 1.5 at 125 MHz + EEPROM bus/cycle",
    "m0.max_block_gap_cpu_ms": "the same without the EEPROM's bus and write-cycle waits: CPU only",
    "m0.gc_pause_max_ms": "longest gc_collect() while blocks flow (seconds 1..N; timed in the port), "
                          "CPI 1.5 at 125 MHz",
    "m0.gc_pause_max_boot_ms": "longest gc_collect() of the boot (second 0, before the first block)",
    "m0.heap_high_water_kb": "largest heap in use just after a collection (gc_info), KiB",
    "m0.registers_equal_unix_port":
        "household-pv 60 s seed 1: COUNTER/PULSE values of the double build == unix port's "
        "at every shared stamp",
    "m0.boot_instructions": "instructions from reset to the first adc_block (second 0, incl. the boot save)",
    "m0.cpi_c_kernel_estimate":
        "cross-check of CPI 1.5: the C kernel's estimated cycles / instructions (unicorn)",
    "m0.gc_per_s": "collections per simulated second (the firmware schedules them after a block)",
    "m0.natmod.firmware_cpu_pct_125mhz":
        "as m0.firmware_cpu_pct_125mhz with gtkernel.mpy (C kernel, dynamic native module) on sys.path",
    "m0.natmod.firmware_instructions_per_s": "same run, mean instructions per simulated second",
    "m0.natmod.max_block_gap_ms": "same run, as m0.max_block_gap_ms",
    "m0.natmod.gc_pause_max_ms": "same run, as m0.gc_pause_max_ms",
    "m0.natmod.kernel_instructions_per_sample":
        "as m0.kernel_instructions_per_sample_viper, gtkernel.block (natmod) called from bytecode",
    "m0.natmod.registers_equal_unix_port":
        "as m0.registers_equal_unix_port, double build with gtkernel.mpy",
    "m0.code_in_heap.gc_pause_max_ms":
        "as m0.gc_pause_max_ms, modules loaded into the GC heap (--code-in-heap) instead of in place",
    "m0.code_in_heap.heap_high_water_kb": "same run, as m0.heap_high_water_kb",
    "m0.code_in_heap.firmware_cpu_pct_125mhz": "same run, as m0.firmware_cpu_pct_125mhz",
}


def budget_run(tmp: Path, profile: bool, kernel: str = "viper", code_in_heap: bool = False,
               seconds: float = SECONDS) -> list[qemu_m0.Second]:
    rig = VirtualRig(tmp, "household-pv", 1, command=qemu_m0.command("single", profile=profile, kernel=kernel,
                                                                      code_in_heap=code_in_heap))
    try:
        rig.capture(seconds)
    finally:
        rig.close()
    secs = qemu_m0.seconds(rig.fw_log())
    if len(secs) < seconds - 2 or rig.vb.stats.boots != [(0.0, 1)]:
        raise RuntimeError(f"budget run: {len(secs)} seconds reported, boots {rig.vb.stats.boots}\n"
                           f"{rig.fw_log()[-3000:]}")
    return secs


def kernel_per_pair(tmp: Path, kernel: str = "viper") -> float:
    h = load_harness()
    samples = h.mains_signal(SETS, NCH, seed=2026)
    path = tmp / f"samples-{kernel}.bin"
    path.write_bytes(h.pack(samples))
    args = [str(path), str(NCH), str(SETS), str(BLOCK_SETS), "8", "0,32,64"]
    if kernel == "c":
        args.append("gtkernel")
    argv = qemu_m0.argv("kernelbench", args, kernel=kernel)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    w = next(line.split() for line in out.splitlines() if line.startswith("KERNEL"))
    sets, instr = int(w[1]), int(w[3])
    return instr / (sets * (NCH - 1))


def c_kernel_cpi(tmp: Path) -> float:
    h = load_harness()
    kernel = h.M0Kernel(h.build(tmp))
    _, _, instr = h.drive(kernel, h.mains_signal(SETS, NCH, seed=2026), NCH, hyst=8, block_sets=BLOCK_SETS)
    return float(kernel.cycles / instr)


def registers_equal(tmp: Path) -> tuple[bool, bool]:
    """The double build's registers == the unix port's: with the viper kernel, and with gtkernel.mpy."""
    unix = accuracy(tmp / "unix", "household-pv", SECONDS)
    m0 = accuracy(tmp / "m0", "household-pv", SECONDS, command=qemu_m0.command("double"))
    m0c = accuracy(tmp / "m0c", "household-pv", SECONDS, command=qemu_m0.command("double", kernel="c"))
    assert unix.capture is not None and m0.capture is not None and m0c.capture is not None
    ref = unix.capture.msgs
    return same_registers(ref, m0.capture.msgs), same_registers(ref, m0c.capture.msgs)


def summary(secs: list[qemu_m0.Second]) -> dict[str, float]:
    """CPU %, longest gap and GC pause (ms), collections a second, live heap (KiB) of a budget run."""
    steady = secs[1:]
    fw = statistics.mean(s.firmware for s in steady)
    last = secs[-1]
    return {"cpu_pct": round(qemu_m0.ms(fw) / 10.0, 2), "instr_per_s": round(fw),
            "gap_ms": round(max(s.gap_ms for s in steady), 2),
            "gc_pause_ms": round(qemu_m0.ms(max(s.gc_max_sec_instr for s in steady)), 2),
            "gc_pause_boot_ms": round(qemu_m0.ms(secs[0].gc_max_sec_instr), 2),
            "gc_per_s": round((last.gc_count - secs[0].gc_count) / len(steady), 2),
            "heap_kb": round(last.heap_live_max / 1024, 1)}


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        plain = budget_run(tmp / "plain", profile=False)
        prof = budget_run(tmp / "prof", profile=True)
        natmod = summary(budget_run(tmp / "natmod", profile=False, kernel="c"))
        heap_code = summary(budget_run(tmp / "heapcode", profile=False, code_in_heap=True))
        per_pair = kernel_per_pair(tmp)
        per_pair_c = kernel_per_pair(tmp, "c")
        cpi_c = c_kernel_cpi(tmp / "c")
        equal, equal_c = registers_equal(tmp / "eq")
    steady = plain[1:]
    now = summary(plain)
    res: dict[str, Any] = {
        "m0.firmware_cpu_pct_125mhz": now["cpu_pct"],
        "m0.firmware_instructions_per_s": now["instr_per_s"],
        "m0.firmware_instructions_per_s_max": max(s.firmware for s in steady),
        "m0.boot_instructions": plain[0].firmware,
        "m0.kernel_instructions_per_sample_viper": round(per_pair, 2),
        "m0.max_block_gap_ms": now["gap_ms"],
        "m0.max_block_gap_cpu_ms": round(qemu_m0.ms(max(s.gap_instr for s in steady)), 2),
        "m0.gc_pause_max_ms": now["gc_pause_ms"],
        "m0.gc_pause_max_boot_ms": now["gc_pause_boot_ms"],
        "m0.gc_per_s": now["gc_per_s"],
        "m0.heap_high_water_kb": now["heap_kb"],
        "m0.registers_equal_unix_port": equal,
        "m0.cpi_c_kernel_estimate": round(cpi_c, 3),
        # the C kernel as the dynamic native module gtkernel.mpy (firmware/ports/qemu_m0/natmod)
        "m0.natmod.firmware_cpu_pct_125mhz": natmod["cpu_pct"],
        "m0.natmod.firmware_instructions_per_s": natmod["instr_per_s"],
        "m0.natmod.max_block_gap_ms": natmod["gap_ms"],
        "m0.natmod.gc_pause_max_ms": natmod["gc_pause_ms"],
        "m0.natmod.kernel_instructions_per_sample": round(per_pair_c, 2),
        "m0.natmod.registers_equal_unix_port": equal_c,
        # the same firmware with its modules loaded into the heap (.mpy files on littlefs)
        "m0.code_in_heap.gc_pause_max_ms": heap_code["gc_pause_ms"],
        "m0.code_in_heap.heap_high_water_kb": heap_code["heap_kb"],
        "m0.code_in_heap.firmware_cpu_pct_125mhz": heap_code["cpu_pct"],
    }
    for part in qemu_m0.PARTS:
        if part != "hal":
            mean = statistics.mean(s.parts[part] for s in prof[1:])
            res[f"m0.part_instructions_per_s.{part}"] = round(mean)
    return res


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
