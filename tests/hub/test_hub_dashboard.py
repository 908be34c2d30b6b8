"""The dashboard in a real headless chromium: log in, own stream beside a peer's, intervals, units,
subscriptions and the rank."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from gridtap_hub import accounts, schema
from gridtap_hub.ingest import Ingest, Request
from tests.hub import browser
from tests.hub.kit import PASSWORD, make_home, running_hub

pytestmark = pytest.mark.skipif(not browser.available(), reason="chromium and chromium-driver not installed")

def feed(conn: psycopg.Connection, sensor: str, watts: float, hours: float = 26, step: int = 60) -> int:
    """Constant power for the last ``hours`` (up to now) through the real ingest; returns the number
    of (UTC) days the readings fall on: 2 for 26 h, 3 when run within 2 h after midnight."""
    sid = conn.execute("SELECT sid FROM sensor WHERE id = %s", (sensor,)).fetchone()[0]  # type: ignore[index]
    n = int(hours * 3600 / step)
    start = int(time.time()) - n * step
    pts = [(start + i * step, round(1000 + watts * i * step / 3600)) for i in range(n + 1)]
    Ingest(conn).apply([Request(sid, pts)])
    return len({t // 86400 for t, _ in pts[1:]})


def click(driver: Any, by: str, what: str) -> None:
    """Click and wait for the next page (links and form posts both load a new page)."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    old = driver.find_element("tag name", "html")
    driver.find_element(by, what).click()
    WebDriverWait(driver, 20).until(ec.staleness_of(old))


def text(driver: Any, css: str) -> str:
    return str(driver.find_element("css selector", css).text)


def drawn(driver: Any, user: str) -> int:
    g = driver.find_element("css selector", f"g.stream[data-user={user}]")
    return int(g.get_attribute("data-points"))


def test_login_own_and_peer_streams_intervals_units(hub_dsn: str, hub_conn: psycopg.Connection) -> None:
    me = make_home(hub_conn, "icarus75", size_band=3)
    peer = make_home(hub_conn, "mackenzie", size_band=3)
    make_home(hub_conn, "hermit", shares=False, size_band=3)
    make_home(hub_conn, "jan", size_band=3)
    days = feed(hub_conn, me.sensors[0], 1800)
    feed(hub_conn, peer.sensors[0], 1200)
    accounts.subscribe(hub_conn, me.uid, "mackenzie")
    schema.refresh_usage(hub_conn)
    with running_hub(hub_dsn) as hub, browser.chromium() as d:
        d.get(hub.url + "dashboard")
        assert d.current_url.endswith("/login")
        d.find_element("id", "name").send_keys("icarus75")
        d.find_element("id", "password").send_keys("wrong password")
        click(d, "id", "submit")
        assert "wrong user name or password" in text(d, "#error")
        d.find_element("id", "name").send_keys("icarus75")
        d.find_element("id", "password").send_keys(PASSWORD)
        click(d, "id", "submit")
        assert text(d, "#who") == "icarus75"
        # hour in watt: two lines, mine first, and the table of min/max/avg/last
        streams = d.find_elements("css selector", "#chart g.stream")
        assert [s.get_attribute("data-user") for s in streams] == ["icarus75", "mackenzie"]
        assert all(int(s.get_attribute("data-points")) >= 59 for s in streams)
        assert d.find_element("css selector", "#chart").get_attribute("data-unit") == "watt"
        assert text(d, "tr[data-user=icarus75] .avg") == "1800"
        assert text(d, "tr[data-user=mackenzie] .last") == "1200"
        # kWh/year: 1.8 kW all year is 15768 kWh
        click(d, "id", "unit-kwhperyear")
        assert d.find_element("css selector", "#chart").get_attribute("data-unit") == "kwhperyear"
        assert text(d, "tr[data-user=icarus75] .avg") == "15768"
        click(d, "id", "unit-eurperyear")
        assert text(d, "tr[data-user=mackenzie] .max") == f"{1.2 * 5676 / 3.6:.0f}"
        # day: 96 quarter hours, of which the last 26 h are all drawn
        click(d, "id", "tab-day")
        assert d.find_element("css selector", "#chart").get_attribute("data-interval") == "day"
        assert drawn(d, "icarus75") == 96
        click(d, "id", "tab-month")
        assert drawn(d, "icarus75") == days  # the month by day: the days the 26 h fall on
        # rank among the three-person homes without PV that have data: icarus75 uses more
        assert (text(d, "#rank-n"), text(d, "#rank-of")) == ("2", "2")
        # Fluksonians: only those who share; hermit does not
        peers = {b.get_attribute("data-peer"): b.get_attribute("data-subscribed")
                 for b in d.find_elements("css selector", "button.peer")}
        assert peers == {"jan": "0", "mackenzie": "1"}
        click(d, "css selector", "button.peer[data-peer=mackenzie]")
        assert [s.get_attribute("data-user") for s in d.find_elements("css selector", "#chart g.stream")] == [
            "icarus75"]
        click(d, "id", "logout")
        assert d.current_url.endswith("/login")
        d.get(hub.url + "dashboard")
        assert d.current_url.endswith("/login")
