"""The board UART: a fault injector and the pseudo-terminal a host opens.

Bytes in either direction pass through a `FaultInjector`: every data bit is
flipped with probability `ber`, a byte is lost with probability `drop`, and
the line stalls `stall_per_min` times a minute on average for 0.1..2 s, during
which bytes are held back and then delivered late, in order.
"""

from __future__ import annotations

import os
import tty
from dataclasses import dataclass

import numpy as np


@dataclass
class FaultStats:
    bytes_in: int = 0
    bytes_out: int = 0
    bits_flipped: int = 0
    bytes_dropped: int = 0
    bytes_stalled: int = 0


class FaultInjector:
    def __init__(self, rng: np.random.Generator, ber: float = 0.0, drop: float = 0.0,
                 stall_per_min: float = 0.0) -> None:
        if not 0.0 <= ber <= 0.5:
            raise ValueError(f"bit error rate {ber} must be within 0..0.5")
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop rate {drop} must be within 0..1")
        if stall_per_min < 0:
            raise ValueError(f"stall rate {stall_per_min} must not be negative")
        self.rng = rng
        self.ber = ber
        self.drop = drop
        self.stall_per_min = stall_per_min
        self.stats = FaultStats()
        self._stall_end = 0.0
        self._next_stall = self._draw_next(0.0)

    def _draw_next(self, t: float) -> float:
        if self.stall_per_min <= 0:
            return float("inf")
        return t + float(self.rng.exponential(60.0 / self.stall_per_min))

    def release_time(self, t: float) -> float:
        """Earliest time a byte offered at t gets through (later during a stall)."""
        while t >= self._next_stall:
            start = self._next_stall
            self._stall_end = start + float(self.rng.uniform(0.1, 2.0))
            self._next_stall = self._draw_next(self._stall_end)
        return max(t, self._stall_end) if t < self._stall_end else t

    def corrupt(self, data: bytes) -> bytes:
        """Bit errors and drops (no timing)."""
        n = len(data)
        self.stats.bytes_in += n
        if n == 0:
            return b""
        if self.ber <= 0 and self.drop <= 0:
            self.stats.bytes_out += n
            return bytes(data)
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        if self.ber > 0:
            flips = self.rng.random((n, 8)) < self.ber
            if flips.any():
                mask = (flips * (1 << np.arange(8))).sum(axis=1).astype(np.uint8)
                arr ^= mask
                self.stats.bits_flipped += int(flips.sum())
        if self.drop > 0:
            keep = self.rng.random(n) >= self.drop
            self.stats.bytes_dropped += int(n - keep.sum())
            arr = arr[keep]
        self.stats.bytes_out += int(arr.size)
        return arr.tobytes()


class Pty:
    """A pseudo-terminal in raw mode: the host opens `path` like /dev/ttyUSB0."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self.overflow = 0

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        """Write what the pty buffer takes; a full buffer (nobody reading) loses bytes."""
        while data:
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                self.overflow += len(data)
                return
            data = data[n:]

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
