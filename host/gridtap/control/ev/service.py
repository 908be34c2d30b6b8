"""The central system inside the daemon: its own thread and asyncio loop, fed from the live store.

The daemon is a select() loop; OCPP is asyncio. `EvService` runs the central
system and its control step every `interval_s` in a thread, reads the grid
sensor's latest one-second gauge from the `LiveStore` (no copy of the data),
and is stopped like any other extra (`start()`/`stop()`). After each step every
wallbox's power is a live series ``ev-<id>``.

The board measures one phase: the grid sensor's current is L1; on L2 and L3
only the wallboxes' own currents are known, so the house is assumed on L1.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gridtap.control.ev.config import EvConfig
from gridtap.control.ev.loadmgr import VOLTS
from gridtap.store.live import Gauge, LiveStore

log = logging.getLogger("gridtap.ev")

STALE_S = 10       # a grid gauge older than this is no reading (budget 0: the wallboxes pause)


class EvService:
    def __init__(self, cfg: EvConfig, live: LiveStore, grid_id: str,
                 limits: Callable[[], Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.cfg, self.live, self.grid_id, self.limits, self.clock = cfg, live, grid_id, limits, clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.cs: Any = None
        self.port = 0
        self._ready = threading.Event()

    def grid(self) -> tuple[float, tuple[float, float, float]] | None:
        g = self.live.gauge(self.grid_id)
        if g is None or self.clock() - g.t > STALE_S:
            return None
        i = g.irms if g.power_w >= 0 else -g.irms
        ev = [0.0, 0.0, 0.0]
        if self.cs is not None:
            for box in self.cs.boxes.values():
                for k in range(3):
                    ev[k] += box.measure.currents[k]
        return g.power_w, (i, ev[1], ev[2])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gridtap-ev", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from gridtap.control.ev.cs import CentralSystem  # ocpp/websockets only when [ev] is on

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.cs = CentralSystem(self.cfg, self.grid, self.limits, clock=self.clock)
        try:
            self.port = await self.cs.start()
        except OSError as exc:
            log.error("EV charging is off: cannot listen on %s:%d: %s", self.cfg.bind, self.cfg.port, exc)
            self._ready.set()
            return
        log.info("OCPP central system on ws://%s:%d/<charge point id>", self.cfg.bind, self.port)
        self._ready.set()
        while not self._stop.is_set():
            try:
                await self.cs.control_step()
                self.publish()
            except Exception:  # a failed step must not end charging control; the next one retries
                log.exception("EV control step failed")
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.interval_s)
            except TimeoutError:
                pass
        await self.cs.close()

    def publish(self) -> None:
        """Each wallbox's power as a live series ``ev-<id>`` (the REST API and live view read it)."""
        t = int(self.clock())
        for ident, box in self.cs.boxes.items():
            m = box.measure
            self.live.put_gauge(f"ev-{ident}", None, Gauge(t, m.power_w, m.power_w, VOLTS, max(m.currents),
                                                           1.0, 50.0))

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
