"""Outputs beyond the RRDs, built from the config: spool + Flukso uploader, MQTT, PVOutput.

Each is optional and runs off the ingest thread, so a slow server or broker
never delays the board link:

* the durable SQLite spool (`gridtap.store.spool`) holds the counters for every
  uploader ([flukso], [pvoutput]); the board is ACKed only after the spool
  commit that holds them.
* [flukso]: the uploader thread posts the spool's points to the server.
* [mqtt]: counters and gauges go to the publisher, which owns its thread.
* [pvoutput]: a thread feeds the spool's points (and the gauges) to the
  PVOutput uploader and ticks it (`gridtap.outputs.pvoutput.feed`).

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
FEED_PERIOD_S = 5.0  # how often the PVOutput thread reads the spool and ticks the uploader
GAUGE_QUEUE = 100_000


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
        from gridtap.outputs.mqtt import MqttPublisher, MqttSensor, TlsFiles
        from gridtap.secretfile import read_secret_line

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
        elif m.password_file is not None:
            password = Secret(read_secret_line(m.password_file, "MQTT password file"))
        tls = None
        if m.tls:
            tls = TlsFiles(*(None if f is None else str(f) for f in (m.ca_file, m.cert_file, m.key_file)))
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
                tls=tls,
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
    """PVOutput: counters from the spool (`gridtap.outputs.pvoutput.feed`), gauges through a bounded queue.

    The board does not keep gauges (they are not ACKed), so a queue that
    drops them when full (counted) loses nothing the board still has; the
    energy comes only from the counters, which are durable in the spool.
    """

    def __init__(self, cfg: Config, settings: Any, spool: Any,
                 clock: Callable[[], float] = time.time) -> None:
        from gridtap.outputs.pvoutput import PVOutputUploader
        from gridtap.outputs.pvoutput.feed import SpoolFeed

        self.names = series_names(cfg)
        self.up = PVOutputUploader(settings, cfg.daemon.state_dir / "pvoutput.sqlite", clock=clock)
        self.feed = SpoolFeed(self.up, spool, self.names)
        self.q: queue.Queue[tuple[str, float, float, str]] = queue.Queue(maxsize=GAUGE_QUEUE)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gridtap-pvoutput", daemon=True)
        self.dropped = 0

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        """Counters reach PVOutput through the spool (the daemon adds them there), not from here."""

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit in ("W", "V"):
            try:
                self.q.put_nowait((self.names[sensor], float(t), value, unit))
            except queue.Full:
                self.dropped += 1

    def _run(self) -> None:
        while not self.stop_event.wait(FEED_PERIOD_S):
            while True:
                try:
                    series, t, value, unit = self.q.get_nowait()
                except queue.Empty:
                    break
                self.up.observe_gauge(series, t, value, unit)
            try:
                self.feed.step()
            except Exception:  # an uploader bug or a full disk must not stop the daemon
                log.exception("PVOutput step failed")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)
        self.up.close()


class SharedSpool:
    """The one durable spool of every uploader (destinations: the configured ones).

    Listed before the uploaders among the daemon's outputs, so it is closed after them.
    """

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        from gridtap.store.spool import Spool

        dests = [name for name, on in (("flukso", cfg.flukso is not None),
                                       ("pvoutput", "pvoutput" in cfg.extra)) if on]
        self.spool = Spool(Path(cfg.daemon.state_dir) / "spool.sqlite", dests, commit_interval=SPOOL_COMMIT_S,
                           wall_clock=clock)

    @staticmethod
    def wanted(cfg: Config) -> bool:
        return cfg.flukso is not None or "pvoutput" in cfg.extra

    def start(self) -> None:
        """Nothing to start: the ingest thread adds and commits, the uploaders read."""

    def stop(self) -> None:
        self.spool.close()


class FluksoLink:
    """The uploader thread that empties the spool's destination "flukso"."""

    def __init__(self, cfg: Config, spool: Any) -> None:
        from gridtap.outputs.flukso import FluksoUploader, load_device_key

        f = cfg.flukso
        assert f is not None
        if f.key_file is not None:
            key = load_device_key(f.key_file)
        else:
            key = load_device_key(None, env=f.key_env or "")
        self.spool = spool
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
