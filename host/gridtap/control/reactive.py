"""The grid operator's reactive-power band (issue #17: Netflex Q mode, MINSETQ/MAXSETQ; docs/iec104.md,
"What the commands do").

In Q mode remote the inverter's reactive power is chosen, in closed loop on the grid CT's metered var,
so that the reactive power at the connection point stays `q_margin_var` inside [MINSETQ, MAXSETQ]. The
LuxPower's fixed-Q modes carry it (docs/luxpower.md, register map): register 59 = 5 (inductive: the
inverter absorbs var, + at the grid CT) or 4 (capacitive: it supplies var, -), register 61 = the amount,
% of the rated power (0..60). gridtap's reactive command is one signed % (+ inductive, - capacitive);
`None` is the inverter's own setting.

The inverter's own setting is registers 59 and 61 as gridtap first finds them (`QControl.own`); a fixed
capacitive/inductive mode found there is what gridtap itself writes (left by a daemon that died in
remote mode), so it is taken as unity power factor. The safe state is that own setting: in Q mode local,
without a fresh var reading at the connection point, on a refused write and at daemon stop. A daemon
that never had the Q mode remote never reads or writes these registers.

Same rules as the active-power side (gridtap.control.controller): idempotent (read first, write only
what differs), verified by read-back, a change taken at once when the metered var is beyond the band
(or within half the margin of it) and otherwise only after `min_dwell_s` and a `q_pct_hysteresis` step,
every change logged with its reason, and a test (REDENQ 99, test command) with `test_acts = false`
computes and logs what it would set and writes nothing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from gridtap.control.gridlimits import GridLimits
from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import InverterRefused, LinkError, SerialMismatch, Writes, write_verified

log = logging.getLogger("gridtap.control")


def inverter_var(pct: int | None, rated_va: float) -> float:
    """The inverter's reactive power (var, + inductive) at a signed reactive % (None, 0: unity)."""
    return 0.0 if not pct else rated_va * pct / 100.0


def wanted_pct(limits: GridLimits, grid_var: float, current: int | None, rated_va: float,
               margin_var: float) -> tuple[int, bool]:
    """The signed reactive % (+ inductive) that brings the grid var `margin_var` inside the band, the
    smallest in size that does (the least reactive current); and whether the inverter's limit (60 %)
    keeps it from getting there.

    The house without the inverter is grid_var minus what the inverter does now, so an error in
    `rated_va` only slows the loop (each tick corrects what the last missed). A band narrower than the
    margins aims at its middle.
    """
    low, high = limits.q_bounds()
    house = grid_var - inverter_var(current, rated_va)
    lo = -math.inf if low is None else low + margin_var - house  # the inverter's var must be >= lo
    hi = math.inf if high is None else high - margin_var - house  # ... and <= hi
    if low is not None and high is not None and lo > hi:
        lo = hi = (low + high) / 2 - house
    target = min(max(0.0, lo), hi)
    pct = target / rated_va * 100.0
    # rounded towards the band: up when raising the var, down when lowering it
    n = math.ceil(pct - 1e-9) if target > 0 else math.floor(pct + 1e-9)
    clipped = max(-r.Q_PCT_MAX, min(r.Q_PCT_MAX, n))
    return clipped, clipped != n


def registers_for(pct: int | None, own: tuple[int, int]) -> tuple[int, int]:
    """(register 59, register 61) for a signed reactive % (None: the inverter's own setting)."""
    if pct is None:
        return own
    if pct == 0:
        return r.Q_UNITY, own[1]
    return (r.Q_INDUCTIVE if pct > 0 else r.Q_CAPACITIVE), abs(pct)


def pct_of(mode: int, amount: int) -> int | None:
    """The signed reactive % registers 59/61 hold; None for a mode gridtap does not command (Q(P), PF...)."""
    if mode == r.Q_UNITY:
        return 0
    if mode in (r.Q_INDUCTIVE, r.Q_CAPACITIVE):
        return amount if mode == r.Q_INDUCTIVE else -amount
    return None


def _show(pct: int | None) -> str:
    if pct is None:
        return "the inverter's own reactive-power setting"
    if pct == 0:
        return "reactive power 0 (unity power factor)"
    return f"reactive power {abs(pct)} % {'inductive' if pct > 0 else 'capacitive'}"


@dataclass
class QStatus:
    target: int | None = None  # the signed % taken (None: the inverter's own setting)
    actual: tuple[int, int] | None = None  # registers 59/61 as last read or written
    reason: str = ""
    error: str | None = None
    writes: int = 0
    failures: int = 0
    changed_at: float = -1e18
    verified_at: float = -1e18
    log: list[str] = field(default_factory=list)


