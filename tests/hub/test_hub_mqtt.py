"""MQTT ingest: a home's mosquitto bridged to the hub's, two ingesters on one shared subscription,
PUBACK after commit; redelivered and out-of-order points stored once."""

from __future__ import annotations

import json
import os
import pwd
import time
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest

from gridtap_hub.broker import home_bridge_conf, hub_conf
from gridtap_hub.ingest import Ingest, Request
from gridtap_hub.mqtt_ingest import MqttIngester, parse_payload, wait_connected
from tests.hub.faultrun import Proc
from tests.hub.kit import make_home, rollup_wh, stored
from tests.support.broker import free_port, mosquitto_exe, wait_until

NOW = int(time.time())
T0 = NOW - 2 * 3600


def brokers(tmp_path: Path, device: str) -> tuple[Proc, Proc]:
    hp, lp = free_port(), free_port()
    (tmp_path / "hub").mkdir()
    (tmp_path / "home").mkdir()
    me = pwd.getpwuid(os.geteuid()).pw_name  # the test's own user owns the data directories
    (tmp_path / "hub.conf").write_text(hub_conf(hp, tmp_path / "hub", user=me))
    (tmp_path / "home.conf").write_text(home_bridge_conf(lp, "127.0.0.1", hp, device, None, tmp_path / "home",
                                                         user=me))
    return (Proc([mosquitto_exe(), "-c", str(tmp_path / "hub.conf")], hp, tmp_path / "hub.log"),
            Proc([mosquitto_exe(), "-c", str(tmp_path / "home.conf")], lp, tmp_path / "home.log"))


def publisher(port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="home-meter", protocol=paho.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_payloads() -> None:
    assert parse_payload(b'[1700000000, 1234.567, "Wh"]') == [(1700000000, 1234)]
    assert parse_payload(b'{"measurements": [[1, 2], [3, 4]]}') == [(1, 2), (3, 4)]
    assert parse_payload(b'[1700000000, 12, "W"]') == "unit 'W' is not a counter's (Wh or L)"
    assert isinstance(parse_payload(b"[1, NaN]"), str) and isinstance(parse_payload(b"{]"), str)


def test_late_and_repeated_points_are_stored_once(hub_conn: psycopg.Connection) -> None:
    home = make_home(hub_conn, "ooo")
    sid = hub_conn.execute("SELECT sid FROM sensor WHERE id = %s", (home.sensors[0],)).fetchone()[0]  # type: ignore[index]
    pts = [(T0 + 10 * i, 100 + 7 * i) for i in range(60)]
    order = pts[30:] + pts[:30][::-1] + pts[10:20]  # the later half first, then the rest backwards, repeats
    ing = Ingest(hub_conn)
    for p in order:
        ing.apply([Request(sid, [p], strict=False)])
    assert stored(hub_conn, home.sensors[0]) == pts
    for table in ("rollup_minute", "rollup_q15", "rollup_day"):
        assert rollup_wh(hub_conn, home.sensors[0], table) == pytest.approx(7 * 59)
    secs = hub_conn.execute("SELECT sum(secs) FROM rollup_minute").fetchone()[0]  # type: ignore[index]
    assert secs == 590 and ing.counts["duplicates"] == 10


def test_bridge_shared_subscription_and_broker_restart(hub_dsn: str, hub_conn: psycopg.Connection,
                                                       tmp_path: Path) -> None:
    home = make_home(hub_conn, "bridged", n_sensors=2)
    hub_broker, home_broker = brokers(tmp_path, home.device)
    hub_broker.start()
    home_broker.start()
    ings = [MqttIngester(hub_dsn, port=hub_broker.port, client_id=f"ing-{i}").start() for i in range(2)]
    pub = publisher(home_broker.port)
    try:
        assert all(wait_connected(i) for i in ings)
        pts = {s: [(T0 + 10 * i, 500 + 5 * i) for i in range(120)] for s in home.sensors}

        def send(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                for s in home.sensors:
                    ts, c = pts[s][i]
                    pub.publish(f"/sensor/{s}/counter", json.dumps([ts, c, "Wh"]), qos=1).wait_for_publish(5)

        send(0, 60)
        # the hub's broker restarts (clean stop, persisted sessions): the home queues, then forwards
        hub_broker.stop()
        send(60, 90)
        hub_broker.start()
        send(90, 120)
        # a bad message is refused and acknowledged, and does not block what follows
        pub.publish(f"/sensor/{home.sensors[0]}/counter", b"not json", qos=1).wait_for_publish(5)
        assert wait_until(lambda: all(len(stored(hub_conn, s)) == 120 for s in home.sensors), timeout=30)
        for s in home.sensors:
            assert stored(hub_conn, s) == pts[s]
            assert rollup_wh(hub_conn, s, "rollup_day") == pytest.approx(5 * 119)
        assert wait_until(lambda: sum(i.refused["payload is not JSON"] for i in ings) == 1)
        assert all(i.acked > 0 for i in ings)  # the shared subscription spread the load
    finally:
        pub.loop_stop()
        for i in ings:
            i.stop()
        home_broker.stop()
        hub_broker.stop()
