"""Meters as the cFos formulas see them: board meters ``M<n>`` and meters of type "Expression".

A ``[[meter]]`` table either *collects* board sensors into meter ``M<id>``::

    [[meter]]
    id = 1
    sensors = ["grid"]             # [[sensor]] names; their CT lines give current_l1..l3

or *computes* one from formulas over other meters (an expression meter)::

    [[meter]]
    id = 5
    name = "ev_smooth"             # the sensor id sinks see is derived from it (or give sensor_id)
    power_w = "(power_w * (20 - dt) + M1.power_w * dt) / 20"
    import_wh = "import_wh + max(M1.power_w, 0) * dt / 3600"

Fields a formula may read (cFos names): ``M<n>.power_w`` (W, import positive), ``.import_wh``,
``.export_wh`` (Wh registers), ``.current_l1..l3`` and ``.current`` (mA), ``.dt``; the meter's own
fields without ``M<n>.``; ``dt`` (seconds since this meter's last update) and ``date.*``. A board
meter's phase current is its CT's power over the measured voltage (230 V until one is seen).
An omitted ``current_l2``/``current_l3`` formula is the ``current_l1`` formula, evaluated with
``current`` meaning that phase, as the cFos document says.

`MeterHub` is a board-session sink: it takes the board's gauges and counters, evaluates the
expression meters at most once a second, and hands their values to the virtual-sensor inbox
(gridtap.inputs.virtual), from where the board session stores and publishes them like a board
series (counter store, spool, RRDs, REST, MQTT/HA, PVOutput, IEC-104). An integrating meter's
registers are saved in ``state_dir/meters.json`` (at most once a minute and at close) so they stay
monotonic across restarts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gridtap.errors import UserError

log = logging.getLogger("gridtap.meters")

FORMULA_FIELDS = ("power_w", "import_wh", "export_wh", "current_l1", "current_l2", "current_l3")
REGISTERS = ("import_wh", "export_wh")
MAX_METERS = 64
NOMINAL_V = 230.0
SAVE_EVERY_S = 60.0
MAX_STATE_BYTES = 64 * 1024  # 64 meters' registers are ~5 kB
# An expression meter's plausible power bound: a formula over a house's meters that gives more than
# a megawatt (a unit slip: kW read as W, mA as A) is refused by the session like a board step.
MAX_METER_W = 1_000_000.0


class Inbox(Protocol):
    """Where the meters' values go (gridtap.inputs.virtual.VirtualInbox)."""

    def counter(self, sensor: str, t: float, wh: float, boot: int = 0) -> None: ...

    def power(self, sensor: str, t: float, watts: float) -> None: ...


@dataclass(frozen=True)
class MeterSpec:
    id: int
    name: str
    sensor_id: str = ""                       # expression meters: the series id the sinks see
    export_id: str = ""                       # ... and its export series, when export_wh is computed
    sensors: tuple[str, ...] = ()             # board meters: the [[sensor]] names collected
    formulas: dict[str, Any] = field(default_factory=dict)  # field -> compiled cfos closure
    sources: dict[str, str] = field(default_factory=dict)   # field -> formula text

    @property
    def device(self) -> str:
        return f"M{self.id}"

    @property
    def series(self) -> list[tuple[str, str]]:
        """(series id, role) an expression meter feeds, like `SensorConfig.series`; none for a board meter."""
        if not self.formulas:
            return []
        return [(self.sensor_id, "import")] + ([(self.export_id, "export")] if self.export_id else [])

    def sensor_config(self) -> Any:
        """An expression meter as a virtual sensor (gridtap.config.SensorConfig): a CT-like series with
        no channel of its own, served by every store and output like a board sensor."""
        from gridtap.config import SensorConfig

        return SensorConfig(name=self.name, id=self.sensor_id, kind="ct", index=-1,
                            export_id=self.export_id or None, source="meter", max_w=MAX_METER_W)


def derived_id(name: str, role: str = "import") -> str:
    """A stable 32-hex series id for an expression meter (sensor ids are 32 hex digits)."""
    return hashlib.md5(f"gridtap-meter:{name}:{role}".encode(), usedforsecurity=False).hexdigest()


def _phase_sources(sources: Mapping[str, str]) -> dict[str, str]:
    out = dict(sources)
    if "current_l1" in out:
        for ph in ("current_l2", "current_l3"):
            out.setdefault(ph, out["current_l1"])
    return out


