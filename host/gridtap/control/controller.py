"""Applies Decisions to a LuxPower inverter, safely (docs/control.md, "Controller and safe state").

Every `tick(now)` asks the policy for a Decision and brings the inverter to its state:

* idempotent: register 21 (and the power % registers 66 and 82) are read first; nothing is written when the
  inverter is already in the wanted state. Register 21 is always read-modify-write: only bit 7
  (AC charge) and bit 10 (forced discharge) are gridtap's, every other bit stays as it was.
* verified: after a write the registers are read back; a write that did not stick is an error,
  retried on the next tick.
* no chatter: a new state is taken only after `min_dwell_s` in the current one, and power % that
  differ by less than `pct_hysteresis` count as equal; a safe or override Decision is taken at once.
* logged: every change is logged with the Decision's reason and source.
* dry run: everything is read and decided and logged, nothing is written.
* grid operator first (issue #17): every Decision goes through `gridlimits.constrain` (emergency stops,
  power caps) and, while the operator bounds the grid power (MINSETP/MAXSETP, emergency stop
  production), `gridlimits.enforce`, which picks the battery's power from the metered grid power so
  that it comes inside the limit (closed loop; docs/iec104.md, "What the commands do"). A state that
  breaks a limit, or a metered grid power beyond (or within half the margin of) a limit, is changed at
  once, overriding the dwell and the hysteresis; relaxing back keeps both.
* the reactive-power band (Q mode remote, MINSETQ/MAXSETQ): `reactive.QControl`, ticked first, with
  its own target, dwell and safe state (the inverter's own reactive-power setting).
* safe state (`SAFE`): AC charge off, forced discharge off. Applied when the policy raises, on
  `stop()` (daemon stop), and when the inverter refuses a write; a wrong inverter serial stops
  control with an error naming both serials.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridtap.control import gridlimits
from gridtap.control.decision import ControlContext, Decision, InverterState
from gridtap.control.gridlimits import GridLimits, Ratings
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import InverterRefused, LinkError, SerialMismatch, write_verified
from gridtap.control.reactive import QControl

log = logging.getLogger("gridtap.control")

SAFE = InverterState(ac_charge=False, forced_discharge=False)


class Link(Protocol):
    def read_hold(self, register: int, count: int = 1) -> tuple[int, ...]: ...
    def write_single(self, register: int, value: int) -> None: ...
    def soc(self) -> tuple[float | None, float | None]: ...
    def battery_w(self) -> float | None: ...


class DecidesPolicy(Protocol):
    def decide(self, ctx: ControlContext) -> Decision: ...


@dataclass
class ControllerSettings:
    min_dwell_s: float = 300.0
    verify_s: float = 300.0  # re-read the inverter this often even when nothing changed
    pct_hysteresis: int = 5
    dry_run: bool = False
    # the grid loop (issue #17): the battery's power at 100 % (W), how far inside a grid limit it aims,
    # how long after a write the metered grid power still shows the old state (the inverter's response
    # plus one metering second), and how old a grid reading may be before the worst is assumed
    charge_w: float = 3000.0
    discharge_w: float = 3000.0
    grid_margin_w: float = 100.0
    grid_response_s: float = 2.0
    grid_stale_s: float = 10.0
    # the reactive-power band (gridtap.control.reactive): the inverter's rated power (VA; its reactive %
    # are of it), how far inside the band it aims, and the least step (%) by which it relaxes after the
    # dwell (the band itself is the loop's hysteresis: a step that keeps it inside is never urgent)
    rated_va: float = 3600.0
    q_margin_var: float = 50.0
    q_pct_hysteresis: int = 2


@dataclass
class ControllerStatus:
    wanted: InverterState | None = None
    actual: InverterState | None = None
    reason: str = ""
    source: str = ""
    error: str | None = None
    warning: str | None = None  # a setting of the inverter that keeps gridtap from working as asked
    writes: int = 0
    failures: int = 0
    changed_at: float = -1e18
    verified_at: float = -1e18
    log: list[str] = field(default_factory=list)


def state_of(reg21: int, ac_pct: int, dis_pct: int) -> InverterState:
    return InverterState(ac_charge=bool(reg21 & r.BIT_AC_CHARGE), charge_pct=ac_pct,
                         forced_discharge=bool(reg21 & r.BIT_FORCED_DISCHARGE), discharge_pct=dis_pct)


GridReading = Callable[[str], "tuple[float, float] | None"]  # sensor name -> (W, + import; its time) or None


class Controller:
    def __init__(self, link: Link, policy: DecidesPolicy, settings: ControllerSettings | None = None,
                 context: Callable[[float], dict[str, Any]] | None = None,
                 limits: Callable[[], GridLimits] = gridlimits.current,
                 grid: GridReading | None = None, grid_var: GridReading | None = None) -> None:
        self.link = link
        self.policy = policy
        self.s = settings or ControllerSettings()
        self.context = context  # extra ControlContext fields (prices, meters) for a time
        self.limits = limits  # what the grid operator allows now (published by the IEC-104 output)
        self.grid = grid  # the metered grid power of a sensor, for the grid loop
        self.grid_var = grid_var  # its reactive power (var, + lagging; its time), for the Q band
        self.q = QControl(link, self.s)
        self.decision: Decision | None = None  # the policy's last Decision (re-asked on `decide` ticks)
        self.status = ControllerStatus()
        self.target: InverterState | None = None  # the state last taken (after dwell/hysteresis)
        self.halted: str | None = None  # a fault that needs the user (wrong serial)
        self.export_warned = False
        self.windows_checked = False

    # -- deciding -----------------------------------------------------------
    def _ctx(self, now: float) -> ControlContext:
        soc, age = self.link.soc()
        extra = self.context(now) if self.context else {}
        return ControlContext(now=now, soc_pct=soc, soc_age_s=age, battery_w=self.link.battery_w(),
                              prices=extra.get("prices"), meters=extra.get("meters", {}))

    def decide(self, now: float) -> Decision:
        try:
            return self.policy.decide(self._ctx(now))
        except Exception as exc:  # a policy bug must leave the battery safe, not the thread dead
            log.exception("policy failed")
            return Decision(SAFE, f"the policy failed: {exc}", "safe")

    def bounded(self, d: Decision, now: float) -> tuple[Decision, bool]:
        """d within the grid operator's limits, and whether it must be taken at once (the current
        state breaks a limit, or the metered grid power is beyond one: safety before dwell)."""
        lim = self.limits()
        out = gridlimits.constrain(d, lim)
        cur = self.target
        urgent = cur is not None and gridlimits.forbids(cur, lim)
        low, high = lim.grid_bounds()
        if low is None and high is None:
            return out, urgent
        reading = self.grid(lim.meter) if self.grid is not None and lim.meter else None
        if reading is None or now - reading[1] > self.s.grid_stale_s:
            out = gridlimits.enforce(out, lim, None, None, None, self._ratings(), self.s.grid_margin_w)
            unsafe = cur is not None and (cur.forced_discharge and low is not None
                                          or cur.ac_charge and high is not None)
            return out, urgent or (unsafe and not lim.dry_run)
        grid_w, t = reading
        if cur is not None and t < self.status.changed_at + self.s.grid_response_s:
            # metered before the inverter could follow the last change: hold until it shows (a stop or
            # a power cap that came meanwhile still applies at once)
            return gridlimits.constrain(Decision(cur, self.status.reason, self.status.source), lim), urgent
        have = self.status.actual if self.status.actual is not None else cur
        out = gridlimits.enforce(out, lim, grid_w, have, self.link.battery_w(), self._ratings(),
                                 self.s.grid_margin_w)
        near = gridlimits.outside(lim, grid_w, self.s.grid_margin_w / 2)
        return out, urgent or (near and not lim.dry_run)

    def limited(self) -> bool:
        """True while the grid operator bounds the grid power: the loop then ticks every metering second."""
        lim = self.limits()
        low, high = lim.grid_bounds()
        return low is not None or high is not None or self.q.active(lim)

    def _ratings(self) -> Ratings:
        return Ratings(self.s.charge_w, self.s.discharge_w)

    def _take(self, d: Decision, now: float, urgent: bool = False) -> InverterState:
        """The state to hold now: d's, unless the current one has not dwelt long enough (or differs by
        less than the hysteresis); `urgent` (the grid operator's limit) overrides both."""
        cur = self.target
        want = d.state
        if want.export_limit_w is not None and not self.export_warned:
            self.export_warned = True
            log.warning("inverter: an export limit of %d W is asked for; the LuxPower inverter has no "
                        "documented export-limit register, so it is kept by the battery's power instead "
                        "(the grid loop, when a grid operator's limit is in force)", want.export_limit_w)
        urgent = urgent or d.source in ("safe", "override")
        if cur is not None and _same(cur, want, 1 if urgent else self.s.pct_hysteresis):
            return cur
        if cur is not None and not urgent and now - self.status.changed_at < self.s.min_dwell_s:
            return cur
        if cur != want:
            self.status.changed_at = now
            msg = f"inverter: {_show(want)} ({d.source}: {d.reason})"
            log.info("%s%s", "[dry run] " if self.s.dry_run else "", msg)
            self.status.log = [*self.status.log[-49:], msg]
        self.target = want
        self.status.reason, self.status.source = d.reason, d.source
        return want

    # -- acting -------------------------------------------------------------
    def tick(self, now: float, decide: bool = True) -> None:
        """One control step: ask the policy (when `decide`; else reuse its last Decision: a grid-loop
        tick between two policy ticks), bound it by the grid operator, take it, apply it."""
        if self.halted:
            return
        self.tick_q(now)
        if decide or self.decision is None:
            self.decision = self.decide(now)
        d, urgent = self.bounded(self.decision, now)
        want = self._take(d, now, urgent)
        self.status.wanted = want
        due = now - self.status.verified_at >= self.s.verify_s
        if self.status.actual is not None and _same(self.status.actual, want, 1) and not due:
            return
        self.ensure(want, now)

    def tick_q(self, now: float) -> None:
        """The reactive-power band (Q mode remote): its own loop, dwell and safe state (reactive.py)."""
        lim = self.limits()
        reading = self.grid_var(lim.meter) if self.grid_var is not None and lim.meter else None
        self.q.tick(now, lim, reading)

    def ensure(self, want: InverterState, now: float) -> bool:
        """Bring the inverter to want; True if it is there (verified by reading back)."""
        try:
            self._ensure(want, now)
            self.status.error = None
            return True
        except SerialMismatch as exc:
            self.halted = str(exc)
            self.status.error = str(exc)
            log.error("inverter control stopped: %s", exc)
        except InverterRefused as exc:
            self.status.error = str(exc)
            self.status.failures += 1
            self.status.actual = None
            if exc.function == 3:  # a refused read (busy): try again, like a lost reply
                log.warning("inverter: %s (retrying on the next tick)", exc)
            else:
                log.error("inverter: %s; going to the safe state", exc)
                if want != SAFE:
                    self._safe_quietly(now)
        except LinkError as exc:
            self.status.error = str(exc)
            self.status.failures += 1
            self.status.actual = None  # unknown until read again
            log.warning("inverter: %s (retrying on the next tick)", exc)
        return False

    def _safe_quietly(self, now: float) -> None:
        try:
            self._ensure(SAFE, now)
        except (LinkError, InverterRefused, SerialMismatch) as exc:
            log.error("inverter: the safe state could not be applied either: %s", exc)

    def check_windows(self) -> str | None:
        """A warning if the inverter's AC-charge / forced-discharge window 1 is not 00:00-23:59: then
        bits 7 and 10 only act inside the windows (docs/luxpower.md, register map)."""
        problems = []
        for base, what in ((r.REG_AC_CHARGE_WINDOWS, "AC charge"),
                           (r.REG_FORCED_DISCHARGE_WINDOWS, "forced discharge")):
            start, end = (r.unpack_time(v) for v in self.link.read_hold(base, 2))
            if (start, end) != r.WHOLE_DAY:
                problems.append(f"{what} window 1 is {start[0]:02d}:{start[1]:02d}-{end[0]:02d}:{end[1]:02d}")
        if not problems:
            return None
        return ("inverter: " + "; ".join(problems) + ": gridtap's switch only acts inside it; set "
                "window 1 to 00:00-23:59 in the LuxPower app (README)")

    def _ensure(self, want: InverterState, now: float) -> None:
        if not self.windows_checked:
            warning = self.check_windows()
            self.windows_checked = True
            if warning:
                self.status.warning = warning
                log.warning("%s", warning)
        reg21 = self.link.read_hold(r.REG_FUNCTION)[0]
        # 66 AC charge % .. 82 forced discharge %, one request
        block = self.link.read_hold(r.REG_AC_CHARGE_PCT, r.REG_FORCED_DISCHARGE_PCT - r.REG_AC_CHARGE_PCT + 1)
        pct = (block[-1], block[0])  # (forced discharge %, AC charge %)
        have = state_of(reg21, pct[1], pct[0])
        self.status.actual = have
        self.status.verified_at = now
        writes: list[tuple[int, int]] = []
        if want.ac_charge and abs(pct[1] - want.charge_pct) >= 1:
            writes.append((r.REG_AC_CHARGE_PCT, want.charge_pct))
        if want.forced_discharge and abs(pct[0] - want.discharge_pct) >= 1:
            writes.append((r.REG_FORCED_DISCHARGE_PCT, want.discharge_pct))
        bits = ((r.BIT_AC_CHARGE if want.ac_charge else 0)
                | (r.BIT_FORCED_DISCHARGE if want.forced_discharge else 0))
        new21 = (reg21 & ~(r.BIT_AC_CHARGE | r.BIT_FORCED_DISCHARGE)) | bits
        if new21 != reg21:
            writes.append((r.REG_FUNCTION, new21))  # the bit last: the power is set before it starts
        if not writes:
            return
        self.status.writes += write_verified(self.link, writes, self.s.dry_run)
        if self.s.dry_run:
            return
        got = dict(writes)
        self.status.actual = state_of(new21, got.get(r.REG_AC_CHARGE_PCT, pct[1]),
                                      got.get(r.REG_FORCED_DISCHARGE_PCT, pct[0]))

    def stop(self, now: float) -> bool:
        """Leave the inverter in the safe state (daemon stop); True if that was verified."""
        if self.halted:
            return False
        log.info("inverter: stopping control: safe state (AC charge off, forced discharge off)")
        self.target = SAFE
        q_ok = self.q.stop(now)
        return self.ensure(SAFE, now) and q_ok


def _same(a: InverterState, b: InverterState, hyst: int) -> bool:
    """Equal for control purposes: the bits match and the power % that matter differ by < hyst."""
    if (a.ac_charge, a.forced_discharge) != (b.ac_charge, b.forced_discharge):
        return False
    if a.ac_charge and abs(a.charge_pct - b.charge_pct) >= hyst:
        return False
    return not (a.forced_discharge and abs(a.discharge_pct - b.discharge_pct) >= hyst)


def _show(s: InverterState) -> str:
    parts = [f"AC charge {'on at ' + str(s.charge_pct) + ' %' if s.ac_charge else 'off'}",
             f"forced discharge {'on at ' + str(s.discharge_pct) + ' %' if s.forced_discharge else 'off'}"]
    return ", ".join(parts)
