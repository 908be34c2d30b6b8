"""Firmware figures: EEPROM wear over a simulated year, and the core's CPU cost.

The firmware modules gridtap_fw.persist (the counter ring) and
gridtap_fw.savepolicy (when to save) run here unmodified under CPython, against
a counting EEPROM with board.json's geometry. A simulated household uses
4,000 kWh a year (CT1 import, and the same energy through an S0 meter at 1,000
imp/kWh on P1), minute by minute, with one brownout and reboot a day: the
brownout save, then the boot save of the new boot count. The figure is the
largest number of writes any EEPROM page (so any cell) took in that year.

The CPU figure runs App.step() under the MicroPython unix port on replayed
48-set blocks (the rp2 HAL's block, 100 a second) of V + 3 loaded CTs with the
host ACKing, and compares it with the kernel alone on the same blocks in the
same run: the ratio is what the Python around the kernel costs.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from gridtap_fw import config, persist, savepolicy

ROOT = Path(__file__).resolve().parents[1]
KWH_PER_YEAR = 4000
MINUTES = 365 * 24 * 60

ANCHORS = {
    "firmware.eeprom.writes_per_cell_per_year":
        "goal <= 10,000; OEM emonTx4: 200 Wh threshold, 14-block ring, '5 to 70 years' at 100k cycles, "
        "and no brownout save (up to 199 Wh lost per outage)",
    "firmware.eeprom.max_loss_wh_on_outage": "OEM emonTx4/emon32: 199 Wh; Flukso FLM02: 0 (brownout save)",
}
HOW = {
    "firmware.eeprom.writes_per_cell_per_year":
        "gridtap_fw.persist.Store + savepolicy.SavePolicy run minute by minute over a simulated year "
        "(4,000 kWh household on CT1 and an S0 meter on P1, one brownout + reboot a day, default "
        "save_wh/save_min); the most-written EEPROM page",
    "firmware.eeprom.saves_per_year": "counter records written in that simulated year (all causes)",
    "firmware.eeprom.brownout_save_ms": "page writes of one counter record x the board's write cycle",
    "firmware.eeprom.record_bytes": "bytes in one counter record (gridtap-1: 3 CT, 2 pulse inputs)",
    "firmware.eeprom.max_loss_wh_on_outage":
        "Wh a register can lose across a brownout + reboot in the simulation (the brownout save "
        "writes the exact registers)",
    "firmware.core.unix_ms_per_s":
        "CPU ms per simulated second of App.step() (kernel, periods, pulses, link, persistence) "
        "under the MicroPython unix port on this machine, 48-set blocks, host ACKing",
    "firmware.core.cost_vs_kernel":
        "App.step() time / kernel-only time on the same blocks in the same run",
}

CORE_SCRIPT = """
import time
from fwhal import FwHal
from gridtap_fw import app, wire, kernel
from array import array
hal = FwHal(%r, 48)
hal.vrms = 230.0
hal.noise = 2.0
hal.set_ct(0, 10.0, 20.0)
hal.set_ct(1, 5.0, 180.0)
hal.set_ct(2, 1.0, 60.0)
blocks = []
b = bytearray(48 * 4 * 2)
for i in range(200):
    hal.adc_block(b)
    blocks.append(bytes(b))
a = app.App(hal)
j = [0]
def replay(buf):
    buf[:] = blocks[j[0] %% 200]
    j[0] += 1
    hal.set_no += 48
    return 48
hal.adc_block = replay
N = 2000
best = None
for rep in range(3):
    t0 = time.ticks_us()
    for _ in range(N):
        a.step()
        fr = hal.frames()
        seqs = tuple(m.seq for m in fr if m.mtype in (wire.COUNTER, wire.PULSE, wire.EVENT))
        if seqs:
            hal.send(wire.ACK, 0, (seqs[:64],))
    dt = time.ticks_diff(time.ticks_us(), t0)
    best = dt if best is None or dt < best else best
kbest = None
st = array("i", [2048 | (2048 << 16)] * kernel.STATE_LEN)
for j in range(kernel.HIST_WORD):
    st[j] = 0
st[2], st[4] = 98, 128
out = array("i", [0] * 20)
for rep in range(3):
    t0 = time.ticks_us()
    for i in range(N):
        buf = blocks[i %% 200]
        s = 0
        while s < 48:
            s += kernel.block(buf, s, 48, 4, st, out)
    dt = time.ticks_diff(time.ticks_us(), t0)
    kbest = dt if kbest is None or dt < kbest else kbest
