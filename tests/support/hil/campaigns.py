"""HIL campaigns shared by the tests (short) and `bench/bench_hil.py` (one simulated hour).

Each campaign runs the real firmware on the virtual board, talks to it only
over its UART and scores what the board said against the simulator's truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridtap_fw import wire
from gridtap_sim import model as sm
from gridtap_sim import scenarios
from tests.support.hil.rig import IDEAL, Capture, VirtualRig, cumulative, pulse_train, register_times, stamp_s

RATED_A = 100.0            # board.json rated_a of every CT
V_NOMINAL = 230.0
BIG_LOAD_W = 0.05 * RATED_A * V_NOMINAL   # 5 % of the CT rating: 1150 W
IDLE_W = 1.0               # the firmware's no-load threshold (power.CREEP_MW)

# name -> (simulator scenario, time of day at t = 0 in hours or None, custom loads)
ACCURACY_SCENARIOS: dict[str, tuple[str, float | None, str | None]] = {
    "household": ("household", None, None),
    "household-pv": ("household-pv", None, None),
    "household-pv-night": ("household-pv", 23.0, None),
    "three-phase": ("three-phase", None, None),
    "steady": ("steady", None, None),
    "quadrants-a": ("steady", None, "a"),
    "quadrants-b": ("steady", None, "b"),
}


def quadrant_loads(which: str, mains: sm.Mains) -> list[sm.Load]:
    """Constant loads in all four P/Q quadrants (lagging and leading import and export)."""
    on = sm.always_on()
    if which == "a":
        return [sm.inductive("import-lagging", 2000.0, 0.8, on, {0: 1.0}),
                sm.constant_power("import-leading", "standby", 1500.0, 0.8, on, {1: 1.0}, leading=True),
                sm.constant_power("export-lagging", "pv", -2000.0, 0.8, on, {2: 1.0})]
    return [sm.constant_power("export-leading", "pv", -1800.0, 0.7, on, {0: 1.0}, leading=True),
            sm.resistive("import-unity", 1200.0, on, {1: 1.0}, mains),
            sm.constant_power("export-unity", "pv", -3000.0, 1.0, on, {2: 1.0})]


@dataclass
class Register:
    ct: int
    kind: str           # "import" or "export"
    firmware_wh: float
    truth_wh: float
    mean_w: float

    @property
    def error_pct(self) -> float:
        return abs(self.firmware_wh - self.truth_wh) / self.truth_wh * 100 if self.truth_wh else math.inf


@dataclass
class Reactive:
    """One CT's reactive register (Q+ or Q-, from its last GAUGE) against the truth,
    scored against the apparent energy over the same span (the issue's measure)."""
    ct: int
    kind: str           # "q+" or "q-"
    firmware_varh: float
    truth_varh: float
    apparent_vah: float
    mean_va: float

    @property
    def error_pct_of_s(self) -> float:
        if not self.apparent_vah:
            return 0.0
        return abs(self.firmware_varh - self.truth_varh) / self.apparent_vah * 100


@dataclass
class AccuracyResult:
    name: str
    seconds: float
    registers: list[Register] = field(default_factory=list)
    capture: Capture | None = None
    reactive: list[Reactive] = field(default_factory=list)

    def worst_pct(self, min_w: float = BIG_LOAD_W) -> float:
        """Worst |firmware - truth| / truth over registers whose mean power is at least min_w."""
        errs = [r.error_pct for r in self.registers if r.mean_w >= min_w]
        return max(errs) if errs else 0.0

    def reactive_worst_pct(self, min_va: float = BIG_LOAD_W) -> float:
        """Worst reactive register's |firmware - truth| in % of the apparent energy, over CTs whose
        mean apparent power is at least min_va."""
        errs = [r.error_pct_of_s for r in self.reactive if r.mean_va >= min_va]
        return max(errs) if errs else 0.0


def line_phase_mdeg(lag_deg: float) -> int:
    """phase_mdeg (VT lead minus CT lead, -180..180 degrees) of a CT whose line's
    voltage lags the VT's line by lag_deg: L2 (120) is +120000, L3 (240) -120000."""
    return (round(lag_deg * 1000) + 180000) % 360000 - 180000


SETTLE_S = 2.0  # after a CONFIG_SET: the period and second in progress still had the old phase


def accuracy(tmp: Path, name: str, seconds: float, seed: int = 1,
             command: Callable[[Path], list[str]] | None = None) -> AccuracyResult:
    """Run one accuracy scenario on an ideal-transducer board and score every energy register.

    A scenario whose CTs sit on other lines than the VT's (three-phase) is set
    up as a user would: CONFIG_SET phase_mdeg per CT (+120 deg on L2, -120 on
    L3) once the board is up. Its registers are then scored from the first
    COUNTER SETTLE_S after the board acknowledged, against the truth over the
    same span; every other scenario from power-up. The rules are the same.
    """
    scenario, start_h, custom = ACCURACY_SCENARIOS[name]
    tmp.mkdir(parents=True, exist_ok=True)
    rig = VirtualRig(tmp, scenario, seed, sim=IDEAL, start=None if start_h is None else start_h * 3600,
                     command=command)
    if custom is not None:
        rig.sim.scn.loads = quadrant_loads(custom, rig.sim.scn.mains)
        rig.sim.model = scenarios.model_for(rig.sim.scn, rig.sim.board, seed)
    lines = [line_phase_mdeg(d) for d in rig.sim.scn.ct_phase_deg]
    acked_at = 0   # index in the capture from which every message came after the CONFIG_SET took effect
    try:
        cl = rig.client()       # before the board talks: opening a port flushes what is waiting
        try:
            rig.start(seconds)
            if any(lines):
                for ct, mdeg in enumerate(lines):
                    cl.config_set(wire.TARGET_CT, ct, ((wire.P_PHASE_MDEG, mdeg),))
                acked_at = len(cl.backlog)
            cap = rig.capture(seconds, cl)
        finally:
            cl.close()
    finally:
        rig.close()
    assert rig.vb.stats.boots == [(0.0, 1)], rig.vb.stats.boots
    truth = rig.truth()
    res = AccuracyResult(name, seconds, capture=cap)
    regs = register_times(cap.msgs)
    t_from = 0.0
    if acked_at:
        after = [stamp_s(m.as_dict()) for m in cap.msgs[acked_at:] if m.mtype == wire.GAUGE]
        assert after, "no GAUGE after the CONFIG_SET"
        t_from = after[0] + SETTLE_S
    n_ct = truth["e_imp_j"].shape[1]
    for ct in range(n_ct):
        mine = [(t, d) for t, d in regs if d["sensor"] == ct]
        assert mine, f"no COUNTER for CT{ct + 1}"
        t, d = mine[-1]
        base = None
        if acked_at:
            base = next(((t0, d0) for t0, d0 in mine if t0 >= t_from), None)
            assert base is not None and base[0] < t, (
                f"CT{ct + 1}: no COUNTER {SETTLE_S:g} s after the CONFIG_SET")
        for kind, wh, milli, arr in (("import", "imp_wh", "imp_milli", "e_imp_j"),
                                     ("export", "exp_wh", "exp_milli", "e_exp_j")):
            fw_wh = d[wh] + d[milli] / 1000.0
            truth_wh = cumulative(truth[arr][:, ct], t) / 3600.0
            span = t
            if base is not None:
                t0, d0 = base
                fw_wh -= d0[wh] + d0[milli] / 1000.0
                truth_wh -= cumulative(truth[arr][:, ct], t0) / 3600.0
                span = t - t0
            res.registers.append(Register(ct, kind, fw_wh, truth_wh, truth_wh * 3600.0 / max(span, 1.0)))
    res.reactive = score_reactive(cap, truth, acked_at, t_from)
    return res


def score_reactive(cap: Capture, truth: dict[str, Any], acked_at: int, t_from: float) -> list[Reactive]:
    """Each CT's Q+ and Q- registers (protocol 2 GAUGE) against the truth's per-second net
    reactive energy split by sign, over the span from power-up (or t_from) to its last GAUGE."""
    q = truth["e_q_vars"]
    s = truth["vrms_v"][:, None] * truth["irms_a"]
    qpos, qneg = np.maximum(q, 0.0), np.maximum(-q, 0.0)
    out: list[Reactive] = []
    for ct in range(q.shape[1]):
        mine = [(stamp_s(m.as_dict()), m.as_dict()) for m in cap.msgs[acked_at:]
                if m.mtype == wire.GAUGE and m.values[0] == ct]
        if not mine:
            continue
        base = next(((t0, d0) for t0, d0 in mine if t0 >= t_from), None) if acked_at else None
        t, d = mine[-1]
        t0 = base[0] if base else 0.0
        apparent = (cumulative(s[:, ct], t) - cumulative(s[:, ct], t0)) / 3600.0
        for kind, wh, milli, arr in (("q+", "qpos_varh", "qpos_milli", qpos[:, ct]),
                                     ("q-", "qneg_varh", "qneg_milli", qneg[:, ct])):
            fw = d[wh] + d[milli] / 1000.0
            if base:
                fw -= base[1][wh] + base[1][milli] / 1000.0
            tr = (cumulative(arr, t) - cumulative(arr, t0)) / 3600.0
            out.append(Reactive(ct, kind, fw, tr, apparent, apparent * 3600.0 / max(t - t0, 1.0)))
    return out


# ---------------------------------------------------------------- pulses

@dataclass
class PulseResult:
    pulses_true: int
    pulses_counted: int
    tuples: int
    tuples_wrong: int

    @property
    def miscounts(self) -> int:
        return abs(self.pulses_counted - self.pulses_true) + self.tuples_wrong


def pulse_rate(seed: int) -> Any:
    """Pulses per second in second k: 1..10 Hz, changing every 10 s."""
    rates = np.random.default_rng(seed).uniform(1.0, 10.0, 100_000)
    return lambda k: float(rates[k // 10])


def pulses(tmp: Path, n_pulses: int, seed: int = 3) -> PulseResult:
    """S0 pulses at 1..10 Hz with up to 3 bounce pairs of 5 ms on each edge, on P1 and P2."""
    seconds = n_pulses / 5.5 / 2 + 5.0          # mean rate 5.5 Hz on each of two inputs
    quiet_from = seconds - 4.0
    meters = [pulse_train(pulse_rate(seed), quiet_from, seed, 0),
              pulse_train(pulse_rate(seed + 1), quiet_from, seed + 1, 1)]
    rig = VirtualRig(tmp, "steady", seed, meters=meters)
    try:
        cap = rig.capture(seconds)
    finally:
        rig.close()
    assert len(rig.vb.stats.boots) == 1
    truth = rig.truth()
    starts, inputs = truth["pulse_t_s"], truth["pulse_input"]
    tuples = cap.of(wire.PULSE)
    wrong = 0
    counted = 0
    for inp in (0, 1):
        s = np.sort(starts[inputs == inp])
        mine = sorted((d for d in tuples if d["input"] == inp), key=lambda d: (stamp_s(d), d["pulses"]))
        assert mine, f"no PULSE tuples for P{inp + 1}"
        for d in mine:
            # the stamp is the (ms-truncated) instant of the pulse's first falling edge
            expect = int(np.searchsorted(s, stamp_s(d) + 0.002))
            wrong += d["pulses"] != expect if d["pulses"] else 0
        counted += mine[-1]["pulses"]
    return PulseResult(int(len(starts)), counted, len(tuples), wrong)


# ---------------------------------------------------------------- brownouts



@dataclass
class BrownoutResult:
    outages: int
    boots: int
    decreases: int            # a register reported lower than one reported before (any boot)
    wh_lost: float            # measured before an outage but not restored by the next boot, Wh
    wh_lost_per_outage_max: float
    torn_pages: int
    fresh_starts: int         # later boots that found no intact counter record
    over_truth: int           # a register above the truth plus the accuracy bound: a corrupt slot
    second_wh_max: float      # the most energy any CT took in one second of the run, Wh
    problems: list[str] = field(default_factory=list)
    # the reactive registers (GAUGE Q+/Q-, persisted since record layout 2) across each reboot:
    q_decreases: int = 0      # a boot's first value below the previous boot's last
    varh_lost_per_outage_max: float = 0.0
    q_restarts: int = 0       # a boot's first value 0 where the previous boot's last was not
    q_max_varh: float = 0.0   # the largest Q register seen: the check had something to check
    second_varh_max: float = 0.0  # the most reactive energy any CT took in one second, varh


def brownouts(tmp: Path, n_outages: int, seed: int = 1, holdup_ms: float | None = None,
              every_s: float = 4.0, save_wh: int | None = None,
              command: Callable[[Path], list[str]] | None = None) -> BrownoutResult:
    """Mains failures at random instants; check the counters across every reboot against the truth.

    `holdup_ms` below the board's save time makes the supply die during the
    brownout save's EEPROM page writes (torn pages); `save_wh` = 1 makes the
    periodic saves frequent, so failures also land among them.
    """
    top = {} if holdup_ms is None else {"supply_monitor.holdup_ms": holdup_ms}
    rig = VirtualRig(tmp, "brownouts", seed, sim=IDEAL, top=top, outage_every_s=every_s, command=command)
    spans = rig.sim.scn.outages.spans
    seconds = spans[n_outages - 1][1] + 6.0
    try:
        cl = rig.client()       # before the board talks: opening a port flushes what is waiting
        rig.start(seconds)
        try:
            if save_wh is not None:
                cl.config_set(wire.TARGET_BOARD, 0, ((wire.P_SAVE_WH, save_wh),))
                cl.commit(wire.COMMIT_CONFIG)
            cap = rig.capture(seconds, cl)
        finally:
            cl.close()
    finally:
        rig.close()
    truth = rig.truth()
    boots = rig.boot_times()
    per_boot = cap.by_boot()
    assert len(per_boot) == len(boots), (len(per_boot), boots)
    outages = [s for s in spans if s[0] < rig.vb.now]
    decreases = 0
    lost: list[float] = []
    over = 0
    events = [e for boot in per_boot[1:] for e in cap.of(wire.EVENT, boot)]
    fresh = sum(1 for e in events if e["code"] == 0x0103)
    prev_last: dict[tuple[int, str], tuple[float, float, float]] = {}   # -> (holds for, stamp, Wh)
    problems: list[str] = []
    saved_at = []   # per boot: when (sim time) the brownout save's EVENT was stamped
    for b, msgs in enumerate(per_boot):
        ev = [stamp_s(e) for e in cap.of(wire.EVENT, msgs) if e["code"] == wire.EV_BROWNOUT_SAVE]
        saved_at.append(boots[b] + ev[0] if ev else math.inf)
    for b, msgs in enumerate(per_boot):
        regs = register_times(msgs)
        for ct in range(truth["e_imp_j"].shape[1]):
            mine = [(t, d) for t, d in regs if d["sensor"] == ct]
            for kind, wh, milli, arr in (("import", "imp_wh", "imp_milli", "e_imp_j"),
                                         ("export", "exp_wh", "exp_milli", "e_exp_j")):
                cum = truth[arr][:, ct]
                vals = [(boots[b] + t, boots[b] + stamp_s(d), d[wh] + d[milli] / 1000.0) for t, d in mine]
                decreases += sum(1 for x, y in zip(vals, vals[1:], strict=False) if y[2] < x[2])
                for _, stamp, v in vals:
                    # a register cannot hold energy from after the instant it was sent
                    limit = cumulative(cum, stamp) / 3600.0 * 1.002 + 0.01
                    if v > limit:
                        over += 1
                        problems.append(f"boot {b} CT{ct + 1} {kind}: {v:.3f} Wh > {limit:.3f} Wh, "
                                        f"the truth at its stamp {stamp:.3f} s")
                key = (ct, kind)
                if vals and key in prev_last:
                    t_prev, stamp_prev, v_prev = prev_last[key]
                    # what the board had measured by the failure that ended the previous boot:
                    # its last report plus the true energy from that report's instant to the
                    # failure. A report queued after the brownout save (its EVENT) holds what
                    # the save added, i.e. everything up to the failure; after it no mains.
                    fail = max((o[0] for o in outages if o[0] < boots[b]), default=boots[b])
                    t_from = fail if stamp_prev >= saved_at[b - 1] else t_prev
                    gap = max(0.0, cumulative(cum, fail) - cumulative(cum, t_from)) / 3600.0
                    restored = vals[0][2]
                    decreases += restored < v_prev
                    lost.append(max(0.0, v_prev + gap - restored))
                if vals:
                    prev_last[key] = vals[-1]
    second_wh = float(np.max(np.maximum(truth["e_imp_j"], truth["e_exp_j"]))) / 3600.0
    res = BrownoutResult(len(outages), len(boots), decreases, float(sum(lost)),
                         max(lost) if lost else 0.0, len(rig.vb.eeprom.torn), fresh, over, second_wh,
                         problems)
    reactive_across_reboots(res, per_boot, cap)
    res.second_varh_max = float(np.max(np.abs(truth["e_q_vars"]))) / 3600.0
    return res


def reactive_across_reboots(res: BrownoutResult, per_boot: list[list[wire.Message]], cap: Capture) -> None:
    """Each CT's Q+ and Q- in the first GAUGE of a boot against the last GAUGE of the boot before.

    The brownout save holds the registers up to the failure, so a boot starts at or
    above where the last boot's reports ended; a torn save falls back to an older record."""
    last: dict[tuple[int, str], float] = {}
    for msgs in per_boot:
        seen: dict[tuple[int, str], list[float]] = {}
        for d in cap.of(wire.GAUGE, msgs):
            for kind in ("qpos", "qneg"):
                v = d[kind + "_varh"] + d[kind + "_milli"] / 1000.0
                seen.setdefault((d["channel"], kind), []).append(v)
        for key, vals in seen.items():
            res.q_max_varh = max(res.q_max_varh, vals[-1])
            before = last.get(key)
            if before is not None:
                res.q_decreases += vals[0] < before
                res.q_restarts += vals[0] == 0 < before
                res.varh_lost_per_outage_max = max(res.varh_lost_per_outage_max, before - vals[0])
                if vals[0] < before:
                    res.problems.append(f"CT{key[0] + 1} {key[1]}: {before:.3f} varh before a reboot, "
                                        f"{vals[0]:.3f} after")
            last[key] = vals[-1]


# ---------------------------------------------------------------- UART noise

@dataclass
class NoiseResult:
    bits_flipped: int          # by the rig, board -> host
    frames_sent: int           # by the board (seq 0 .. highest)
    frames_lost: int           # originals the host never received
    frames_ok: int
    rejected: int              # frames the host's decoder dropped (any counter)
    corrupt_accepted: int      # accepted values that contradict the truth or each other
    config_answers_wrong: int  # CONFIG replies (host -> board noise too) that differ from the board's
    problems: list[str] = field(default_factory=list)


def uart_noise(tmp: Path, seconds: float, ber: float = 1e-4, seed: int = 1) -> NoiseResult:
    """The steady bench behind a link with bit errors both ways; every accepted value is checked."""
    # Paced at 60x, not flat out: the CONFIG_GET exchanges below run in wall time (0.3 s per
    # try), and a board that finished its simulated minutes first would answer none of them.
    rig = VirtualRig(tmp, "steady", seed, sim=IDEAL, ber=ber, speed=60.0)
    wrong_cfg = 0
    try:
        cl = rig.client(timeout=0.3)
        rig.start(seconds)
        cl.retries = 20
        cl.transcript = []
        try:
            want = {wire.P_ENABLED: 1, wire.P_GAIN_E6: 1_000_000, wire.P_PHASE_MDEG: 0, wire.P_INVERT: 0}
            for i in range(5):
                got = cl.config_get(wire.TARGET_CT, i % 3, tuple(want))
                wrong_cfg += got != want
            cap = rig.capture(seconds, cl)
        finally:
            cl.close()
    finally:
        rig.close()
    assert len(rig.vb.stats.boots) == 1
    truth = rig.truth()
    msgs = cl.transcript
    originals = {m.seq for m in msgs if not m.flags & wire.FLAG_RETX}
    top = max(m.seq for m in msgs)
    problems: list[str] = []
    last_counter: dict[int, tuple[int, int]] = {}
    for m in msgs:
        d = m.as_dict()
        if m.mtype == wire.COUNTER:
            ct = d["sensor"]
            t = stamp_s(d)
            imp = d["imp_wh"] + d["imp_milli"] / 1000.0
            exp = d["exp_wh"] + d["exp_milli"] / 1000.0
            hi_imp = cumulative(truth["e_imp_j"][:, ct], t) / 3600.0 * 1.002 + 0.01
            hi_exp = cumulative(truth["e_exp_j"][:, ct], t) / 3600.0 * 1.002 + 0.01
            lo_imp = cumulative(truth["e_imp_j"][:, ct], t - 1.5) / 3600.0 * 0.998 - 0.01
            lo_exp = cumulative(truth["e_exp_j"][:, ct], t - 1.5) / 3600.0 * 0.998 - 0.01
            if not (lo_imp <= imp <= hi_imp and lo_exp <= exp <= hi_exp):
                problems.append(f"COUNTER {d} outside [{lo_imp:.3f}, {hi_imp:.3f}] "
                                f"/ [{lo_exp:.3f}, {hi_exp:.3f}]")
            key = (d["imp_wh"] * 1000 + d["imp_milli"], d["exp_wh"] * 1000 + d["exp_milli"])
            if not m.flags & wire.FLAG_RETX and ct in last_counter:
                if key[0] < last_counter[ct][0] or key[1] < last_counter[ct][1]:
                    problems.append(f"COUNTER {d} below the previous {last_counter[ct]}")
            if not m.flags & wire.FLAG_RETX:
                last_counter[ct] = key
        elif m.mtype == wire.GAUGE:
            k = int(stamp_s(d))
            if 2 <= k < len(truth["e_net_j"]):
                p = truth["e_net_j"][k - 1, d["channel"]]
                if (abs(d["power_mw"] / 1000.0 - p) > 0.01 * abs(p) + 5.0
                        or abs(d["vrms_mv"] / 1000.0 - 230.0) > 2.0 or abs(d["freq_mhz"] - 50000) > 50):
                    problems.append(f"GAUGE {d} against {p:.1f} W")
        elif m.mtype == wire.HELLO:
            if (d["n_ct"], d["n_pulse"], d["boot_count"]) != (3, 2, 1):
                problems.append(f"HELLO {d}")
    return NoiseResult(rig.vb.from_board.stats.bits_flipped, top + 1, top + 1 - len(originals),
                       cap.decoder["frames_ok"], sum(cap.decoder.values()) - cap.decoder["frames_ok"],
                       len(problems), wrong_cfg, problems)
