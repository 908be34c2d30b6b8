"""The central system inside the daemon: an output (gridtap.outputs.REGISTRY, section [ev]).

The daemon is a select() loop; OCPP is asyncio. `EvService` runs the central
system and its control step every `interval_s` in its own thread and event
loop. As a `live` output it receives every one-second gauge the board
session accepts; it keeps the grid sensor's latest power and voltage (the
grid current is power / voltage, signed: export is negative). A reading older
than 10 s is no reading: the budget is 0 and the wallboxes pause.

The board measures one phase: the grid sensor's current is L1; on L2 and L3
only the wallboxes' own currents are known, so the house is assumed on L1, and
the grid power the rules see (M1.power_w, surplus_w) is L1's plus the
wallboxes' L2 and L3 draw, summed as the utility meter sums the phases.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from gridtap.control.ev.config import EvConfig, parse_config, sensor_id, sensors

if TYPE_CHECKING:
    from gridtap.config import Section
    from gridtap.outputs import OutputContext

log = logging.getLogger("gridtap.ev")

STALE_S = 10       # a grid gauge older than this is no reading (budget 0: the wallboxes pause)
LEASE_WALL_S = 30  # a TxProfile's lease outlasts this much wall time of a slow step, also on a fast clock


class _Pace:
    """interval_s is of the daemon's clock, which under --clock-file runs faster than the wall, and
    unevenly: waits of at most 1 s on the host's clock, 0.25 s on a faster one, until the clock is
    due (one wait from a rate estimated while the simulator stalled would oversleep by minutes)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.mark = (clock(), time.monotonic())
        self.rate = 1.0
        self.fastest = 1.0

    def wait(self, due: float) -> float:
        """Wall seconds to wait before looking again (0: due now)."""
        now, mono = self.clock(), time.monotonic()
        if mono - self.mark[1] >= 1.0:
            self.rate = min(max((now - self.mark[0]) / (mono - self.mark[1]), 1.0), 1e4)
            self.fastest = max(self.fastest, self.rate)
            self.mark = (now, mono)
        left = due - now
        if left <= 0:
            return 0.0
        # the host's clock: once a second at most, as the board's gauges come; a faster one: often
        return min(left, 1.0) if self.fastest < 2.0 else min(left / self.rate, 0.25)