def parse_meters(items: Any, sensor_names: Iterable[str]) -> tuple[MeterSpec, ...]:
    """Validate the [[meter]] tables; compile every formula against the known names. Raise UserError."""
    from gridtap.rules import cfos
    from gridtap.rules.core import RuleSyntaxError
    from gridtap.rules.names import METER_FIELDS, Resolver, date_names

    if items is None:
        return ()
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UserError("meter: write each meter as a [[meter]] table")
    if len(items) > MAX_METERS:
        raise UserError(f"meter: {len(items)} meters; the limit is {MAX_METERS}")
    known_sensors = set(sensor_names)
    ids: dict[int, int] = {}
    for n, item in enumerate(items):
        mid = item.get("id")
        if not isinstance(mid, int) or isinstance(mid, bool) or not 1 <= mid <= 999:
            raise UserError(f"meter[{n}] key 'id': expected the unit number 1..999 (M<id>), got {mid!r}")
        if mid in ids:
            raise UserError(f"meter[{n}] key 'id': M{mid} is also meter[{ids[mid]}]")
        ids[mid] = n
    # Only what MeterHub gives a value: the meters, date.*; CM/GM/PB belong to the charging manager.
    names = Resolver().add(date_names())
    for mid in ids:
        names.add_device(f"M{mid}", (*METER_FIELDS, "dt"))
    own = Resolver(set(names.exact)).add((*METER_FIELDS, "dt"))
    out: list[MeterSpec] = []
    for n, item in enumerate(items):
        where = f"meter[{n}] (M{item['id']})"
        unknown = set(item) - {"id", "name", "sensors", "sensor_id", "export_id", *FORMULA_FIELDS}
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        sources = {k: item[k] for k in FORMULA_FIELDS if k in item}
        name = item.get("name", f"M{item['id']}")
        if not isinstance(name, str) or not name.isidentifier():
            raise UserError(f"{where} key 'name': expected a plain name such as ev_smooth, got {name!r}")
        if "sensors" in item:
            sensors = item["sensors"]
            if sources:
                raise UserError(f"{where}: give sensors (a board meter) or formulas, not both")
            if not isinstance(sensors, list) or not sensors or not all(isinstance(s, str) for s in sensors):
                raise UserError(f"{where} key 'sensors': expected a list of [[sensor]] names")
            for s in sensors:
                if s not in known_sensors:
                    raise UserError(f"{where} key 'sensors': no [[sensor]] named {s!r}")
            out.append(MeterSpec(item["id"], name, sensors=tuple(sensors)))
            continue
        if not sources:
            raise UserError(f"{where}: give sensors = [...] or at least one formula "
                            f"({', '.join(FORMULA_FIELDS)})")
        sources = _phase_sources(sources)
        compiled = {}
        for fld, src in sources.items():
            if not isinstance(src, str):
                raise UserError(f"{where} key {fld!r}: expected a formula string")
            try:
                compiled[fld], _ = cfos.compile_expression(src, names=own)
            except RuleSyntaxError as exc:
                raise UserError(f"{where} key {fld!r}: column {exc.column}: {exc.reason}") from None
        sid = item.get("sensor_id", derived_id(name))
        eid = item.get("export_id", derived_id(name, "export") if "export_wh" in sources else "")
        out.append(MeterSpec(item["id"], name, sid, eid, formulas=compiled, sources=sources))
    return tuple(out)


@dataclass
class _Board:
    power: dict[str, float] = field(default_factory=dict)    # sensor id -> signed W (import positive)
    volts: float = NOMINAL_V
    registers: dict[str, float] = field(default_factory=dict)  # sensor id -> Wh