class QControl:
    """The reactive-power loop, ticked by the Controller with the grid operator's limits and the grid
    CT's latest var reading. `s` is the ControllerSettings (dwell, hysteresis, timings, ratings)."""

    def __init__(self, link: Writes, s: Any) -> None:
        self.link, self.s = link, s
        self.own: tuple[int, int] | None = None  # registers 59/61 before gridtap: the safe state
        self.status = QStatus()
        self.would: str | None = None  # the last "test, not applied" line (logged once per change)

    def active(self, limits: GridLimits) -> bool:
        """True while the band is in force: the controller then ticks every metering second."""
        low, high = limits.q_bounds()
        return low is not None or high is not None

    def decide(self, now: float, limits: GridLimits, reading: tuple[float, float] | None
               ) -> tuple[int | None, bool, str] | None:
        """(signed % or None, urgent, reason); None: hold (the reading predates the last change)."""
        why = f"grid operator ({limits.q_reason or 'Q'})"
        if not self.active(limits):
            return None, True, f"{why}: the inverter's own setting"
        if reading is None or now - reading[1] > self.s.grid_stale_s:
            return None, True, f"{why}: no fresh var reading at the connection point: its own setting"
        var, t = reading
        if self.status.target is not None and t < self.status.changed_at + self.s.grid_response_s:
            return None  # metered before the inverter could follow the last change
        pct, short = wanted_pct(limits, var, self.status.target, self.s.rated_va, self.s.q_margin_var)
        low, high = limits.q_bounds()
        half = self.s.q_margin_var / 2
        urgent = (low is not None and var < low + half) or (high is not None and var > high - half)
        note = ", more than the inverter can correct" if short else ""
        return pct, urgent, f"{why}: grid {var:+.0f} var{note}"

    def tick(self, now: float, limits: GridLimits, reading: tuple[float, float] | None) -> None:
        if self.own is None and not self.active(limits):
            return  # never in remote mode: the registers stay the inverter's, unread
        d = self.decide(now, limits, reading)
        if limits.dry_run:
            if d is not None and d[0] != self.status.target:
                line = f"test, not applied: would set {_show(d[0])} ({d[2]})"
                if line != self.would:
                    log.info("inverter: %s", line)
                    self.would = line
            return
        self.would = None
        if d is not None:  # None: hold the target (a reading from before the inverter followed)
            self._take(*d, now)
        st = self.status
        if st.target is None and self.own is None:
            return  # the inverter's own setting, already restored (or never touched)
        due = now - st.verified_at >= self.s.verify_s
        if st.actual is not None and self.own is not None and not due \
                and st.actual == registers_for(st.target, self.own):
            return
        self.ensure(st.target, now)

    def _take(self, pct: int | None, urgent: bool, reason: str, now: float) -> None:
        st = self.status
        cur = st.target
        if pct == cur:
            return
        if not urgent and cur is not None and pct is not None:
            if abs(pct - cur) < self.s.q_pct_hysteresis or now - st.changed_at < self.s.min_dwell_s:
                return
        st.target, st.changed_at, st.reason = pct, now, reason
        msg = f"inverter: {_show(pct)} ({reason})"
        log.info("%s%s", "[dry run] " if self.s.dry_run else "", msg)
        st.log = [*st.log[-49:], msg]

    def ensure(self, pct: int | None, now: float) -> bool:
        """Registers 59/61 to pct (None: the own setting); True if verified there."""
        try:
            self._ensure(pct, now)
            self.status.error = None
            if pct is None:  # restored: the registers are the inverter's again (a user's change is kept)
                self.own, self.status.actual = None, None
            return True
        except InverterRefused as exc:
            self.status.error, self.status.actual = str(exc), None
            self.status.failures += 1
            if exc.function == 3 or pct is None:
                log.warning("inverter: %s (reactive power; retrying on the next tick)", exc)
            else:
                log.error("inverter: %s; reactive power back to the inverter's own setting", exc)
                self.status.target = None
                try:
                    self._ensure(None, now)
                except (LinkError, InverterRefused, SerialMismatch) as again:
                    log.error("inverter: the reactive power's own setting could not be restored: %s", again)
        except (LinkError, SerialMismatch) as exc:
            self.status.error, self.status.actual = str(exc), None
            self.status.failures += 1
            log.warning("inverter: %s (reactive power; retrying on the next tick)", exc)
        return False

    def _ensure(self, pct: int | None, now: float) -> None:
        mode, _active_pct, amount = self.link.read_hold(r.REG_REACTIVE_MODE, 3)  # 59..61, one request
        if self.own is None:
            # a fixed capacitive/inductive Q found is gridtap's own leftover: unity is the inverter's
            self.own = (r.Q_UNITY if mode in (r.Q_CAPACITIVE, r.Q_INDUCTIVE) else mode, amount)
            log.info("inverter: reactive-power setting before gridtap: register 59 = %d, 61 = %d",
                     mode, amount)
        st = self.status
        st.actual, st.verified_at = (mode, amount), now
        want = registers_for(pct, self.own)
        # into a fixed-Q mode the amount first (the mode then starts at it); out of one the mode first
        # (the reactive power ends at once, whatever becomes of the amount)
        order = ((r.REG_REACTIVE_PCT, want[1], amount), (r.REG_REACTIVE_MODE, want[0], mode))
        if want[0] not in (r.Q_CAPACITIVE, r.Q_INDUCTIVE):
            order = order[::-1]
        writes = [(reg, v) for reg, v, have in order if v != have]
        if not writes:
            return
        st.writes += write_verified(self.link, writes, self.s.dry_run)
        if not self.s.dry_run:
            st.actual = want

    def stop(self, now: float) -> bool:
        """The own setting back (daemon stop); True if verified or never touched."""
        if self.own is None:
            return True
        self.status.target = None
        log.info("inverter: stopping control: reactive power back to the inverter's own setting")
        return self.ensure(None, now)
