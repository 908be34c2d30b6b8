"""Virtual sensors: values of sensors with no board channel, into the board session's path.

An expression meter (`[[meter]]`, gridtap.meters) or a wallbox's own meter over OCPP
([ev], gridtap.control.ev) is a sensor like any board sensor (its `SensorConfig` has
``source`` "meter" or "ev" and no channel): an RRD, the REST API, MQTT with Home
Assistant discovery, PVOutput fields, IEC-104 asset categories. Its values do not get
a copy of each output's code; they take the board's own path:

    producer (any thread) --VirtualInbox--> ingest thread --VirtualFeed--> Session.deliver
        -> counter store (epochs) -> spool -> live view -> RRDs, MQTT, PVOutput, IEC-104 ...

`VirtualInbox` is the thread-safe hand-over (bounded; a full inbox drops and counts;
a put from another thread wakes the daemon's select()). `VirtualFeed` runs in the
ingest thread and believes nothing: a value for a series that is not a configured
virtual sensor, a stamp before the clock was set or from the future, a value that is
not finite, a register that falls within its epoch or grows faster than the sensor's
`max_w`, a power beyond it, is refused, counted by kind and logged (rate-limited).

A register's *epoch* is the producer's: a wallbox's boot, a daemon start for the
expression meters. The counter store then does for them what it does for a board reset:
a register that restarts lower continues flat, one that carried on is counted, and the
host total never falls nor counts a Wh twice.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gridtap.board.plausible import FUTURE_TOLERANCE_S, SLACK_S, RateLog
from gridtap.store.live import Gauge

log = logging.getLogger("gridtap.virtual")

MIN_VALID_T = 1234567890     # as the board session: before this the producer's clock is not set
INBOX_MAX = 4096             # values waiting for the ingest thread (a few seconds of 64 sensors)
MAX_EPOCHS = 256             # producer boots remembered (a wallbox reconnecting often: the oldest go)

Item = tuple[str, str, float, float, int]   # (kind "counter"|"power", series id, t, value, boot)


class VirtualInbox:
    """Values of virtual sensors from any thread, for the ingest thread (`take`)."""

    def __init__(self, wake: Callable[[], None] | None = None, maxlen: int = INBOX_MAX) -> None:
        self.wake = wake
        self.owner = threading.get_ident()   # puts from the ingest thread itself need no wake-up
        self._items: deque[Item] = deque()
        self._lock = threading.Lock()
        self.maxlen = maxlen
        self.dropped = 0

    def counter(self, sensor: str, t: float, wh: float, boot: int = 0) -> None:
        """A cumulative register (Wh) of series `sensor` at Unix time t; `boot` names its epoch."""
        self._put(("counter", sensor, t, wh, boot))

    def power(self, sensor: str, t: float, watts: float) -> None:
        """Signed power (W, import positive) of the sensor whose import series is `sensor`."""
        self._put(("power", sensor, t, watts, 0))

    def _put(self, item: Item) -> None:
        with self._lock:
            if len(self._items) >= self.maxlen:
                self.dropped += 1
                return
            first = not self._items
            self._items.append(item)
        if first and self.wake is not None and threading.get_ident() != self.owner:
            self.wake()

    def __len__(self) -> int:
        return len(self._items)

    def take(self) -> list[Item]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items


class VirtualFeed:
    """In the ingest thread: checks each inbox value and hands it to the session's delivery."""

    def __init__(self, sensors: Iterable[Any], session: Any, clock: Callable[[], float]) -> None:
        # series id -> (SensorConfig, role); power arrives on the import id
        self.series = {sid: (s, role) for s in sensors for sid, role in s.series}
        self.session = session
        self.clock = clock
        self.epochs: dict[tuple[str, int], int] = {}
        self.accepted = 0
        self.refused: dict[str, int] = {}
        self.warn = RateLog(log)

    def feed(self, items: Iterable[Item]) -> int:
        """Deliver what is plausible; return how many were delivered."""
        n = 0
        for kind, sid, t, value, boot in items:
            why = self._counter(sid, t, value, boot) if kind == "counter" else self._power(sid, t, value)
            if why is None:
                n += 1
            else:
                self.refused[why[0]] = self.refused.get(why[0], 0) + 1
                self.warn.log(logging.WARNING, (why[0], sid), "refused %s of virtual series %s: %s",
                              kind, sid, why[1])
        self.accepted += n
        return n

    def status(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": dict(self.refused)}

    def _when(self, sid: str, t: float) -> tuple[str, str] | None:
        if sid not in self.series:
            return "unknown", "no virtual sensor has this series id"
        if not math.isfinite(t) or t <= MIN_VALID_T:
            return "unsynced", f"stamp {t!r} is before the producer's clock was set"
        now = self.clock()
        if now > MIN_VALID_T and t > now + FUTURE_TOLERANCE_S:
            return "future", f"stamp {t:.0f} is {t - now:.0f} s ahead of the host clock"
        return None

    def _power(self, sid: str, t: float, watts: float) -> tuple[str, str] | None:
        bad = self._when(sid, t)
        if bad is not None:
            return bad
        s, role = self.series[sid]
        if role != "import":
            return "unknown", "power goes to a sensor's import series"
        if not math.isfinite(watts) or abs(watts) > s.max_w:
            return "implausible", f"{watts!r} W is beyond the sensor's {s.max_w:.0f} W"
        it = int(t)
        self.session.deliver_gauge(s.id, s.export_id, Gauge(it, watts, abs(watts), 0.0, 0.0, 1.0, 0.0))
        return None

    def _counter(self, sid: str, t: float, wh: float, boot: int) -> tuple[str, str] | None:
        bad = self._when(sid, t)
        if bad is not None:
            return bad
        s, role = self.series[sid]
        if not math.isfinite(wh) or wh < 0 or wh > 1e12:
            return "implausible", f"register {wh!r} Wh"
        raw = round(wh * 1000)
        epoch = self._epoch(s.name, boot)
        st = self.session.store.state.get(sid)
        if st is not None and st.epoch == epoch:
            if raw < st.raw:
                return "backwards", (f"register {raw / 1000:.3f} Wh is below {st.raw / 1000:.3f} Wh "
                                     "of the same epoch")
            limit = s.max_w / 3.6 * (max(0.0, t - st.t) + SLACK_S)   # mWh the sensor can deliver
            if raw - st.raw > limit:
                return "step", (f"+{(raw - st.raw) / 1000:.3f} Wh in {t - st.t:.1f} s is more than "
                                f"{s.max_w:.0f} W can deliver")
        it = int(t)
        degraded = self.session.storage is not None and self.session.storage.degraded
        # no token: nothing is ACKed for a virtual value; while a store fails the spool gets none
        # (the next register carries the energy)
        self.session.deliver(sid, role, epoch, raw, it, int((t - it) * 1000),
                             None if degraded else self.session.spool)
        return None

    def _epoch(self, name: str, boot: int) -> int:
        key = (name, boot)
        eid = self.epochs.get(key)
        if eid is None:
            if len(self.epochs) >= MAX_EPOCHS:
                del self.epochs[next(iter(self.epochs))]
            eid = self.session.store.begin_epoch(f"virtual:{name}".encode(), boot, 0)
            self.epochs[key] = eid
        return eid
