"""[iec104]: the Netflex IEC-104 server as a daemon output, on its own asyncio thread.

The board session's gauges (W, and var: each CT's measured reactive power,
board/plausible.py) are kept per series; every report_s the station sends P and Q per asset category.
A category's value is the sum of its series' latest gauges ("-name" subtracts);
a category with a series that has not reported within two periods is sent with
the invalid bit set, a category without assets as a good zero.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gridtap.control import gridlimits
from gridtap.outputs.iec104 import codec
from gridtap.outputs.iec104.link import Connection, Server
from gridtap.outputs.iec104.netflex import NetflexStation, StateFile
from gridtap.outputs.iec104.settings import Iec104Config, parse

if TYPE_CHECKING:
    from gridtap.config import Section
    from gridtap.outputs import OutputContext

log = logging.getLogger("gridtap.outputs.iec104")


class Measurements:
    """Latest W and var per series, written by the ingest thread, read by the station."""

    def __init__(self, assets: dict[str, tuple[str, ...]], max_age_s: float) -> None:
        self.assets, self.max_age_s = assets, max_age_s
        self._lock = threading.Lock()
        self._p: dict[str, tuple[float, float]] = {}  # series -> (W, monotonic time)
        self._q: dict[str, float] = {}

    def update(self, series: str, value: float, unit: str) -> None:
        with self._lock:
            if unit == "W":
                self._p[series] = (value, time.monotonic())
            elif unit == "var":
                self._q[series] = value

    def category(self, cat: str) -> tuple[float, float, bool]:
        p = q = 0.0
        ok = True
        now = time.monotonic()
        with self._lock:
            for name in self.assets.get(cat, ()):
                sign = -1.0 if name.startswith("-") else 1.0
                series = name.removeprefix("-")
                got = self._p.get(series)
                if got is None or now - got[1] > self.max_age_s:
                    ok = False
                else:
                    p += sign * got[0]
                q += sign * self._q.get(series, 0.0)
        return p, q, ok


class Iec104Output:
    section = "iec104"
    live = True  # the board is read promptly: the battery's grid loop follows the operator's limits on it
    spooled = False

    @classmethod
    def parse(cls, sec: Section) -> Iec104Config:
        return parse(sec)

    def __init__(self, cfg: Iec104Config, ctx: OutputContext) -> None:
        self.cfg = cfg
        self.names = {sid: (f"{s.name}.export" if role == "export" else s.name)
                      for s in ctx.cfg.all_sensors for sid, role in s.series}
        self.meas = Measurements(cfg.model.assets, max(2 * cfg.report_s, 60.0))
        state_dir = Path(ctx.cfg.daemon.state_dir)
        self.station = NetflexStation(cfg.model, StateFile(state_dir / "iec104-state.json"),
                                      gridlimits.publish, self.meas.category, ctx.clock)
        self.loop = asyncio.new_event_loop()
        self.server = Server(self.station, cfg.link, cfg.bind, cfg.port, cfg.allow, self._connected)
        self.conn: Connection | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _connected(self, conn: Connection | None) -> None:
        self.conn = conn

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="iec104", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.port = self.loop.run_until_complete(self.server.start())
        except OSError as exc:
            from gridtap.errors import UserError
            self._error = UserError(f"[iec104] cannot listen on {self.cfg.bind}:{self.cfg.port}: {exc}")
            self._ready.set()
            return
        log.info("iec104: listening on %s:%d (common address %d)",
                 self.cfg.bind, self.port, self.cfg.model.ca)
        reports = self.loop.create_task(self._reports())
        self._ready.set()
        self.loop.run_forever()
        reports.cancel()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    async def _reports(self) -> None:
        """P and Q per category every report_s on a fixed grid (no drift from send times)."""
        period = self.cfg.report_s
        due = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += period
            conn = self.conn
            if conn is not None and conn.active:
                for asdu in self.station.measurements(codec.COT_PERIODIC):
                    conn.send(asdu)
                await conn.w.drain()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        pass  # Netflex reports power, not energy

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        series = self.names.get(sensor)
        if series is not None:
            self.meas.update(series, value, unit)
