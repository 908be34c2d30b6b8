"""Live values over MQTT: Flukso topics plus Home Assistant discovery.

Topics and payloads are the Fluksometer's (flukso.md §3.3, §4.2), retained::

    /sensor/<id>/gauge    [ts,value,"W"]     ("L/day" for water and gas, "V" for voltage)
    /sensor/<id>/counter  [ts,counter,"Wh"]  ("L" for water and gas)

so every tool written for a Fluksometer's local broker works unchanged. A CT's
voltage (the board's Vrms, once a second) is a sensor of its own, as on the
FLM03 (one sensor id per quantity): it goes to ``/sensor/<voltage_id>/gauge``
as ``[ts,230.1,"V"]`` when the CT's ``[[sensor]]`` names a ``voltage_id``, so a
bridge such as FluksoToPvoutput can map it to PVOutput's v6. For
Home Assistant, gridtap also publishes retained **MQTT discovery** configs
(``homeassistant/sensor/<unique_id>/config``) whose value templates read those
same payloads (``{{ value_json[1] }}``): every counter appears as an
``energy``/``water``/``gas`` sensor with ``state_class: total_increasing``
(the Energy dashboard takes it as it is, no YAML; water and gas in m³, the
unit every Energy dashboard version accepts), every gauge as a
``power``/``volume_flow_rate``/``voltage`` sensor with ``state_class:
measurement``. An availability topic (``/device/<device>/status``,
``online``/``offline`` via the broker's last will) greys the entities out when
the daemon is gone.

**Diagnostics.** The daemon's board-link counters (the decoder's ``bad_crc``,
``bad_cobs``, ``oversize``… of docs/protocol.md §4, and the tuples it
refused as implausible) go to ``/device/<device>/diagnostics`` as one retained
JSON object, each key a Home Assistant entity of ``entity_category:
diagnostic`` (``state_class: total_increasing``), so a noisy cable or a lying
board shows on the device page.

**Broker restarts.** The publisher remembers the latest payload of every
topic. Whenever the connection (re)starts it publishes, in one go, the
availability, every discovery config and the latest value of every topic, all
retained. Only one worker thread publishes, and it always sends the newest
value of a topic, so after a broker restart (which may have lost its retained
store) each counter topic ends at the newest value, never an older one.
While the broker is away live values are dropped (they are live; the durable
path to the servers is the spool) and counted in ``dropped``. QoS is 0 for
values (as Flukso), 1 for discovery and availability.

**Client.** paho-mqtt 2.x: the reference Python MQTT client (Eclipse), pure
Python, packaged by OpenWrt, with keepalive, automatic reconnection with a
bounded delay, and a network thread. A home-made client would need all of
that, and its bugs would be ours; the daemon only adds the state replay above.
The password, if any, is a ``Secret`` and is never logged.

**TLS.** With ``tls`` the connection is TLS 1.2+ with the broker's certificate
checked against ``ca_file`` (or the system's CAs) and its host name; a client
certificate and key may identify the daemon (mosquitto's ``require_certificate``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho

from gridtap import __version__
from gridtap.board.plausible import reactive_ids
from gridtap.config import in_range
from gridtap.errors import UserError
from gridtap.fluksoapi import is_sensor_id
from gridtap.outputs.flukso import Secret

if TYPE_CHECKING:
    from gridtap.config import Section
    from gridtap.outputs import OutputContext

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"[0-9A-Za-z_-]{1,64}")

#: kind -> (gauge unit, counter unit or None) on the Flukso topics
FLUKSO_UNITS: dict[str, tuple[str, str | None]] = {
    "electricity": ("W", "Wh"),
    "water": ("L/day", "L"),
    "gas": ("L/day", "L"),
    "voltage": ("V", None),
    # a CT's reactive power (signed) on its Q+ series' gauge, the Q+ register on its counter;
    # the Q- register is a counter of its own (board/plausible.py: reactive_ids)
    "reactive": ("var", "varh"),
    "reactive_energy": ("var", "varh"),
}

#: kind -> Home Assistant (device_class, unit, value template) for the gauge and the counter
_HA_GAUGE: dict[str, tuple[str, str, str]] = {
    "electricity": ("power", "W", "{{ value_json[1] }}"),
    "water": ("volume_flow_rate", "L/min", "{{ (value_json[1] / 1440) | round(3) }}"),
    "gas": ("volume_flow_rate", "m³/h", "{{ (value_json[1] / 24000) | round(4) }}"),
    "voltage": ("voltage", "V", "{{ value_json[1] }}"),
    "reactive": ("reactive_power", "var", "{{ value_json[1] }}"),
}
_HA_COUNTER: dict[str, tuple[str, str, str]] = {
    "electricity": ("energy", "Wh", "{{ value_json[1] }}"),
    "water": ("water", "m³", "{{ value_json[1] / 1000 }}"),
    "gas": ("gas", "m³", "{{ value_json[1] / 1000 }}"),
    "reactive": ("reactive_energy", "varh", "{{ value_json[1] }}"),
    "reactive_energy": ("reactive_energy", "varh", "{{ value_json[1] }}"),
}


#: The longest topic prefix accepted (MQTT allows 65535 bytes; a prefix is a word or two).
MAX_PREFIX = 128


def check_topic_prefix(prefix: str) -> str | None:
    """None if `prefix` can start a topic to publish to, else why not.

    MQTT forbids NUL and the wildcards in a published topic, and a broker drops
    a client that sends one, so the daemon would reconnect forever; topics
    starting with "$" are the broker's own. Control characters, spaces and empty
    levels are refused too: Home Assistant's discovery prefix is one plain word.
    """
    if not prefix:
        return "must not be empty"
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_PREFIX:
        return f"must be at most {MAX_PREFIX} bytes"
    bad = sorted({c for c in prefix if c in "#+" or not c.isprintable() or c.isspace()})
    if bad:
        return f"must be a topic without wildcards, spaces or control characters (has {bad[0]!r})"
    if prefix.startswith("$"):
        return "must not start with '$' (topics for the broker's own use)"
    if "" in prefix.split("/"):
        return "must not start or end with '/' nor contain '//'"
    return None


@dataclass(frozen=True)
class TlsFiles:
    """TLS for the broker connection: the CA that signed its certificate (None: the system's)
    and optionally this client's certificate and key (PEM files)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class MqttSensor:
    """One sensor to publish: its 32-hex id, a display name and its kind."""

    sensor_id: str
    name: str
    kind: str = "electricity"

    def __post_init__(self) -> None:
        if not is_sensor_id(self.sensor_id):
            raise ValueError(f"mqtt: sensor id {self.sensor_id!r} must be 32 lowercase hex digits")
        if self.kind not in FLUKSO_UNITS:
            raise ValueError(f"mqtt: sensor {self.sensor_id} has unknown kind {self.kind!r} "
                             f"(one of {', '.join(FLUKSO_UNITS)})")
        if not self.name:
            raise ValueError(f"mqtt: sensor {self.sensor_id} needs a name")


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ with the broker's certificate and host name checked."""
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert_file is not None:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"mqtt: cannot set up TLS: {exc}") from exc
    return ctx


