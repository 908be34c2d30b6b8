"""The ``[pvoutput]`` section of gridtap.toml.

.. code-block:: toml

    [pvoutput]
    system_id = 12345
    api_key_file = "/etc/gridtap/pvoutput.key"  # or set GRIDTAP_PVOUTPUT_KEY
    interval = 5                 # minutes: 5, 10 or 15, as set for the system on pvoutput.org
    timezone = "Europe/Brussels" # the system's local time (default: this machine's zone)
    donation = false             # true unlocks v7..v12, m1, 100-status batches, 90-day back-dating
    net = false                  # send n=1 (v2 = export power, v4 = import power)
    v1 = "solar:energy"          # series:quantity, see QUANTITIES
    v2 = "solar:power"
    v4 = "house:power"
    v6 = "grid:voltage"
    rules_dialect = "flukso"     # or "cfos"
    custom_rules = '''CUSTOM_RULES = {"v4": ["v4 * 0.89"]}'''   # or a [pvoutput.rules] table

A value is ``"series:quantity"`` or a table ``{series = "solar", quantity = "power"}``.
*series* is the name the daemon passes to `observe_counter`/`observe_gauge`.
Quantities: ``power`` (average W over the interval: counter delta, else the
mean of W gauges), ``energy`` (Wh since local midnight, from the counter),
``energy_total`` (the counter itself, lifetime Wh; sets ``c1``),
``voltage`` (mean of V gauges), ``temperature`` (mean of °C gauges).
``c1`` is derived (1: v1 and v3 lifetime, 2: only v1, 3: only v3); a ``c1``
key, if given, must agree. Errors are `UserError` naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gridtap.errors import UserError
from gridtap.rules.core import checked_name
from gridtap.secretfile import warn_if_exposed

if TYPE_CHECKING:
    from gridtap.rules import RuleSet

KEY_ENV = "GRIDTAP_PVOUTPUT_KEY"
DEFAULT_BASE_URL = "https://pvoutput.org/service/r2/"
QUANTITIES = ("power", "energy", "energy_total", "voltage", "temperature")
FIELDS = tuple(f"v{i}" for i in range(1, 13))
DONATION_FIELDS = FIELDS[6:]
ALLOWED: dict[str, tuple[str, ...]] = {
    "v1": ("energy", "energy_total"), "v2": ("power",), "v3": ("energy", "energy_total"), "v4": ("power",),
    "v5": ("temperature",), "v6": ("voltage",),
    **{f: QUANTITIES for f in DONATION_FIELDS},
}
KNOWN_KEYS = {"system_id", "api_key_file", "interval", "timezone", "donation", "net", "c1", "base_url",
              "settle_s", "timeout_s", "backlog", "m1", "rules", "custom_rules", "rules_dialect", *FIELDS}


class Secret:
    """A string that never shows itself in repr/str (so never in a log line)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class FieldSource:
    field: str      # v1..v12
    series: str
    quantity: str   # one of QUANTITIES


@dataclass(frozen=True)
class PVOutputSettings:
    system_id: int
    api_key: Secret = field(repr=False)
    interval_min: int = 5
    timezone: str = "UTC"
    donation: bool = False
    net: bool = False
    values: tuple[FieldSource, ...] = ()
    rules: RuleSet | None = field(default=None, compare=False)
    base_url: str = DEFAULT_BASE_URL
    settle_s: float = 20.0
    timeout_s: float = 15.0
    backlog: Path | None = None
    m1: str | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def c1(self) -> int | None:
        total = {s.field for s in self.values if s.quantity == "energy_total"}
        if {"v1", "v3"} <= total:
            return 1
        if "v1" in total:
            return 2
        if "v3" in total:
            return 3
        return None

    @property
    def batch_max(self) -> int:
        return 100 if self.donation else 30

    @property
    def requests_per_hour(self) -> int:
        return 300 if self.donation else 60

    @property
    def max_age_days(self) -> int:
        return 90 if self.donation else 14

    @property
    def sent_fields(self) -> tuple[str, ...]:
        return FIELDS if self.donation else FIELDS[:6]


def _fail(key: str, why: str) -> UserError:
    return UserError(f"[pvoutput] key '{key}': {why}")


def _local_zone() -> str:
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


def _bool(section: dict[str, Any], key: str, default: bool) -> bool:
    v = section.get(key, default)
    if not isinstance(v, bool):
        raise _fail(key, f"expected true/false, got {v!r}")
    return v


