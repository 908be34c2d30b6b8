"""The names a cFos formula may read, and the resolver the compiler checks them against.

The cFos document names devices ``M<n>`` (meters) and ``E<n>`` (wallboxes) with
dotted fields (`DEVICE_FIELDS`), the global objects ``date.*``, ``PB.input1/2``,
the Charging Manager variables ``CM.*`` (predefined ones start with ``_``; the
admin adds others, e.g. ``CM.var1``) and the global meters ``GM.*`` with the
meter fields. A `Resolver` says which of these a configuration can give a value,
so a formula reading anything else is refused when it loads, not when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

# Fields of a meter or wallbox, as the document lists them (currents in mA, power in W, energy in Wh).
METER_FIELDS = ("current_l1", "current_l2", "current_l3", "current", "power_w", "import_wh", "export_wh")
DEVICE_FIELDS = METER_FIELDS + (
    "offered", "dt", "input1", "input2", "input3", "input4", "soc", "id", "txn_duration", "charging_dur",
    "txn_energy", "min_current", "max_current", "state", "cphases", "pphases", "surplus_pcur",
    "surplus_wanted", "budget", "budget_amount", "budget_used", "com_err", "com_err2", "reactive_power",
)
DATE_FIELDS = ("year", "month", "day", "weekday", "yearday", "hour", "minute", "second", "daysecond",
               "dayminute", "dst")
CM_PREDEFINED = (
    "_num_charging", "_num_charging1", "_max_total_current", "_max_total_evse_current", "_price",
    "_price_level", "_surplus", "_org_surplus", "_storage_home_max_capacity", "_storage_home_capacity",
    "_storage_all_max_capacity", "_storage_all_capacity", "_max_total_current_prc",
)
GLOBAL_METERS = ("grid_demand", "consumed", "produced", "consumed_evse", "available_evse", "surplus",
                 "storage_home", "storage_all", "error")
# The page's German part writes GM.prod_pwr and GM.cons_pwr: older names of `produced` and `consumed`.
GLOBAL_METER_ALIASES = {"prod_pwr": "produced", "cons_pwr": "consumed"}
PB_NAMES = ("PB.input1", "PB.input2")


def canonical(name: str) -> str:
    """The document writes both ``CM.var1`` and ``cm.var1``: the object prefixes are case-blind."""
    head, dot, rest = name.partition(".")
    if dot and head.upper() in ("CM", "GM", "PB"):
        return head.upper() + "." + rest
    return name


def date_names() -> tuple[str, ...]:
    return tuple(f"date.{f}" for f in DATE_FIELDS)


def device_names(device: str, fields: Iterable[str] = DEVICE_FIELDS) -> tuple[str, ...]:
    return tuple(f"{device}.{f}" for f in fields)


def global_meter_names() -> tuple[str, ...]:
    return tuple(f"GM.{m}.{f}" for m in (*GLOBAL_METERS, *GLOBAL_METER_ALIASES) for f in METER_FIELDS)


# What the PVOutput uploader gives a cFos rule per series (outputs/pvoutput/uploader.py):
# power, energies, register, and the voltage/temperature means (`<series>.v`, `<series>.c`).
SERIES_FIELDS = ("power_w", "energy_wh", "today_wh", "import_wh", "v", "c")


@dataclass
class Resolver(Collection[str]):
    """Known names: an exact set plus predicates (e.g. "any CM variable the admin configured")."""

    exact: set[str] = field(default_factory=set)
    rules: list[Callable[[str], bool]] = field(default_factory=list)
    allowed: str = ""  # what may be read, for the message when a name is close to nothing known

    def __iter__(self) -> Iterator[str]:
        return iter(self.exact)

    def __len__(self) -> int:
        return len(self.exact)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.exact or any(r(name) for r in self.rules)

    def add(self, names: Iterable[str]) -> Resolver:
        self.exact.update(names)
        return self

    def add_device(self, device: str, fields: Iterable[str] = DEVICE_FIELDS) -> Resolver:
        return self.add(device_names(device, fields))

    def add_globals(self, cm_vars: Collection[str] = ()) -> Resolver:
        """date.*, PB.*, GM.*, the predefined CM variables and the admin's `cm_vars` (without ``CM.``)."""
        self.add(date_names()).add(PB_NAMES).add(global_meter_names())
        return self.add(f"CM.{v}" for v in (*CM_PREDEFINED, *cm_vars))

    def hint(self, name: str) -> str:
        """A short reason for an unknown name, naming what is close."""
        head = name.split(".", 1)[0]
        near = sorted(n for n in self.exact if n.split(".", 1)[0] == head)[:6]
        if near:
            return f"unknown name {name!r} (known for {head}: {', '.join(near)}...)"
        if self.allowed:
            return f"unknown name {name!r} (allowed: {self.allowed})"
        return f"unknown name {name!r}: nothing in the configuration gives it a value"


def uploader_names(names: Iterable[str]) -> Resolver:
    """Names of a rule set run by the uploader or `gridtap rules eval`: v1..v12, each given name,
    its series fields (`SERIES_FIELDS`), ``dt`` and ``date.*``."""
    given = list(names)
    series = ", ".join(sorted(n for n in given if "." not in n)) or "none"
    r = Resolver(allowed=f"v1..v12, dt, date.<field>, targets, <series>.<quantity> of the series: {series}")
    r.add(f"v{i}" for i in range(1, 13)).add(given).add(("dt", *date_names()))
    return r.add(f"{n}.{f}" for n in given if "." not in n for f in SERIES_FIELDS)



def phase_values(env: Mapping[str, float], phase: int) -> dict[str, float]:
    """``<device>.current`` for phase 1..3: the document's "current of the current phase".

    A charging rule is evaluated once per phase (and an expression meter's
    ``current_lN`` formula for its phase); merge these into the environment.
    """
    suffix = f".current_l{phase}"
    return {k[: -len(suffix)] + ".current": v for k, v in env.items() if k.endswith(suffix)}


def charging_rule_names(meters: Iterable[int], evses: Iterable[int],
                        cm_vars: Collection[str] = ()) -> Resolver:
    """The names a charging rule may read: meters ``M<n>`` and wallboxes ``E<n>`` with every device
    field, ``date.*``, ``PB.*``, ``GM.*`` and the ``CM.*`` variables (predefined and `cm_vars`)."""
    r = Resolver().add_globals(cm_vars)
    for n in meters:
        r.add_device(f"M{n}")
    for n in evses:
        r.add_device(f"E{n}")
    return r
