"""Shared pieces of the hub tests: a running hub, users with claimed devices, signed POSTs."""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from gridtap.fluksoapi import digest
from gridtap_hub import accounts
from gridtap_hub.server import HubServer

PASSWORD = "correct horse battery"


@dataclass
class Home:
    user: str
    uid: int
    token: str
    device: str
    key: str
    sensors: list[str]


def make_home(conn: psycopg.Connection, user: str, n_sensors: int = 1, shares: bool = True,
              size_band: int = 2, has_pv: bool = False) -> Home:
    uid = accounts.add_user(conn, user, PASSWORD, size_band=size_band, has_pv=has_pv, shares=shares)
    device, key = secrets.token_hex(16), secrets.token_hex(16)
    sensors = [secrets.token_hex(16) for _ in range(n_sensors)]
    functions = ["main"] + ["solar"] * (n_sensors - 1)
    accounts.claim(conn, uid, device, key, list(zip(sensors, functions, strict=True)))
    row = conn.execute("SELECT token FROM hub_user WHERE id = %s", (uid,)).fetchone()
    assert row is not None
    return Home(user, uid, str(row[0]), device, key, sensors)


@contextmanager
def running_hub(dsn: str, **kw: object) -> Iterator[HubServer]:
    hub = HubServer(dsn, maintain_every=3600, usage_every=3600, **kw)  # type: ignore[arg-type]
    with hub:
        yield hub


def post(port: int, sensor: str, body: bytes, key: str, version: str = "1.0",
         sig: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", f"/sensor/{sensor}", body=body,
                     headers={"X-Version": version, "X-Digest": sig if sig is not None else digest(key, body),
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def measurements(points: list[tuple[int, int]]) -> bytes:
    return json.dumps({"measurements": [list(p) for p in points]}).encode()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def stored(conn: psycopg.Connection, sensor: str) -> list[tuple[int, int]]:
    return [(int(t), int(c)) for t, c in conn.execute(
        "SELECT m.ts, m.counter FROM measurement m JOIN sensor s ON s.sid = m.sid WHERE s.id = %s "
        "ORDER BY m.ts", (sensor,)).fetchall()]


def rollup_wh(conn: psycopg.Connection, sensor: str, table: str) -> float:
    row = conn.execute(f"SELECT coalesce(sum(r.wh), 0) FROM {table} r JOIN sensor s ON s.sid = r.sid "
                       "WHERE s.id = %s", (sensor,)).fetchone()
    assert row is not None
    return float(row[0])
