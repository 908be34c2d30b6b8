"""The read API's ``start``/``end`` form (Flukso's check:times): alignment, defaults and refusals."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridtap_hub.read import RESOLUTIONS, BadQuery, Query
from tests.hub.kit import get, make_home, measurements, post, running_hub

NOW = 1_700_000_000


def test_start_end_align_to_the_resolution() -> None:
    q = Query.parse(None, "15min", "watt", "1699990000", "1699999999")
    # start down to its quarter hour, end to the last quarter hour beginning before it
    assert q.buckets(NOW) == (1699990000 // 900 * 900, 1699999999 // 900 * 900, 900)
    assert Query.parse(None, "15min", "watt", "1699999200", "1700000100").buckets(NOW) == (
        1699999200, 1699999200, 900)  # end on a boundary: that bucket is not included


def test_start_alone_runs_to_now_at_minutes() -> None:
    q = Query.parse(None, None, "kwhperyear", str(NOW - 3600))
    assert (q.resolution, q.end) == ("minute", None)
    first, last, step = q.buckets(NOW)
    # NOW is 20 s into a minute: that minute, partly covered, is the last (as with an interval)
    assert (first, last, step) == (NOW - 3600 - 20, NOW - 20, 60)


@pytest.mark.parametrize(("interval", "res", "start", "end", "why"), [
    ("hour", None, "1699990000", None, "not both"),
    ("day", None, None, "1699990000", "not both"),
    (None, None, None, "1699990000", "needs a start"),
    (None, None, "-5", None, "decimal digits"),
    (None, None, "1699990000.5", None, "decimal digits"),
    (None, None, "١٢٣", None, "decimal digits"),  # Arabic-Indic digits: isdigit() but not ASCII
    (None, None, "1" * 11, None, "decimal digits"),
    (None, None, "1699990000", "1699990000", "must be after"),
    (None, None, "1699990000", "1699980000", "must be after"),
    (None, None, "1699900000", "1700000000", "spans up to 86400"),  # minutes: at most a day
    (None, "fortnight", "1699990000", None, "resolution must be"),
    (None, "day", "1699990000", None, None),  # fine so far; the unit is wrong below
])
def test_bad_spans_are_refused(interval: str | None, res: str | None, start: str | None, end: str | None,
                               why: str | None) -> None:
    with pytest.raises(BadQuery, match=why or "unit must be"):
        Query.parse(interval, res, "watt" if why else "furlongs", start, end)


def test_start_alone_longer_than_the_resolution_serves_is_refused_at_now() -> None:
    q = Query.parse(None, "minute", "watt", str(NOW - 2 * 86400))
    with pytest.raises(BadQuery, match="spans up to"):
        q.buckets(NOW)


@given(st.sampled_from(sorted(RESOLUTIONS)), st.integers(0, 2**33), st.integers(1, 315360000))
def test_buckets_cover_exactly_start_to_end(res: str, start: int, length: int) -> None:
    step, longest = RESOLUTIONS[res]
    end = start + min(length, longest)
    first, last, got_step = Query.parse(None, res, "watt", str(start), str(end)).buckets(NOW)
    assert got_step == step and first % step == 0 and last % step == 0
    assert first <= start < first + step  # the first bucket holds start
    assert last < end <= last + step  # the last begins before end and reaches it


def test_read_api_start_end(hub_dsn: str, hub_conn: psycopg.Connection) -> None:
    home = make_home(hub_conn, "tmpo")
    s = home.sensors[0]
    t0 = (int(time.time()) - 7200) // 3600 * 3600
    pts = [(t0 + 10 * i, 1000 + 5 * i) for i in range(361)]  # 5 Wh per 10 s: 1800 W for an hour
    with running_hub(hub_dsn) as hub:
        for k in range(0, len(pts), 120):
            assert post(hub.port, s, measurements(pts[k:k + 120]), home.key)[0] == 200
        q = f"/sensor/{s}?version=1.0&unit=watt&token={home.token}"
        st_, body = get(hub.port, f"{q}&start={t0 + 5}&end={t0 + 1801}")
        assert st_ == 200
        got = json.loads(body)
        # minutes (the default): from the one holding start to the last that begins before end
        assert [t for t, _ in got] == list(range(t0, t0 + 1801, 60))
        assert all(v == pytest.approx(1800) for _, v in got)
        st_, body = get(hub.port, f"{q}&start={t0}&end={t0 + 3600}&resolution=15min")
        assert st_ == 200 and json.loads(body) == [[t0 + 900 * i, 1800.0] for i in range(4)]
        # start alone: up to now; minutes after the last point are "nan"
        st_, body = get(hub.port, f"{q}&start={t0 + 3000}")
        got = json.loads(body)
        assert st_ == 200 and got[0] == [t0 + 3000, 1800.0] and got[-1][1] == "nan"
        for bad in (f"&start={t0}&interval=hour", f"&end={t0}", f"&start={t0}&end={t0}",
                    "&start=yesterday", f"&start={t0 - 86400}&end={t0 + 60}"):
            st_, body = get(hub.port, q + bad)
            assert st_ == 400 and body.startswith(b"Malformed request"), bad
