"""Load management: from each wallbox's wish to the current it is granted.

Pure Python, no I/O, no clock of its own: `LoadManager.step(now, ...)` is
called with the measurements and returns one `Grant` per wallbox. The OCPP
central system and the bench's fast house model drive the same object.

Safety before comfort, in this order:

1. An emergency stop from the limits provider (``stop_consumption``) pauses
   every wallbox at once, whatever the dwell times.
2. The house connection limit (``max_total_current_a`` per phase) is never
   granted away: the budget for the wallboxes is the limit minus what the
   house draws without them. A wallbox that ignores its profile is counted at
   what it really draws (its measured current), not at its grant.
3. Decreases are granted at once; an increase only from headroom that is
   free *now*, counting a wallbox that has not yet come down at its draw.
4. Below the minimum current (6 A) a wallbox pauses; it starts again only when
   its wish is at least ``min + hysteresis`` and it has been off for
   ``min_off_s``, and it stops only after ``min_on_s`` and once its wish has
   stayed below the minimum for ``stop_delay_s`` (unless rule 1 or 2 needs
   it): a passing cloud or a kettle does not cycle the contactor.
5. What remains is shared fairly: equal shares, capped by each wish, the
   rest handed on (water filling); wallboxes that would get less than the
   minimum pause, the most recently started first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VOLTS = 230.0


@dataclass(frozen=True)
class BoxSpec:
    """What the load manager must know about one wallbox."""

    name: str
    min_a: float = 6.0
    max_a: float = 16.0
    phases: int = 3                 # phases the installation is wired for
    switch_phases: bool = False     # the wallbox can switch between 1 and 3 phases


@dataclass
class BoxInput:
    """One wallbox's state at a step."""

    connected: bool                 # a vehicle is plugged in and wants energy
    wish_a: float                   # the rule's answer in A (NaN or < 0: pause)
    measured_a: float = 0.0         # highest phase current it draws now (MeterValues)


@dataclass(frozen=True)
class Grant:
    amps: float                     # 0 = paused
    phases: int
    reason: str


@dataclass
class _BoxState:
    on: bool = False
    phases: int = 3
    since: float = -math.inf        # time of the last on/off change
    granted: float = 0.0
    started_at: float = -math.inf
    low_since: float | None = None  # since when the wish is below the minimum while on
    over_count: int = 0             # consecutive steps it drew more than granted
    ignoring: bool = False