def _number(section: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = section.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _fail(key, f"expected a number {lo:g}..{hi:g}, got {v!r}")
    return float(v)


def read_key(section: dict[str, Any]) -> Secret:
    path = section.get("api_key_file")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise _fail("api_key_file", f"expected a file path, got {path!r}")
        warn_if_exposed(path, "PVOutput API key file")
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _fail("api_key_file", f"cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise _fail("api_key_file", f"{path} is not text") from None
        if not text:
            raise _fail("api_key_file", f"{path} is empty")
        key = text
    else:
        key = os.environ.get(KEY_ENV, "").strip()
        if not key:
            raise _fail("api_key_file", f"no API key: set api_key_file or the environment variable {KEY_ENV}")
    if any(c.isspace() for c in key) or not key.isprintable() or len(key) > 200:
        raise UserError("[pvoutput] the API key contains spaces or control characters")
    return Secret(key)


def _source(key: str, v: Any) -> FieldSource:
    if isinstance(v, str):
        series, sep, quantity = v.rpartition(":")
        if not sep:
            raise _fail(key, f"expected \"series:quantity\" such as \"solar:power\", got {v!r}")
    elif isinstance(v, dict):
        unknown = set(v) - {"series", "quantity"}
        if unknown:
            raise _fail(key, f"unknown key {sorted(unknown)[0]!r} (known: series, quantity)")
        s_obj, q_obj = v.get("series"), v.get("quantity")
        if not isinstance(s_obj, str) or not isinstance(q_obj, str):
            raise _fail(key, "needs series = \"name\" and quantity = \"power\" (strings)")
        series, quantity = s_obj, q_obj
    else:
        raise _fail(key, f"expected \"series:quantity\" or a table, got {v!r}")
    if not series or not checked_name(series):
        raise _fail(key, f"series name {series!r} must be letters, digits, '_' and '.'")
    if quantity not in ALLOWED[key]:
        raise _fail(key, f"quantity {quantity!r} cannot go to {key} (allowed: {', '.join(ALLOWED[key])})")
    return FieldSource(key, series, quantity)


def _rules(section: dict[str, Any], names: set[str]) -> RuleSet | None:
    dialect = section.get("rules_dialect", "flukso")
    if dialect not in ("flukso", "cfos"):
        raise _fail("rules_dialect", f"must be flukso or cfos, got {dialect!r}")
    if "rules" in section and "custom_rules" in section:
        raise _fail("custom_rules", "give either rules (a table) or custom_rules (a string), not both")
    key = "rules" if "rules" in section else "custom_rules"
    if key not in section:
        return None
    # The rule compilers load only for a section that has rules.
    from gridtap.rules import RuleFileError, RuleSetError, compile_mapping, load_text
    from gridtap.rules.loader import mapping_from

    try:
        if "rules" in section:
            return compile_mapping(mapping_from(section["rules"], "[pvoutput.rules]"), dialect, names)
        if "custom_rules" in section:
            text = section["custom_rules"]
            if not isinstance(text, str):
                raise _fail("custom_rules", "expected a string holding CUSTOM_RULES = {...} or cFos lines")
            fmt = "cfos" if dialect == "cfos" and "CUSTOM_RULES" not in text \
                and not text.lstrip().startswith("{") else "python"
            return load_text(text, fmt, dialect, "", names)
    except RuleFileError as exc:
        raise _fail(key, str(exc)) from None
    except RuleSetError as exc:
        raise _fail(key, "; ".join(str(e) for e in exc.errors)) from None
    return None


def parse_settings(section: dict[str, Any], series: Collection[str] = ()) -> PVOutputSettings:
    """Validate the [pvoutput] table; raise UserError naming the key.

    `series` are the series the daemon records: cFos rules may read their fields.
    """
    if not isinstance(section, dict):
        raise UserError("[pvoutput] must be a table")
    for key in section:
        if key not in KNOWN_KEYS:
            raise _fail(key, f"unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
    sid = section.get("system_id")
    if isinstance(sid, bool) or not isinstance(sid, int) or sid <= 0:
        raise _fail("system_id", f"expected your PVOutput system id (a positive integer), got {sid!r}")
    interval = section.get("interval", 5)
    if interval not in (5, 10, 15) or isinstance(interval, bool):
        raise _fail("interval", f"must be 5, 10 or 15 (minutes), got {interval!r}")
    tzname = section.get("timezone", _local_zone())
    try:
        if not isinstance(tzname, str):
            raise ValueError
        ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail("timezone", f"unknown time zone {tzname!r}, e.g. \"Europe/Brussels\"") from None
    donation = _bool(section, "donation", False)
    net = _bool(section, "net", False)
    sources = []
    for f in FIELDS:
        if f in section:
            if f in DONATION_FIELDS and not donation:
                raise _fail(f, f"{f} is a donation-only PVOutput field; set donation = true")
            sources.append(_source(f, section[f]))
    base_url = section.get("base_url", DEFAULT_BASE_URL)
    if not isinstance(base_url, str) or not base_url.startswith(("https://", "http://")):
        raise _fail("base_url", f"expected an http(s) URL, got {base_url!r}")
    m1 = section.get("m1")
    if m1 is not None:
        if not donation:
            raise _fail("m1", "m1 is a donation-only PVOutput field; set donation = true")
        if not isinstance(m1, str) or not 0 < len(m1) <= 30:
            raise _fail("m1", "expected a text of 1..30 characters")
    backlog = section.get("backlog")
    if backlog is not None and (not isinstance(backlog, str) or not backlog):
        raise _fail("backlog", "expected a file path for the SQLite backlog")
    # A rule reads the mapped series and, when the daemon passes them, every series it records.
    names = {n for n in (*(s.series for s in sources), *series) if "." not in n}
    s = PVOutputSettings(
        system_id=sid, api_key=read_key(section), interval_min=int(interval), timezone=tzname,
        donation=donation, net=net, values=tuple(sources), rules=_rules(section, names),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        settle_s=_number(section, "settle_s", 20.0, 0.0, 120.0),
        timeout_s=_number(section, "timeout_s", 15.0, 1.0, 120.0),
        backlog=Path(backlog) if backlog else None, m1=m1,
    )
    if "c1" in section and section["c1"] != s.c1:
        raise _fail("c1", f"c1 follows from the quantities (here {s.c1}); got {section['c1']!r}")
    if not sources and s.rules is None:
        raise _fail("v2", "map at least one of v1..v4 to a series, e.g. v2 = \"solar:power\"")
    return s
