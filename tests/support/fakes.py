"""A settable clock for spool and uploader tests (monotonic or wall seconds)."""

from __future__ import annotations


class FakeClock:
    """Call it for the time; set ``t`` to move it."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
