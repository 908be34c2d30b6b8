"""Price sources against local servers implementing the Octopus and ENTSO-E APIs (tests/support)."""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gridtap.errors import UserError
from gridtap.inputs.prices import PriceFeed, PriceSeries, PriceSlot, parse_config
from gridtap.inputs.prices.entsoe import EntsoeSource, SupplierFormula, parse_a44
from gridtap.inputs.prices.feed import Publication
from gridtap.inputs.prices.http import retry_after
from gridtap.inputs.prices.octopus import OctopusSource
from gridtap.inputs.prices.series import PriceError
from tests.support.price_servers import EntsoeServer, OctopusServer

LONDON = ZoneInfo("Europe/London")
BRUSSELS = ZoneInfo("Europe/Brussels")
TARIFF = "E-1R-AGILE-24-10-01-C"


def agile(t: float) -> float:
    """Agile-like: cheap at night, a 16-19 h peak, negative around 3 am."""
    h = datetime.fromtimestamp(t, LONDON).hour + datetime.fromtimestamp(t, LONDON).minute / 60
    return round(18 + 12 * math.exp(-((h - 17.5) ** 2) / 2) - 22 * math.exp(-((h - 3) ** 2) / 2), 4)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, tz: ZoneInfo = LONDON) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


@pytest.fixture
def octopus() -> Iterator[OctopusServer]:
    # prices published until the end of 7 Dec 2026 (i.e. 7 Dec's prices came out on 6 Dec at 16:00)
    srv = OctopusServer(agile, local(2026, 12, 8), TARIFF, page_size_max=40)
    yield srv
    srv.close()


def octo_feed(srv: OctopusServer, path: Path | None) -> PriceFeed:
    return PriceFeed(OctopusSource(TARIFF, srv.url, timeout=5), path, Publication("Europe/London", 16))


def test_octopus_pages_newest_first_into_one_series(octopus: OctopusServer) -> None:
    src = OctopusSource(TARIFF, octopus.url, timeout=5)
    start, end = local(2026, 12, 6), local(2026, 12, 8)
    slots = src.fetch(start, end)
    assert len(slots) == 96 and len(octopus.requests) == 3  # 40 + 40 + 16, following 'next'
    series = PriceSeries(slots)
    assert series.slots[0].start == start and series.slots[-1].end == end
    assert all(s.length_s == 1800 for s in series.slots)
    assert series.at(local(2026, 12, 7, 3, 10)).price == agile(local(2026, 12, 7, 3))  # type: ignore[union-attr]
    assert min(s.price for s in slots) < 0  # negative prices are prices


def test_octopus_unknown_tariff_is_a_clear_error(octopus: OctopusServer) -> None:
    src = OctopusSource("E-1R-AGILE-24-10-01-Q".replace("Q", "P"), octopus.url, timeout=5)
    with pytest.raises(PriceError, match="does not know tariff 'E-1R-AGILE-24-10-01-P'"):
        src.fetch(local(2026, 12, 6), local(2026, 12, 7))
    with pytest.raises(UserError, match=r"\[prices\] key 'tariff': unknown Octopus tariff code 'AGILE'"):
        parse_config({"source": "octopus", "tariff": "AGILE"})


def test_feed_schedule_follows_publication(octopus: OctopusServer, tmp_path: Path) -> None:
    octopus.published_until = local(2026, 12, 7)  # only today is out
    feed = octo_feed(octopus, tmp_path / "p.sqlite")
    morning = local(2026, 12, 6, 9)
    assert feed.due(morning) and feed.poll(morning)
    assert not feed.due(morning + 3600)  # today is covered, tomorrow is not published yet
    assert feed.next_fetch(morning + 3600) == local(2026, 12, 6, 16)
    four = local(2026, 12, 6, 16)
    assert feed.due(four)
    assert feed.poll(four)  # answered, but tomorrow is still missing: retry with backoff
    assert feed.status(four).horizon_end == local(2026, 12, 7) and not feed.due(four + 10)
    octopus.published_until = local(2026, 12, 8)
    later = feed.backoff.not_before + 1
    assert feed.poll(later)
    assert feed.status(later).horizon_end == local(2026, 12, 8)
    assert not feed.due(later + 600) and feed.backoff.failures == 0


