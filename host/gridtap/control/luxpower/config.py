"""The `[inverter]` section of gridtap.toml (README, "A LuxPower battery inverter").

    [inverter]
    type = "luxpower"
    host = "192.168.1.50"            # the WiFi datalogger's address on your LAN
    port = 8000
    datalogger_serial = "BA12345678" # printed on the datalogger
    inverter_serial = "0123456789"   # printed on the inverter
    dry_run = false                  # decide and log, write nothing
    schedule = ["00:30-04:30"]       # optional fixed AC-charge windows (local time)
    rated_kva = 3.6                  # the inverter's rated power: its reactive % (register 61) are of it

gridtap.config hands the section to `parse_config`; errors name the key ("[inverter] key 'x': ...")
and gridtap.config adds its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gridtap.control.controller import ControllerSettings
from gridtap.control.luxpower.client import LinkSettings
from gridtap.control.schedule import parse_window
from gridtap.errors import UserError

KEYS = {"type", "host", "port", "datalogger_serial", "inverter_serial", "dry_run", "tick_s", "min_dwell_s",
        "verify_s", "reply_timeout_s", "silent_s", "schedule", "schedule_soc", "timezone", "soc_target",
        "rated_kva"}


@dataclass(frozen=True)
class InverterSettings:
    host: str
    datalogger_serial: str
    inverter_serial: str
    port: int = 8000
    tick_s: float = 60.0
    schedule: tuple[str, ...] = ()
    schedule_soc: float = 100.0
    timezone: str | None = None
    soc_target: float = 100.0
    control: ControllerSettings = field(default_factory=ControllerSettings)
    link: LinkSettings = field(default_factory=LinkSettings)


def _err(key: str, why: str) -> UserError:
    return UserError(f"[inverter] key '{key}': {why}")


def _num(d: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _err(key, f"must be a number from {lo:g} to {hi:g}, got {v!r}")
    return float(v)


def _serial(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if v is None:
        raise _err(key, "is required (10 characters, printed on the device)")
    if not isinstance(v, str) or len(v) != 10 or not v.isascii() or not v.isalnum():
        raise _err(key, f"must be the device's 10-character serial (letters and digits), got {v!r}")
    return v


def parse_config(section: Any) -> InverterSettings:
    if not isinstance(section, dict):
        raise UserError("[inverter] must be a table")
    unknown = sorted(set(section) - KEYS)
    if unknown:
        raise _err(unknown[0], f"unknown key (known: {', '.join(sorted(KEYS))})")
    if section.get("type", "luxpower") != "luxpower":
        raise _err("type", f"only \"luxpower\" is supported, got {section['type']!r}")
    host = section.get("host")
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise _err("host", f"must be the datalogger's address, got {host!r}")
    dry = section.get("dry_run", False)
    if not isinstance(dry, bool):
        raise _err("dry_run", f"must be true or false, got {dry!r}")
    sched = section.get("schedule", [])
    if not isinstance(sched, list) or not all(isinstance(w, str) for w in sched):
        raise _err("schedule", 'must be a list of "HH:MM-HH:MM" windows')
    for w in sched:
        try:
            parse_window(w)
        except ValueError as exc:
            raise _err("schedule", str(exc)) from exc
    tz = section.get("timezone")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise _err("timezone", f"unknown time zone {tz!r}") from exc
    control = ControllerSettings(min_dwell_s=_num(section, "min_dwell_s", 300, 0, 86400),
                                 verify_s=_num(section, "verify_s", 300, 10, 86400), dry_run=dry,
                                 rated_va=_num(section, "rated_kva", 3.6, 0.5, 50) * 1000.0)
    link = LinkSettings(reply_timeout_s=_num(section, "reply_timeout_s", 10, 0.5, 120),
                        silent_s=_num(section, "silent_s", 900, 30, 86400))
    return InverterSettings(
        host=host, port=int(_num(section, "port", 8000, 1, 65535)),
        datalogger_serial=_serial(section, "datalogger_serial"),
        inverter_serial=_serial(section, "inverter_serial"),
        tick_s=_num(section, "tick_s", 60, 1, 3600), schedule=tuple(sched),
        schedule_soc=_num(section, "schedule_soc", 100, 0, 100), timezone=tz,
        soc_target=_num(section, "soc_target", 100, 0, 100), control=control, link=link)
