"""Simulated wallboxes: OCPP 1.6J charge points with an EV battery behind them.

Each `SimWallbox` is a real OCPP client (the `ocpp` package's ChargePoint
side on `websockets`): it boots, reports its status, starts and stops
transactions when the car is plugged in and out, sends MeterValues, and
obeys SetChargingProfile: a TxProfile while it is valid (its ``duration`` is a
lease), else the TxDefaultProfile. The car's battery takes less current as it
fills (constant current to 80 %, then a linear taper to 10 % at full).

`power_at(t)` is the power history as a vectorised function of time, for
`gridtap_sim.model.ev_charger`: the wallbox's draw shows up in the virtual
board's grid CT, which closes the loop through the central system.

``ignore_profile=True`` makes a misbehaving wallbox that draws its maximum
whatever it is told (the bad-input case of docs/ev.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action, ChargingProfileStatus, RemoteStartStopStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

VOLTS = 230.0
MIN_A = 6.0


@dataclass
class Battery:
    capacity_wh: float = 60_000.0
    soc: float = 0.3
    max_a: float = 16.0              # what the car's on-board charger takes per phase

    def accept_a(self) -> float:
        """The current the car takes now: full to 80 %, then tapering to 10 % at full."""
        if self.soc >= 1.0:
            return 0.0
        if self.soc < 0.8:
            return self.max_a
        return self.max_a * (1.0 - 0.9 * (self.soc - 0.8) / 0.2)

    def charge(self, wh: float) -> None:
        self.soc = min(1.0, self.soc + wh / self.capacity_wh)


@dataclass
class _Profile:
    amps: float
    phases: int
    until: float                     # inf for the TxDefaultProfile


@dataclass
class WallboxState:
    """The physics of one wallbox and its car; no I/O (the bench and tests step it directly)."""

    max_a: float = 16.0
    phases: int = 3
    ignore_profile: bool = False
    battery: Battery | None = None   # None: no car plugged in
    default: _Profile = field(default_factory=lambda: _Profile(0.0, 3, math.inf))
    tx: _Profile | None = None
    energy_wh: float = 0.0           # the meter register
    amps: float = 0.0
    used_phases: int = 3
    history: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0)])

    def limit(self, now: float) -> tuple[float, int]:
        p = self.tx if self.tx is not None and now < self.tx.until else self.default
        return p.amps, min(p.phases, self.phases)

    def advance(self, now: float, dt_s: float) -> None:
        """Charge for `dt_s` seconds at what the profile and the car allow."""
        if self.battery is None:
            self.amps = 0.0
        else:
            lim, ph = self.limit(now)
            if self.ignore_profile:
                lim, ph = self.max_a, self.phases
            lim = min(lim, self.max_a, self.battery.accept_a())
            self.amps = lim if lim >= MIN_A or (self.ignore_profile and lim > 0) else 0.0
            self.used_phases = ph
            wh = self.power_w() * dt_s / 3600.0
            self.battery.charge(wh)
            self.energy_wh += wh
        if self.history[-1][1] != self.power_w():
            self.history.append((now, self.power_w()))

    def power_w(self) -> float:
        return self.amps * VOLTS * self.used_phases

    def currents(self) -> tuple[float, float, float]:
        a = self.amps
        return (a, a if self.used_phases == 3 else 0.0, a if self.used_phases == 3 else 0.0)


def power_at(state: WallboxState, origin: float = 0.0) -> Callable[[npt.NDArray[np.float64]], Any]:
    """The power history as f(t) for model.ev_charger; `origin` is the wall time of sim t = 0."""
    def f(t: npt.NDArray[np.float64]) -> Any:
        times = np.asarray([h[0] - origin for h in state.history])
        watts = np.asarray([h[1] for h in state.history])
        i = np.searchsorted(times, t, side="right") - 1
        return watts[np.clip(i, 0, len(watts) - 1)]
    return f


class SimWallbox(ChargePoint):  # type: ignore[misc]
    """The OCPP side of one simulated wallbox."""

    def __init__(self, ident: str, conn: ClientConnection, state: WallboxState,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(ident, conn, response_timeout=10)
        self.state = state
        self.clock = clock
        self.txn: int | None = None
        self.profiles_set = 0

    @on(Action.set_charging_profile)
    def on_set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        p = cs_charging_profiles
        sched = p["charging_schedule"]
        if sched.get("charging_rate_unit") != "A":
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        period = sched["charging_schedule_period"][0]
        duration = sched.get("duration")
        until = self.clock() + duration if duration else math.inf
        prof = _Profile(float(period["limit"]), int(period.get("number_phases", 3)), until)
        if p["charging_profile_purpose"] == "TxDefaultProfile":
            self.state.default = prof
        elif p["charging_profile_purpose"] == "TxProfile":
            if self.txn is None or p.get("transaction_id") not in (None, self.txn):
                return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
            self.state.tx = prof
        else:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        self.profiles_set += 1
        return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag: str, **_: Any) -> Any:
        ok = self.state.battery is not None and self.txn is None
        if ok:
            asyncio.ensure_future(self.start_charging(id_tag))
        return call_result.RemoteStartTransaction(
            status=RemoteStartStopStatus.accepted if ok else RemoteStartStopStatus.rejected)

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, transaction_id: int) -> Any:
        ok = transaction_id == self.txn
        if ok:
            asyncio.ensure_future(self.stop_charging())
        return call_result.RemoteStopTransaction(
            status=RemoteStartStopStatus.accepted if ok else RemoteStartStopStatus.rejected)

    async def boot(self) -> str:
        r = await self.call(call.BootNotification(charge_point_model="gridtap-sim",
                                                  charge_point_vendor="gridtap"))
        await self.status("Available")
        return str(r.status)

    async def status(self, status: str) -> None:
        await self.call(call.StatusNotification(connector_id=1, error_code="NoError", status=status))

    async def plug(self, battery: Battery, id_tag: str = "car") -> None:
        """The car arrives: Preparing, Authorize, StartTransaction, Charging."""
        self.state.battery = battery
        await self.status("Preparing")
        await self.call(call.Authorize(id_tag=id_tag))
        await self.start_charging(id_tag)

    async def start_charging(self, id_tag: str) -> None:
        r = await self.call(call.StartTransaction(connector_id=1, id_tag=id_tag,
                                                  meter_start=int(self.state.energy_wh),
                                                  timestamp=_iso(self.clock())))
        self.txn = int(r.transaction_id)
        self.state.tx = None
        await self.status("Charging")

    async def stop_charging(self) -> None:
        if self.txn is None:
            return
        await self.call(call.StopTransaction(meter_stop=int(self.state.energy_wh),
                                             timestamp=_iso(self.clock()), transaction_id=self.txn))
        self.txn = None
        self.state.tx = None

    async def unplug(self) -> None:
        await self.stop_charging()
        self.state.battery = None
        await self.status("Available")

    async def meter_values(self) -> None:
        s = self.state
        a = s.currents()
        values = [{"measurand": "Energy.Active.Import.Register", "unit": "Wh", "value": f"{s.energy_wh:.1f}"},
                  {"measurand": "Power.Active.Import", "unit": "W", "value": f"{s.power_w():.0f}"}]
        values += [{"measurand": "Current.Import", "unit": "A", "phase": ph, "value": f"{x:.2f}"}
                    for ph, x in zip(("L1", "L2", "L3"), a, strict=True)]
        await self.call(call.MeterValues(connector_id=1, transaction_id=self.txn,
                                         meter_value=[{"timestamp": _iso(self.clock()),
                                                       "sampledValue": values}]))


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


async def follow_schedule(cp: SimWallbox, schedule: list[tuple[float, Battery | None]], until: float,
                          step_s: float = 1.0, clock: Callable[[], float] = time.time,
                          sleep: Callable[[float], Any] = asyncio.sleep) -> None:
    """Plug and unplug on a schedule [(time, Battery to plug in, or None to unplug)], charging and
    sending MeterValues every `step_s` of `clock` until `until`."""
    todo = sorted(schedule, key=lambda e: e[0])
    last = clock()
    while clock() < until:
        now = clock()
        while todo and todo[0][0] <= now:
            _t, battery = todo.pop(0)
            if battery is None:
                await cp.unplug()
            else:
                await cp.plug(battery)
        cp.state.advance(now, now - last)
        last = now
        await cp.meter_values()
        await sleep(step_s)


async def connect_wallbox(url: str, ident: str, state: WallboxState, password: str | None = None,
                          clock: Callable[[], float] = time.time) -> tuple[SimWallbox, asyncio.Task[None]]:
    """Open the link to a central system at `url` (ws://host:port) and start serving it."""
    headers = {}
    if password is not None:
        import base64
        headers["Authorization"] = "Basic " + base64.b64encode(f"{ident}:{password}".encode()).decode()
    conn = await connect(f"{url}/{ident}", subprotocols=[Subprotocol("ocpp1.6")],
                         additional_headers=headers, ping_interval=None)
    cp = SimWallbox(ident, conn, state, clock)
    task = asyncio.ensure_future(cp.start())
    return cp, task


class Fleet:
    """Simulated wallboxes for `gridtap sim --wallbox`: each connects to a central system (retrying
    until it listens), boots, has a car plugged in at its time, and charges on the simulator's clock,
    reporting MeterValues every `step_s` simulated seconds. Their draw on L1 (`grid_w`) is a load on
    the scenario's grid CT, so what the central system grants closes the loop through the board.

    Runs its own thread and event loop; `log` (a path) gets one CSV line per wallbox and report:
    ``t,id,amps,phases,power_w,energy_wh,soc``.
    """

    def __init__(self, boxes: list[tuple[str, str, float]], clock: Callable[[], float], start: float,
                 step_s: float = 5.0, log: str | None = None, capacity_wh: float = 60_000.0) -> None:
        # (url, id, seconds after start when its car arrives)
        self.boxes = boxes
        self.clock = clock
        self.start_t = start
        self.step_s = step_s
        self.states = {ident: WallboxState(max_a=16.0, phases=3) for _url, ident, _at in boxes}
        self.capacity_wh = capacity_wh
        self.log_path = log
        self._log: Any = None
        self._stop = False
        self._thread: Any = None
        self.errors: list[str] = []

    def grid_w(self) -> float:
        """What the wallboxes draw on L1, the phase of the board's grid CT."""
        return sum(s.currents()[0] * VOLTS for s in self.states.values())

    def start(self) -> Fleet:
        import threading

        if self.log_path is not None:
            self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
            self._log.write("t,id,amps,phases,power_w,energy_wh,soc\n")
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="wallboxes",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _main(self) -> None:
        await asyncio.gather(*(self._run(url, ident, at) for url, ident, at in self.boxes))

    async def _sleep(self, sim_s: float) -> None:
        """Until the simulator's clock has moved on by sim_s (it runs at its own speed)."""
        until = self.clock() + sim_s
        while not self._stop and self.clock() < until:
            await asyncio.sleep(0.005)

    async def _run(self, url: str, ident: str, at: float) -> None:
        state = self.states[ident]
        while not self._stop:
            try:
                cp, task = await connect_wallbox(url, ident, state, clock=self.clock)
            except OSError:
                await asyncio.sleep(0.2)       # the central system is not listening yet
                continue
            try:
                await self._charge(cp, state, at)
            except Exception as exc:  # noqa: BLE001 - a lost link: report it and connect again
                self.errors.append(f"{ident}: {type(exc).__name__}: {exc}")
            finally:
                task.cancel()
                await cp._connection.close()

    async def _charge(self, cp: SimWallbox, state: WallboxState, at: float) -> None:
        await cp.boot()
        last = self.clock()
        while not self._stop:
            now = self.clock()
            if state.battery is None and now >= self.start_t + at:
                await cp.plug(Battery(capacity_wh=self.capacity_wh, soc=0.3))
            state.advance(now, now - last)
            last = now
            await cp.meter_values()
            if self._log is not None:
                soc = state.battery.soc if state.battery is not None else math.nan
                self._log.write(f"{now:.1f},{cp.id},{state.amps:.1f},{state.used_phases},"
                                f"{state.power_w():.0f},{state.energy_wh:.2f},{soc:.4f}\n")
            await self._sleep(self.step_s)
