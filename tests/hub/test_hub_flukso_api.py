"""The hub's Flukso server API: gridtap's own uploader posts to it unchanged; bad input is refused
with the Flukso server's answers and stores nothing."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import psycopg
import pytest

from gridtap.outputs.flukso import FluksoUploader, Secret
from gridtap.store.spool import Spool
from gridtap_hub import schema
from gridtap_hub.server import HubServer
from tests.hub.kit import get, make_home, measurements, post, rollup_wh, running_hub, stored
from tests.support.broker import wait_until

NOW = int(time.time())
T0 = NOW - 3 * 3600


def test_gridtap_uploader_to_hub_then_read_api(hub_dsn: str, hub_conn: psycopg.Connection,
                                               tmp_path: Path) -> None:
    home = make_home(hub_conn, "icarus75", n_sensors=2)
    with Spool(tmp_path / "spool.db", ["flukso"], aging=()) as spool, \
            running_hub(hub_dsn) as hub:
        pts = {s: [(T0 + 10 * i, 1000 + 3 * i + k) for i in range(360)] for k, s in enumerate(home.sensors)}
        for s, series in pts.items():
            for ts, c in series:
                spool.add(s, ts, c)
        spool.commit()
        up = FluksoUploader(spool, hub.url, Secret(home.key), home.sensors, batch=100)
        report = up.upload()
        assert report.ok, report.error
        assert report.cleared == 720 and report.requests == 8
        for s, series in pts.items():
            assert stored(hub_conn, s) == series
            # the energy between first and last point, exactly once in every roll-up
            for table in ("rollup_minute", "rollup_q15", "rollup_day"):
                assert rollup_wh(hub_conn, s, table) == pytest.approx(3 * 359)
        # the read API: 3 Wh per 10 s is 1080 W, in every complete minute of the hour
        st, body = get(hub.port, f"/sensor/{home.sensors[0]}?version=1.0&interval=day&resolution=minute"
                                 f"&unit=watt&token={home.token}")
        assert st == 200
        vals = [v for t, v in json.loads(body) if v != "nan" and T0 + 60 <= t < T0 + 3540]
        assert len(vals) == 58 and all(v == pytest.approx(1080) for v in vals)
        st, body = get(hub.port, f"/sensor/{home.sensors[0]}?version=1.0&interval=hour&unit=kwhperyear"
                                 f"&token={home.token}&callback=cb")
        assert st == 200 and body.startswith(b"cb([[")


def test_replay_backwards_reset_and_rates(hub_dsn: str, hub_conn: psycopg.Connection) -> None:
    home = make_home(hub_conn, "jan")
    s, key = home.sensors[0], home.key
    with running_hub(hub_dsn) as hub:
        first = measurements([(T0, 5000), (T0 + 10, 5010)])
        assert post(hub.port, s, first, key)[:2] == (200, b'{"response": "ok"}')
        # the same request again (a lost reply, or a replay): rrdupdate's refusal, nothing doubled
        st, body, _ = post(hub.port, s, first, key)
        assert st == 200 and json.loads(body)["response"] == (
            f"ERROR: illegal attempt to update using time {T0} when last update time is {T0 + 10} "
            "(minimum one second step)")
        # a counter going backwards (not to zero): refused, and the whole request stores nothing
        st, body, _ = post(hub.port, s, measurements([(T0 + 20, 5020), (T0 + 30, 4000)]), key)
        assert st == 200 and json.loads(body)["response"].startswith("ERROR: counter went backwards")
        assert stored(hub_conn, s) == [(T0, 5000), (T0 + 10, 5010)]
        # a reset (a reflashed meter counts from zero again): its energy counts, none goes negative
        assert post(hub.port, s, measurements([(T0 + 20, 5020), (T0 + 30, 4)]), key)[0] == 200
        assert rollup_wh(hub_conn, s, "rollup_day") == pytest.approx(10 + 10 + 4)
        row = hub_conn.execute("SELECT energy, resets FROM sensor WHERE id = %s", (s,)).fetchone()
        assert row == (24, 1)
        # faster than 72 kW, or from the future: refused
        st, body, _ = post(hub.port, s, measurements([(T0 + 40, 4 + 201)]), key)
        assert "above 72 kW" in json.loads(body)["response"]
        st, body, _ = post(hub.port, s, measurements([(NOW + 3600, 300)]), key)
        assert "in the future" in json.loads(body)["response"]
        assert len(stored(hub_conn, s)) == 4
        assert hub.refused["ERROR"] >= 3


def test_bad_requests_get_the_flukso_servers_answers(hub_dsn: str, hub_conn: psycopg.Connection) -> None:
    home = make_home(hub_conn, "ludo")
    s, key = home.sensors[0], home.key
    good = measurements([(T0, 1), (T0 + 10, 2)])
    with running_hub(hub_dsn) as hub:
        assert post(hub.port, s, good, key, version="2.0")[0] == 400
        assert post(hub.port, s.upper(), good, key)[:2] == (400, b"Malformed request")
        assert post(hub.port, s[:31], good, key)[0] == 400
        st, _, hdrs = post(hub.port, s, good, "f" * 32)
        assert st == 401 and hdrs["WWW-Authenticate"] == "Incorrect digest"
        st, _, hdrs = post(hub.port, "ab" * 16, good, key)
        assert st == 401 and hdrs["WWW-Authenticate"] == "No proper provisioning for this sensor"
        assert post(hub.port, s, b"[1,2", key)[0] == 500
        assert post(hub.port, s, b'{"measurements": [[1.5, 2]]}', key)[0] == 500
        assert post(hub.port, s, b'{"measurements": [], "config": {}}', key)[0] == 500
        # 10 MB: refused before it is read (413, connection closed), the hub still answers after
        with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
            sock.sendall(f"POST /sensor/{s} HTTP/1.1\r\nHost: x\r\nX-Version: 1.0\r\nX-Digest: {'0' * 40}\r\n"
                         f"Content-Length: {10 * 1024 * 1024}\r\n\r\n".encode() + b"x" * 65536)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413")
        assert stored(hub_conn, s) == []
        assert hub.refused["Incorrect digest"] == 1 and hub.refused["too large"] == 1
        # config is stored (204), and the good request still goes through
        assert post(hub.port, s, b'{"config": {"class": "analog", "enable": 1}}', key)[0] == 204
        assert post(hub.port, s, good, key)[0] == 200
        assert stored(hub_conn, s) == [(T0, 1), (T0 + 10, 2)]


def test_read_api_tokens_and_sharing(hub_dsn: str, hub_conn: psycopg.Connection) -> None:
    alice = make_home(hub_conn, "alice", shares=False)
    bob = make_home(hub_conn, "bob", shares=True)
    with running_hub(hub_dsn) as hub:
        q = "?version=1.0&interval=hour&unit=watt&token="
        assert get(hub.port, f"/sensor/{alice.sensors[0]}{q}{alice.token}")[0] == 200
        assert get(hub.port, f"/sensor/{alice.sensors[0]}{q}{bob.token}")[0] == 403  # alice does not share
        assert get(hub.port, f"/sensor/{bob.sensors[0]}{q}{alice.token}")[0] == 200  # bob does
        assert get(hub.port, f"/sensor/{bob.sensors[0]}{q}{'0' * 32}")[0] == 403
        assert get(hub.port, f"/sensor/{bob.sensors[0]}?interval=hour&unit=watt&token={bob.token}")[0] == 400
        assert get(hub.port, f"/sensor/{bob.sensors[0]}{q}{bob.token}".replace("hour", "fortnight"))[0] == 400
        st, body = get(hub.port, f"/sensor/{bob.sensors[0]}{q}{bob.token}")
        assert st == 200 and len(json.loads(body)) == 60  # an hour of minutes, "nan" where no data


def test_partitions_made_ahead_and_dropped_past_retention(hub_conn: psycopg.Connection) -> None:
    later = time.time() + 20 * 86400
    done = schema.maintain(hub_conn, later)
    assert done["created"] > 0 and done["dropped"] > 0
    raw = schema.partitions(hub_conn, "measurement")
    assert raw[0][2] > later - schema.RAW.keep and raw[-1][1] > later + schema.RAW.span


def test_year_of_days_for_one_sensor_reads_the_primary_key(hub_conn: psycopg.Connection) -> None:
    """The one-year daily query touches only its sensor's rows, through the (sid, t) index."""
    hub_conn.execute("SET enable_seqscan = off")  # what the planner does once the table is big
    plan = "\n".join(r[0] for r in hub_conn.execute(
        "EXPLAIN SELECT t, secs, wh FROM rollup_day WHERE sid = 7 AND t >= %s AND t <= %s",
        (NOW - 365 * 86400, NOW)).fetchall())
    assert "Index" in plan and "rollup_day" in plan and "Seq Scan" not in plan, plan