def gauge_topic(sensor_id: str) -> str:
    return f"/sensor/{sensor_id}/gauge"


def counter_topic(sensor_id: str) -> str:
    return f"/sensor/{sensor_id}/counter"


def _number(v: int | float) -> int | float:
    return v if isinstance(v, int) else round(float(v), 3)


def payload(ts: int, value: int | float, unit: str) -> bytes:
    """A Flukso payload: ``[ts,value,"unit"]``."""
    return json.dumps([int(ts), _number(value), unit], separators=(",", ":")).encode()


def _device(device_id: str) -> dict[str, Any]:
    return {"identifiers": [f"gridtap_{device_id}"], "name": f"gridtap {device_id}",
            "manufacturer": "gridtap", "model": "gridtap energy monitor", "sw_version": __version__}


def discovery_configs(device_id: str, sensors: Iterable[MqttSensor],
                      prefix: str = "homeassistant") -> dict[str, bytes]:
    """Home Assistant discovery: ``{config topic: JSON config}`` for every entity."""
    device = _device(device_id)
    avail = f"/device/{device_id}/status"
    out: dict[str, bytes] = {}
    for s in sensors:
        entities: list[tuple[str, str, str, str, str, str]] = []
        if s.kind in _HA_GAUGE:  # a Q- register has a counter only
            dc, unit, tpl = _HA_GAUGE[s.kind]
            entities.append(("gauge", gauge_topic(s.sensor_id), dc, unit, tpl, "measurement"))
        if s.kind in _HA_COUNTER:
            dc, unit, tpl = _HA_COUNTER[s.kind]
            entities.append(("counter", counter_topic(s.sensor_id), dc, unit, tpl, "total_increasing"))
        for what, topic, dc, unit, tpl, state_class in entities:
            uid = f"gridtap_{s.sensor_id}_{what}"
            q_sign = "Q+" if s.kind == "reactive" else "Q-"
            label = {"power": "power", "energy": "energy", "voltage": "voltage",
                     "volume_flow_rate": "flow", "reactive_power": "reactive power",
                     "reactive_energy": f"reactive energy {q_sign}"}.get(dc, "total")
            cfg: dict[str, Any] = {
                "name": f"{s.name} {label}", "unique_id": uid, "object_id": uid,
                "state_topic": topic, "value_template": tpl, "device_class": dc,
                "unit_of_measurement": unit, "state_class": state_class,
                "availability_topic": avail, "payload_available": "online",
                "payload_not_available": "offline", "device": device,
            }
            out[f"{prefix}/sensor/{uid}/config"] = json.dumps(cfg, separators=(",", ":"),
                                                               ensure_ascii=False).encode()
    return out


