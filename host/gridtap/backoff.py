"""Exponential backoff with jitter, shared by every uploader.

A failing uplink is retried after ``base``, ``2·base``, ``4·base`` … seconds,
capped at ``cap``. Each delay is drawn at random from ``[d/2, d]`` ("equal
jitter"): the lower half keeps a minimum pause, the random upper half spreads
many routers that lost the same server (or the same DSL line) so that they do
not all return at the same instant. A success resets the sequence.

The class holds no clock: callers pass ``now`` (any monotonic seconds), which
keeps it deterministic in tests and usable from any loop.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay sequence ``base·factor**n`` capped at ``cap``, with equal jitter."""

    def __init__(self, base: float = 10.0, cap: float = 3600.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if base <= 0:
            raise ValueError(f"backoff base must be > 0 s, got {base}")
        if cap < base:
            raise ValueError(f"backoff cap ({cap} s) must be >= base ({base} s)")
        if factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {factor}")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.failures = 0
        self.not_before = 0.0
        self._rng = rng if rng is not None else random.Random()

    def ceiling(self) -> float:
        """The un-jittered delay the next failure will be drawn below."""
        return min(self.cap, self.base * self.factor ** min(self.failures, 64))

    def failure(self, now: float) -> float:
        """Record a failure at ``now``; return the delay before the next try."""
        d = self.ceiling()
        delay = d / 2 + self._rng.uniform(0.0, d / 2)
        self.failures += 1
        self.not_before = now + delay
        return delay

    def success(self) -> None:
        """Record a success: the next failure starts again at ``base``."""
        self.failures = 0
        self.not_before = 0.0

    def ready(self, now: float) -> bool:
        """True once the pause after the last failure is over."""
        return now >= self.not_before
