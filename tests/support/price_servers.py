"""Local HTTP servers (127.0.0.1) that implement the documented shapes of the two price APIs.

* Octopus: ``GET /v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/``
  with ``period_from`` (inclusive), ``period_to`` (exclusive), ``page_size``, ``page``; answers
  ``{count, next, previous, results}`` newest first, ``next`` an absolute URL; 404 with
  ``{"detail": "No ElectricityTariff matches the given query."}`` for an unknown tariff.
* ENTSO-E: ``GET /api?securityToken=&documentType=A44&in_Domain=&out_Domain=&periodStart=&periodEnd=``;
  one Period per delivery day (local midnight to midnight in Europe/Brussels, so 92/96/100
  quarter hours), curve A03 (a point equal to the previous one is omitted); 401 for a wrong
  token; an Acknowledgement "No matching data found" when nothing is published.

Faults are queued with `fail(...)`: the next requests get that status, body and headers.
Published prices are whatever `price_at(t)` gives for t < `published_until`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gridtap_sim.localhttp import LocalApi

PriceFn = Callable[[float], float]


class _Server(LocalApi):
    def __init__(self, price_at: PriceFn, published_until: float, slot_s: int) -> None:
        self.price_at = price_at
        self.published_until = published_until
        self.slot_s = slot_s
        super().__init__()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(v: str) -> float:
    return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()


class OctopusServer(_Server):
    def __init__(
        self,
        price_at: PriceFn,
        published_until: float,
        tariff: str = "E-1R-AGILE-24-10-01-C",
        page_size_max: int = 1500,
    ) -> None:
        self.tariff = tariff
        self.page_size_max = page_size_max
        super().__init__(price_at, published_until, 1800)

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        parts = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        segs = parts.path.strip("/").split("/")
        json_h = {"Content-Type": "application/json"}
        if (
            len(segs) != 6
            or segs[:2] != ["v1", "products"]
            or segs[3] != "electricity-tariffs"
            or segs[5] != "standard-unit-rates"
            or segs[4] != self.tariff
            or not self.tariff.startswith(f"E-1R-{segs[2]}-")
        ):
            return (
                404,
                json.dumps({"detail": "No ElectricityTariff matches the given query."}).encode(),
                json_h,
            )
        start = _parse_iso(q["period_from"])
        end = min(_parse_iso(q["period_to"]), self.published_until)
        start -= start % self.slot_s
        slots = []
        t = start
        while t < end:
            slots.append(
                {
                    "value_exc_vat": round(self.price_at(t) / 1.05, 4),
                    "value_inc_vat": self.price_at(t),
                    "valid_from": _iso(t),
                    "valid_to": _iso(t + self.slot_s),
                    "payment_method": None,
                }
            )
            t += self.slot_s
        slots.reverse()  # newest first
        size = min(int(q.get("page_size", 100)), self.page_size_max)
        page = int(q.get("page", 1))
        chunk = slots[(page - 1) * size : page * size]
        nxt = None
        if page * size < len(slots):
            q2 = {**q, "page": str(page + 1)}
            nxt = f"{self.url}{parts.path}?{urllib.parse.urlencode(q2)}"
        prev = None
        body = {"count": len(slots), "next": nxt, "previous": prev, "results": chunk}
        return 200, json.dumps(body).encode(), json_h


BRUSSELS = ZoneInfo("Europe/Brussels")


class EntsoeServer(_Server):
    def __init__(
        self,
        price_at: PriceFn,
        published_until: float,
        token: str = "test-token-123",
        zone: str = "10YBE----------2",
    ) -> None:
        self.token = token
        self.zone = zone
        super().__init__(price_at, published_until, 900)

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        parts = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(parts.query))
        xml_h = {"Content-Type": "text/xml"}
        if parts.path != "/api":
            return 404, b"not found", {}
        if q.get("securityToken") != self.token:
            return 401, b"<html><body>Unauthorized</body></html>", {"Content-Type": "text/html"}
        if (
            q.get("documentType") != "A44"
            or q.get("in_Domain") != self.zone
            or q.get("out_Domain") != self.zone
        ):
            return 200, _ack("999", "No matching data found for Data item Day-ahead Prices"), xml_h
        fmt = "%Y%m%d%H%M"
        start = datetime.strptime(q["periodStart"], fmt).replace(tzinfo=UTC).timestamp()
        end = datetime.strptime(q["periodEnd"], fmt).replace(tzinfo=UTC).timestamp()
        periods = []
        day = datetime.fromtimestamp(start, BRUSSELS).date()
        while True:
            d0 = datetime(day.year, day.month, day.day, tzinfo=BRUSSELS).timestamp()
            nd = day + timedelta(days=1)
            d1 = datetime(nd.year, nd.month, nd.day, tzinfo=BRUSSELS).timestamp()
            if d0 >= end:
                break
            if d1 <= self.published_until and d1 > start:
                periods.append(self._period(d0, d1))
            day = nd
        if not periods:
            return 200, _ack("999", "No matching data found for Data item Day-ahead Prices"), xml_h
        ts = "".join(
            f"<TimeSeries><mRID>{i + 1}</mRID><curveType>A03</curveType>{p}</TimeSeries>"
            for i, p in enumerate(periods)
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Publication_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3">'
            f"<mRID>x</mRID><type>A44</type>{ts}</Publication_MarketDocument>"
        )
        return 200, body.encode(), xml_h

    def _period(self, d0: float, d1: float) -> str:
        pts, last = [], None
        n = int((d1 - d0) // 900)
        for pos in range(1, n + 1):
            p = round(self.price_at(d0 + (pos - 1) * 900) * 1000.0, 2)  # EUR/MWh
            if p != last:  # curve A03: a repeated price is omitted
                pts.append(f"<Point><position>{pos}</position><price.amount>{p}</price.amount></Point>")
            last = p
        fmt = "%Y-%m-%dT%H:%MZ"
        return (
            f"<Period><timeInterval><start>{datetime.fromtimestamp(d0, UTC).strftime(fmt)}</start>"
            f"<end>{datetime.fromtimestamp(d1, UTC).strftime(fmt)}</end></timeInterval>"
            f"<resolution>PT15M</resolution>{''.join(pts)}</Period>"
        )


def _ack(code: str, text: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Acknowledgement_MarketDocument xmlns="urn:iec62325.351:tc57wg16:451-1:acknowledgementdocument:7:0">'
        f"<mRID>a</mRID><Reason><code>{code}</code><text>{text}</text></Reason>"
        "</Acknowledgement_MarketDocument>"
    ).encode()