def test_failed_fetch_keeps_last_prices_and_says_how_far(
    octopus: OctopusServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = octo_feed(octopus, tmp_path / "p.sqlite")
    t = local(2026, 12, 6, 17)
    assert feed.poll(t)
    before = feed.series().slots
    octopus.fail(503, b"Service Unavailable", times=5)
    next_day = local(2026, 12, 7, 17)
    caplog.set_level(logging.WARNING, "gridtap.prices")
    assert not feed.poll(next_day)
    st = feed.status(next_day)
    assert st.ok and st.ahead_h == pytest.approx(7.0) and "HTTP 503" in (st.last_error or "")
    assert "last good prices reach 2026-12-08 00:00 GMT" in caplog.text
    assert feed.series().slots == before
    assert not feed.due(next_day + 1)  # backing off
    assert feed.backoff.not_before - next_day <= 120


def test_rate_limit_waits_for_retry_after(octopus: OctopusServer) -> None:
    feed = octo_feed(octopus, None)
    octopus.fail(429, b"{}", {"Retry-After": "900"})
    t = local(2026, 12, 6, 12)
    assert not feed.poll(t)
    assert feed.backoff.not_before >= t + 900 and not feed.due(t + 899)
    assert feed.poll(t + 901)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert retry_after("soon") == 60.0


@pytest.mark.parametrize(
    "body, why",
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"count": 1}', "no 'results' list"),
        (
            b'{"results": [{"value_inc_vat": "12", "valid_from": "2026-12-06T00:00:00Z", '
            b'"valid_to": "2026-12-06T00:30:00Z"}]}',
            "value_inc_vat is '12'",
        ),
        (
            b'{"results": [{"value_inc_vat": 12, "valid_from": "2026-12-06T00:00:00", '
            b'"valid_to": "2026-12-06T00:30:00Z"}]}',
            "has no timezone",
        ),
        (
            b'{"results": [{"value_inc_vat": 12, "valid_from": "2026-12-06T00:00:00Z", '
            b'"valid_to": "2026-12-06T00:20:00Z"}]}',
            "slot of 20 min",
        ),
        (
            b'{"results": [{"value_inc_vat": 1e300, "valid_from": "2026-12-06T00:00:00Z", '
            b'"valid_to": "2026-12-06T00:30:00Z"}]}',
            "implausible price",
        ),
    ],
)
def test_malformed_octopus_answer_leaves_the_cache(
    octopus: OctopusServer, tmp_path: Path, body: bytes, why: str
) -> None:
    path = tmp_path / "p.sqlite"
    feed = octo_feed(octopus, path)
    assert feed.poll(local(2026, 12, 6, 17))
    rows = sqlite3.connect(path).execute("SELECT * FROM price ORDER BY start").fetchall()
    octopus.fail(200, body)
    t = local(2026, 12, 7, 17)
    assert feed.due(t) and not feed.poll(t)
    assert why in (feed.status(t).last_error or "")
    assert sqlite3.connect(path).execute("SELECT * FROM price ORDER BY start").fetchall() == rows