def test_directory_read_in_one_query_and_a_deleted_sensor_refused(hub_dsn: str,
                                                                  hub_conn: psycopg.Connection) -> None:
    homes = [make_home(hub_conn, f"dir{i}", n_sensors=3) for i in range(3)]
    with running_hub(hub_dsn) as hub:
        assert wait_until(lambda: hub.directory.queries >= 1)  # the preload at start
        for h in homes:
            for k, s in enumerate(h.sensors):
                assert post(hub.port, s, measurements([(T0 + k, 1)]), h.key)[0] == 200
        assert hub.directory.queries == 1  # nine sensors' POSTs, no query per POST
        # a sensor deleted while cached: refused as unprovisioned, not a failed batch for everyone
        gone = homes[0].sensors[0]
        hub_conn.execute("DELETE FROM sensor WHERE id = %s", (gone,))
        st, _, hdrs = post(hub.port, gone, measurements([(T0 + 10, 2)]), homes[0].key)
        assert st == 401 and hdrs["WWW-Authenticate"] == "No proper provisioning for this sensor"
        assert post(hub.port, homes[1].sensors[0], measurements([(T0 + 10, 2)]), homes[1].key)[0] == 200


def test_a_burst_of_connections_waits_in_the_listen_queue(hub_dsn: str) -> None:
    """Many Fluksometers connecting while the hub does not accept (busy) are queued, not reset."""
    hub = HubServer(hub_dsn, maintain_every=3600, usage_every=3600)  # listening, not yet accepting
    socks = []
    try:
        for _ in range(200):  # with socketserver's backlog of 5 the seventh connect() timed out
            socks.append(socket.create_connection(("127.0.0.1", hub.port), timeout=3))
        hub.start()
        for s in socks:
            s.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        deadline = time.monotonic() + 20  # all answered within it (a dropped one never is)
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            assert s.recv(12) == b"HTTP/1.1 200"
    finally:
        for s in socks:
            s.close()
        hub.stop()
