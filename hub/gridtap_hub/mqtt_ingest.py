"""`gridtap hub mqtt`: counters from the hub's mosquitto into PostgreSQL, acknowledged after commit.

Each home's mosquitto bridges its Flukso counter topics out to the hub's
broker at QoS 1 with a persistent session (docs/hub.md "MQTT"), under the
device's id, which the hub broker's ACL ties to the bridge's login::

    hub/<device id>/sensor/<sensor id>/counter   [ts, counter, "Wh"]   (Flukso §3.3)
                                                  or {"measurements": [[ts, counter], ...]}

Ingesters subscribe with an MQTT v5 shared subscription
(``$share/<group>/hub/+/sensor/+/counter``), so the broker spreads messages
over as many ingesters as run, on any machine. paho's manual acknowledgement
holds each PUBACK until the committer has committed the message's points; a
message whose batch failed is retried until it is stored, and one that
crashes with the ingester is still unacknowledged in its persistent session,
so the broker sends it again. Redelivered and out-of-order points are handled
by the ingest's idempotent rule (ingest.py): stored once, energy re-spread.

A message that can never be stored (bad topic or payload, unknown sensor, a
sensor of another device, a refused counter) is logged, counted and
acknowledged: holding it would only block the session.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gridtap.fluksoapi import is_sensor_id, pairs
from gridtap_hub.committer import Committer
from gridtap_hub.db import Pool
from gridtap_hub.directory import Directory
from gridtap_hub.ingest import Request

log = logging.getLogger(__name__)

PREFIX = "hub"
TOPIC = re.compile(PREFIX + r"/([0-9a-f]{32})/sensor/([0-9a-f]{32})/counter")
SESSION_EXPIRY_S = 7 * 86400
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may have out to one ingester
RETRY_S = 2.0


def parse_payload(payload: bytes) -> list[tuple[int, int]] | str:
    """The points of a counter message, or why it is refused.

    Flukso's ``[ts, counter, unit]`` (counter may carry decimals: FLM03 sends
    three; it is stored rounded down, which keeps it cumulative) or a batch
    ``{"measurements": [[ts, counter], ...]}`` as the HTTP API takes.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "payload is not JSON"
    if isinstance(doc, dict):
        got = pairs(doc.get("measurements"))
        return got if isinstance(got, str) or got else "no integer counters"
    if (isinstance(doc, list) and len(doc) in (2, 3) and isinstance(doc[0], int)
            and not isinstance(doc[0], bool) and isinstance(doc[1], int | float)
            and not isinstance(doc[1], bool) and math.isfinite(doc[1])):
        if len(doc) == 3 and doc[2] not in ("Wh", "L"):
            return f"unit {doc[2]!r} is not a counter's (Wh or L)"
        return [(doc[0], math.floor(doc[1]))]
    return "payload is neither [ts, counter, unit] nor {\"measurements\": [...]}"


class MqttIngester:
    """One paho client (MQTT v5, persistent session, manual acks) feeding one committer."""

    def __init__(self, dsn: str, host: str = "127.0.0.1", port: int = 1883,
                 client_id: str = "gridtap-hub-ingest-1", group: str = "hub",
                 username: str | None = None, password: str | None = None) -> None:
        self.host, self.port, self.group = host, port, group
        self.pool = Pool(dsn, 2)
        self.directory = Directory(self.pool)
        self.committer = Committer(dsn)
        self.refused: Counter[str] = Counter()
        self.acked = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, manual_ack=True)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        # Back within a second of the broker: mosquitto 2.0.11 does not restore shared subscriptions
        # from its persistence, so after a broker restart messages bridged in before an ingester has
        # subscribed again would be dropped. Ingesters retry every second; homes' bridges wait >= 10 s
        # (broker.home_bridge_conf), so the ingesters are subscribed first.
        self.client.reconnect_delay_set(1, 1)
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()

    def start(self) -> MqttIngester:
        self.committer.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        self.committer.stop()
        self.pool.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.warning("hub mqtt: connect refused: %s", reason)
            return
        client.subscribe(f"$share/{self.group}/{PREFIX}/+/sensor/+/counter", qos=1)
        self.connected.set()
        log.info("hub mqtt: connected (session present: %s)", flags.session_present)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self.subscribed.set()
        log.info("hub mqtt: subscribed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("hub mqtt: disconnected (%s); reconnecting", reason)

    def _refuse(self, msg: mqtt.MQTTMessage, why: str) -> None:
        with self._lock:
            self.refused[why.split(" at time")[0][:60]] += 1
        log.warning("hub mqtt: refused %s: %s", msg.topic[:120], why[:200])
        self._ack(msg)

    def _ack(self, msg: mqtt.MQTTMessage) -> None:
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)
        with self._lock:
            self.acked += 1

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        m = TOPIC.fullmatch(msg.topic)
        if m is None or not is_sensor_id(m.group(2)):
            self._refuse(msg, "topic is not hub/<device>/sensor/<sensor>/counter")
            return
        points = parse_payload(bytes(msg.payload))
        if isinstance(points, str):
            self._refuse(msg, points)
            return
        try:
            info = self.directory.lookup(m.group(2))
        except Exception as exc:  # database down: not acknowledged, so the broker keeps it
            log.warning("hub mqtt: directory unavailable (%s); retrying", str(exc)[:120])
            self._retry(msg, None, points)
            return
        if info is None:
            self._refuse(msg, f"sensor {m.group(2)} is not provisioned")
            return
        if info.device != m.group(1):
            self._refuse(msg, f"sensor {m.group(2)} is not on device {m.group(1)}")
            return
        self._submit(msg, Request(info.sid, points, strict=False))

    def _submit(self, msg: mqtt.MQTTMessage, req: Request) -> None:
        def done(r: Request, committed: bool) -> None:
            if not committed:
                self._retry(msg, r, r.points)
            elif r.error is not None:
                self._refuse(msg, r.error)
            else:
                self._ack(msg)
        self.committer.submit(req, done)

    def _retry(self, msg: mqtt.MQTTMessage, req: Request | None, points: list[tuple[int, int]]) -> None:
        if self._stop.is_set():
            return  # left unacknowledged: the broker redelivers it to the next session

        def again() -> None:
            if req is None:
                self._on_message(self.client, None, msg)
            else:
                self._submit(msg, req)
        t = threading.Timer(RETRY_S, again)
        t.daemon = True
        t.start()


def wait_connected(ing: MqttIngester, timeout: float = 10.0) -> bool:
    """Until the ingester is connected and its subscription acknowledged."""
    return ing.subscribed.wait(timeout)
