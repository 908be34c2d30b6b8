"""The [ev] section of gridtap.toml and its [[ev.wallbox]] tables.

```toml
[ev]
port = 9000                    # OCPP 1.6J central system, ws://127.0.0.1:9000/<charge point id>
bind = "127.0.0.1"
max_total_current_a = 25       # house connection, per phase (cFos: _max_total_current)
reserve_a = 10                 # kept free for the largest appliance (a 2.2 kW kettle: 9.6 A)
password_file = "/etc/gridtap/ocpp.pass"   # optional: HTTP basic auth (security profile 1)
grid_sensor = "grid"           # the sensor whose power is M1.power_w (import positive)

[[ev.wallbox]]
id = "garage"                  # the charge point identity in its URL; only listed ids may connect
rule = "gridtap"               # a cFos formula in mA, or a preset: full, surplus, gridtap
max_a = 16
switch_phases = true
target_wh = 40000              # what the car needs by `departure`
departure = "07:00"
```

Errors are `UserError`s naming the key as ``key 'wallbox.0.rule'``;
gridtap.config adds the line.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtap.control.ev.charging import PLAN_FIELDS, ChargeRule, RuleConfigError
from gridtap.errors import UserError

MAX_POWER_W = 100_000.0     # plausibility bound of a wallbox's MeterValues (and of its sensor)
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")   # OCPP CiString48, safe in a URL path
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class WallboxConfig:
    id: str
    index: int                  # E<index>
    rule: ChargeRule
    min_a: float
    max_a: float
    phases: int
    switch_phases: bool
    target_wh: float
    departure_min: int          # minutes after midnight


@dataclass(frozen=True)
class EvConfig:
    bind: str
    port: int
    max_total_current_a: float
    grid_sensor: str
    password: str | None
    interval_s: float
    min_on_s: float
    min_off_s: float
    hysteresis_a: float
    reserve_a: float
    wallboxes: tuple[WallboxConfig, ...]

    def wallbox(self, ident: str) -> WallboxConfig | None:
        return next((w for w in self.wallboxes if w.id == ident), None)


def sensor_id(ident: str) -> str:
    """The series id of a wallbox's meter (stable: derived from its charge point id, not its place)."""
    return hashlib.md5(f"gridtap-ev:{ident}".encode(), usedforsecurity=False).hexdigest()


def sensors(cfg: EvConfig) -> list[Any]:
    """Each wallbox's own meter as a virtual sensor named like its cFos fields, E<n>: power and
    energy from its MeterValues, served like a board sensor (gridtap.inputs.virtual)."""
    from gridtap.config import SensorConfig

    return [SensorConfig(name=f"E{w.index}", id=sensor_id(w.id), kind="ct", index=-1, source="ev",
                         max_w=MAX_POWER_W) for w in cfg.wallboxes]


def _get(d: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any,
         lo: float | None = None, hi: float | None = None) -> Any:
    if key not in d:
        if default is None:
            raise UserError(f"[ev] key '{where}{key}': is required")
        return default
    v = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        raise UserError(f"[ev] key '{where}{key}': expected {' or '.join(k.__name__ for k in kinds)}, "
                        f"got {v!r}")
    if lo is not None and hi is not None and not lo <= float(d[key]) <= hi:
        raise UserError(f"[ev] key '{where}{key}': must be between {lo:g} and {hi:g}, got {v!r}")
    return v


_EV_KEYS = {"bind", "port", "max_total_current_a", "grid_sensor", "password_file", "password_env",
            "interval_s", "min_on_s", "min_off_s", "hysteresis_a", "reserve_a", "wallbox"}
_BOX_KEYS = {"id", "rule", "min_a", "max_a", "phases", "switch_phases", "target_wh", "departure"}