class EvService:
    section: ClassVar[str] = "ev"
    live: ClassVar[bool] = True
    spooled: ClassVar[bool] = False

    @classmethod
    def parse(cls, section: Section) -> EvConfig:
        return parse_config(section.data)

    @classmethod
    def virtual_sensors(cls, cfg: EvConfig) -> list[Any]:
        """Each wallbox's meter, E<n>, as a sensor like any other (RRD, REST, MQTT/HA, PVOutput, IEC-104)."""
        return sensors(cfg)

    def __init__(self, cfg: EvConfig, ctx: OutputContext | None = None, grid_id: str | None = None,
                 limits: Callable[[], Any] | None = None, clock: Callable[[], float] | None = None) -> None:
        # The grid limits: an operator's emergency stop of consumption pauses every wallbox.
        if limits is None:
            from gridtap.control import gridlimits  # what the IEC-104 output publishes (#17)

            limits = gridlimits.current
        self.cfg, self.limits = cfg, limits
        self.clock = clock or (ctx.clock if ctx is not None else time.time)
        if grid_id is None and ctx is not None:
            s = ctx.cfg.sensor(cfg.grid_sensor)
            grid_id, self._export_id = s.id, s.export_id
        else:
            self._export_id = None
        self.grid_id = grid_id
        self.inbox = ctx.virtual if ctx is not None else None   # gridtap.inputs.virtual.VirtualInbox
        self._ids = {w.id: sensor_id(w.id) for w in cfg.wallboxes}
        self._names = {w.id: f"E{w.index}" for w in cfg.wallboxes}
        self._power: dict[str, tuple[int, float]] = {}   # role -> (t, W)
        self._volts = 230.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._step: asyncio.Future[Any] | None = None
        self.cs: Any = None
        self.port = 0
        self._ready = threading.Event()

    # ---- the output interface: values from the board session ------------------------------------

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if sensor == self.grid_id and unit == "W" or sensor == self._export_id and unit == "W":
            self._power[role] = (t, value)
        elif sensor == self.grid_id and unit == "V" and 100.0 < value < 300.0:
            self._volts = value

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        pass    # the load manager works on power; energy comes from the wallboxes' own meters

    def grid(self) -> tuple[float, tuple[float, float, float]] | None:
        imp = self._power.get("import")
        if imp is None or self.clock() - imp[0] > STALE_S:
            return None
        exp = self._power.get("export")
        w = imp[1] - (exp[1] if exp is not None and exp[0] == imp[0] else 0.0)
        ev = [0.0, 0.0, 0.0]
        if self.cs is not None:
            for box in self.cs.boxes.values():
                for k in range(3):
                    ev[k] += box.measure.currents[k]
        # M1.power_w is the connection's power, phases summed as the utility meter sums them: L1
        # measured (the house and the wallboxes' L1), L2 and L3 the wallboxes' own draw
        return w + self._volts * (ev[1] + ev[2]), (w / self._volts, ev[1], ev[2])

    def measured(self, ident: str, box: Any) -> None:
        """A wallbox's new MeterValues (or its stop) as its sensor's power and energy register."""
        if self.inbox is None:
            return
        t, sid = self.clock(), self._ids[ident]
        self.inbox.power(sid, t, box.measure.power_w)
        if box.metered:
            self.inbox.counter(sid, t, box.measure.import_wh, box.boot)

    def status(self) -> dict[str, Any]:
        """REST /status: each wallbox's link, state, last granted profile and draw; the error counts."""
        cs = self.cs
        if cs is None:
            return {"listening": False}
        boxes = {}
        for ident, box in list(cs.boxes.items()):
            m = box.measure
            boxes[ident] = {"sensor": self._names[ident],
                            "connected": box.cp is not None, "status": box.status,
                            "granted_a": None if box.sent is None else box.sent[0],
                            "phases": None if box.sent is None else box.sent[1],
                            "power_w": m.power_w, "currents_a": list(m.currents), "import_wh": m.import_wh}
        return {"listening": self.port > 0, "port": self.port, "wallboxes": boxes, "errors": dict(cs.errors)}

    # ---- the thread -----------------------------------------------------------------------------

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
        self.cs = CentralSystem(self.cfg, self.grid, self.limits, clock=self.clock, on_measure=self.measured)
        try:
            self.port = await self.cs.start()
        except OSError as exc:
            log.error("EV charging is off: cannot listen on %s:%d: %s", self.cfg.bind, self.cfg.port, exc)
            self._ready.set()
            return
        log.info("OCPP central system on ws://%s:%d/<charge point id>", self.cfg.bind, self.port)
        self._ready.set()
        pace = _Pace(self.clock)
        while not self._stop.is_set():
            due = self.clock() + self.cfg.interval_s
            self._step = asyncio.ensure_future(self.cs.control_step())
            try:
                await self._step
            except asyncio.CancelledError:
                break   # stopping: a call that waits for its answer is not waited for
            except Exception:  # a failed step must not end charging control; the next one retries
                log.exception("EV control step failed")
            # on a simulated clock a stall of a few wall seconds is minutes of it: a lease that ran
            # out meanwhile would drop a paused wallbox back to its default current
            self.cs.lease_s = max(self.cs.lease_s, round(LEASE_WALL_S * pace.fastest))
            while not self._stop.is_set() and (wait := pace.wait(due)) > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                except TimeoutError:
                    pass
        await self.cs.close()

    def _halt(self) -> None:
        assert self._stop is not None
        self._stop.set()
        if self._step is not None:
            self._step.cancel()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._halt)
        if self._thread is not None:
            self._thread.join(10)
