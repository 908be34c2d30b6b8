"""Issue #16: the inverter controller over a simulated month with connection faults.

The controller (gridtap.control.controller) runs on a simulated clock, one tick per simulated
minute, against the LuxPower simulator (gridtap_sim.luxpower) over real TCP on 127.0.0.1. A
threshold policy on an Agile-shaped half-hourly price (cheap night slots, some negative, a 16:00-19:00
peak; seeded) switches AC charge on in slots priced at or below 10 p and forced discharge on in
the peak, so the wanted state changes several times a day. At least 50 faults are injected at
seeded random minutes: dropped connections, silent stalls (short and ones lasting 5-25 simulated
minutes), garbled replies, refused requests and writes that do not stick.

* `control.inverter_writes_per_day`: register writes the simulated inverter applied, per day.
* `control.missed_slot_transitions`: slots whose wanted state differs from the slot before and in
  which the inverter (its register 21, read from the simulator directly) never reached that state.

A fault costs the controller at least one tick; after a tick whose link failed, the benchmark
gives the client up to 2 s of wall time to reconnect before simulated time moves on (a real tick
is a minute long; the client's reconnect takes seconds).

Run alone: `python bench/run.py control_faults`.
"""

from __future__ import annotations

import logging
import random
import time

from gridtap.control.controller import Controller, ControllerSettings
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import LinkSettings, LuxClient
from gridtap_sim.luxpower import Battery, Datalogger, Inverter

DAYS = 30
TICK_S = 60.0
SLOT_S = 1800.0
FAULTS = 60
START = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SEED = 16

ANCHORS = {
    "control.inverter_writes_per_day": "goal ≤ 48 (issue #16)",
    "control.missed_slot_transitions": "goal 0 (issue #16); octolux retries nothing",
}
HOW = {
    "control.inverter_writes_per_day": (f"{DAYS} simulated days, a tick per simulated minute, threshold "
                                        f"policy on an Agile-shaped price, {FAULTS} injected connection "
                                        "faults; writes the "
                                        "simulated inverter applied / days"),
    "control.missed_slot_transitions": ("slots whose wanted state changed and that the inverter never "
                                        "reached "
                                        "during the slot, same run"),
    "control.faults_injected": "drops, stalls (short and 5-25 simulated min), garbled, refused, not sticking",
    "control.link_reconnects": "client reconnects during the month (faults and watchdog)",
}


def prices(days: int, rng: random.Random) -> list[float]:
    """p/kWh per half-hour slot, Agile's daily shape with noise."""
    out: list[float] = []
    for _ in range(days):
        windy = rng.random() < 0.2
        for slot in range(48):
            h = slot / 2
            if h < 6:
                p = 12.0 - 5.0 * (1 - abs(h - 3.5) / 3.5) + rng.gauss(0, 1.5)
                if windy and 2 <= h < 5:
                    p -= rng.uniform(8, 15)  # negative-price nights
            elif 16 <= h < 19:
                p = 32.0 + rng.gauss(0, 3)
            else:
                p = 18.0 + 4.0 * (h > 12) + rng.gauss(0, 2)
            out.append(round(p, 2))
    return out


class Threshold:
    """octolux's rule, plus forced discharge in the peak: SOC-independent, so the wanted state of
    each slot is known in advance (the inverter's own SOC limits stop charge and discharge)."""

    def __init__(self, table: list[float], threshold: float = 10.0) -> None:
        self.table, self.threshold = table, threshold

    def state(self, t: float) -> InverterState:
        slot = int((t - START) // SLOT_S)
        p = self.table[min(max(slot, 0), len(self.table) - 1)]
        h = ((t - START) % 86400) / 3600
        if p <= self.threshold:
            return InverterState(ac_charge=True)
        if 16 <= h < 19:
            return InverterState(forced_discharge=True)
        return InverterState()

    def decide(self, ctx: ControlContext) -> Decision:
        return Decision(self.state(ctx.now), "bench threshold", "policy")


def bits(s: InverterState) -> int:
    return (r.BIT_AC_CHARGE if s.ac_charge else 0) | (r.BIT_FORCED_DISCHARGE if s.forced_discharge else 0)


def run() -> dict[str, object]:
    logging.getLogger("gridtap").setLevel(logging.CRITICAL)
    rng = random.Random(SEED)
    clock = [START]
    inv = Inverter("5555555555", Battery(soc_pct=50.0), clock=lambda: clock[0])
    dl = Datalogger(inv, "2222222222", heartbeat_s=60, push_s=120, clock=lambda: clock[0]).start()
    link = LinkSettings(reply_timeout_s=0.25, silent_s=5.0, backoff_min_s=0.01, backoff_max_s=0.1,
                        max_timeouts=1,
                        keepalive_s=10)
    client = LuxClient("127.0.0.1", dl.port, "2222222222", inv.serial, link, clock=lambda: clock[0]).start()
    client.wait_connected(5)
    pol = Threshold(prices(DAYS, rng))
    ctl = Controller(client, pol, ControllerSettings(min_dwell_s=300, verify_s=300))
    ticks = int(DAYS * 86400 / TICK_S)
    fault_at = dict.fromkeys(sorted(rng.sample(range(10, ticks - 10), FAULTS)), "")
    kinds = ["drop", "stall", "outage", "garble", "refuse", "not_sticking"]
    for i, k in enumerate(fault_at):
        fault_at[k] = kinds[i % len(kinds)]
    outage_end = -1
    slot_wanted: dict[int, int] = {}
    slot_reached: dict[int, bool] = {}
    try:
        for k in range(ticks):
            t = START + k * TICK_S
            clock[0] = t
            kind = fault_at.get(k)
            if kind == "drop":
                dl.drop()
            elif kind == "stall":
                dl.stall(0.6)
            elif kind == "outage":
                dl.stall(1e9)
                outage_end = k + rng.randint(5, 25)
            elif kind == "garble":
                dl.garble(1)
            elif kind == "refuse":
                dl.refuse(1)
            elif kind == "not_sticking":
                dl.not_sticking(1)
            if k == outage_end:
                dl.stall_until = 0.0
            ctl.tick(t)
            if ctl.status.error is not None and k != outage_end - 1:
                client.wait_connected(2.0)
            slot = int((t - START) // SLOT_S)
            want = bits(pol.state(t))
            slot_wanted.setdefault(slot, want)
            with inv.lock:
                have = inv.hold[r.REG_FUNCTION] & (r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE)
            slot_reached[slot] = slot_reached.get(slot, False) or have == want
    finally:
        ctl.stop(clock[0])
        client.close()
        dl.close()
    missed = sum(1 for s, w in slot_wanted.items()
                 if s > 0 and w != slot_wanted.get(s - 1) and not slot_reached[s])
    return {
        "control.inverter_writes_per_day": round(dl.writes / DAYS, 2),
        "control.missed_slot_transitions": missed,
        "control.faults_injected": FAULTS,
        "control.link_reconnects": client.stats["reconnects"],
    }


if __name__ == "__main__":
    t0 = time.monotonic()
    print(run(), f"{time.monotonic() - t0:.1f} s")