def test_cache_survives_a_restart_and_keys_by_tariff(octopus: OctopusServer, tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    feed = octo_feed(octopus, path)
    t = local(2026, 12, 6, 17)
    feed.poll(t)
    feed.close()
    octopus.fail(500, times=3)
    again = octo_feed(octopus, path)
    assert not again.due(t) and again.series().horizon_end(t) == local(2026, 12, 8)
    other = PriceFeed(
        OctopusSource("E-1R-AGILE-24-10-01-A", octopus.url), path, Publication("Europe/London", 16)
    )
    assert not other.series()  # another tariff's prices are not this one's


def test_unwritable_cache_degrades_to_memory(octopus: OctopusServer, tmp_path: Path) -> None:
    bad = tmp_path / "nodir" / "p.sqlite"
    feed = octo_feed(octopus, bad)
    assert feed.cache.faults == 1
    t = local(2026, 12, 6, 17)
    assert feed.poll(t) and feed.status(t).ok


@pytest.fixture
def entsoe() -> Iterator[EntsoeServer]:
    srv = EntsoeServer(
        lambda t: round(0.08 + 0.05 * math.sin(t / 7200) - 0.02, 5), local(2026, 11, 1, tz=BRUSSELS)
    )
    yield srv
    srv.close()


@pytest.mark.parametrize("day, quarters", [((2026, 3, 29), 92), ((2026, 10, 25), 100), ((2026, 6, 1), 96)])
def test_entsoe_dst_days(entsoe: EntsoeServer, day: tuple[int, int, int], quarters: int) -> None:
    src = EntsoeSource("10YBE----------2", entsoe.token, None, entsoe.url)
    d0 = local(*day, tz=BRUSSELS)
    nd = datetime.fromtimestamp(d0 + 30 * 3600, BRUSSELS).date()
    d1 = local(nd.year, nd.month, nd.day, tz=BRUSSELS)
    slots = src.fetch(d0, d1)
    assert len(slots) == quarters
    assert all(s.length_s == 900 for s in slots) and slots[0].start == d0 and slots[-1].end == d1
    for s in slots:  # A03 gaps were filled with the previous price
        assert s.price == pytest.approx(entsoe.price_at(s.start), abs=1e-5)


def test_entsoe_formula_and_token_never_shown(
    entsoe: EntsoeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDTAP_ENTSOE_TOKEN", "wrong-token-secret")
    section = {
        "source": "entsoe",
        "zone": "10YBE----------2",
        "formula": "price * 1.06 + 0.12",
        "base_url": entsoe.url,
    }
    s = parse_config({**section, "cache": str(tmp_path / "e.sqlite")})
    assert "wrong-token-secret" not in repr(s) and "wrong-token-secret" not in repr(s.make_source())
    feed = s.feed()
    caplog.set_level(logging.DEBUG)
    t = local(2026, 10, 20, 14, tz=BRUSSELS)
    assert not feed.poll(t)
    assert "HTTP 401" in (feed.status(t).last_error or "")
    assert "wrong-token-secret" not in caplog.text and "wrong-token-secret" not in str(feed.status(t))
    (tmp_path / "tok").write_text(entsoe.token + "\n")
    (tmp_path / "tok").chmod(0o600)
    s2 = parse_config({**section, "token_file": str(tmp_path / "tok")})
    feed2 = s2.feed(tmp_path / "e2.sqlite")
    assert feed2.poll(t)
    slot = feed2.series().at(t)
    assert slot is not None and slot.price == pytest.approx(
        entsoe.price_at(slot.start) * 1.06 + 0.12, abs=1e-5
    )
    assert feed2.series().horizon_end(t) == local(2026, 10, 22, tz=BRUSSELS)


def test_entsoe_no_data_and_bad_documents() -> None:
    ack = (
        b'<?xml version="1.0"?><Acknowledgement_MarketDocument xmlns="urn:x"><Reason><code>999</code>'
        b"<text>No matching data found for Data item</text></Reason></Acknowledgement_MarketDocument>"
    )
    assert parse_a44(ack) == []
    with pytest.raises(PriceError, match="not XML"):
        parse_a44(b"<Publication_MarketDocument><TimeSeries>")
    with pytest.raises(PriceError, match="DOCTYPE"):
        parse_a44(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x/>')
    period = (
        b"<Publication_MarketDocument><TimeSeries><Period><timeInterval><start>2026-01-01T23:00Z</start>"
        b"<end>2026-01-02T23:00Z</end></timeInterval><resolution>PT5M</resolution></Period></TimeSeries>"
        b"</Publication_MarketDocument>"
    )
    with pytest.raises(PriceError, match="resolution 'PT5M'"):
        parse_a44(period)
    with pytest.raises(PriceError, match="unknown name 'foo'"):
        SupplierFormula("price * foo", None)


def test_entsoe_malformed_body_leaves_cache(entsoe: EntsoeServer, tmp_path: Path) -> None:
    src = EntsoeSource("10YBE----------2", entsoe.token, None, entsoe.url)
    feed = PriceFeed(src, tmp_path / "e.sqlite", Publication("Europe/Brussels", 13))
    t = local(2026, 10, 20, 14, tz=BRUSSELS)
    assert feed.poll(t)
    before = feed.series().slots
    entsoe.fail(200, b"<Publication_MarketDocument><TimeSeries><Period>")
    assert not feed.poll(local(2026, 10, 21, 14, tz=BRUSSELS))
    assert feed.series().slots == before


def test_series_lookup_and_merge() -> None:
    a = [PriceSlot(i * 1800.0, (i + 1) * 1800.0, float(i)) for i in range(4)]
    s = PriceSeries(a)
    assert s.at(-1) is None and s.at(7200) is None and s.at(1800) == a[1]
    s2 = s.merged([PriceSlot(1800.0, 2700.0, 9.0), PriceSlot(2700.0, 3600.0, 8.0)])
    assert [x.price for x in s2.slots] == [0.0, 9.0, 8.0, 2.0, 3.0]
    with pytest.raises(PriceError, match="overlapping"):
        PriceSeries([a[0], PriceSlot(900.0, 2700.0, 1.0)])