def parse_config(section: Any) -> EvConfig:
    if not isinstance(section, dict):
        raise UserError("[ev] must be a table")
    for k in section:
        if k not in _EV_KEYS:
            raise UserError(f"[ev] key '{k}': unknown key (known here: {', '.join(sorted(_EV_KEYS))})")
    boxes = section.get("wallbox", [])
    if not isinstance(boxes, list) or not boxes:
        raise UserError("[ev] key 'wallbox': give at least one [[ev.wallbox]] table")
    if len(boxes) > 16:
        raise UserError("[ev] key 'wallbox': at most 16 wallboxes")
    parsed = tuple(_wallbox(b, i) for i, b in enumerate(boxes))
    seen: set[str] = set()
    for i, w in enumerate(parsed):
        if w.id in seen:
            raise UserError(f"[ev] key 'wallbox.{i}.id': {w.id!r} is listed twice")
        seen.add(w.id)
    known = _known_names(len(parsed))
    for i, w in enumerate(parsed):
        bad = w.rule.unknown(known)
        if bad:
            raise UserError(f"[ev] key 'wallbox.{i}.rule': unknown name {bad[0]!r} (known: M1.power_w, "
                            "M1.current_l1..3, surplus_w, date.hour, date.dayminute, date.weekday and the "
                            f"document's other date.* names, E.<field>, E1..E{len(parsed)}.<field>)")
    return EvConfig(
        bind=_get(section, "bind", "", str, "127.0.0.1"),
        port=_get(section, "port", "", int, 9000, 0, 65535),
        max_total_current_a=float(_get(section, "max_total_current_a", "", (int, float), None, 6, 1000)),
        grid_sensor=_get(section, "grid_sensor", "", str, "grid"),
        password=_password(section),
        interval_s=float(_get(section, "interval_s", "", (int, float), 10.0, 1, 300)),
        min_on_s=float(_get(section, "min_on_s", "", (int, float), 300.0, 0, 3600)),
        min_off_s=float(_get(section, "min_off_s", "", (int, float), 300.0, 0, 3600)),
        hysteresis_a=float(_get(section, "hysteresis_a", "", (int, float), 1.0, 0, 10)),
        reserve_a=float(_get(section, "reserve_a", "", (int, float), 0.0, 0, 100)),
        wallboxes=parsed,
    )


def _wallbox(b: Any, i: int) -> WallboxConfig:
    where = f"wallbox.{i}."
    if not isinstance(b, dict):
        raise UserError(f"[ev] key 'wallbox.{i}': must be a table, written [[ev.wallbox]]")
    for k in b:
        if k not in _BOX_KEYS:
            known = ", ".join(sorted(_BOX_KEYS))
            raise UserError(f"[ev] key '{where}{k}': unknown key (known here: {known})")
    ident = _get(b, "id", where, str, None)
    if not _ID.match(ident):
        raise UserError(f"[ev] key '{where}id': 1 to 48 letters, digits, '.', '_' or '-', got {ident!r}")
    try:
        rule = ChargeRule.compile(_get(b, "rule", where, str, "gridtap"))
    except RuleConfigError as exc:
        raise UserError(f"[ev] key '{where}rule': {exc}") from None
    min_a = float(_get(b, "min_a", where, (int, float), 6.0, 6, 80))
    max_a = float(_get(b, "max_a", where, (int, float), 16.0, 6, 80))
    if max_a < min_a:
        raise UserError(f"[ev] key '{where}max_a': {max_a:g} is below min_a {min_a:g}")
    dep = _get(b, "departure", where, str, "07:00")
    m = _HHMM.match(dep)
    if m is None:
        raise UserError(f"[ev] key '{where}departure': expected HH:MM, got {dep!r}")
    return WallboxConfig(
        id=ident, index=i + 1, rule=rule, min_a=min_a, max_a=max_a,
        phases=_get(b, "phases", where, int, 3, 1, 3),
        switch_phases=_get(b, "switch_phases", where, bool, False),
        target_wh=float(_get(b, "target_wh", where, (int, float), 0.0, 0, 200_000)),
        departure_min=int(m.group(1)) * 60 + int(m.group(2)),
    )


def _password(section: dict[str, Any]) -> str | None:
    if "password_file" in section and "password_env" in section:
        raise UserError("[ev] key 'password_env': give password_file or password_env, not both")
    if "password_file" in section:
        path = Path(_get(section, "password_file", "", str, None))
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"[ev] key 'password_file': cannot read {path}: {exc.strerror}") from None
    elif "password_env" in section:
        name = _get(section, "password_env", "", str, None)
        text = os.environ.get(name, "").strip()
        if not text:
            raise UserError(f"[ev] key 'password_env': the environment variable {name} is not set")
    else:
        return None
    if not 8 <= len(text) <= 40:
        # OCPP 1.6 security profile 1: AuthorizationKey is 16..40 bytes; 8 is our floor for old boxes
        raise UserError("[ev]: the OCPP password must be 8 to 40 characters")
    return text


def _known_names(n: int) -> set[str]:
    from gridtap.rules.names import date_names

    names = {"M1.power_w", "M1.current_l1", "M1.current_l2", "M1.current_l3", "surplus_w", "date.wday",
             *date_names()}
    for prefix in ["E"] + [f"E{i}" for i in range(1, n + 1)]:
        names.update(f"{prefix}.{f}" for f in PLAN_FIELDS)
    return names
