from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gridtap.errors import UserError
from gridtap.outputs.pvoutput import parse_settings
from gridtap.outputs.pvoutput.api import OK, RATE, RETRY, SKIP, STOP, Response, classify
from gridtap.outputs.pvoutput.timing import label, next_boundary
from gridtap.outputs.pvoutput.uploader import fmt
from tests.host.outputs.pvoutput.conftest import KEY, TZ, at

BASE: dict[str, Any] = {"system_id": 1, "timezone": "Europe/Brussels", "v2": "solar:power"}


@pytest.fixture(autouse=True)
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", KEY)


def test_parse_minimal_and_full(tmp_path: Path) -> None:
    s = parse_settings(dict(BASE))
    assert s.interval_min == 5 and s.batch_max == 30 and s.requests_per_hour == 60 and s.max_age_days == 14
    assert s.api_key.reveal() == KEY and KEY not in repr(s) and KEY not in str(s.api_key)
    keyfile = tmp_path / "key"
    keyfile.write_text("filekey123\n")
    full = parse_settings({**BASE, "api_key_file": str(keyfile), "interval": 15, "donation": True,
                           "v1": "solar:energy_total", "v3": {"series": "house", "quantity": "energy_total"},
                           "v7": "heatpump:power", "m1": "hello", "custom_rules":
                           'CUSTOM_RULES = {"v7": ["v7 * 2"]}'})
    assert full.api_key.reveal() == "filekey123" and full.c1 == 1 and full.batch_max == 100
    assert full.rules is not None and full.rules.targets == ["v7"]


@pytest.mark.parametrize(("extra", "needle"), [
    ({"system_id": "12"}, "'system_id'"),
    ({"interval": 7}, "'interval'"),
    ({"timezone": "Mars/Olympus"}, "'timezone'"),
    ({"v7": "x:power"}, "'v7': v7 is a donation-only"),
    ({"v2": "solar:energy"}, "'v2': quantity 'energy' cannot go to v2"),
    ({"v2": "solar"}, "'v2': expected \"series:quantity\""),
    ({"v2": "__x:power"}, "'v2': series name"),
    ({"m1": "hi"}, "'m1'"),
    ({"donation": "yes"}, "'donation'"),
    ({"bogus": 1}, "'bogus': unknown key"),
    ({"rules": {"v2": ["v2.__class__"]}}, "'rules': rule v2[0], column 1: attribute"),
    ({"custom_rules": "CUSTOM_RULES = {'v2': [1]}"}, "'custom_rules': line 1: rules for 'v2' must be"),
    ({"rules_dialect": "perl"}, "'rules_dialect'"),
    ({"c1": 1}, "'c1'"),
    ({"base_url": "ftp://x"}, "'base_url'"),
    ({"api_key_file": "/nonexistent/key"}, "'api_key_file': cannot read"),
])
def test_errors_name_the_key(extra: dict[str, Any], needle: str) -> None:
    with pytest.raises(UserError) as info:
        parse_settings({**BASE, **extra})
    assert needle in str(info.value)
    assert KEY not in str(info.value)


def test_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRIDTAP_PVOUTPUT_KEY")
    with pytest.raises(UserError, match="GRIDTAP_PVOUTPUT_KEY"):
        parse_settings(dict(BASE))


def test_cfos_rules_in_settings() -> None:
    s = parse_settings({**BASE, "rules_dialect": "cfos",
                        "custom_rules": "v4 = solar.power_w * 0.98 + date.hour * 0\n"})
    assert s.rules is not None and s.rules.dialect == "cfos"
    # A name nothing gives a value is refused when the settings load, not when the rule first runs.
    for bad in ("v4 = v99\n", "v4 = house.power_w\n", "v4 = grid.powr_w\n"):
        with pytest.raises(UserError, match="unknown name"):
            parse_settings({**BASE, "rules_dialect": "cfos", "custom_rules": bad}, ("grid", "solar"))
    s = parse_settings({**BASE, "rules_dialect": "cfos",
                        "custom_rules": "v4 = grid.power_w + solar.power_w\n"}, ("grid", "solar"))
    assert s.rules is not None  # every series the daemon records, not only the mapped ones


@pytest.mark.parametrize(("status", "body", "want"), [
    (200, "OK 200: Added Status", OK),
    (400, "Bad request 400: Date is older than 14 days [20240101]", SKIP),
    (400, "Bad request 400: Moon Powered", SKIP),
    (400, "Bad request 400: Energy value [5] lower than previously recorded value: 7", SKIP),
    (400, "Bad request 400: Could not read [v2]", SKIP),
    (400, "Bad request 400: No statuses added or updated", SKIP),
    (400, "Bad request 400: Invalid future date", RETRY),
    (400, "Bad request 400: something new", RETRY),
    (401, "Unauthorized 401: Invalid API Key", STOP),
    (401, "Unauthorized 401: Invalid System ID", STOP),
    (401, "Unauthorized 401: Disabled API Key", STOP),
    (403, "Forbidden 403: Read only key", STOP),
    (403, "Forbidden 403: Donation Mode", STOP),
    (403, "Forbidden 403: Exceeded number requests per hour", RATE),
    (405, "Method Not Allowed 405: POST or GET only", STOP),
    (503, "", RETRY),
    (0, "network error: refused", RETRY),
])
def test_classify(status: int, body: str, want: str) -> None:
    assert classify(Response(status, body)) == want


def test_boundaries_and_midnight_label() -> None:
    t = at(2024, 6, 15, 23, 57, 0)
    end = next_boundary(t, 300, TZ)
    assert end == at(2024, 6, 16, 0, 0, 0)
    assert label(end, TZ)[:2] == ("20240615", "23:59")
    assert label(next_boundary(end, 300, TZ), TZ)[:2] == ("20240616", "00:05")
    assert next_boundary(at(2024, 6, 15, 12, 10, 0), 600, TZ) == at(2024, 6, 15, 12, 20, 0)
    # spring forward: 02:00 local does not exist; the 01:55 -> 03:00 interval is one interval
    b = next_boundary(at(2024, 3, 31, 1, 56, 0), 300, TZ)
    assert label(b, TZ)[1] == "03:00"


def test_number_formats() -> None:
    assert fmt("v2", 0.0) == "0" and fmt("v2", -0.4) == "0" and fmt("v4", 489.6) == "490"
    assert fmt("v6", 239.84) == "239.8" and fmt("v5", -0.01) == "0"
    assert fmt("v11", 0.0001) == "0" and fmt("v11", 12.3456) == "12.346" and fmt("v7", 0) == "0"
