"""The [iec104] section: listener, allow-list, timers, the IOA map and the asset mapping.

Every error names the key and its line (through the config's Section).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gridtap.config import in_range
from gridtap.outputs.iec104.link import LinkParams
from gridtap.outputs.iec104.netflex import CATEGORIES, COMMANDS, SETPOINTS, ModelConfig, default_ioas

if TYPE_CHECKING:
    from gridtap.config import Section

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Iec104Config:
    bind: str = "127.0.0.1"
    port: int = 2404
    allow: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),)
    link: LinkParams = LinkParams()
    model: ModelConfig = field(default_factory=ModelConfig)
    report_s: float = 30.0


def _ip(v: str) -> str | None:
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "must be an IP address (127.0.0.1 for this host only, 0.0.0.0 for every interface)"
    return None


def _allow(sec: Section) -> tuple[Network, ...]:
    raw = sec.get("allow", list, ["127.0.0.1"])
    nets: list[Network] = []
    for item in raw:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except (TypeError, ValueError):
            raise sec.fail("allow", f"{item!r} is not an IP address or network "
                           "(e.g. 10.0.0.5, 10.0.0.0/24)") from None
    if not nets:
        raise sec.fail("allow", "is empty: no controlling station could connect")
    return tuple(nets)


def _ioas(sec: Section) -> dict[str, int]:
    ioas = default_ioas()
    given = sec.get("ioa", dict, {})
    for name, v in given.items():
        if name not in ioas:
            raise sec.fail("ioa", f"unknown point {name!r} (known: {', '.join(sorted(ioas))})")
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 0xFFFFFF:
            raise sec.fail("ioa", f"{name} must be an IOA between 1 and 16777215")
        ioas[name] = v
    seen: dict[int, str] = {}
    for name, v in ioas.items():
        if v in seen:  # a command cannot share an IOA with a monitoring point (nor anything else)
            raise sec.fail("ioa", f"{name} and {seen[v]} both use IOA {v}")
        seen[v] = name
    return ioas


def _assets(sec: Section) -> dict[str, tuple[str, ...]]:
    given = sec.get("assets", dict, {})
    out: dict[str, tuple[str, ...]] = {}
    for cat, series in given.items():
        if cat not in CATEGORIES:
            raise sec.fail("assets", f"unknown category {cat!r} (known: {', '.join(CATEGORIES)})")
        if not isinstance(series, list) or not all(isinstance(s, str) for s in series):
            raise sec.fail("assets", f"{cat} must be a list of sensor series names")
        for s in series:
            if s.removeprefix("-") not in sec.series:
                raise sec.fail("assets", f"{cat}: no sensor provides the series {s.removeprefix('-')!r} "
                               f"(known: {', '.join(sorted(sec.series)) or 'none'})")
        out[cat] = tuple(series)
    return out


def _grid_sensor(sec: Section) -> str | None:
    """The sensor metering the connection point (default: one named "grid", if there is one)."""
    name = sec.get("grid_sensor", str, "grid" if "grid" in sec.series else "")
    if not name:
        return None
    if name not in sec.series or name.endswith(".export") and name.removesuffix(".export") in sec.series:
        raise sec.fail("grid_sensor", f"no sensor is named {name!r} (known: {', '.join(sorted(sec.series))})")
    return str(name)


def parse(sec: Section) -> Iec104Config:
    sec.keys({"bind", "port", "allow", "common_address", "k", "w", "t0", "t1", "t2", "t3", "report_s",
              "select", "select_timeout_s", "contract_w", "test_acts", "time_tags", "ioa", "assets",
              "grid_sensor"})
    d = Iec104Config()
    k = sec.get("k", int, 12, in_range(1, 32767))
    w = sec.get("w", int, 8, in_range(1, 32767))
    if w > k:
        raise sec.fail("w", f"must not exceed k ({k}): the station acknowledges after at most w frames")
    t = {n: float(sec.get(n, (int, float), getattr(d.link, n), in_range(0.05, 255)))
         for n in ("t0", "t1", "t2", "t3")}
    if t["t2"] >= t["t1"]:
        raise sec.fail("t2", "must be shorter than t1 (acknowledge before the peer's t1 runs out)")
    select = sec.get("select", list, [])
    for name in select:
        if name not in (*COMMANDS, *SETPOINTS):
            known = ", ".join((*COMMANDS, *SETPOINTS))
            raise sec.fail("select", f"unknown command {name!r} (known: {known})")
    model = ModelConfig(
        ca=sec.get("common_address", int, 100, in_range(1, 65534)),
        ioas=_ioas(sec),
        select=frozenset(select),
        select_timeout_s=float(sec.get("select_timeout_s", (int, float), 10.0, in_range(0.1, 600))),
        contract_w=sec.get("contract_w", int, 9200, in_range(1, 100_000_000)),
        test_acts=sec.get("test_acts", bool, False),
        time_tags=sec.get("time_tags", bool, True),
        assets=_assets(sec),
        grid_sensor=_grid_sensor(sec),
    )
    return Iec104Config(
        bind=sec.get("bind", str, d.bind, _ip),
        port=sec.get("port", int, d.port, in_range(0, 65535)),
        allow=_allow(sec),
        link=LinkParams(k, w, t["t0"], t["t1"], t["t2"], t["t3"]),
        model=model,
        report_s=float(sec.get("report_s", (int, float), 30.0, in_range(0.1, 3600))),
    )
