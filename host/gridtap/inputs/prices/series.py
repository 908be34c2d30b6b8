"""A run of priced time slots: what every price source produces and every policy reads.

Slots carry their own start and end (Unix seconds), so 15, 30 and 60 minute
slots, and a DST day of 23 or 25 hours, need no special case. Prices are in the
source's unit per kWh (Octopus: p/kWh incl. VAT; ENTSO-E after the supplier
formula: EUR/kWh) and may be negative.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Slot lengths a source may deliver (s).
SLOT_LENGTHS = (900.0, 1800.0, 3600.0)
#: A price outside this band (per kWh, in either p or EUR) is a parse error, not a price.
PRICE_LIMIT = 10000.0


class PriceError(Exception):
    """A price source or its data is unusable; the message names the problem (never a secret)."""


@dataclass(frozen=True)
class PriceSlot:
    start: float  # Unix seconds, inclusive
    end: float  # Unix seconds, exclusive
    price: float  # per kWh, may be negative

    @property
    def length_s(self) -> float:
        return self.end - self.start


def check_slot(slot: PriceSlot, where: str) -> PriceSlot:
    """Raise PriceError unless the slot has a known length and a finite, plausible price."""
    if slot.length_s not in SLOT_LENGTHS:
        raise PriceError(f"{where}: slot of {slot.length_s / 60:g} min (expected 15, 30 or 60)")
    if slot.start % 900:
        raise PriceError(f"{where}: slot start is not on a quarter hour")
    if not math.isfinite(slot.price) or abs(slot.price) > PRICE_LIMIT:
        raise PriceError(f"{where}: implausible price {slot.price!r}")
    return slot


class PriceSeries:
    """Non-overlapping slots sorted by start; gaps are allowed (a price is then unknown)."""

    __slots__ = ("slots", "unit", "_starts")

    def __init__(self, slots: Iterable[PriceSlot], unit: str = "") -> None:
        ordered = sorted(slots, key=lambda s: s.start)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.start < a.end:
                raise PriceError(f"overlapping price slots at {b.start:.0f}")
        self.slots: tuple[PriceSlot, ...] = tuple(ordered)
        self.unit = unit
        self._starts = [s.start for s in self.slots]

    def __len__(self) -> int:
        return len(self.slots)

    def __bool__(self) -> bool:
        return bool(self.slots)

    def __repr__(self) -> str:
        if not self.slots:
            return "PriceSeries(empty)"
        return f"PriceSeries({len(self.slots)} slots {self.slots[0].start:.0f}..{self.slots[-1].end:.0f})"

    def index_at(self, t: float) -> int | None:
        """Index of the slot that contains t, or None when no price is known for t."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and self.slots[i].end > t:
            return i
        return None

    def at(self, t: float) -> PriceSlot | None:
        i = self.index_at(t)
        return None if i is None else self.slots[i]

    def ahead(self, t: float, until: float | None = None) -> list[PriceSlot]:
        """The slot containing t and the contiguous known slots after it (ending before `until`)."""
        i = self.index_at(t)
        if i is None:
            return []
        out = [self.slots[i]]
        for s in self.slots[i + 1 :]:
            if s.start != out[-1].end or (until is not None and s.start >= until):
                break
            out.append(s)
        return out

    def horizon_end(self, t: float) -> float | None:
        """Where the contiguous run of prices from t ends; None when t itself has no price."""
        run = self.ahead(t)
        return run[-1].end if run else None

    def window(self, start: float, end: float) -> PriceSeries:
        """The slots that overlap [start, end)."""
        lo = max(0, bisect.bisect_right(self._starts, start) - 1)
        return PriceSeries([s for s in self.slots[lo:] if s.start < end and s.end > start], self.unit)

    def merged(self, newer: Sequence[PriceSlot]) -> PriceSeries:
        """This series with `newer`'s slots replacing whatever they overlap."""
        if not newer:
            return self
        fresh = sorted(newer, key=lambda s: s.start)
        starts = [s.start for s in fresh]

        def overlaps(s: PriceSlot) -> bool:
            i = bisect.bisect_left(starts, s.end) - 1  # the last new slot starting before s ends
            return i >= 0 and fresh[i].end > s.start

        return PriceSeries([*(s for s in self.slots if not overlaps(s)), *fresh], self.unit)
