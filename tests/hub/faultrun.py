"""Homes posting through faults, then every point counted: lost, doubled (tests and bench).

Real processes: a private PostgreSQL, ``gridtap hub serve`` and ``gridtap hub
mqtt`` as subprocesses, the hub's mosquitto and one home's mosquitto bridged
to it. HTTP homes post a minute of points per round on simulated time (10 s
steps, starting hours ago so no waiting); one home is offline for a day and
then replays its backlog. Faults, at fixed rounds: the hub killed with
SIGKILL (and restarted), PostgreSQL restarted, the hub's broker restarted,
the MQTT ingester killed with SIGKILL (and restarted).

A point is *lost* if generated and not stored; the energy of a sensor's
roll-ups must equal the counter's rise over the stored points (the energy
counted between points), so any interval counted twice shows as *doubled*.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import psycopg

from gridtap_hub import schema
from gridtap_hub.broker import home_bridge_conf, hub_conf
from gridtap_hub.cluster import PrivateCluster
from gridtap_hub.loadgen import STEP_S, FlmClient, Home, provision
from gridtap_sim.procs import stop_process
from tests.support.broker import free_port, wait_until


def wait_port(port: int, timeout: float = 20.0) -> bool:
    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    return wait_until(up, timeout)


def wait_bridge(port: int, timeout: float = 20.0) -> bool:
    """Until the home broker's bridge reports itself connected ($SYS/broker/connection/…/state = 1).

    Counters published before a bridge's very first connection are not queued for it.
    """
    up = threading.Event()
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("$SYS/broker/connection/+/state")
    c.on_message = lambda cl, u, m: up.set() if m.payload == b"1" else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        return up.wait(timeout)
    finally:
        c.loop_stop()
        c.disconnect()


def wait_log(path: Path, text: str, times: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text(errors="replace").count(text) >= times:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path.name}: {text!r} not seen {times} times")


class Proc:
    """A subprocess we start, kill -9 and start again; ``port`` (0: none) is waited for at start."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.argv, self.port, self.log = argv, port, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        if self.port and not wait_port(self.port):
            raise RuntimeError(f"{self.argv[:5]} did not listen on {self.port}; see {self.log}")
        return self

    def kill9(self) -> None:
        if self.p is not None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()
            self.p = None

    def stop(self) -> None:
        if self.p is not None:
            stop_process(self.p, 10)
            self.p = None


