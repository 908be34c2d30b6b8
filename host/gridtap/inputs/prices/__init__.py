"""Electricity prices: sources (Octopus Agile, ENTSO-E day-ahead), a durable cache, a fetch schedule.

The ``[prices]`` section of gridtap.toml (parsed here; errors name the key, config.py adds the line):

.. code-block:: toml

    [prices]
    source = "octopus"                    # or "entsoe"
    tariff = "E-1R-AGILE-24-10-01-C"      # octopus: E-1R-<product>-<region A..P>
    # source = "entsoe"
    # zone = "10YBE----------2"           # bidding zone EIC code
    # token_file = "/etc/gridtap/entsoe.token"   # or the environment variable GRIDTAP_ENTSOE_TOKEN
    # formula = "price * 1.06 + 0.12"     # cFos dialect; price = market price in EUR/kWh
    cache = "/var/lib/gridtap/prices.sqlite"     # default: prices.sqlite in [daemon] state_dir
    publish = "16:00"                     # local time of the next day's prices (default per source)
    timezone = "Europe/London"            # of publish (default per source)
    retry_s = 120                         # first retry after a failed fetch; doubles up to retry_cap_s
    retry_cap_s = 1800

Entry points: `parse_config(section) -> PriceSettings`, `PriceSettings.feed(cache_path)` ->
`PriceFeed` (``poll(now)``, ``series()``, ``status(now)``), `PriceSeries`, `PriceSlot`, `PriceError`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gridtap.errors import UserError
from gridtap.inputs.prices.entsoe import EntsoeSource, SupplierFormula
from gridtap.inputs.prices.feed import FeedStatus, PriceFeed, PriceSource, Publication
from gridtap.inputs.prices.octopus import OctopusSource, parse_tariff
from gridtap.inputs.prices.series import PriceError, PriceSeries, PriceSlot
from gridtap.secretfile import read_secret_line

__all__ = [
    "FeedStatus",
    "PriceError",
    "PriceFeed",
    "PriceSeries",
    "PriceSettings",
    "PriceSlot",
    "PriceSource",
    "parse_config",
]

TOKEN_ENV = "GRIDTAP_ENTSOE_TOKEN"
SOURCES = ("octopus", "entsoe")
KNOWN = {
    "source",
    "tariff",
    "zone",
    "token_file",
    "formula",
    "base_url",
    "cache",
    "publish",
    "timezone",
    "retry_s",
    "retry_cap_s",
    "timeout_s",
}
DEFAULT_PUBLISH = {"octopus": ("16:00", "Europe/London"), "entsoe": ("13:00", "Europe/Brussels")}
ZONE = re.compile(r"^10Y[A-Z0-9-]{13}$")


def _fail(key: str, why: str) -> UserError:
    return UserError(f"[prices] key '{key}': {why}")


@dataclass(frozen=True)
class PriceSettings:
    source: str
    publication: Publication
    tariff: str | None = None
    zone: str | None = None
    formula: str | None = None
    token: str | None = field(default=None, repr=False)
    base_url: str | None = None
    cache: Path | None = None
    retry_s: float = 120.0
    retry_cap_s: float = 1800.0
    timeout_s: float = 20.0

    @property
    def unit(self) -> str:
        return "p/kWh" if self.source == "octopus" else "EUR/kWh"

    def make_source(self) -> PriceSource:
        if self.source == "octopus":
            assert self.tariff is not None
            kw = {"base_url": self.base_url} if self.base_url else {}
            return OctopusSource(self.tariff, timeout=self.timeout_s, **kw)
        assert self.zone is not None and self.token is not None
        formula = SupplierFormula(self.formula, ZoneInfo(self.publication.zone)) if self.formula else None
        kw = {"base_url": self.base_url} if self.base_url else {}
        return EntsoeSource(self.zone, self.token, formula, timeout=self.timeout_s, **kw)

    def feed(self, cache_path: Path | None = None) -> PriceFeed:
        """The feed; `cache_path` is used when the section names no cache (the daemon: its state_dir)."""
        return PriceFeed(
            self.make_source(), self.cache or cache_path, self.publication, self.retry_s, self.retry_cap_s
        )


def _str(d: dict[str, Any], key: str, default: str | None = None) -> str | None:
    v = d.get(key, default)
    if v is not None and (not isinstance(v, str) or not v.strip()):
        raise _fail(key, f"expected a non-empty string, got {v!r}")
    return v


def _num(d: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _fail(key, f"expected a number {lo:g}..{hi:g}, got {v!r}")
    return float(v)


def _token(d: dict[str, Any]) -> str:
    path = _str(d, "token_file")
    if path is not None:
        try:
            token = read_secret_line(path, "ENTSO-E token file")
        except UserError as exc:
            raise _fail("token_file", str(exc)) from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise _fail(
                "token_file", f"no ENTSO-E token: set token_file or the environment variable {TOKEN_ENV}"
            )
    if not token.isprintable() or any(c.isspace() for c in token) or len(token) > 200:
        raise UserError("[prices] the ENTSO-E token contains spaces or control characters")
    return token


def parse_config(section: Any) -> PriceSettings:
    if not isinstance(section, dict):
        raise UserError("[prices] must be a table")
    for k in section:
        if k not in KNOWN:
            raise _fail(k, f"unknown key (known here: {', '.join(sorted(KNOWN))})")
    source = _str(section, "source", "octopus")
    if source not in SOURCES:
        raise _fail("source", f"must be one of {', '.join(SOURCES)}, got {source!r}")
    publish_default, zone_default = DEFAULT_PUBLISH[source]
    tzname = _str(section, "timezone", zone_default) or zone_default
    try:
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail("timezone", f"unknown time zone {tzname!r}") from None
    publish = _str(section, "publish", publish_default) or publish_default
    m = re.match(r"^([01]?\d|2[0-3]):([0-5]\d)$", publish)
    if m is None:
        raise _fail("publish", f"expected HH:MM, got {publish!r}")
    pub = Publication(tzname, int(m.group(1)), int(m.group(2)))
    cache = _str(section, "cache")
    common: dict[str, Any] = {
        "publication": pub,
        "base_url": _str(section, "base_url"),
        "cache": Path(cache) if cache else None,
        "retry_s": _num(section, "retry_s", 120, 1, 3600),
        "retry_cap_s": _num(section, "retry_cap_s", 1800, 1, 86400),
        "timeout_s": _num(section, "timeout_s", 20, 1, 300),
    }
    if common["retry_cap_s"] < common["retry_s"]:
        raise _fail("retry_cap_s", "must be >= retry_s")
    if source == "octopus":
        for k in ("zone", "token_file", "formula"):
            if k in section:
                raise _fail(k, 'is for source = "entsoe"')
        tariff = _str(section, "tariff")
        if tariff is None:
            raise _fail("tariff", 'is required for Octopus (e.g. "E-1R-AGILE-24-10-01-C")')
        try:
            parse_tariff(tariff)
        except PriceError as exc:
            raise _fail("tariff", str(exc)) from None
        return PriceSettings("octopus", tariff=tariff, **common)
    if "tariff" in section:
        raise _fail("tariff", 'is for source = "octopus"')
    zone = _str(section, "zone")
    if zone is None or not ZONE.match(zone):
        raise _fail("zone", f'expected a bidding zone EIC code such as "10YBE----------2", got {zone!r}')
    formula = _str(section, "formula")
    if formula is not None:
        try:
            SupplierFormula(formula, None)
        except PriceError as exc:
            raise _fail("formula", str(exc)) from None
    return PriceSettings("entsoe", zone=zone, formula=formula, token=_token(section), **common)