class MeterHub:
    """A session sink that evaluates the expression meters and feeds their values to `out`."""

    def __init__(self, specs: Sequence[MeterSpec], sensors: Iterable[Any], out: Inbox,
                 state_path: Path | None = None, tz: Any = None,
                 monotonic: Callable[[], float] = time.monotonic, boot: int = 0) -> None:
        self.specs = list(specs)
        # gridtap.inputs.virtual.VirtualInbox: the meters' values take the board's path from there
        self.out = out
        self.boot = boot  # the registers' epoch: a daemon start (a lost meters.json restarts them lower)
        self.state_path = state_path
        self.tz = tz
        self.monotonic = monotonic
        sensors = list(sensors)
        by_name = {s.name: s for s in sensors}
        # the board's series only: the meters' own values come back through the session as well
        self.board_ids = {sid for s in sensors if s.source == "board" for sid, _role in s.series}
        # board meter -> [(import id, export id, line)]
        self.members = {m.id: [(by_name[n].id, by_name[n].export_id or "", by_name[n].line)
                               for n in m.sensors] for m in self.specs if m.sensors}
        self.board = _Board()
        # An expression meter's own fields start at 0 (the document's `import_wh + ...` needs a start).
        self.values: dict[str, dict[str, float]] = {
            m.device: dict.fromkeys(FORMULA_FIELDS, 0.0) if m.formulas else {} for m in self.specs}
        self.last_t: dict[str, float] = {}
        self.last_eval = -math.inf
        self.pending: int | None = None  # the newest second values arrived for, not evaluated yet
        self.saved_at = monotonic()
        self.errors = 0
        self.held_back = 0   # register results below the previous value, not sent
        self._restore()

    # -- Sink
    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if sensor not in self.board_ids:
            return
        self._tick(t)
        if unit == "V" and 50.0 <= value <= 500.0:
            self.board.volts = value
        elif unit == "W" and math.isfinite(value):
            self.board.power[sensor] = value if role != "export" else -value

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        if sensor not in self.board_ids:
            return
        self._tick(t)
        self.board.registers[sensor] = total_milli / 1000.0

    # -- evaluation
    def _tick(self, t: int) -> None:
        """A value of a later second arrived: the pending second is complete, evaluate it (once a second)."""
        if self.pending is not None and t > self.pending:
            self.flush()
        if self.pending is None or t > self.pending:
            self.pending = t

    def flush(self) -> None:
        """Evaluate the pending second now (the board sends a second's values together)."""
        if self.pending is not None and self.pending >= self.last_eval + 1:
            self.last_eval = self.pending
            self.evaluate(float(self.pending))

    def _board_env(self) -> dict[str, float]:
        env: dict[str, float] = {}
        b = self.board
        for mid, members in self.members.items():
            dev = f"M{mid}"
            power = imp = exp = 0.0
            phase = {"L1": 0.0, "L2": 0.0, "L3": 0.0}
            for sid, eid, line in members:
                p = b.power.get(sid, 0.0) + b.power.get(eid, 0.0)
                power += p
                phase[line] += p / b.volts * 1000.0
                imp += b.registers.get(sid, 0.0)
                exp += b.registers.get(eid, 0.0) if eid else 0.0
            vals = {"power_w": power, "import_wh": imp, "export_wh": exp,
                    "current_l1": phase["L1"], "current_l2": phase["L2"], "current_l3": phase["L3"]}
            self.values[dev] = vals
            env.update({f"{dev}.{k}": v for k, v in vals.items()})
        return env

    def evaluate(self, t: float) -> dict[str, dict[str, float]]:
        """One update: board meters from the latest readings, then each expression meter in order."""
        from gridtap.rules.cfos import date_env
        from gridtap.rules.core import RuleRuntimeError, check_result
        from gridtap.rules.names import phase_values

        env = self._board_env()
        env.update(date_env(t, self.tz))
        for m in self.specs:
            if not m.formulas:
                continue
            dev, own = m.device, self.values[m.device]
            dt = t - self.last_t[dev] if dev in self.last_t else 0.0
            local = dict(env)
            local.update(own)
            local["dt"] = dt
            new: dict[str, float] = {}
            for fld, fn in m.formulas.items():
                if fld.startswith("current_l"):
                    local["current"] = own.get(fld, 0.0)
                    local.update(phase_values(env, int(fld[-1])))
                try:
                    v = float(fn(local))
                except (RuleRuntimeError, KeyError, ArithmeticError, ValueError) as exc:
                    self._fault(m, fld, str(exc))
                    continue
                problem = check_result(v)
                if problem is not None:
                    self._fault(m, fld, problem)
                    continue
                if fld in REGISTERS and v < own.get(fld, 0.0):
                    self.held_back += 1  # a register never runs backwards: keep the old value
                    continue
                new[fld] = v
            own.update(new)
            self.last_t[dev] = t
            env.update({f"{dev}.{k}": v for k, v in own.items()})
            env[f"{dev}.dt"] = dt
            self._emit(m, int(t), own)
        if self.monotonic() - self.saved_at >= SAVE_EVERY_S:
            self.save()
        return self.values

    def _fault(self, m: MeterSpec, fld: str, reason: str) -> None:
        self.errors += 1
        log.warning("meter %s field %s: %s (kept the previous value)", m.name, fld, reason)

    def _emit(self, m: MeterSpec, t: int, own: Mapping[str, float]) -> None:
        """The meter's values as a virtual sensor's (checked and stored by the session's path)."""
        if "power_w" in m.formulas:
            self.out.power(m.sensor_id, t, own["power_w"])
        if "import_wh" in m.formulas:
            self.out.counter(m.sensor_id, t, own["import_wh"], self.boot)
        if m.export_id and "export_wh" in m.formulas:
            self.out.counter(m.export_id, t, own["export_wh"], self.boot)

    # -- persistence
    def _restore(self) -> None:
        if self.state_path is None:
            return
        try:
            with open(self.state_path, "rb") as fh:
                raw = fh.read(MAX_STATE_BYTES + 1)
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            data = json.loads(raw)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("meters: cannot read %s (%s); registers start at 0", self.state_path, exc)
            return
        by_name = {m.name: m for m in self.specs if m.formulas}
        for name, regs in (data.items() if isinstance(data, dict) else ()):
            m = by_name.get(name)
            if m is None or not isinstance(regs, dict):
                continue
            for k in REGISTERS:
                v = regs.get(k)
                if isinstance(v, int | float) and math.isfinite(v) and 0 <= v < 1e15:
                    self.values[m.device][k] = float(v)

    def save(self) -> None:
        """Write the expression meters' registers (atomically; a storage fault is logged, not raised)."""
        self.saved_at = self.monotonic()
        if self.state_path is None:
            return
        doc = {m.name: {k: self.values[m.device][k] for k in REGISTERS if k in self.values[m.device]}
               for m in self.specs if m.formulas}
        tmp = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("meters: cannot save %s: %s", self.state_path, exc)