def gridtap(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridtap.cli", *args]


@dataclass
class Outcome:
    generated: int = 0
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    faults: list[str] = field(default_factory=list)
    mqtt_points: int = 0
    missing: dict[str, list[int]] = field(default_factory=dict)  # device -> timestamps never stored


def run(work: Path, http_homes: int = 20, rounds: int = 40, offline_s: int = 86400,
        mqtt_points: int = 120) -> Outcome:
    """The whole fault run in ``work``; returns what was lost and doubled."""
    work.mkdir(parents=True, exist_ok=True)
    me = pwd.getpwuid(os.geteuid()).pw_name
    out = Outcome()
    now = int(time.time())
    homes = [Home.new(1000 + i) for i in range(http_homes + 2)]
    offline, mqtt_home = homes[-2], homes[-1]
    online = homes[:http_homes]
    with PrivateCluster() as cl:  # its own directory under /tmp, which nobody may enter
        with psycopg.connect(cl.dsn, autocommit=True) as conn:
            schema.create(conn, now)
            provision(conn, homes, "fault")
        port, hub_mq, home_mq = free_port(), free_port(), free_port()
        for d in ("hubmq", "homemq"):
            (work / d).mkdir(exist_ok=True)
        (work / "hub.conf").write_text(hub_conf(hub_mq, work / "hubmq", user=me))
        (work / "home.conf").write_text(home_bridge_conf(home_mq, "127.0.0.1", hub_mq, mqtt_home.device, None,
                                                         work / "homemq", user=me, restart=(3, 4)))
        hub = Proc(gridtap("hub", "serve", "--dsn", cl.dsn, "--port", str(port)), port, work / "hub.log")
        ingester = Proc(gridtap("hub", "mqtt", "--dsn", cl.dsn, "--broker", f"127.0.0.1:{hub_mq}",
                                "--client-id", "fault-ingest"), 0, work / "ingest.log")
        hub_broker = Proc(["mosquitto", "-c", str(work / "hub.conf")], hub_mq, work / "hubmq.log")
        home_broker = Proc(["mosquitto", "-c", str(work / "home.conf")], home_mq, work / "homemq.log")
        procs = [hub_broker, home_broker, hub, ingester]
        for p in procs:
            p.start()
        wait_log(work / "ingest.log", "subscribed", 1)
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fault-home", protocol=paho.MQTTv311)
        pub.connect("127.0.0.1", home_mq)
        pub.loop_start()
        if not wait_bridge(home_mq):
            raise RuntimeError(f"the home's bridge did not connect to the hub's broker; see {work}")
        try:
            _rounds(out, cl, hub, ingester, hub_broker, pub, online, offline, mqtt_home, now, rounds,
                    offline_s, mqtt_points)
            for _ in range(30):  # drain: every home retries until nothing is pending
                upload_all(port, [*online, offline])
                if all(not s.pending for h in [*online, offline] for s in h.sensors):
                    break
                time.sleep(0.5)
            with psycopg.connect(cl.dsn, autocommit=True) as conn:
                _settle_mqtt(conn, mqtt_home)
                _count(conn, [*online, offline, mqtt_home], out)
        finally:
            pub.loop_stop()
            for p in reversed(procs):
                p.stop()
    return out


def _rounds(out: Outcome, cl: PrivateCluster, hub: Proc, ingester: Proc, hub_broker: Proc, pub: paho.Client,
            online: list[Home], offline: Home, mqtt_home: Home, now: int, rounds: int, offline_s: int,
            mqtt_points: int) -> None:
    start = now - rounds * 60 - 3600
    if offline_s:  # points queued before the run (a home offline): replayed at the end
        t = now - offline_s - 1800
        while t < now - 1800:
            t += STEP_S
            offline.advance(t)
    steps_per_round = 60 // STEP_S
    mqtt_every = max(1, rounds * steps_per_round // mqtt_points)
    mqtt_sent = 0
    for r in range(rounds):
        if r == rounds // 5:
            hub.kill9()
            out.faults.append("hub kill -9")
        if r == rounds // 5 + 2:
            hub.start()
        if r == 2 * rounds // 5:
            cl.restart()
            out.faults.append("postgresql restart")
        if r == 3 * rounds // 5:
            hub_broker.stop()
            out.faults.append("hub broker restart")
        if r == 3 * rounds // 5 + 1:
            hub_broker.start()
        if r == 4 * rounds // 5:
            ingester.kill9()
            out.faults.append("mqtt ingester kill -9")
        if r == 4 * rounds // 5 + 1:
            ingester.start()
        if r in (3 * rounds // 5 + 1, 4 * rounds // 5 + 1):
            # the ingester back on its shared subscription before the bridge (mqtt_ingest.py)
            wait_log(ingester.log, "subscribed", 2 if r == 3 * rounds // 5 + 1 else 3)
        for k in range(steps_per_round):
            ts = start + (r * steps_per_round + k + 1) * STEP_S
            for h in online:
                h.advance(ts)
            if (r * steps_per_round + k) % mqtt_every == 0 and mqtt_sent < mqtt_points:
                mqtt_home.advance(ts)
                mqtt_sent += 1
                for s in mqtt_home.sensors:
                    p = s.pending.pop()
                    pub.publish(f"/sensor/{s.id}/counter", json.dumps([p[0], p[1], "Wh"]), qos=1)
        upload_all(hub.port, online)
    if offline_s:
        out.faults.append(f"a home offline for {offline_s / 3600:g} h, then replaying")


def upload_all(port: int, homes: list[Home]) -> None:
    """Every home uploads at once, each on its own connection, as real homes would."""
    def one(h: Home) -> None:
        client = FlmClient("127.0.0.1", port, timeout=10)
        try:
            client.upload(h)
        finally:
            client.close()
    with ThreadPoolExecutor(max_workers=min(32, len(homes))) as pool:
        list(pool.map(one, homes))


def _settle_mqtt(conn: psycopg.Connection, home: Home, timeout: float = 60.0) -> None:
    want = len(home.sensors[0].generated)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        row = conn.execute("SELECT count(*) FROM measurement m JOIN sensor s ON s.sid = m.sid "
                           "WHERE s.id = %s", (home.sensors[0].id,)).fetchone()
        if row is not None and row[0] >= want:
            return
        time.sleep(0.5)


def _count(conn: psycopg.Connection, homes: list[Home], out: Outcome) -> None:
    for h in homes:
        for s in h.sensors:
            got = [(int(t), int(c)) for t, c in conn.execute(
                "SELECT m.ts, m.counter FROM measurement m JOIN sensor x ON x.sid = m.sid WHERE x.id = %s "
                "ORDER BY m.ts", (s.id,)).fetchall()]
            out.generated += len(s.generated)
            out.stored += len(got)
            missing = set(s.generated) - set(got)
            out.lost += len(missing)
            if missing:
                out.missing.setdefault(h.device[:8], []).extend(sorted(t for t, _ in missing))
            out.doubled += len(got) - len(set(got))
            if got:
                rise = got[-1][1] - got[0][1]
                row = conn.execute("SELECT coalesce(sum(r.wh), 0) FROM rollup_day r JOIN sensor x "
                                   "ON x.sid = r.sid WHERE x.id = %s", (s.id,)).fetchone()
                wh = float(row[0]) if row else 0.0
                step = max(rise / max(1, len(got) - 1), 1.0)
                if wh - rise > 0.01:  # energy counted twice, in units of the mean step between points
                    out.doubled += max(1, round((wh - rise) / step))
                elif rise - wh > 0.01:  # energy missing between stored points
                    out.lost += max(1, round((rise - wh) / step))
    out.mqtt_points = len(homes[-1].sensors[0].generated) * len(homes[-1].sensors)
