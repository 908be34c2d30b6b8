"""The REST API's Flukso-server forms: start/end windows, param=all and CSV (#15 item 7).

The behaviour checked is the Flukso server's (flukso/fls api_sensor.erl and
check.erl, docs/shared reference flukso.md section 4.3): start and end are
Unix seconds aligned down to the resolution (default minute) and clamped to
what that resolution keeps, end defaults to now, an end before the start is
malformed (400); param=all answers the sensor's metadata and refuses a time
or a unit beside it; CSV is negotiated by the Accept header, one
"ts,value\\r\\n" line per point.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from tests.host.outputs.test_daemon_restapi import feed_hour, get, q
from tests.support.daemon import IMP, PULSE, WATER, Rig


def get_accept(rig: Rig, path: str, accept: str) -> tuple[int, str, str]:
    assert rig.daemon.api is not None
    conn = http.client.HTTPConnection("127.0.0.1", rig.daemon.api.port, timeout=10)
    conn.request("GET", path, headers={"Accept": accept})
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", body


def window(rig: Rig, sensor: str, **params: str) -> list[list[object]]:
    status, _, body = get(rig, q(sensor, **{"interval": "-", **params}))
    assert status == 200, body
    points: list[list[object]] = json.loads(body)
    return points


def test_start_end_windows_as_the_flukso_server(rig: Rig) -> None:
    end = int(time.time()) // 60 * 60
    feed_hour(rig, end)
    hour = {p[0]: p[1] for p in json.loads(get(rig, q(IMP, interval="hour"))[2])}
    got = window(rig, IMP, start=str(end - 1800), end=str(end - 600))
    assert [p[0] for p in got] == list(range(end - 1740, end - 599, 60))  # stamped in (start, end]
    assert all(p[1] == 1800 for p in got) and all(hour[t] == v for t, v in got)
    # aligned down to the resolution: 17 s into a minute is that minute
    assert window(rig, IMP, start=str(end - 1800 + 17), end=str(end - 600 + 59)) == got
    # 15-minute rows when asked for
    quarter = window(rig, IMP, start=str(end - 3600), end=str(end), resolution="15min")
    assert all(int(str(p[0])) % 900 == 0 for p in quarter) and 3 <= len(quarter) <= 4
    # start alone: up to now; an end in the future is now
    now = int(time.time())
    alone = window(rig, IMP, start=str(end - 1800))
    assert alone[:len(got)] == got and now - 120 <= int(str(alone[-1][0])) <= now
    assert window(rig, IMP, start=str(end - 1800), end=str(now + 86400)) == alone
    # start with an interval: that interval's length from start, at its default resolution
    fifteen = window(rig, IMP, start=str(end - 1800), interval="15min")
    assert [p[0] for p in fifteen] == list(range(end - 1740, end - 899, 60))
    # clamped to what the resolution keeps: minute rows reach back a day, not three
    old = window(rig, IMP, start=str(now - 3 * 86400), end=str(end))
    assert int(str(old[0][0])) >= now - 86400 and len(old) <= 1440
    # the pulse meter and the water meter in their own units
    assert {p[1] for p in window(rig, PULSE, start=str(end - 1800), end=str(end - 600))} == {60}
    water = window(rig, WATER, start=str(end - 1800), end=str(end - 600), unit="lpermin")
    assert {p[1] for p in water} == {1}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"interval": "-", "start": "1700000600", "end": "1700000000"}, "before it starts"),
        ({"interval": "-", "end": "1700000000"}, "end needs a start"),
        ({"interval": "-", "start": "17000x"}, "start must be a Unix time"),
        ({"interval": "-", "start": "-5"}, "start must be a Unix time"),
        ({"interval": "hour", "start": "1700000000", "end": "1700003600"}, "not both"),
        ({"interval": "minute", "start": "1700000000"}, "takes no start"),
        ({"interval": "-"}, "interval is required"),
        ({"interval": "-", "start": "1700000000", "resolution": "second"}, "unknown resolution"),
        ({"interval": "-", "unit": "-", "param": "some"}, "only param=all"),
        ({"interval": "-", "param": "all"}, "param=all takes no unit"),
        ({"interval": "hour", "unit": "-", "param": "all"}, "param=all takes no interval"),
    ],
)
def test_malformed_windows_and_params_are_400(rig: Rig, params: dict[str, str], words: str) -> None:
    status, ctype, body = get(rig, q(IMP, **params))
    assert status == 400 and words in body and ctype.startswith("text/plain"), body


def test_param_all_is_the_sensor_metadata(rig: Rig) -> None:
    t = int(time.time())
    for s in range(t - 30, t + 1, 10):
        rig.board.step(s, power_w=[1800.0], pulses=[1, 0], seconds=10, gauges=False)
    assert rig.board.wait_acked()
    rig.wait_rrd(IMP, t)
    rig.wait_rrd(PULSE, t - 10)
    status, ctype, body = get(rig, f"/sensor/{IMP}?version=1.0&param=all")
    assert status == 200 and ctype == "application/json", body
    meta = json.loads(body)
    assert set(meta) == {"access", "type", "function", "class", "voltage", "current", "phase", "constant",
                         "enabled", "lastupdate"}
    assert (meta["type"], meta["function"], meta["class"], meta["enabled"]) == ("electricity", "mains",
                                                                                 "analog", 1)
    ts, wh = meta["lastupdate"]
    total = rig.total(IMP)
    assert total is not None and t - 10 <= ts <= t and abs(wh - total / 1000) <= 5.0
    pulse = json.loads(get(rig, f"/sensor/{PULSE}?version=1.0&param=all")[2])
    assert (pulse["class"], pulse["constant"], pulse["function"]) == ("pulse", 1.0, "meter")
    assert json.loads(get(rig, f"/sensor/{WATER}?version=1.0&param=all")[2])["type"] == "water"
    # JSONP stays the config's choice (off by default) for the metadata too
    assert get(rig, f"/sensor/{WATER}?version=1.0&param=all&callback=meta")[0] == 403


def test_csv_by_accept_header(rig: Rig) -> None:
    end = int(time.time()) // 60 * 60
    feed_hour(rig, end)
    # a fixed window: "the last hour" moves by a row when the two requests straddle a minute
    path = q(IMP, interval="-", start=str(end - 3600), end=str(end))
    as_json = json.loads(get(rig, path)[2])
    assert len(as_json) >= 50, as_json
    status, ctype, body = get_accept(rig, path, "text/csv")
    assert status == 200 and ctype.startswith("text/csv"), body
    assert body.endswith("\r\n") and body.count("\r\n") == len(as_json)
    rows = [line.split(",") for line in body.split("\r\n")[:-1]]
    assert [[int(t), v if v == "nan" else int(v)] for t, v in rows] == as_json
    # the client's preference decides; anything or JSON first is JSON; neither is 406
    assert get_accept(rig, path, "application/json;q=0.5, text/csv")[1].startswith("text/csv")
    assert get_accept(rig, path, "*/*")[1] == "application/json"
    assert get_accept(rig, path, "text/csv;q=0.2, application/*")[1] == "application/json"
    status, ctype, body = get_accept(rig, path, "image/png")
    assert status == 406 and "text/csv" in body
    # the FLM's live minute too
    assert get_accept(rig, q(IMP), "text/csv")[1].startswith("text/csv")


def test_the_csv_vector_in_docs_web_md() -> None:
    """docs/web.md's byte-level CSV example is what csv_lines writes."""
    import re
    from pathlib import Path

    from gridtap.outputs.restapi import csv_lines

    doc = (Path(__file__).resolve().parents[3] / "docs" / "web.md").read_text()
    text = re.search(r"^ {6}(\d+,\S+\\r\\n\d+,\S+\\r\\n)$", doc, re.M)
    hexes = re.search(r"`((?:[0-9a-f]{2} )+[0-9a-f]{2})` for the first line", doc)
    assert text is not None and hexes is not None
    body = csv_lines([[1796558460, 1800], [1796558520, "nan"]])
    assert body == text.group(1).replace("\\r\\n", "\r\n")
    assert bytes.fromhex(hexes.group(1)) == body.encode().split(b"\n")[0] + b"\n"