@dataclass
class LoadManager:
    boxes: Sequence[BoxSpec]
    max_total_current_a: float
    hysteresis_a: float = 1.0
    min_on_s: float = 300.0
    min_off_s: float = 300.0
    reserve_a: float = 0.0          # kept free for an appliance that switches on between two steps
    house_hold_s: float = 60.0      # the house current counts at its peak over this window
    stop_delay_s: float = 300.0     # the wish must stay below the minimum this long before a pause
    tolerance_a: float = 1.0        # measured above grant by more than this is "ignoring"
    ignore_steps: int = 3           # ... for this many steps in a row
    limits: Callable[[], Any] | None = None  # -> object with .stop_consumption (GridLimits)
    log: Callable[[str], None] = field(default=lambda msg: None)
    cycles: int = 0                 # contactor closings: off -> on, and phase switches while on
    _state: dict[str, _BoxState] = field(default_factory=dict)
    _house: deque[tuple[float, float]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        for b in self.boxes:
            self._state[b.name] = _BoxState(phases=b.phases)

    def ignoring(self, name: str) -> bool:
        """True while the wallbox draws more than it was granted (see `step`)."""
        return self._state[name].ignoring

    def step(self, now: float, house_a: float, inputs: Mapping[str, BoxInput]) -> dict[str, Grant]:
        """Grant each wallbox its current; `house_a` is the highest phase current without the EVs."""
        if self._emergency():
            return {b.name: self._set(b, now, 0.0, "emergency stop") for b in self.boxes}
        budget = max(0.0, self.max_total_current_a - self.reserve_a - self._house_peak(now, house_a))
        pool: list[BoxSpec] = []
        out: dict[str, Grant] = {}
        for b in self.boxes:
            inp = inputs.get(b.name)
            st = self._state[b.name]
            self._watch(b, st, inp)
            if inp is None or not inp.connected:
                out[b.name] = self._set(b, now, 0.0, "no vehicle")
            elif st.ignoring:
                # It draws what it draws; count that against the connection and grant it nothing more.
                budget -= inp.measured_a
                out[b.name] = Grant(st.granted, st.phases, "ignores its profile: counted at "
                                    f"{inp.measured_a:.1f} A")
            else:
                pool.append(b)
        wishes = {b.name: self._wish(b, now, inputs[b.name]) for b in pool}
        shares = self._share(pool, wishes, budget, now)
        # Decrease first: an increase must fit beside what the others draw until they come down.
        base = {b.name: max(inputs[b.name].measured_a, min(shares[b.name], self._state[b.name].granted))
                for b in pool}
        spare = budget - sum(base.values())
        for b in pool:
            amps = shares[b.name]
            if amps > base[b.name]:
                amps = max(base[b.name], min(amps, base[b.name] + spare))
                spare -= amps - base[b.name]
                if amps < b.min_a:
                    amps = 0.0
            out[b.name] = self._set(b, now, amps, "shared" if amps else "paused")
        return out

    # ---- pieces -------------------------------------------------------------------------------

    def _house_peak(self, now: float, house_a: float) -> float:
        """The highest house current of the last `house_hold_s`: a hob that pulses every few seconds
        counts at its peak, so the wallboxes are not granted what the next pulse takes back."""
        h = self._house
        while h and (now - h[0][0] > self.house_hold_s or h[0][1] <= house_a):
            h.popleft()
        while h and h[-1][1] <= house_a:
            h.pop()
        h.append((now, house_a if math.isfinite(house_a) else math.inf))
        return max(0.0, h[0][1])

    def _emergency(self) -> bool:
        if self.limits is None:
            return False
        try:
            lim = self.limits()
        except Exception as exc:  # noqa: BLE001 - a broken provider must not stop the loop; fail safe
            self.log(f"limits provider failed ({exc}); pausing all wallboxes")
            return True
        # a test stop (reason 99 with [iec104] test_acts = false) is logged by the battery side, not acted on
        return bool(getattr(lim, "stop_consumption", False)) and not getattr(lim, "dry_run", False)

    def _watch(self, b: BoxSpec, st: _BoxState, inp: BoxInput | None) -> None:
        if inp is None:
            return
        if inp.measured_a > st.granted + self.tolerance_a:
            st.over_count += 1
        else:
            st.over_count = 0
            if st.ignoring:
                self.log(f"{b.name}: follows its profile again")
            st.ignoring = False
        if st.over_count >= self.ignore_steps and not st.ignoring:
            st.ignoring = True
            self.log(f"{b.name}: draws {inp.measured_a:.1f} A but was granted {st.granted:.1f} A: "
                     "ignores its charging profile; counted at its draw")

    def _wish(self, b: BoxSpec, now: float, inp: BoxInput) -> float:
        """The wish in A after the minimum, the hysteresis and the dwell times."""
        st = self._state[b.name]
        w = inp.wish_a
        if not math.isfinite(w) or w < 0:
            self.log(f"{b.name}: rule gave {w!r} A; pausing")
            w = 0.0
        w = self._phases(b, st, now, min(w, b.max_a))
        if st.on:
            if w >= b.min_a:
                st.low_since = None
                return w
            if st.low_since is None:
                st.low_since = now
            if now - st.since < self.min_on_s or now - st.low_since < self.stop_delay_s:
                return b.min_a      # a kettle or a cloud: hold at the minimum for a while
            return 0.0
        if w < b.min_a + self.hysteresis_a or now - st.since < self.min_off_s:
            return 0.0
        return w

    def _phases(self, b: BoxSpec, st: _BoxState, now: float, w: float) -> float:
        """Switch a 3-phase wallbox to one phase when the wish is too small for three; amps per phase."""
        if not (b.switch_phases and b.phases == 3):
            return w
        settled = now - st.since >= (self.min_on_s if st.on else self.min_off_s)
        if st.phases == 3 and w < b.min_a and w * 3 >= b.min_a + self.hysteresis_a and settled:
            st.phases = 1
            st.since = now
            self.cycles += st.on      # switching phases under load opens and closes the contactor
            self.log(f"{b.name}: switching to 1 phase ({w * 3:.1f} A)")
        elif st.phases == 1 and w >= b.min_a + self.hysteresis_a and settled:
            st.phases = 3
            st.since = now
            self.cycles += st.on
            self.log(f"{b.name}: switching to 3 phases ({w:.1f} A)")
        return w if st.phases == 3 else min(w * 3, b.max_a)

    def _share(self, pool: list[BoxSpec], wishes: dict[str, float], budget: float,
               now: float) -> dict[str, float]:
        """Water-fill `budget` over the wishes; drop the newest starter while someone gets < min."""
        active = [b for b in pool if wishes[b.name] > 0]
        # the longest-running keep their place; the newest pause first
        active.sort(key=lambda b: self._state[b.name].started_at if self._state[b.name].on else now)
        shares = {b.name: 0.0 for b in pool}
        while active:
            fill = _water_fill([wishes[b.name] for b in active], budget)
            if all(a >= b.min_a - 1e-9 for a, b in zip(fill, active, strict=True)):
                for a, b in zip(fill, active, strict=True):
                    shares[b.name] = math.floor(a * 10) / 10   # 0.1 A steps, never rounded up
                break
            active.pop()
        return shares

    def _set(self, b: BoxSpec, now: float, amps: float, reason: str) -> Grant:
        st = self._state[b.name]
        on = amps > 0
        if on != st.on:
            st.on = on
            st.since = now
            st.low_since = None
            if on:
                st.started_at = now
                self.cycles += 1
        st.granted = amps
        return Grant(amps, st.phases, reason)


def _water_fill(wishes: list[float], budget: float) -> list[float]:
    """Equal shares of `budget`, none above its wish; what one cannot use goes to the others."""
    out = [0.0] * len(wishes)
    left = max(0.0, budget)
    todo = sorted(range(len(wishes)), key=lambda i: wishes[i])
    while todo:
        share = left / len(todo)
        i = todo[0]
        if wishes[i] <= share:
            out[i] = wishes[i]
            left -= wishes[i]
            todo.pop(0)
            continue
        for j in todo:
            out[j] = share
        break
    return out
