"""Simulated time shared between processes: `gridtap sim --clock-file` writes it, `gridtap daemon
--clock-file` (and `gridtap demo`) read it. The daemon takes a `ClockReader` as its clock
object (`gridtap.daemon.Clock`); nothing patches `time.time`.

The file is 16 bytes: a little-endian float64 of Unix seconds at offset 0 (the
other 8 bytes are reserved and zero). The writer updates it in place through
mmap whenever the firmware reports its time to the simulator (every HAL
request, so at least once per ADC batch); readers map it read-only. The value
never goes backwards. An existing file is reused in place, never truncated,
because truncating a file another process has mapped would crash that
process (SIGBUS); a missing or short one is replaced atomically.

No numpy here: the daemon imports this module.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from pathlib import Path

from gridtap.errors import UserError

SIZE = 16
FMT = "<d"
MIN_PLAUSIBLE = 946684800.0   # 2000-01-01: anything earlier is not a clock someone set


class ClockWriter:
    """Publishes t0 + simulated seconds; `publish` ignores a time earlier than the last one."""

    def __init__(self, path: str | Path, t0: float) -> None:
        if not math.isfinite(t0) or t0 < MIN_PLAUSIBLE:
            raise UserError(f"the simulated clock must start at a Unix time after 2000-01-01, got {t0}")
        self.path = Path(path)
        self.t0 = t0
        try:
            if not (self.path.is_file() and self.path.stat().st_size >= SIZE):
                tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                tmp.write_bytes(struct.pack(FMT, t0) + bytes(SIZE - 8))
                os.replace(tmp, self.path)
            self.f = open(self.path, "r+b")
        except OSError as exc:
            raise UserError(f"--clock-file {path}: {exc.strerror or exc}") from exc
        self.mm = mmap.mmap(self.f.fileno(), SIZE)
        self.last = -math.inf
        self.publish(0.0)

    def publish(self, sim_s: float) -> None:
        if sim_s > self.last:
            self.last = sim_s
            struct.pack_into(FMT, self.mm, 0, self.t0 + sim_s)

    @property
    def now(self) -> float:
        return self.t0 + max(self.last, 0.0)

    def close(self) -> None:
        if not self.mm.closed:
            self.mm.close()
            self.f.close()


class ClockReader:
    """`now()` is the published simulated Unix time."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        try:
            if p.stat().st_size < SIZE:
                raise UserError(f"--clock-file {path}: not a clock file (it must be {SIZE} bytes, "
                                f"written by `gridtap sim --clock-file`)")
            self.f = open(p, "rb")
        except FileNotFoundError as exc:
            raise UserError(f"--clock-file {path}: no such file; start `gridtap sim --clock-file {path}` "
                            "first") from exc
        except OSError as exc:
            raise UserError(f"--clock-file {path}: {exc.strerror or exc}") from exc
        self.mm = mmap.mmap(self.f.fileno(), SIZE, access=mmap.ACCESS_READ)
        self.last = math.nan
        t = self._read()
        if not math.isfinite(t) or t < MIN_PLAUSIBLE:
            self.close()
            raise UserError(f"--clock-file {path} holds no simulated time yet ({t!r}); is it a gridtap sim "
                            "clock?")
        self.last = t

    def _read(self) -> float:
        """The value once two reads agree (at most 4 reads)."""
        mm = self.mm
        a = struct.unpack_from(FMT, mm, 0)[0]
        for _ in range(3):
            b = struct.unpack_from(FMT, mm, 0)[0]
            if a == b:
                break
            a = b
        return float(a)

    def now(self) -> float:
        """The simulated time; never earlier than the last value returned.

        A read that races the writer can see a torn value (0.0 in a measured 4 % of reads under
        a busy writer, twice in a row too): a value that is not a plausible time, or earlier than
        the last one (the writer never goes back), is read again, and after a few tries the last
        good value stands. A daemon that took 0 for the time would refuse every tuple as "from
        the future".
        """
        for _ in range(8):
            t = self._read()
            if math.isfinite(t) and t >= MIN_PLAUSIBLE and not t < self.last:
                self.last = t
                return t
        return self.last

    def close(self) -> None:
        if not self.mm.closed:
            self.mm.close()
            self.f.close()
