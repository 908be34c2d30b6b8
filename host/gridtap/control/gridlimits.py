"""What the grid operator allows (issue #17): limits that bound every battery/EV decision.

The IEC-104 output (gridtap.outputs.iec104) publishes a `GridLimits` whenever the
operator's commanded state changes (and once at start, from the persisted state);
the controllers read `current()` before they apply a Decision and pass it
through `constrain`. Without an [iec104] section nothing is published and
`current()` is `GridLimits()`, which constrains nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from gridtap.control.decision import Decision


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


class _Cell:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = GridLimits()

    def publish(self, limits: GridLimits) -> None:
        with self._lock:
            self._value = limits

    def current(self) -> GridLimits:
        with self._lock:
            return self._value


_CELL = _Cell()
publish = _CELL.publish
current = _CELL.current
