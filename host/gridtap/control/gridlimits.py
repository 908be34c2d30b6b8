"""What the grid operator allows (issue #17): limits that bound every battery/EV decision.

The IEC-104 output (gridtap.outputs.iec104) publishes a `GridLimits` whenever the
operator's commanded state changes (and once at start, from the persisted state);
the controllers read `current()` before they apply a Decision and pass it
through `constrain` (the static part: stops, power caps) and, when the limits
bound the grid power, `enforce` (the closed loop: the battery's power chosen
from the metered grid power so that it comes inside the export/import limit).
Without an [iec104] section nothing is published and `current()` is
`GridLimits()`, which constrains nothing. `watch(event)` sets the event on
every publish, so a controller thread wakes at once for a new command.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace

from gridtap.control.decision import Decision, InverterState


@dataclass(frozen=True)
class GridLimits:
    export_limit_w: int | None = None  # grid export bound (MINSETP); None: none
    import_limit_w: int | None = None  # grid import bound (MAXSETP); None: none
    stop_production: bool = False  # emergency stop production: nothing may be exported
    stop_consumption: bool = False  # emergency stop consumption: no charging from the grid
    max_production_pct: float = 100.0  # MAXSETAP: % of the asset's installed power it may produce
    max_consumption_pct: float = 100.0  # MINSETAP: % it may consume
    test_mode: bool = False  # reason code 99 or the test command
    dry_run: bool = False  # test_mode and [iec104] test_acts = false: compute, log, do not act
    reason: str = ""  # what the operator commanded, for the controller's log line
    meter: str | None = None  # the sensor at the connection point ([iec104] grid_sensor): the loop's input
    # the reactive-power band (Q mode remote; gridtap.control.reactive): var at the connection point,
    # + lagging (inductive, as the board measures); None: unbounded on that side
    q_remote: bool = False  # Q control mode remote: gridtap keeps the band; local: the inverter's own setting
    q_low_var: int | None = None  # MINSETQ
    q_high_var: int | None = None  # MAXSETQ
    q_reason: str = ""  # what the operator commanded for Q, for the log line

    def grid_bounds(self) -> tuple[float | None, float | None]:
        """(lowest, highest) grid power allowed (W, + import, - export); None: unbounded."""
        low: float | None = None
        if self.stop_production:
            low = 0.0
        elif self.export_limit_w is not None:
            low = -float(max(0, self.export_limit_w))
        high = None if self.import_limit_w is None else float(max(0, self.import_limit_w))
        return low, high

    def q_bounds(self) -> tuple[float | None, float | None]:
        """(lowest, highest) reactive power at the connection point (var, + lagging) while the Q mode is
        remote; (None, None) in local mode."""
        if not self.q_remote:
            return None, None
        return (None if self.q_low_var is None else float(self.q_low_var),
                None if self.q_high_var is None else float(self.q_high_var))


def constrain(decision: Decision, limits: GridLimits) -> Decision:
    """`decision` bounded by `limits`.

    In a dry run (test mode without acting) the decision is kept and its reason says what would change.
    """
    s = decision.state
    notes: list[str] = []
    if limits.stop_production:
        if s.forced_discharge:
            notes.append("no forced discharge")
        if s.export_limit_w != 0:
            notes.append("export limit 0 W")
        s = replace(s, forced_discharge=False, export_limit_w=0)
    elif limits.export_limit_w is not None:
        lim = max(0, limits.export_limit_w)
        if s.export_limit_w is None or s.export_limit_w > lim:
            notes.append(f"export limit {lim} W")
            s = replace(s, export_limit_w=lim)
    if limits.stop_consumption and s.ac_charge:
        notes.append("no AC charge")
        s = replace(s, ac_charge=False)
    elif limits.import_limit_w is not None and limits.import_limit_w <= 0 and s.ac_charge:
        notes.append("no AC charge (import limit 0 W)")
        s = replace(s, ac_charge=False)
    if s.forced_discharge and s.discharge_pct > limits.max_production_pct:
        pct = int(limits.max_production_pct)  # rounded down: never above the operator's bound
        notes.append(f"discharge {pct} %")
        s = replace(s, discharge_pct=pct)
    if s.ac_charge and s.charge_pct > limits.max_consumption_pct:
        pct = int(limits.max_consumption_pct)
        notes.append(f"charge {pct} %")
        s = replace(s, charge_pct=pct)
    if not notes:
        return decision
    why = f"grid operator ({limits.reason or 'limits'}): " + ", ".join(notes)
    if limits.dry_run:
        return replace(decision, reason=f"{decision.reason}; test, not applied: would set {why}")
    return Decision(s, f"{decision.reason}; {why}", decision.source)


def forbids(state: InverterState, limits: GridLimits) -> bool:
    """True if `state` breaks a static limit (a stop, a power cap): it must go at once, whatever the dwell."""
    if limits.dry_run:
        return False
    no_import = limits.import_limit_w is not None and limits.import_limit_w <= 0
    over_p = state.discharge_pct > limits.max_production_pct
    over_c = state.charge_pct > limits.max_consumption_pct
    return (state.forced_discharge and (limits.stop_production or over_p)
            or state.ac_charge and (limits.stop_consumption or no_import or over_c))


@dataclass(frozen=True)
class Ratings:
    """The inverter's battery power at 100 % (W): the loop's conversion between W and register %."""

    charge_w: float = 3000.0
    discharge_w: float = 3000.0


def battery_power(s: InverterState, r: Ratings, idle_w: float = 0.0) -> float:
    """The battery's AC power (W, + charging) in state s: forced discharge and AC charge run at their %.
    Outside both the inverter runs the battery by its own settings (self-consumption), which gridtap does
    not model: idle_w, what it measured there, else 0. Taking 0 errs on the limits' side: self-consumption
    neither exports the battery nor charges it from the grid."""
    if s.forced_discharge:
        return -r.discharge_w * s.discharge_pct / 100.0
    if s.ac_charge:
        return r.charge_w * s.charge_pct / 100.0
    return idle_w


def outside(limits: GridLimits, grid_w: float, slack_w: float) -> bool:
    """True if the metered grid power is beyond a limit, or within slack_w of it."""
    low, high = limits.grid_bounds()
    return (low is not None and grid_w < low + slack_w) or (high is not None and grid_w > high - slack_w)


def enforce(decision: Decision, limits: GridLimits, grid_w: float | None, current: InverterState | None,
            measured_w: float | None, r: Ratings, margin_w: float) -> Decision:
    """`decision` (already through `constrain`) with the battery's power chosen so that the grid power
    comes `margin_w` inside the limits.

    grid_w: the metered grid power now (W, + import); None when there is no fresh reading: then the
    worst is assumed (no forced discharge under an export limit, no AC charge under an import limit).
    current: the inverter's state while grid_w was metered (None: unknown, taken as idle); measured_w:
    the battery's power the inverter last reported (+ charging), used for the self-consumption state.
    The house without the battery is grid_w minus the battery's power; the power that brings the grid
    inside is then a plain difference, so an error in the ratings only slows the loop (each tick
    corrects what the last one missed), it does not bias where it ends.
    """
    low, high = limits.grid_bounds()
    if low is None and high is None:
        return decision
    s = decision.state
    if grid_w is None:
        new = replace(s, forced_discharge=s.forced_discharge and low is None,
                      ac_charge=s.ac_charge and high is None)
        return _with(decision, new, limits, "no fresh grid reading: the worst is assumed")
    in_own_mode = current is not None and not (current.ac_charge or current.forced_discharge)
    idle = (measured_w or 0.0) if in_own_mode else 0.0
    house = grid_w - battery_power(current or InverterState(), r, idle)
    lo_b = -math.inf if low is None else low + margin_w - house  # the battery's power must be >= lo_b
    hi_b = math.inf if high is None else high - margin_w - house  # ... and <= hi_b
    if lo_b > hi_b:  # both cannot hold (a band narrower than the margins): the export limit wins
        hi_b = lo_b
    want = battery_power(s, r, idle)
    if lo_b <= want <= hi_b:
        return decision
    new = _state_for(min(max(want, lo_b), hi_b), want < lo_b, s, limits, r, idle)
    got = battery_power(new, r, idle)
    why = f"grid {grid_w:+.0f} W"
    if got < lo_b - 1.0 or got > hi_b + 1.0:
        why += ", more than the battery can correct"
    return _with(decision, new, limits, why)


def _state_for(target: float, raise_power: bool, s: InverterState, limits: GridLimits, r: Ratings,
               idle: float) -> InverterState:
    """The inverter state whose battery power is nearest `target` on the compliant side: at least
    target when raise_power (too much export), else at most target (too much import). Register %
    round towards compliance; the operator's stops and power caps hold."""
    off = replace(s, ac_charge=False, forced_discharge=False)
    own = battery_power(off, r, idle)
    own_ok = own >= target if raise_power else own <= target  # the inverter's own mode already does it
    # the policy's mode is kept at a compliant power where it can be (its intent, as far as allowed)
    if target < 0 and not limits.stop_production and (s.forced_discharge or not own_ok):
        pct = -target / r.discharge_w * 100.0
        n = min(math.floor(pct + 1e-9) if raise_power else math.ceil(pct - 1e-9), 100,
                int(limits.max_production_pct))
        return replace(off, forced_discharge=True, discharge_pct=n) if n >= 1 else off
    if target > 0 and not limits.stop_consumption and (s.ac_charge or not own_ok):
        pct = target / r.charge_w * 100.0
        n = min(math.ceil(pct - 1e-9) if raise_power else math.floor(pct + 1e-9), 100,
                int(limits.max_consumption_pct))
        return replace(off, ac_charge=True, charge_pct=n) if n >= 1 else off
    return off


