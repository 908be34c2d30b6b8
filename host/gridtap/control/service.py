"""The daemon's inverter controller: a thread that ticks the Controller, plus its MQTT / Home
Assistant entities (docs/control.md, "Controller and safe state").

`InverterService(settings, policy, clock, mqtt)` has the daemon's output shape: `start()` connects
to the datalogger and starts the thread, `stop()` leaves the inverter in the safe state and stops.

MQTT (when [mqtt] is configured), under `/device/<id>/inverter/`:

* `state` (retained JSON): wanted and actual state, reason, source, error, SOC and its age, battery
  power, writes; read by HA sensors (SOC, battery power, AC charge, forced discharge, reason);
* `override/set`: `ON` / `OFF`, the HA switch "AC charge override" (charge to the SOC target);
* `soc_target/set`: a number 0..100, the HA number "SOC target".
A command payload that is not one of these is logged and counted (`bad_commands`), never acted on.

The planner's house forecast (gridtap.control.forecast) learns here: every tick, when the grid
sensor's power and the battery's are both fresh, it is given grid - battery (the house net of PV,
without what the controller itself did); it is kept in the state directory (every SAVE_S and at stop).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gridtap.control.controller import Controller, DecidesPolicy
from gridtap.control.forecast import ProfileForecast
from gridtap.control.luxpower.client import LuxClient
from gridtap.control.luxpower.config import InverterSettings
from gridtap.control.override import Override
from gridtap.control.schedule import SchedulePolicy

log = logging.getLogger("gridtap.control")
GRID_TICK_S = 1.0  # the grid loop's period while a grid operator's limit is in force: the metering second

SAVE_S = 6 * 3600.0  # the forecast's state file: rewritten this often (flash), and at stop
FRESH_S = 300.0  # a gauge or battery push older than this is not learned from


def build_policy(s: InverterSettings, policy: DecidesPolicy | None) -> Override:
    """The user's override around [control]'s policy, else around the [inverter] schedule."""
    if policy is None and s.schedule:
        policy = SchedulePolicy(list(s.schedule), s.schedule_soc, s.timezone)
    return Override(policy, s.soc_target)


class InverterService:
    # the shape of a gridtap output (start/stop, counter/gauge): the daemon runs it like one
    section = "inverter"
    live = False
    spooled = False

    def __init__(self, settings: InverterSettings, policy: DecidesPolicy | None, clock: Callable[[], float],
                 mqtt: Any = None, device_id: str = "gridtap", discovery_prefix: str | None = "homeassistant",
                 prices: Callable[[float], Any] | None = None, sensors: tuple[Any, ...] = (),
                 forecast: ProfileForecast | None = None, grid_sensor: str | None = None,
                 forecast_path: Path | None = None) -> None:
        """prices(now): the PriceSeries for ControlContext.prices ([prices], gridtap.inputs.prices:
        e.g. a PriceFeed's poll(now) then series()); None: no prices (a price policy then decides safe)."""
        self.s = settings
        self.clock = clock
        self.client = LuxClient(settings.host, settings.port, settings.datalogger_serial,
                                settings.inverter_serial, settings.link, clock=clock)
        self.override = build_policy(settings, policy)
        self.controller = Controller(self.client, self.override, settings.control, grid=self.grid_reading,
                                     grid_var=self.var_reading)
        self.mqtt = mqtt
        self.base = f"/device/{device_id}/inverter"
        self.device_id = device_id
        self.bad_commands = 0
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        # ControlContext.meters: the policy's names (M<n>.power_w, <name>.import_wh, ...) -> the latest value
        from gridtap.control.policy import formula_names

        self.names = formula_names(sensors)
        self.series = {sid: (sc.name, role) for sc in sensors for sid, role in sc.series}
        self.values: dict[tuple[str, str], float] = {}  # (sensor name, quantity or "in_w"/"out_w") -> value
        self.two_way = {name for name, role in self.series.values() if role == "export"}
        self.net: dict[str, tuple[float, float]] = {}  # sensor -> (W, + import; its time): the grid loop's
        self.net_var: dict[str, tuple[float, float]] = {}  # sensor -> (var, + lagging; its time): Q band's
        self.wake = threading.Event()  # set by a new grid-operator command (gridlimits.watch)
        self.prices = prices
        self.forecast, self.grid_sensor, self.forecast_path = forecast, grid_sensor, forecast_path
        self.seen: dict[str, float] = {}  # sensor name -> clock time of its latest gauge
        self.saved_at = clock()
        if forecast is not None and forecast_path is not None and forecast.load(forecast_path):
            log.info("forecast: %d days of house history from %s", forecast.days_known(), forecast_path)
        self.controller.context = self._context
        if mqtt is not None:
            if discovery_prefix is not None:
                mqtt.add_discovery(self.discovery(discovery_prefix))
            mqtt.on_command(f"{self.base}/override/set", self.on_override)
            mqtt.on_command(f"{self.base}/soc_target/set", self.on_soc_target)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        if self.s.control.dry_run:
            log.warning("inverter: dry run: decisions are logged, nothing is written")
        self.client.start()
        self.thread = threading.Thread(target=self._run, name="inverter-control", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(self.s.link.reply_timeout_s * 4 + 5)
        try:
            if not self.controller.stop(self.clock()):
                log.error("inverter: the safe state could not be verified at stop (%s); the inverter keeps "
                          "its last state", self.controller.status.error or self.controller.halted)
        finally:
            self.publish()
            self.client.close()
            self._save_forecast(self.clock())

    def _run(self) -> None:
        from gridtap.control import gridlimits

        gridlimits.watch(self.wake)
        self.client.wait_connected(self.s.link.connect_timeout_s)
        decide_at = 0.0
        while not self.stop_event.is_set():
            self.wake.clear()
            decide = time.monotonic() >= decide_at
            if decide:
                decide_at = time.monotonic() + self.s.tick_s
            try:
                self.controller.tick(self.clock(), decide)
            except Exception:  # the thread must outlive a bug; the next tick tries again
                log.exception("inverter control tick failed")
            self.publish()
            # under a grid operator's limit the loop follows every metering second; a new command wakes it
            grid_s = GRID_TICK_S if self.controller.limited() else self.s.tick_s
            self.wake.wait(max(0.0, min(grid_s, decide_at - time.monotonic())))
        gridlimits.unwatch(self.wake)

    def grid_reading(self, name: str) -> tuple[float, float] | None:
        """The sensor's latest net power (W, + import) and its time, for the grid loop; None if never seen."""
        return self.net.get(name)

    def var_reading(self, name: str) -> tuple[float, float] | None:
        """The CT's latest reactive power (var, + lagging) and its time, for the Q band; None: never seen."""
        return self.net_var.get(name)

    def _context(self, now: float) -> dict[str, Any]:
        series = None
        if self.prices is not None:
            try:
                series = self.prices(now)
            except Exception:  # no prices is a state the policy handles (safe), not a dead thread
                log.exception("inverter: the price source failed")
        meters = self.meters()
        self._learn(now)
        return {"meters": meters, "prices": series}

    def _learn(self, now: float) -> None:
        """One sample of the house (grid - battery) for the forecast, when both are fresh."""
        if self.forecast is None or self.grid_sensor is None:
            return
        grid = self.values.get((self.grid_sensor, "power_w"))
        battery = self.client.battery_w()
        _soc, age = self.client.soc()
        seen = self.seen.get(self.grid_sensor)
        if grid is None or battery is None or seen is None or age is None:
            return
        if now - seen > FRESH_S or age > FRESH_S:
            return
        self.forecast.observe(now, grid - battery)
        if now - self.saved_at >= SAVE_S:
            self._save_forecast(now)

    def _save_forecast(self, now: float) -> None:
        if self.forecast is not None and self.forecast_path is not None:
            self.saved_at = now
            self.forecast.save(self.forecast_path)

    def meters(self) -> dict[str, float]:
        v = self.values
        for name in {n for n, _q in v}:
            if (name, "in_w") in v:  # a CT's gauges come as import and export: net power
                v[(name, "power_w")] = v[(name, "in_w")] - v.get((name, "out_w"), 0.0)
        return {f: v[key] for f, key in self.names.items() if key in v}

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        name = self.series.get(sensor, (sensor, role))[0]
        self.values[(name, "export_wh" if role == "export" else "import_wh")] = total_milli / 1000.0

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit == "var":  # a CT's reactive power, on its own (import) sensor id
            self.net_var[self.series.get(sensor, (sensor, role))[0]] = (value, float(t))
            return
        if unit != "W":
            return
        name = self.series.get(sensor, (sensor, role))[0]
        self.seen[name] = self.clock()
        if role == "pulse":
            self.values[(name, "power_w")] = value
        else:
            self.values[(name, "out_w" if role == "export" else "in_w")] = value
            # a CT's second comes as its import gauge, then its export gauge: net once both are in
            if role == "export":
                self.net[name] = (self.values.get((name, "in_w"), 0.0) - value, float(t))
            elif name not in self.two_way:
                self.net[name] = (value, float(t))

    # -- MQTT ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        st = self.controller.status
        soc, age = self.client.soc()
        want, have = st.wanted, st.actual
        return {
            "soc_pct": soc, "soc_age_s": None if age is None else round(age, 1),
            "battery_w": self.client.battery_w(),
            "ac_charge": None if have is None else have.ac_charge,
            "forced_discharge": None if have is None else have.forced_discharge,
            "wanted_ac_charge": None if want is None else want.ac_charge,
            "wanted_forced_discharge": None if want is None else want.forced_discharge,
            "reason": st.reason, "source": st.source, "error": self.controller.halted or st.error,
            "warning": st.warning,
            "writes": st.writes, "failures": st.failures, "override": "ON" if self.override.charge else "OFF",
            "soc_target": self.override.soc_target, "dry_run": self.s.control.dry_run,
            "connected": self.client.connected.is_set(), "bad_commands": self.bad_commands,
            "reactive_pct": self.controller.q.status.target,
            "reactive_reason": self.controller.q.status.reason,
        }

    def publish(self) -> None:
        if self.mqtt is not None:
            self.mqtt.publish(f"{self.base}/state", json.dumps(self.state(), separators=(",", ":")).encode())

    def on_override(self, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace").strip().upper()
        if text not in ("ON", "OFF"):
            self.bad_commands += 1
            log.warning("inverter: override command %r is neither ON nor OFF: ignored", payload[:40])
            return
        log.info("inverter: AC charge override %s (from MQTT)", text)
        self.override.set_charge(text == "ON")
        self.publish()

    def on_soc_target(self, payload: bytes) -> None:
        try:
            value = float(payload.decode("ascii").strip())
            self.override.set_soc_target(value)
        except (UnicodeDecodeError, ValueError) as exc:
            self.bad_commands += 1
            log.warning("inverter: SOC target command %r refused: %s", payload[:40], exc)
            return
        log.info("inverter: SOC target %g %% (from MQTT)", value)
        self.publish()

    def discovery(self, prefix: str = "homeassistant") -> dict[str, bytes]:
        from gridtap.outputs.mqtt import _device

        dev = _device(self.device_id)
        state = f"{self.base}/state"
        common = {"availability_topic": f"/device/{self.device_id}/status", "device": dev}
        ents: list[tuple[str, str, dict[str, Any]]] = [
            ("sensor", "battery_soc", {"name": "battery SOC", "device_class": "battery",
                                       "unit_of_measurement": "%", "state_class": "measurement",
                                       "value_template": "{{ value_json.soc_pct }}"}),
            ("sensor", "battery_power", {"name": "battery power", "device_class": "power",
                                         "unit_of_measurement": "W",
                                         "value_template": "{{ value_json.battery_w }}",
                                         "state_class": "measurement"}),
            ("sensor", "inverter_reason", {"name": "inverter decision",
                                           "value_template": "{{ value_json.reason }}"}),
            ("binary_sensor", "ac_charge", {"name": "AC charge", "value_template":
                                            "{{ 'ON' if value_json.ac_charge else 'OFF' }}"}),
            ("binary_sensor", "forced_discharge", {"name": "forced discharge", "value_template":
                                                   "{{ 'ON' if value_json.forced_discharge else 'OFF' }}"}),
            ("switch", "ac_charge_override", {"name": "AC charge override", "command_topic":
                                              f"{self.base}/override/set",
                                              "value_template": "{{ value_json.override }}"}),
            ("number", "soc_target", {"name": "SOC target", "command_topic": f"{self.base}/soc_target/set",
                                      "min": 0, "max": 100, "step": 1, "unit_of_measurement": "%",
                                      "value_template": "{{ value_json.soc_target }}"}),
        ]
        out: dict[str, bytes] = {}
        for comp, key, cfg in ents:
            uid = f"gridtap_{self.device_id}_{key}"
            full = {**cfg, "unique_id": uid, "object_id": uid, "state_topic": state, **common}
            out[f"{prefix}/{comp}/{uid}/config"] = json.dumps(full, separators=(",", ":")).encode()
        return out


class InverterOutput(InverterService):
    """[inverter] as a gridtap output (gridtap.outputs.REGISTRY): built from its section, started and
    stopped by the daemon (stopped before [mqtt], so the safe state at stop is still published), and
    given the gauges (ControlContext.meters). Its Home Assistant entities ride on [mqtt]'s connection."""

    @classmethod
    def parse(cls, section: Any) -> InverterSettings:
        from gridtap.control.luxpower.config import parse_config

        return parse_config(section.data)

    def __init__(self, settings: InverterSettings, ctx: Any) -> None:
        mq = ctx.peers.get("mqtt")
        m = ctx.cfg.outputs.get("mqtt")
        sections = getattr(ctx.cfg, "sections", {})
        control, prices = sections.get("control"), sections.get("prices")
        policy = None
        forecast, grid = None, None
        if control is not None:  # [control]: its policy or planner, its dwell, interval and dry run
            if control.mode == "planner" and control.grid_sensor is not None:
                grid = control.grid_sensor
                forecast = ProfileForecast(control.forecast_days, control.tz, control.planner.house_load_w)
            policy = control.build_policy(ctx.cfg.sensors, forecast)
            settings = replace(settings, tick_s=control.interval_s, control=replace(
                settings.control, min_dwell_s=control.min_dwell_s,
                dry_run=settings.control.dry_run or control.dry_run,
                charge_w=control.battery.charge_kw * 1000.0,
                discharge_w=control.battery.discharge_kw * 1000.0))
        feeds: list[Any] = []

        def price_series(now: float) -> Any:
            # the feed (and its SQLite cache) is made in the controller's thread, the one that uses it
            if not feeds:
                assert prices is not None
                feeds.append(prices.feed(ctx.cfg.daemon.state_dir / "prices.sqlite"))
            feeds[0].poll(now)  # fetches only when due (publication times, retries with backoff)
            return feeds[0].series()

        super().__init__(settings, policy, ctx.clock, mqtt=None if mq is None else mq.pub,
                         device_id=mq.pub.device_id if mq is not None else "gridtap",
                         discovery_prefix=m.discovery_prefix if m is not None and m.discovery else None,
                         prices=None if prices is None else price_series, sensors=tuple(ctx.cfg.sensors),
                         forecast=forecast, grid_sensor=grid,
                         forecast_path=ctx.cfg.daemon.state_dir / "forecast.json")
