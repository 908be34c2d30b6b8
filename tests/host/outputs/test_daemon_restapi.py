"""The REST API against the Flukso contract, RRD contents through the rrdtool CLI, and hostile clients."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap.store.rrd import STEP
from tests.support.daemon import EXP, IMP, IMP2, PULSE, REAL_RRDTOOL, WATER, Rig, config_text, running_daemon
from tests.support.fakeboard import FakeBoard


@pytest.fixture
def rig(short_tmp: Path) -> Iterator[Rig]:
    """The daemon with JSONP switched on (it is off by default: test_daemon_restapi_exposure)."""
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state").replace('bind = "127.0.0.1"\n',
                                                                 'bind = "127.0.0.1"\njsonp = true\n')
    with running_daemon(board, text, short_tmp) as r:
        yield r


def get(rig: Rig, path: str) -> tuple[int, str, str]:
    assert rig.daemon.api is not None
    conn = http.client.HTTPConnection("127.0.0.1", rig.daemon.api.port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", body


def q(sensor: str, **params: str) -> str:
    base = {"version": "1.0", "interval": "minute", "unit": "watt"}
    base.update(params)
    return f"/sensor/{sensor}?" + "&".join(f"{k}={v}" for k, v in base.items() if v != "-")


def feed_hour(rig: Rig, end: int) -> None:
    """An hour at 1800 W import on ct 0 (10 s tuples), 720 W on ct 1, one pulse a minute, 1 L/min water."""
    b = rig.board
    for t in range(end - 3600, end + 1, 10):
        b.step(
            t,
            power_w=[1800.0, 720.0],
            seconds=10,
            gauges=False,
            pulses=[1 if t % 60 == 0 else 0, 1 if t % 60 == 0 else 0],
        )
    assert b.wait_acked(30)
    rig.wait_rrd(IMP, end - 10)


def test_minute_interval_is_the_flm_answer(rig: Rig) -> None:
    now = int(time.time())
    for t in range(now - 20, now + 1):
        rig.board.step(t, power_w=[-1500.0, 250.0])
    assert rig.board.wait_acked()
    rig.wait(lambda: rig.daemon.live.window(IMP2, now)[-1][1] is not None)
    status, ctype, body = get(rig, q(IMP2))
    assert status == 200 and ctype == "application/json"
    points = json.loads(body)
    assert 59 <= len(points) <= 61
    ts = [p[0] for p in points]
    assert ts == list(range(ts[0], ts[0] + len(ts))) and abs(ts[-1] - now) <= 2
    values = {p[0]: p[1] for p in points}
    assert values[now - 10] == 250 and values[now - 40] == "nan"
    # signed power: the export series shows the negative part, the import series zero
    exp_points = dict((p[0], p[1]) for p in json.loads(get(rig, q(EXP))[2]))
    imp_points = dict((p[0], p[1]) for p in json.loads(get(rig, q(IMP))[2]))
    assert exp_points[now - 5] == 1500 and imp_points[now - 5] == 0
    # JSONP, also under the deprecated name
    status, ctype, body = get(rig, q(IMP2, callback="show"))
    assert status == 200 and body.startswith("show([[") and body.endswith("]);")
    assert ctype == "application/javascript"
    assert get(rig, q(IMP2, jsonp_callback="cb"))[2].startswith("cb([[")
    # kwhperyear of 250 W is 2190 kWh/yr; eurperyear at 0.25/kWh is 547.5
    kwh = dict((p[0], p[1]) for p in json.loads(get(rig, q(IMP2, unit="kwhperyear"))[2]))
    eur = dict((p[0], p[1]) for p in json.loads(get(rig, q(IMP2, unit="eurperyear"))[2]))
    assert kwh[now - 10] == 2190 and eur[now - 10] in (547, 548)


def test_pulse_sensor_minute_power_from_counts(rig: Rig) -> None:
    now = int(time.time())
    for t in range(now - 30, now + 1, 10):
        rig.board.step(t, pulses=[1, 1], seconds=10)  # 1 Wh per 10 s = 360 W; 1 L per 10 s
    assert rig.board.wait_acked()
    rig.wait(lambda: rig.daemon.live.has(PULSE))
    values = dict((p[0], p[1]) for p in json.loads(get(rig, q(PULSE))[2]))
    assert values[now - 5] == 360
    water = dict((p[0], p[1]) for p in json.loads(get(rig, q(WATER, unit="lperday"))[2]))
    assert water[now - 5] == 8640
    assert get(rig, q(WATER, unit="lpermin"))[0] == 200


def test_no_data_yet_is_an_empty_list(rig: Rig) -> None:
    assert get(rig, q(IMP2)) == (200, "application/json", "[]")


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (q(IMP, version="-"), 400, "version"),
        (q(IMP, interval="-"), 400, "interval is required"),
        (q(IMP, unit="-"), 400, "unit"),
        (q(IMP, version="2.0"), 400, "unsupported version"),
        (q(IMP, interval="fortnight"), 400, "unknown interval"),
        (q(IMP, unit="horsepower"), 400, "unknown unit"),
        (q(IMP, unit="lperday"), 400, "electricity sensor"),
        (q(WATER, unit="watt"), 400, "water/gas sensor"),
        (q(IMP, callback="alert(1)"), 400, "callback"),
        (q(IMP, token="x"), 400, "unknown parameter 'token'"),
        (q(IMP) + "&unit=watt", 400, "given twice"),
        (q(IMP, interval="hour", resolution="second"), 400, "unknown resolution"),
        (q(IMP, interval="year", resolution="minute"), 400, "too long for resolution"),
        ("/sensor/" + IMP + "?version=1.0&interval=minute&unit=watt&%zz", 400, "malformed"),
        ("/sensor/" + "0" * 32 + "?version=1.0&interval=minute&unit=watt", 404, "no sensor"),
        ("/sensor/XYZ?version=1.0&interval=minute&unit=watt", 404, "32 lowercase hex"),
        ("/nothing-here", 404, "not found"),  # "/" is the web page
    ],
)
def test_bad_requests_get_a_reason(rig: Rig, path: str, status: int, words: str) -> None:
    got, ctype, body = get(rig, path)
    assert got == status, body
    assert words in body and ctype.startswith("text/plain")


def test_rrd_contents_and_hour_interval(rig: Rig) -> None:
    end = int(time.time()) // 60 * 60
    feed_hour(rig, end)
    rrd = rig.daemon.rrd
    # what the API serves comes out of the RRD, which the rrdtool CLI can read
    status, _, body = get(rig, q(IMP, interval="hour"))
    assert status == 200
    points = json.loads(body)
    assert len(points) == 60 and all(p[0] % 60 == 0 for p in points)
    full = [p[1] for p in points[5:-2]]
    assert full == [1800] * len(full)
    assert all(p[1] == 0 for p in json.loads(get(rig, q(EXP, interval="hour"))[2])[5:-2])
    assert [p[1] for p in json.loads(get(rig, q(IMP2, interval="hour"))[2])[5:-2]] == [720] * len(full)
    per_min = [p[1] for p in json.loads(get(rig, q(PULSE, interval="hour"))[2])[5:-2]]
    assert per_min == [60] * len(full)  # 1 Wh a minute is 60 W
    # straight from rrdtool: 1800 W = 500 mWh/s in the 10 s and 1 min RRAs
    for res in (STEP, 60):
        out = subprocess.run(
            [
                "rrdtool",
                "fetch",
                str(rrd.path(IMP)),
                "AVERAGE",
                "-r",
                str(res),
                "-s",
                str(end - 1800),
                "-e",
                str(end - 600),
                *rig.read_args(IMP),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        vals = [float(line.split()[1]) for line in out.splitlines() if ":" in line and "nan" not in line]
        assert vals and all(abs(v - 500.0) < 1e-6 for v in vals), out[:300]
    info = subprocess.run(  # the file's layout, by today's rrdtool (1.0's `info` prints less)
        [REAL_RRDTOOL, "info", str(rrd.path(EXP))], capture_output=True, text=True, check=True
    ).stdout
    assert 'ds[counter].type = "DERIVE"' in info and "ds[counter].min = 0" in info
    assert f"step = {STEP}" in info
    rras = {
        (line.split("=")[1].strip().strip('"')) for line in info.splitlines() if line.endswith('.cf = "MAX"')
    }
    assert rras == {"MAX"}
    rows = {int(line.split("=")[1]) for line in info.splitlines() if ".rows = " in line}
    assert {360, 1440, 672, 365, 520} <= rows
    # xport of the energy over the hour equals what was metered: 1.8 kWh
    xp = subprocess.run(
        [
            REAL_RRDTOOL,
            "xport",
            "--json",
            "-s",
            str(end - 3600),
            "-e",
            str(end),
            "--step",
            "60",
            f"DEF:v={rrd.path(IMP)}:counter:AVERAGE",
            "VDEF:t=v,TOTAL",
            "PRINT:t:%.1lf",
            "XPORT:v",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert xp


def test_hostile_clients_cannot_stall_the_api(rig: Rig) -> None:
    assert rig.daemon.api is not None
    port = rig.daemon.api.port
    # say nothing at all (from another address: one address holds at most MAX_PER_CLIENT slots)
    idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.3", 0)) for _ in range(3)]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /" + b"A" * 10000 + b" HTTP/1.0\r\n\r\n")
        assert b" 414 " in s.recv(200)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x00\xff\x16\x03\x01garbage\r\n\r\n")
        assert s.recv(200).startswith(b"400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /sensor/" + IMP.encode() + b" HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
        assert b" 405 " in s.recv(200)
    t0 = time.monotonic()
    assert get(rig, q(IMP2))[0] == 200  # served while the idle clients hold their sockets
    assert time.monotonic() - t0 < 2
    for s in idle:
        s.close()
    # and the board link carried on meanwhile
    rig.board.step(int(time.time()), power_w=[100.0])
    assert rig.board.wait_acked()


def test_night_interval_is_the_0200_0500_baseload(rig: Rig) -> None:
    import datetime

    from gridtap.store.rrd import night_slot, night_window

    day = datetime.date.today() - datetime.timedelta(days=1)
    start, end = night_window(day)
    b = rig.board
    for t in range(start - 600, end + 610, 10):
        inside = start < t <= end  # a tuple at t carries the energy of (t - 10, t]
        b.step(t, power_w=[0.0, 600.0 if inside else 3000.0], seconds=10, gauges=False)
    assert b.wait_acked(30)
    rig.wait_rrd(IMP2, end + 590)
    assert rig.daemon.update_nights(time.time()) >= 1
    assert rig.daemon.update_nights(time.time()) == 0  # once per day and series
    points = json.loads(get(rig, q(IMP2, interval="night"))[2])
    values = dict((p[0], p[1]) for p in points)
    assert values[night_slot(day)] == 600
    assert len(points) == 28
    assert get(rig, q(IMP2, interval="night", resolution="day"))[0] == 400