def diagnostic_topic(device_id: str) -> str:
    return f"/device/{device_id}/diagnostics"


def diagnostic_configs(device_id: str, keys: Iterable[str],
                       prefix: str = "homeassistant") -> dict[str, bytes]:
    """Home Assistant discovery for the daemon's counters: one diagnostic entity per key."""
    device = _device(device_id)
    out: dict[str, bytes] = {}
    for key in keys:
        if not re.fullmatch(r"[a-z0-9_]{1,40}", key):
            raise ValueError(f"mqtt: diagnostic name {key!r} must be 1-40 lowercase letters, digits or '_'")
        uid = f"gridtap_{device_id}_{key}"
        cfg = {"name": key.replace("_", " "), "unique_id": uid, "object_id": uid,
               "state_topic": diagnostic_topic(device_id), "value_template": f"{{{{ value_json.{key} }}}}",
               "state_class": "total_increasing", "entity_category": "diagnostic",
               "availability_topic": f"/device/{device_id}/status", "payload_available": "online",
               "payload_not_available": "offline", "device": device}
        out[f"{prefix}/sensor/{uid}/config"] = json.dumps(cfg, separators=(",", ":")).encode()
    return out


_REPLAY = "\x00replay"
_STOP = "\x00stop"


class MqttPublisher:
    """Publish gauges and counters of the configured sensors to one broker.

    ``gauge``/``counter`` never block on the network: they record the value
    and queue its topic; one worker thread publishes the *latest* value of
    each queued topic, and replays everything after each (re)connect. Because
    only that thread publishes, and every publish reads the newest value, the
    last message on each topic is always the newest value.
    """

    def __init__(self, host: str, port: int, device_id: str, sensors: Iterable[MqttSensor],
                 username: str | None = None, password: Secret | None = None,
                 client_id: str | None = None, discovery: bool = True,
                 discovery_prefix: str = "homeassistant", keepalive: int = 30,
                 reconnect_min: float = 1.0, reconnect_max: float = 30.0,
                 diagnostics: Iterable[str] = (),
                 tls: TlsFiles | None = None) -> None:
        why = check_topic_prefix(discovery_prefix)
        if why is not None:
            raise ValueError(f"mqtt: discovery prefix {discovery_prefix!r} {why}")
        if not _DEVICE.fullmatch(device_id):
            raise ValueError(f"mqtt: device id {device_id!r} must be 1-64 letters, digits, '-' or '_'")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"mqtt: port {port} out of range 1..65535")
        self.sensors = {s.sensor_id: s for s in sensors}
        self.device_id = device_id
        self.status_topic = f"/device/{device_id}/status"
        self.host, self.port = host, int(port)
        self.discovery = (discovery_configs(device_id, self.sensors.values(), discovery_prefix)
                          if discovery else {})
        if discovery:
            self.discovery.update(diagnostic_configs(device_id, diagnostics, discovery_prefix))
        self._latest: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._connected = threading.Event()
        #: messages handed to the broker connection / dropped while it was down
        self.published = 0
        self.dropped = 0
        #: successful connections so far (the first one plus reconnects)
        self.connects = 0
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"gridtap-{device_id}",
                                   protocol=paho.MQTTv311)
        if username is not None:
            self._client.username_pw_set(username, password.reveal().decode() if password else None)
        if tls is not None:
            self._client.tls_set_context(_tls_context(tls))
        self._client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=reconnect_min, max_delay=reconnect_max)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._commands: dict[str, Callable[[bytes], None]] = {}  # command topic -> handler
        self._keepalive = keepalive
        self._worker: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; keeps retrying until the broker answers."""
        if self._worker is not None:
            return
        self._worker = threading.Thread(target=self._work, name="mqtt-publisher", daemon=True)
        self._worker.start()
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive)
        self._client.loop_start()

    def stop(self) -> None:
        """Mark the device offline and disconnect."""
        if self._worker is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        self._worker.join(timeout=5)
        self._worker = None
        if self._connected.is_set():
            info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def flush(self) -> None:
        """Block until every queued topic has been handed to the connection."""
        self._queue.join()

    # -- callbacks (paho's network thread) -------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.error("mqtt: broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self.connects += 1
        self._connected.set()
        for topic in list(self._commands):
            client.subscribe(topic, qos=1)
        self._queue.put(_REPLAY)
        log.info("mqtt: connected to %s:%d", self.host, self.port)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stopping:
            log.warning("mqtt: lost broker %s:%d (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        handler = self._commands.get(msg.topic)
        if handler is None:
            return
        try:
            handler(bytes(msg.payload))
        except Exception:  # a bad command must not take paho's network thread down
            log.exception("mqtt: command on %s failed", msg.topic)

    # -- the worker ----------------------------------------------------------------------

    def _send(self, topic: str, data: bytes, qos: int) -> None:
        info = self._client.publish(topic, data, qos=qos, retain=True)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self.published += 1
        else:
            self.dropped += 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item == _STOP:
                    return
                if item == _REPLAY:
                    self._send(self.status_topic, b"online", 1)
                    for topic, cfg in self.discovery.items():
                        self._send(topic, cfg, 1)
                    with self._lock:
                        latest = list(self._latest.items())
                    for topic, data in latest:
                        self._send(topic, data, 0)
                    continue
                with self._lock:
                    self._dirty.discard(item)
                    data = self._latest[item]
                if self._connected.is_set():
                    self._send(item, data, 0)
                else:
                    self.dropped += 1
            except Exception:  # never let one bad publish stop the live values
                log.exception("mqtt: publishing %r failed", item)
            finally:
                self._queue.task_done()

    # -- publishing ------------------------------------------------------------------

    def _sensor(self, sensor_id: str) -> MqttSensor:
        s = self.sensors.get(sensor_id)
        if s is None:
            raise ValueError(f"mqtt: sensor {sensor_id!r} is not configured for MQTT")
        return s

    def _set(self, topic: str, data: bytes) -> None:
        with self._lock:
            self._latest[topic] = data
            if topic in self._dirty:
                return  # already queued: the worker will read this newer value
            self._dirty.add(topic)
        self._queue.put(topic)

    def add_discovery(self, configs: dict[str, bytes]) -> None:
        """More Home Assistant discovery configs (another part of gridtap's entities, e.g. the
        inverter controller's); published now if connected and after every reconnect."""
        self.discovery.update(configs)
        if self._connected.is_set():
            self._queue.put(_REPLAY)

    def on_command(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Call handler(payload) for every message on topic (subscribed on every connect)."""
        self._commands[topic] = handler
        if self._connected.is_set():
            self._client.subscribe(topic, qos=1)

    def publish(self, topic: str, data: bytes) -> None:
        """Publish a retained state (latest value wins, replayed after a reconnect)."""
        self._set(topic, data)

    def gauge(self, sensor_id: str, ts: int, value: int | float) -> None:
        """Publish a live value (W, L/day or V by the sensor's kind)."""
        s = self._sensor(sensor_id)
        self._set(gauge_topic(sensor_id), payload(ts, value, FLUKSO_UNITS[s.kind][0]))

    def diagnostics(self, values: dict[str, int]) -> None:
        """Publish the daemon's counters (one retained JSON object, read by the diagnostic entities)."""
        self._set(diagnostic_topic(self.device_id), json.dumps(values, separators=(",", ":")).encode())

    def counter(self, sensor_id: str, ts: int, value: int | float) -> None:
        """Publish a cumulative counter (Wh or L); the latest survives broker restarts."""
        s = self._sensor(sensor_id)
        unit = FLUKSO_UNITS[s.kind][1]
        if unit is None:
            raise ValueError(f"mqtt: sensor {sensor_id} is a {s.kind} sensor and has no counter")
        self._set(counter_topic(sensor_id), payload(ts, value, unit))


# -- the [mqtt] output ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    device_id: str | None = None  # default: this host's name
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's CAs
    cert_file: Path | None = None  # a client certificate (with key_file)
    key_file: Path | None = None


def device_name() -> str:
    name = re.sub(r"[^0-9A-Za-z_-]", "-", socket.gethostname())[:64]
    return name or "gridtap"


class MqttOutput:
    """[mqtt]: counters and gauges to the publisher, which owns its thread."""

    section = "mqtt"
    live = True  # subscribers get live values within 200 ms: the board is read promptly
    spooled = False

    @classmethod
    def parse(cls, sec: Section) -> MqttConfig:
        from gridtap.secretfile import readable_file, warn_if_exposed

        d = sec.data
        sec.keys({"host", "port", "discovery", "discovery_prefix", "username", "password_env",
                  "password_file", "device_id", "tls", "ca_file", "cert_file", "key_file"})
        dflt = MqttConfig()
        tls = sec.get("tls", bool, False)
        files: dict[str, Path | None] = {}
        for name, what in (("ca_file", "CA certificate"), ("cert_file", "client certificate"),
                           ("key_file", "client key"), ("password_file", "MQTT password file")):
            value = sec.get(name, str, None)
            if value is None:
                files[name] = None
                continue
            if name != "password_file" and not tls:
                raise sec.fail(name, "applies to TLS connections only: add tls = true")
            f = sec.file(value)
            why = readable_file(f, what)
            if why is not None:
                raise sec.fail(name, why)
            if name in ("key_file", "password_file"):
                warn_if_exposed(f, what)
            files[name] = f
        if (files["cert_file"] is None) != (files["key_file"] is None):
            raise sec.fail("cert_file" if files["cert_file"] is None else "key_file",
                           "a client certificate needs both cert_file and key_file")
        if files["password_file"] is not None and "password_env" in d:
            raise sec.fail("password_file", "give the password as password_file or password_env, not both")
        if (files["password_file"] is not None or "password_env" in d) and "username" not in d:
            raise sec.fail(None, "a password needs a username")
        return MqttConfig(
            host=sec.get("host", str, dflt.host,
                         lambda v: None if re.fullmatch(r"[0-9A-Za-z.:\-\[\]]{1,253}", v)
                         else "must be a host name or an IP address"),
            port=sec.get("port", int, 8883 if tls else dflt.port, in_range(1, 65535)),
            discovery=sec.get("discovery", bool, dflt.discovery),
            discovery_prefix=sec.get("discovery_prefix", str, dflt.discovery_prefix, check_topic_prefix),
            username=sec.get("username", str, None,
                             lambda v: None if v and v.isprintable() and len(v.encode()) <= 1024
                             else "must be 1..1024 bytes of printable text"),
            password_env=sec.get("password_env", str, None),
            password_file=files["password_file"],
            device_id=sec.get("device_id", str, None,
                              lambda v: None if re.match(r"^[0-9A-Za-z_-]{1,64}$", v)
                              else "must be 1..64 letters, digits, '-' or '_'"),
            tls=tls,
            ca_file=files["ca_file"],
            cert_file=files["cert_file"],
            key_file=files["key_file"],
        )

    def __init__(self, m: MqttConfig, ctx: OutputContext) -> None:
        from gridtap.secretfile import read_secret_line

        sensors = []
        #: CT sensor id -> the id its Vrms gauge is published under (FLM03 style: one id per quantity)
        self.voltage_ids: dict[str, str] = {}
        #: CT sensor id -> its Q+ series id, whose gauge topic carries the CT's reactive power
        self.reactive_ids: dict[str, str] = {}
        for s in ctx.cfg.all_sensors:  # board and virtual sensors (expression meters, wallboxes) alike
            kind = "water" if s.kind == "pulse" and s.unit == "litre" else "electricity"
            for sid, role in s.series:
                sensors.append(MqttSensor(sid, f"{s.name} export" if role == "export" else s.name, kind))
            if s.voltage_id:
                self.voltage_ids[s.id] = s.voltage_id
                sensors.append(MqttSensor(s.voltage_id, s.name, "voltage"))
            if s.kind == "ct" and s.index >= 0:  # a board CT (a virtual sensor has no channel)
                qpos, qneg = reactive_ids(s.id)
                self.reactive_ids[s.id] = qpos
                sensors.append(MqttSensor(qpos, s.name, "reactive"))
                sensors.append(MqttSensor(qneg, s.name, "reactive_energy"))
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
                diagnostics=ctx.diagnostics,
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

    def reactive_counter(self, series: str, t_ms: int, total_mvarh: int) -> None:
        self.pub.counter(series, t_ms // 1000, total_mvarh / 1000.0)

    def diagnostics(self, values: dict[str, int]) -> None:
        self.pub.diagnostics(values)

    def status(self) -> dict[str, Any]:
        """Live values are not queued: whether the broker is there and what was dropped meanwhile."""
        return {"connected": self.pub.connected, "published": self.pub.published, "dropped": self.pub.dropped}

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit == "var":
            qid = self.reactive_ids.get(sensor)
            if qid is not None:
                self.pub.gauge(qid, t, round(value, 3))
            return
        if unit != "V":
            self.pub.gauge(sensor, t, round(value, 3))
            return
        # Vrms has a topic of its own (a CT's power gauge is on the CT's id); without a
        # voltage_id the CT's voltage is not published
        vid = self.voltage_ids.get(sensor)
        if vid is not None:
            self.pub.gauge(vid, t, round(value, 3))