def _with(decision: Decision, new: InverterState, limits: GridLimits, why: str) -> Decision:
    if new == decision.state:
        return decision
    note = f"grid operator ({limits.reason or 'limits'}): {why}: {_brief(new)}"
    if limits.dry_run:
        return replace(decision, reason=f"{decision.reason}; test, not applied: would set {note}")
    return Decision(new, f"{decision.reason}; {note}", decision.source)


def _brief(s: InverterState) -> str:
    if s.forced_discharge:
        return f"forced discharge {s.discharge_pct} %"
    if s.ac_charge:
        return f"AC charge {s.charge_pct} %"
    return "self-consumption (no forced discharge, no AC charge)"


class _Cell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = GridLimits()
        self._watchers: list[threading.Event] = []

    def publish(self, limits: GridLimits) -> None:
        with self._lock:
            self._value = limits
            watchers = list(self._watchers)
        for event in watchers:
            event.set()

    def watch(self, event: threading.Event) -> None:
        with self._lock:
            self._watchers.append(event)

    def unwatch(self, event: threading.Event) -> None:
        with self._lock:
            if event in self._watchers:
                self._watchers.remove(event)

    def current(self) -> GridLimits:
        with self._lock:
            return self._value


_CELL = _Cell()
publish = _CELL.publish
current = _CELL.current
watch = _CELL.watch
unwatch = _CELL.unwatch
