"""Outputs beyond the RRDs, built from the config: spool + Flukso uploader, MQTT, PVOutput.

Each is optional and runs off the ingest thread, so a slow server or broker
never delays the board link:

* [flukso]: counters go into the durable SQLite spool (`gridtap.store.spool`); the
  board is ACKed only after the spool commit that holds them; the uploader
  thread posts them to the server.
* [mqtt]: counters and gauges go to the publisher, which owns its thread.
* [pvoutput]: readings go through a queue to a thread that feeds the
  PVOutput uploader and ticks it.

Sensor naming for PVOutput (its series): a CT's import register is the
sensor's name, its export register `<name>.export`, a pulse input its name.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gridtap.config import Config
from gridtap.errors import UserError

log = logging.getLogger("gridtap.outputs.uplinks")

SPOOL_COMMIT_S = 30.0  # the spool commits (and the board is ACKed) at least this often


def series_names(cfg: Config) -> dict[str, str]:
    """sensor id -> PVOutput series name."""
    out: dict[str, str] = {}
    for s in cfg.sensors:
        for sid, role in s.series:
            out[sid] = f"{s.name}.export" if role == "export" else s.name
    return out


def device_name() -> str:
    name = re.sub(r"[^0-9A-Za-z_-]", "-", socket.gethostname())[:64]
    return name or "gridtap"


class MqttSink:
    def __init__(self, cfg: Config, diagnostics: tuple[str, ...] = ()) -> None:
        from gridtap.outputs.flukso import Secret
        from gridtap.outputs.mqtt import MqttPublisher, MqttSensor

        m = cfg.mqtt
        assert m is not None
        sensors = []
        for s in cfg.sensors:
            kind = "water" if s.kind == "pulse" and s.unit == "litre" else "electricity"
            for sid, role in s.series:
                sensors.append(MqttSensor(sid, f"{s.name} export" if role == "export" else s.name, kind))
        password = None
        if m.password_env:
            value = os.environ.get(m.password_env)
            if value is None:
                raise UserError(f"[mqtt] password_env: environment variable {m.password_env} is not set")
            password = Secret(value)
        try:
            self.pub = MqttPublisher(
                m.host,
                m.port,
                m.device_id or device_name(),
                sensors,
                username=m.username,
                password=password,
                discovery=m.discovery,
                discovery_prefix=m.discovery_prefix,
                diagnostics=diagnostics,
            )
        except ValueError as exc:
            raise UserError(f"[mqtt]: {exc}") from exc

    def start(self) -> None:
        self.pub.start()

    def stop(self) -> None:
        self.pub.stop()

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        self.pub.counter(sensor, t, total_milli / 1000.0)

    def diagnostics(self, values: dict[str, int]) -> None:
        self.pub.diagnostics(values)

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit != "V":
            self.pub.gauge(sensor, t, round(value, 3))


class PvoSink:
    """Readings go through a queue; a thread feeds and ticks the PVOutput uploader."""

    def __init__(self, cfg: Config, settings: Any, clock: Callable[[], float] = time.time) -> None:
        from gridtap.outputs.pvoutput import PVOutputUploader

        self.names = series_names(cfg)
        self.up = PVOutputUploader(settings, cfg.daemon.state_dir / "pvoutput.sqlite", clock=clock)
        self.q: queue.Queue[tuple[str, str, int, float, str]] = queue.Queue(maxsize=100_000)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gridtap-pvoutput", daemon=True)
        self.dropped = 0

    def _put(self, item: tuple[str, str, int, float, str]) -> None:
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        self._put(("c", self.names[sensor], t, total_milli / 1000.0, "Wh"))

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit in ("W", "V"):
            self._put(("g", self.names[sensor], t, value, unit))

    def _run(self) -> None:
        while not self.stop_event.is_set():
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    kind, series, t, value, unit = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if kind == "stop":
                    return
                if kind == "c":
                    self.up.observe_counter(series, t, value)
                else:
                    self.up.observe_gauge(series, t, value, unit)
            try:
                self.up.tick()
            except Exception:  # an uploader bug must not stop the daemon
                log.exception("PVOutput tick failed")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        try:
            self.q.put(("stop", "", 0, 0.0, ""), timeout=5)
        except queue.Full:
            pass  # the thread is stuck or gone; the join below bounds the wait
        self.thread.join(timeout=20)
        self.up.close()


class FluksoLink:
    """The durable spool (destination "flukso") and the uploader thread that empties it."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        from gridtap.outputs.flukso import FluksoUploader, load_device_key
        from gridtap.store.spool import Spool

        f = cfg.flukso
        assert f is not None
        if f.key_file is not None:
            key = load_device_key(f.key_file)
        else:
            key = load_device_key(None, env=f.key_env or "")
        self.spool = Spool(
            Path(cfg.daemon.state_dir) / "spool.sqlite", ["flukso"], commit_interval=SPOOL_COMMIT_S,
            wall_clock=clock,
        )
        ids = [sid for s in cfg.sensors for sid, _role in s.series]
        self.uploader = FluksoUploader(self.spool, f.base_url, key, ids, interval=float(f.interval_s))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.uploader.run, args=(self.stop_event,), name="gridtap-flukso", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)
        self.spool.close()
