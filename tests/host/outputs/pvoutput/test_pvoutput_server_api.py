"""The test server itself enforces the documented PVOutput API (so uploader tests mean something)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from tests.host.outputs.pvoutput.conftest import KEY, SID, Clock, at
from tests.support.pvoutput_server import PVOutputServer


@pytest.fixture
def srv() -> Iterator[tuple[PVOutputServer, Clock]]:
    clock = Clock(at(2024, 6, 15, 12, 0, 0))
    with PVOutputServer(clock) as s:
        s.add_system(SID, KEY, tz="Europe/Brussels")
        s.add_system(7, "donkey", donation=True, tz="Europe/Brussels")
        s.add_system(8, "rokey", read_only=True)
        yield s, clock


def call(s: PVOutputServer, endpoint: str, params: dict[str, str], sid: int | None = SID,
         key: str | None = KEY, method: str = "POST", rate: bool = True) -> tuple[int, str, dict[str, str]]:
    headers = {"X-Rate-Limit": "1"} if rate else {}
    if sid is not None:
        headers["X-Pvoutput-SystemId"] = str(sid)
    if key is not None:
        headers["X-Pvoutput-Apikey"] = key
    data = urllib.parse.urlencode(params).encode()
    url = s.url + endpoint
    if method == "GET":
        url, data = url + "?" + data.decode(), b""
    req = urllib.request.Request(url, data=data if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.mark.parametrize(("sid", "key", "want"), [
    (SID, "wrong", "Unauthorized 401: Invalid API Key"),
    (999, KEY, "Unauthorized 401: Invalid System ID"),
    (None, KEY, "Unauthorized 401: Missing, invalid or inactive api key information"),
    (8, "rokey", "Forbidden 403: Read only key"),
])
def test_auth(srv: tuple[PVOutputServer, Clock], sid: int | None, key: str, want: str) -> None:
    s, _ = srv
    code, body, _ = call(s, "addstatus.jsp", {"d": "20240615", "t": "12:00", "v2": "5"}, sid=sid, key=key)
    assert body == want and code == int(want.split(":")[0].split()[-1])


def test_get_with_key_params_and_method_not_allowed(srv: tuple[PVOutputServer, Clock]) -> None:
    s, _ = srv
    code, body, _ = call(s, "addstatus.jsp", {"d": "20240615", "t": "12:00", "v4": "7", "key": KEY,
                                              "sid": str(SID)}, sid=None, key=None, method="GET")
    assert (code, body) == (200, "OK 200: Added Status")
    assert s.statuses[str(SID)][("20240615", "12:00")] == {"v4": "7"}
    code, body, _ = call(s, "addstatus.jsp", {}, method="PUT")
    assert (code, body) == (405, "Method Not Allowed 405: POST or GET only")


@pytest.mark.parametrize(("params", "want"), [
    ({"d": "20240531", "t": "12:00", "v2": "1"}, "Bad request 400: Date is older than 14 days [20240531]"),
    ({"d": "20240616", "t": "12:00", "v2": "1"}, "Bad request 400: Invalid future date"),
    ({"d": "2024061", "t": "12:00", "v2": "1"}, "Bad request 400: Could not read [d]"),
    ({"d": "20240615", "t": "24:00", "v2": "1"}, "Bad request 400: Could not read [t]"),
    ({"d": "20240615", "t": "12:00", "v2": "abc"}, "Bad request 400: Could not read [v2]"),
    ({"d": "20240615", "t": "12:00", "v5": "20"}, "Bad request 400: Could not read [v1,v2,v3,v4]"),
    ({"d": "20240615", "t": "12:00", "v2": "1", "v7": "3"}, "Forbidden 403: Donation Mode"),
    ({"d": "20240615", "t": "12:00", "v2": "1", "m1": "hi"}, "Forbidden 403: Donation Mode"),
    ({"d": "20240615", "t": "12:00", "v2": "1", "n": "1"}, "Bad request 400: Missing net power value"),
    ({"d": "20240615", "t": "12:00", "v2": "1", "n": "1", "c1": "1"},
     "Bad request 400: Invalid net and cumulative"),
])
def test_status_validation(srv: tuple[PVOutputServer, Clock], params: dict[str, str], want: str) -> None:
    s, _ = srv
    assert call(s, "addstatus.jsp", params)[1] == want


def test_donation_allows_extended_values_and_90_days(srv: tuple[PVOutputServer, Clock]) -> None:
    s, _ = srv
    ok = call(s, "addstatus.jsp", {"d": "20240401", "t": "12:00", "v2": "1", "v12": "-3.5", "m1": "x"},
              sid=7, key="donkey")
    assert ok[0] == 200 and s.statuses["7"][("20240401", "12:00")]["v12"] == "-3.5"


def test_energy_lower_than_earlier_status(srv: tuple[PVOutputServer, Clock]) -> None:
    s, _ = srv
    call(s, "addstatus.jsp", {"d": "20240615", "t": "11:00", "v1": "500"})
    body = call(s, "addstatus.jsp", {"d": "20240615", "t": "11:05", "v1": "400"})[1]
    assert body.startswith("Bad request 400: Energy value [400] lower than previously recorded value")


def test_batch_replies_per_status_and_limits(srv: tuple[PVOutputServer, Clock]) -> None:
    s, _ = srv
    data = "20240615,10:00,,100;20240531,10:00,,100;20240615,10:05,,0"
    code, body, _ = call(s, "addbatchstatus.jsp", {"data": data})
    assert code == 200 and body == "20240615,10:00,1;20240531,10:00,0;20240615,10:05,1"
    assert s.statuses[str(SID)][("20240615", "10:05")] == {"v2": "0"}
    many = ";".join(f"20240615,09:{m:02d},,1" for m in range(31))
    assert "Maximum number of statuses exceeded [30]" in call(s, "addbatchstatus.jsp", {"data": many})[1]
    none = call(s, "addbatchstatus.jsp", {"data": "20240101,10:00,,1"})
    assert none[:2] == (400, "Bad request 400: No statuses added or updated")
    ext = call(s, "addbatchstatus.jsp", {"data": "20240615,10:00,,1,,,,,5"})
    assert ext[1] == "Forbidden 403: Donation Mode"


def test_rate_limit_headers_and_hour_reset(srv: tuple[PVOutputServer, Clock]) -> None:
    s, clock = srv
    params = {"d": "20240615", "t": "12:00", "v2": "1"}
    _, _, h = call(s, "addstatus.jsp", params)
    reset = (int(clock.t // 3600) + 1) * 3600
    assert (h["X-Rate-Limit-Remaining"], h["X-Rate-Limit-Limit"], h["X-Rate-Limit-Reset"]) == \
        ("59", "60", str(reset))
    assert "X-Rate-Limit-Remaining" not in call(s, "addstatus.jsp", params, rate=False)[2]
    for _ in range(58):
        call(s, "addstatus.jsp", params)
    code, body, h = call(s, "addstatus.jsp", params)
    assert (code, body, h["X-Rate-Limit-Remaining"]) == \
        (403, "Forbidden 403: Exceeded number requests per hour", "0")
    clock.t = reset
    assert call(s, "addstatus.jsp", params)[0] == 200
