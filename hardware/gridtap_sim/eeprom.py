"""An I2C EEPROM (24LC256-like): page writes, a write cycle, wear counts, torn pages.

Semantics of the real part that the firmware has to live with:

* a write addresses one page; bytes that run past the page end wrap round to
  the start of the same page (the chip's internal address counter only
  increments the low bits), which the model reproduces and counts;
* a write takes `cycle_s` (5 ms); if the supply dies before it completes the
  targeted bytes are left torn: each holds the new value with probability equal
  to the fraction of the cycle completed, otherwise an arbitrary byte;
* every byte written (torn or not) has its write count incremented;
* contents survive simulated power cycles (the object outlives the process).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class EepromError(ValueError):
    pass


class Eeprom:
    def __init__(self, size: int, page: int, cycle_s: float, rng: np.random.Generator) -> None:
        if size <= 0 or page <= 0 or size % page:
            raise EepromError(f"EEPROM size {size} must be a positive multiple of page {page}")
        self.size = size
        self.page = page
        self.cycle_s = cycle_s
        self.rng = rng
        self.data = bytearray(b"\xff" * size)
        self.writes: npt.NDArray[np.uint32] = np.zeros(size, dtype=np.uint32)
        self.page_wraps = 0
        self.torn: list[tuple[int, int, float]] = []   # (addr, n, fraction done)

    def _addresses(self, addr: int, n: int) -> list[int]:
        if not 0 <= addr < self.size:
            raise EepromError(f"EEPROM address {addr} outside 0..{self.size - 1}")
        if not 0 < n <= self.page:
            raise EepromError(f"EEPROM write of {n} bytes: must be 1..{self.page}")
        base = addr - addr % self.page
        off = addr % self.page
        if off + n > self.page:
            self.page_wraps += 1
        return [base + (off + i) % self.page for i in range(n)]

    def load_image(self, image: bytes) -> None:
        """Start from a saved chip image (contents only; wear counts start at 0)."""
        if len(image) != self.size:
            raise EepromError(f"EEPROM image holds {len(image)} bytes, the chip {self.size}")
        self.data[:] = image

    def read(self, addr: int, n: int) -> bytes:
        if not 0 <= addr < self.size or n < 0:
            raise EepromError(f"EEPROM read at {addr} of {n} bytes is out of range")
        # sequential reads wrap at the end of the array, as on the chip
        out = bytearray()
        for i in range(n):
            out.append(self.data[(addr + i) % self.size])
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        for a, b in zip(self._addresses(addr, len(data)), data, strict=True):
            self.data[a] = b
            self.writes[a] += 1

    def tear(self, addr: int, data: bytes, done: float) -> None:
        """The supply died when `done` (0..1) of the write cycle had elapsed."""
        addrs = self._addresses(addr, len(data))
        keep = self.rng.random(len(data)) < done
        junk = self.rng.integers(0, 256, len(data))
        for j, (a, b) in enumerate(zip(addrs, data, strict=True)):
            self.data[a] = b if keep[j] else int(junk[j])
            self.writes[a] += 1
        self.torn.append((addr, len(data), done))
