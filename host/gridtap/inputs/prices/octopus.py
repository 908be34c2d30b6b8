"""Octopus Energy Agile: the public standard-unit-rates endpoint (no key).

``GET {base}/v1/products/{product}/electricity-tariffs/{tariff}/standard-unit-rates/
?period_from=...&period_to=...&page_size=...`` answers
``{count, next, previous, results: [{value_exc_vat, value_inc_vat, valid_from, valid_to, payment_method}]}``,
newest first; `next` is the URL of the following page. Prices are p/kWh; we use `value_inc_vat`.
The tariff code is ``E-1R-<product>-<region A..P>``; an unknown code answers 404.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from datetime import UTC, datetime

from gridtap.inputs.prices.http import HttpStatus, check_url, get
from gridtap.inputs.prices.series import PriceError, PriceSlot, check_slot

DEFAULT_BASE_URL = "https://api.octopus.energy"
TARIFF = re.compile(r"^E-1R-(?P<product>[A-Z0-9]+(?:-[A-Z0-9]+)*)-(?P<region>[A-P])$")
MAX_PAGES = 30
PAGE_SIZE = 1500
UNIT = "p/kWh"


def parse_tariff(code: str) -> str:
    """The product code of a tariff code; PriceError when it is not ``E-1R-<product>-<A..P>``."""
    m = TARIFF.match(code)
    if m is None:
        raise PriceError(
            f"unknown Octopus tariff code {code!r}: expected E-1R-<product>-<region A..P>, "
            "e.g. E-1R-AGILE-24-10-01-C"
        )
    return m.group("product")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(v: object, where: str) -> float:
    if not isinstance(v, str):
        raise PriceError(f"{where}: expected an ISO 8601 time, got {v!r}")
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise PriceError(f"{where}: bad time {v[:40]!r}") from None
    if dt.tzinfo is None:
        raise PriceError(f"{where}: time {v[:40]!r} has no timezone")
    return dt.timestamp()


def parse_page(body: bytes) -> tuple[list[PriceSlot], str | None]:
    """The slots of one page and its `next` URL; PriceError for anything malformed."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PriceError("Octopus: answer is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise PriceError("Octopus: answer has no 'results' list")
    nxt = doc.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise PriceError("Octopus: 'next' is not a URL")
    slots = []
    for i, item in enumerate(doc["results"]):
        where = f"Octopus result {i}"
        if not isinstance(item, dict):
            raise PriceError(f"{where}: not an object")
        price = item.get("value_inc_vat")
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise PriceError(f"{where}: value_inc_vat is {price!r}, not a number")
        start = parse_time(item.get("valid_from"), where)
        end = parse_time(item.get("valid_to"), where)
        slots.append(check_slot(PriceSlot(start, end, float(price)), where))
    return slots, nxt


class OctopusSource:
    """Fetches Agile half-hour prices for one tariff code."""

    name = "octopus"
    unit = UNIT

    def __init__(self, tariff: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 20.0) -> None:
        self.tariff = tariff
        self.product = parse_tariff(tariff)
        self.base_url = check_url(base_url, "Octopus")
        self.timeout = timeout

    @property
    def key(self) -> str:
        """Identifies the cached prices: a different tariff never reads another's cache."""
        return f"octopus:{self.tariff}"

    def url(self, start: float, end: float) -> str:
        q = urllib.parse.urlencode({"period_from": iso(start), "period_to": iso(end), "page_size": PAGE_SIZE})
        return (
            f"{self.base_url}/v1/products/{self.product}/electricity-tariffs/{self.tariff}"
            f"/standard-unit-rates/?{q}"
        )

    def fetch(self, start: float, end: float) -> list[PriceSlot]:
        """All slots in [start, end), following `next`; PriceError on any failure (nothing partial)."""
        url: str | None = self.url(start, end)
        host = urllib.parse.urlsplit(self.base_url).netloc
        out: list[PriceSlot] = []
        for _page in range(MAX_PAGES):
            assert url is not None
            try:
                body = get(url, "Octopus", self.timeout)
            except HttpStatus as exc:
                if exc.status in (400, 404):
                    raise PriceError(
                        f"Octopus does not know tariff {self.tariff!r} (HTTP {exc.status}); "
                        "check [prices] tariff (E-1R-<product>-<region A..P>)"
                    ) from None
                raise
            slots, url = parse_page(body)
            out += slots
            if url is None:
                break
            if urllib.parse.urlsplit(url).netloc != host:
                raise PriceError(
                    f"Octopus: 'next' points to another host ({urllib.parse.urlsplit(url).netloc})"
                )
        else:
            raise PriceError(f"Octopus: more than {MAX_PAGES} pages")
        return [s for s in out if s.end > start and s.start < end]
