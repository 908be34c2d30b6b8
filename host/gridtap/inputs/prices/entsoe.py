"""ENTSO-E Transparency Platform day-ahead prices (document type A44), turned into household prices.

``GET {base}/api?securityToken=T&documentType=A44&in_Domain=Z&out_Domain=Z&periodStart=yyyyMMddHHmm
&periodEnd=yyyyMMddHHmm`` (UTC) answers a ``Publication_MarketDocument``: TimeSeries > Period
(timeInterval start/end, resolution PT15M or PT60M) > Point (position from 1, price.amount in
EUR/MWh). Curve type A03 omits a point whose price equals the previous one; we repeat it. No data
answers an ``Acknowledgement_MarketDocument`` with a Reason text.

The market price is converted to EUR/kWh and passed through the supplier's cFos formula
(``price`` = market EUR/kWh, plus ``date.*`` of the slot's start), e.g. ``price * 1.06 + 0.12``.
The token goes only into the request URL, which never appears in an error or a log line.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, tzinfo

from gridtap.inputs.prices.http import check_url, get
from gridtap.inputs.prices.series import PriceError, PriceSlot, check_slot
from gridtap.rules.cfos import compile_expression, date_env
from gridtap.rules.core import RuleRuntimeError, RuleSyntaxError, check_result

DEFAULT_BASE_URL = "https://web-api.tp.entsoe.eu"
RESOLUTIONS = {"PT15M": 900, "PT30M": 1800, "PT60M": 3600}
UNIT = "EUR/kWh"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element | None, name: str, where: str) -> str:
    c = None if el is None else _child(el, name)
    if c is None or c.text is None:
        raise PriceError(f"{where}: missing <{name}>")
    return c.text.strip()


def _utc(v: str, where: str) -> float:
    try:
        return datetime.strptime(v, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise PriceError(f"{where}: bad time {v[:30]!r}") from None


def parse_a44(body: bytes) -> list[PriceSlot]:
    """Market prices (EUR/kWh) of an A44 document; [] for 'no matching data'; PriceError otherwise."""
    if b"<!DOCTYPE" in body[:2000] or b"<!ENTITY" in body:
        raise PriceError("ENTSO-E: answer has a DOCTYPE/ENTITY (refused)")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PriceError(f"ENTSO-E: answer is not XML ({exc})") from None
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        text = _text(reason, "text", "ENTSO-E acknowledgement") if reason is not None else ""
        if "No matching data" in text:
            return []
        raise PriceError(f"ENTSO-E refused the query: {text[:200]}")
    if kind != "Publication_MarketDocument":
        raise PriceError(f"ENTSO-E: unexpected document <{kind}>")
    out: dict[float, PriceSlot] = {}
    for ts in (c for c in root if _local(c.tag) == "TimeSeries"):
        for period in (c for c in ts if _local(c.tag) == "Period"):
            for slot in _period(period):
                out[slot.start] = slot  # a repeated TimeSeries (e.g. a sequence 2) must agree; last wins
    return [out[k] for k in sorted(out)]


def _period(period: ET.Element) -> list[PriceSlot]:
    where = "ENTSO-E Period"
    interval = _child(period, "timeInterval")
    start = _utc(_text(interval, "start", where), where)
    end = _utc(_text(interval, "end", where), where)
    res_text = _text(period, "resolution", where)
    res = RESOLUTIONS.get(res_text)
    if res is None:
        raise PriceError(f"{where}: resolution {res_text!r} (expected PT15M, PT30M or PT60M)")
    n = int((end - start) // res)
    if end <= start or start + n * res != end or n > 200:
        raise PriceError(f"{where}: interval {n} x {res_text} does not fit")
    prices: dict[int, float] = {}
    for pt in (c for c in period if _local(c.tag) == "Point"):
        try:
            pos = int(_text(pt, "position", where))
            amount = float(_text(pt, "price.amount", where))
        except ValueError:
            raise PriceError(f"{where}: a Point has a bad position or price.amount") from None
        if not 1 <= pos <= n:
            raise PriceError(f"{where}: position {pos} outside 1..{n}")
        prices[pos] = amount
    if 1 not in prices:
        raise PriceError(f"{where}: no price for position 1")
    out, last = [], prices[1]
    for pos in range(1, n + 1):
        last = prices.get(pos, last)  # A03: an omitted point repeats the previous price
        s = start + (pos - 1) * res
        out.append(check_slot(PriceSlot(s, s + res, last / 1000.0), where))
    return out


class SupplierFormula:
    """The supplier's formula on the market price: cFos dialect, names ``price`` and ``date.*``."""

    def __init__(self, text: str, tz: tzinfo | None) -> None:
        try:
            self.fn, columns = compile_expression(text)
        except RuleSyntaxError as exc:
            raise PriceError(f"formula {text!r}, column {exc.column}: {exc.reason}") from None
        unknown = [n for n in columns if n != "price" and not n.startswith("date.")]
        if unknown:
            raise PriceError(f"formula {text!r}: unknown name {unknown[0]!r} (use price and date.*)")
        self.text = text
        self.tz = tz

    def apply(self, slot: PriceSlot) -> PriceSlot:
        env = date_env(slot.start, self.tz)
        env["price"] = slot.price
        try:
            value = float(self.fn(env))
        except (RuleRuntimeError, KeyError, ArithmeticError) as exc:
            raise PriceError(f"formula {self.text!r} failed for price {slot.price:g}: {exc}") from None
        if check_result(value):
            raise PriceError(f"formula {self.text!r}: {check_result(value)}")
        return check_slot(PriceSlot(slot.start, slot.end, value), "formula result")


class EntsoeSource:
    """Day-ahead prices of one bidding zone, with the supplier formula applied."""

    name = "entsoe"
    unit = UNIT

    def __init__(
        self,
        zone: str,
        token: str,
        formula: SupplierFormula | None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
    ) -> None:
        self.zone = zone
        self._token = token
        self.formula = formula
        self.base_url = check_url(base_url, "ENTSO-E")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"EntsoeSource(zone={self.zone!r}, token='***')"

    @property
    def key(self) -> str:
        return f"entsoe:{self.zone}:{self.formula.text if self.formula else 'price'}"

    def fetch(self, start: float, end: float) -> list[PriceSlot]:
        fmt = "%Y%m%d%H%M"
        q = urllib.parse.urlencode(
            {
                "securityToken": self._token,
                "documentType": "A44",
                "in_Domain": self.zone,
                "out_Domain": self.zone,
                "periodStart": datetime.fromtimestamp(start - start % 3600, UTC).strftime(fmt),
                "periodEnd": datetime.fromtimestamp(end + (-end) % 3600, UTC).strftime(fmt),
            }
        )
        slots = parse_a44(get(f"{self.base_url}/api?{q}", "ENTSO-E", self.timeout))
        slots = [s for s in slots if s.end > start and s.start < end]
        if self.formula is not None:
            slots = [self.formula.apply(s) for s in slots]
        return slots