print(best / (N * 48 / 4800) / 1000, kbest / (N * 48 / 4800) / 1000)
"""


def core_cost() -> dict[str, object]:
    from tests.support.mpy import run_micropython  # bench/run.py puts the repository on sys.path

    out = run_micropython(CORE_SCRIPT % str(ROOT / "hardware" / "board.json"),
                          extra_path=[ROOT / "tests" / "support" / "fwtest"], timeout=600)
    core, kern = (float(x) for x in out.split()[-2:])
    return {"firmware.core.unix_ms_per_s": round(core, 2),
            "firmware.core.cost_vs_kernel": round(core / kern, 1)}


class CountingEeprom:
    def __init__(self, size: int, page: int, cycle_ms: int) -> None:
        self.mem = bytearray(b"\xff" * size)
        self.page = page
        self.cycle_ms = cycle_ms
        self.page_writes = [0] * (size // page)

    def eeprom_read(self, addr: int, n: int) -> bytes:
        return bytes(self.mem[addr:addr + n])

    def eeprom_write(self, addr: int, data: bytes) -> None:
        assert addr % self.page == 0 and len(data) <= self.page
        self.mem[addr:addr + len(data)] = data
        self.page_writes[addr // self.page] += 1


def household_watts(rng: random.Random) -> list[float]:
    """A minute-by-minute year: base load, daily shape, appliance bursts; scaled to 4,000 kWh."""
    watts = []
    for m in range(MINUTES):
        h = (m % 1440) / 60.0
        day = 120 + 180 * math.exp(-((h - 7.5) / 1.2) ** 2) + 450 * math.exp(-((h - 19.0) / 2.0) ** 2)
        season = 1.0 + 0.25 * math.cos(2 * math.pi * m / MINUTES)
        burst = 2000.0 if rng.random() < 0.01 else 0.0
        watts.append((day + burst) * season)
    scale = KWH_PER_YEAR * 1000 * 60 / sum(watts)  # W-minutes per year
    return [w * scale for w in watts]


def simulate(seed: int = 1) -> dict[str, object]:
    board = json.loads((ROOT / "hardware" / "board.json").read_text())
    n_ct = len(board["adc"]["channels"]) - 1
    n_pulse = len(board["pulse_inputs"])
    e = board["i2c_eeprom"]
    hal = CountingEeprom(int(e["size_bytes"]), int(e["page_bytes"]), int(e["write_cycle_ms"]))
    cfg = config.Config(n_ct, n_pulse)
    store = persist.Store(hal, board, n_ct, n_pulse, cfg.image_len())
    policy = savepolicy.SavePolicy(cfg.save_wh, cfg.save_min)
    rng = random.Random(seed)
    watts = household_watts(rng)
    brownout_minute = [d * 1440 + rng.randrange(1440) for d in range(365)]
    c = persist.Counters(n_ct, n_pulse)
    imp_mwh = 0
    frac = 0  # mW-minutes not yet a whole mWh (1 mWh = 60 mW-minutes)
    pulses = 0
    pulse_frac = 0  # Wh-milli toward the next pulse (1 Wh per pulse at 1,000 imp/kWh)
    const = 1_000_000
    worst_loss_mwh = 0

    def qpos_mvarh() -> int:
        # the household's reactive energy at a power factor of 0.95 (Q = 0.329 P), lagging:
        # the policy saves on Q+ growth too (app.App._values); here import always gets there first
        return imp_mwh * 329 // 1000

    def values() -> list[int]:
        return ([imp_mwh, 0, qpos_mvarh(), 0] + [0, 0, 0, 0] * (n_ct - 1) + [pulses * 10**9 // const]
                + [0] * (n_pulse - 1))

    def snapshot() -> persist.Counters:
        c.ct[0] = [imp_mwh, 0, qpos_mvarh(), 0]
        c.pulse[0] = [pulses, 0, 0, 0]
        c.flags = 0
        return c

    store.save_counters(snapshot())  # first boot
    policy.saved(0, values())
    b = 0
    for m in range(MINUTES):
        frac += int(watts[m] * 1000)  # mW x 1 min
        imp_mwh += frac // 60
        pulse_frac += frac // 60
        frac %= 60
        pulses += pulse_frac // 1000
        pulse_frac %= 1000
        now_ms = m * 60000
        if b < len(brownout_minute) and brownout_minute[b] == m:
            b += 1
            c.brownout_count += 1
            store.brownout_save(snapshot())  # the supply monitor fired
            # ... power comes back: a fresh boot restores and saves the new boot count
            store = persist.Store(hal, board, n_ct, n_pulse, cfg.image_len())
            restored = store.load_counters()
            assert restored is not None
            worst_loss_mwh = max(worst_loss_mwh, imp_mwh - restored.ct[0][0])
            c = restored
            c.boot_count += 1
            store.save_counters(snapshot())
            policy = savepolicy.SavePolicy(cfg.save_wh, cfg.save_min)
            policy.saved(now_ms, values())
        elif policy.due(now_ms, values()):
            store.save_counters(snapshot())
            policy.saved(now_ms, values())
    rec = persist.record_len(n_ct, n_pulse)
    pages = (rec + hal.page - 1) // hal.page
    return {
        "firmware.eeprom.writes_per_cell_per_year": max(hal.page_writes),
        "firmware.eeprom.saves_per_year": store.seq,
        "firmware.eeprom.brownout_save_ms": pages * hal.cycle_ms,
        "firmware.eeprom.record_bytes": rec,
        "firmware.eeprom.max_loss_wh_on_outage": worst_loss_mwh / 1000,
    }


def run() -> dict[str, object]:
    return {**simulate(), **core_cost()}


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(), indent=2))
