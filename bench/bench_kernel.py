"""Kernel figures: Cortex-M0+ instruction count (unicorn), RP2040 CPU share, viper throughput.

* firmware.kernel.m0plus_instructions_per_sample: native/gt_kernel.c built for
  the Cortex-M0+ (native/m0plus/harness.py), run in unicorn over one second of
  realistic V + 3 CT signal (50 Hz, 96 sets per cycle, harmonics, noise), fed
  in 48-set DMA blocks (hal_rp2.BLOCK_SETS) and split at every rising crossing
  exactly as the firmware core calls it, with the CTs referred to V delayed by
  0, 32 and 64 sets (a three-phase board: L1, L2 = T/3, L3 = 2T/3). Every executed instruction counts,
  call overhead included; divided by sets x CTs (V/I sample pairs).
* firmware.kernel.cpu_pct_rp2040: that count x 4 channels x 4,800 sets/s over
  the RP2040's 125 MHz, in percent (1 instruction ~ 1 cycle on the M0+; loads,
  stores and taken branches take 2, so the true share is up to ~1.5x this).
* firmware.kernel.m0plus_cycles_per_sample: the same run, in estimated
  Cortex-M0+ cycles (harness.thumb_cycles: loads/stores 2, taken branches 2,
  push/pop/ldm/stm 1+N, the RP2040's multiplier 1, the rest 1).
* firmware.kernel.viper_samples_per_s_unix: gridtap_fw.kernel under the
  MicroPython unix port on this machine, timed inside MicroPython with
  time.ticks_us over the same signal and call pattern; V/I sample pairs per
  second, best of 5 runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mpy import run_micropython  # noqa: E402

NCH = 4            # V + 3 CT, as on hardware/board.json
BLOCK_SETS = 48    # firmware/gridtap_fw/hal_rp2.py
SETS = 4800        # one second
RP2040_HZ = 125e6

ANCHORS = {
    "firmware.kernel.m0plus_instructions_per_sample": "goal <= 40",
    "firmware.kernel.cpu_pct_rp2040": "goal <= 1.5; EmonLibCM ≈1,923 sets/s for V+4CT on ATmega328",
    "firmware.kernel.viper_samples_per_s_unix": "emon32 4,800 Hz/channel; Flukso FLM02 667 Hz/channel",
}

HOW = {
    "firmware.kernel.m0plus_instructions_per_sample":
        "clang -O2 thumbv6m Cortex-M0+ build of native/gt_kernel.c in unicorn; executed instructions "
        "over 1 s of V+3CT at 4,800 sets/s in 48-set blocks split at crossings, V delays 0/32/64 sets "
        "(V history kept in the kernel state), / (sets x CTs)",
    "firmware.kernel.cpu_pct_rp2040": "instructions per pair x 4 channels x 4,800 / 125 MHz x 100",
    "firmware.kernel.m0plus_cycles_per_sample":
        "same run as the instruction count, cycles estimated per instruction from the Cortex-M0+ TRM "
        "timings (loads/stores 2, taken branches 2, push/pop 1+N, multiply 1)",
    "firmware.kernel.viper_samples_per_s_unix":
        "gridtap_fw.kernel (viper) under the MicroPython unix port, time.ticks_us inside MicroPython, "
        "sets x CTs per second, best of 5",
}


def load_harness() -> Any:
    path = ROOT / "native" / "m0plus" / "harness.py"
    spec = importlib.util.spec_from_file_location("gt_m0plus_harness", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


VIPER_SCRIPT = """
import sys, time, array, binascii
from gridtap_fw import kernel
nch, block_sets, reps = %d, %d, %d
buf = bytearray(binascii.unhexlify(sys.stdin.read().strip()))
total = len(buf) // (2 * nch)
st = array.array('i', [2048 | (2048 << 16)] * kernel.STATE_LEN)
for j in range(kernel.HIST_WORD):
    st[j] = 0
st[2], st[4], st[5], st[6], st[7] = 8, 128, 0, 32, 64  # a three-phase board's delays
out = array.array('i', [0] * (2 + 6 * (nch - 1)))
block = kernel.block
best = 0
for run in range(5):
    sets = 0
    t0 = time.ticks_us()
    for r in range(reps):
        b0 = 0
        while b0 < total:
            b1 = min(b0 + block_sets, total)
            pos = b0
            while pos < b1:
                pos += block(buf, pos, b1, nch, st, out)
            b0 = b1
        sets += total
    dt = time.ticks_diff(time.ticks_us(), t0)
    rate = sets * (nch - 1) * 1000000 // dt
    if rate > best:
        best = rate
print(best)
"""


def run() -> dict[str, object]:
    h = load_harness()
    samples = h.mains_signal(SETS, NCH, seed=2026)
    with tempfile.TemporaryDirectory() as tmp:
        kernel = h.M0Kernel(h.build(Path(tmp)))
        sets, calls, instr = h.drive(kernel, samples, NCH, hyst=8, block_sets=BLOCK_SETS)
    per_pair = instr / (sets * (NCH - 1))
    cycles_per_pair = kernel.cycles / (sets * (NCH - 1))
    viper = int(run_micropython(VIPER_SCRIPT % (NCH, BLOCK_SETS, 10), stdin=h.pack(samples).hex().encode()))
    return {
        "firmware.kernel.m0plus_instructions_per_sample": round(per_pair, 2),
        "firmware.kernel.cpu_pct_rp2040": round(per_pair * 4 * 4800 / RP2040_HZ * 100, 3),
        "firmware.kernel.m0plus_cycles_per_sample": round(cycles_per_pair, 2),
        "firmware.kernel.viper_samples_per_s_unix": viper,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
