"""The Fluvius Netflex data model on the IEC-104 station: commands, setpoints, feedback, reports.

Every command and setpoint has its own IOA and a feedback point on another IOA
(the operator's RTU sees the commanded state mirrored); the interface version
and P/Q per asset category are short floats. The IOA map is configuration; the
default is documented in docs/iec104.md. The commanded state is persisted
(`StateFile`) so a stop stays a stop across a daemon restart, and published as
`gridtap.control.gridlimits.GridLimits` for the battery/EV controllers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gridtap.board.plausible import RateLog
from gridtap.control.gridlimits import GridLimits
from gridtap.outputs.iec104 import codec

log = logging.getLogger("gridtap.outputs.iec104")

INTERFACE_VERSION = 1.0  # Netflex interface data model 1.0 (Annex B)

COMMANDS = ("stop_production", "stop_consumption", "test", "q_mode")  # q_mode: the double command
SETPOINTS = ("MINSETP", "MAXSETP", "MAXSETAP", "MINSETAP", "MINSETQ", "MAXSETQ", "REDENP", "REDENQ")
CATEGORIES = ("solar", "wind", "chp", "storage", "ev", "flexible", "other")

DPI_LOCAL, DPI_REMOTE = 1, 2  # Q control mode as a double point: OFF = local, ON = remote

# value ranges the operator may command; anything else gets a negative confirmation
SETPOINT_RANGE = {"MINSETP": (0.0, 100.0), "MAXSETP": (0.0, 100.0), "MAXSETAP": (0.0, 100.0),
                  "MINSETAP": (0.0, 100.0), "MINSETQ": (-100.0, 100.0), "MAXSETQ": (-100.0, 100.0),
                  "REDENP": (0.0, 255.0), "REDENQ": (0.0, 255.0)}
TEST_REASON = 99
WARN_BURST = 20  # refusal log lines at once, then one per 3 s
ACCEPTED = (codec.C_SC_NA_1, codec.C_DC_NA_1, codec.C_SE_NC_1, codec.C_IC_NA_1, codec.C_CS_NA_1)
COMMAND_POINTS = {codec.C_SC_NA_1: ("stop_production", "stop_consumption", "test"),
                  codec.C_DC_NA_1: ("q_mode",), codec.C_SE_NC_1: SETPOINTS}


def default_ioas() -> dict[str, int]:
    m = {name: 1001 + i for i, name in enumerate(COMMANDS)}
    m |= {f"{name}.feedback": 2001 + i for i, name in enumerate(COMMANDS)}
    m |= {name: 1101 + i for i, name in enumerate(SETPOINTS)}
    m |= {f"{name}.feedback": 2101 + i for i, name in enumerate(SETPOINTS)}
    m["interface_version"] = 3000
    m |= {f"{c}.p": 3101 + i for i, c in enumerate(CATEGORIES)}
    m |= {f"{c}.q": 3201 + i for i, c in enumerate(CATEGORIES)}
    return m


@dataclass
class CommandedState:
    """What the operator has commanded; its defaults are the state before any command."""

    stop_production: bool = False
    stop_consumption: bool = False
    test: bool = False
    q_mode: int = DPI_LOCAL
    setpoints: dict[str, float] = field(default_factory=lambda: {
        "MINSETP": 100.0, "MAXSETP": 100.0, "MAXSETAP": 100.0, "MINSETAP": 100.0,
        "MINSETQ": -100.0, "MAXSETQ": 100.0, "REDENP": 0.0, "REDENQ": 0.0})

    def to_json(self) -> dict[str, object]:
        return {"stop_production": self.stop_production, "stop_consumption": self.stop_consumption,
                "test": self.test, "q_mode": self.q_mode, "setpoints": dict(self.setpoints)}

    @classmethod
    def from_json(cls, d: object) -> CommandedState:
        """Checks every field; ValueError names the first one that is wrong."""
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        s = cls()
        for k in ("stop_production", "stop_consumption", "test"):
            if not isinstance(d.get(k), bool):
                raise ValueError(f"{k} is not true/false")
            setattr(s, k, d[k])
        if d.get("q_mode") not in (DPI_LOCAL, DPI_REMOTE):
            raise ValueError("q_mode is not 1 (local) or 2 (remote)")
        s.q_mode = d["q_mode"]
        sp = d.get("setpoints")
        if not isinstance(sp, dict):
            raise ValueError("setpoints is not an object")
        for name, v in sp.items():
            lo, hi = SETPOINT_RANGE.get(name, (math.nan, math.nan))
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"setpoint {name} = {v!r} unknown or out of range")
            s.setpoints[name] = float(v)
        return s


class StateFile:
    """The commanded state in <state_dir>/iec104-state.json, written atomically and only on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors = 0

    def load(self) -> CommandedState:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return CommandedState()
        except (OSError, UnicodeDecodeError) as exc:
            self.errors += 1
            log.error("iec104: cannot read %s (%s); starting from the uncommanded state", self.path, exc)
            return CommandedState()
        try:
            return CommandedState.from_json(json.loads(raw))
        except ValueError as exc:
            self.errors += 1
            log.error("iec104: %s is not a valid commanded state (%s); starting from the uncommanded state",
                      self.path, exc)
            return CommandedState()

    def save(self, state: CommandedState) -> bool:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(state.to_json(), f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return True
        except OSError as exc:  # a storage fault degrades (the state lives on in RAM), never kills
            self.errors += 1
            log.error("iec104: cannot save the commanded state to %s: %s", self.path, exc)
            return False


@dataclass(frozen=True)
class ModelConfig:
    ca: int = 100
    ioas: dict[str, int] = field(default_factory=default_ioas)
    select: frozenset[str] = frozenset()  # commands/setpoints that need select-before-operate
    select_timeout_s: float = 10.0
    contract_w: int = 9200  # contractual grid capacity: MINSETP/MAXSETP are % of it
    test_acts: bool = False  # in test (reason 99 / test command) act on devices too
    time_tags: bool = True  # spontaneous feedback as M_SP_TB_1/M_DP_TB_1/M_ME_TF_1
    assets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # category -> series ("-name" subtracts)
    grid_sensor: str | None = None  # the sensor at the connection point: the battery's grid loop reads it


def limits_of(state: CommandedState, cfg: ModelConfig) -> GridLimits:
    sp = state.setpoints
    test = state.test or sp["REDENP"] == TEST_REASON or sp["REDENQ"] == TEST_REASON
    export = None if sp["MINSETP"] >= 100.0 else round(cfg.contract_w * sp["MINSETP"] / 100.0)
    imp = None if sp["MAXSETP"] >= 100.0 else round(cfg.contract_w * sp["MAXSETP"] / 100.0)
    parts = [n for n in ("stop_production", "stop_consumption") if getattr(state, n)]
    parts += [f"{n} {sp[n]:g} %" for n in ("MINSETP", "MAXSETP") if sp[n] < 100.0]
    parts += [f"REDENP {sp['REDENP']:g}"] if sp["REDENP"] else []
    parts += [f"{n} {sp[n]:g} %" for n in ("MAXSETAP", "MINSETAP") if sp[n] < 100.0]
    # the Q band as the P limits: % of contract_w (taken as VA), an open end at -100 % / 100 %
    q_low = None if sp["MINSETQ"] <= -100.0 else round(cfg.contract_w * sp["MINSETQ"] / 100.0)
    q_high = None if sp["MAXSETQ"] >= 100.0 else round(cfg.contract_w * sp["MAXSETQ"] / 100.0)
    remote = state.q_mode == DPI_REMOTE
    q_parts = ["Q mode remote" if remote else "Q mode local"]
    q_parts += [f"{n} {sp[n]:g} %" for n in ("MINSETQ", "MAXSETQ") if abs(sp[n]) < 100.0]
    q_parts += [f"REDENQ {sp['REDENQ']:g}"] if sp["REDENQ"] else []
    return GridLimits(export, imp, state.stop_production, state.stop_consumption, sp["MAXSETAP"],
                      sp["MINSETAP"], test, test and not cfg.test_acts, ", ".join(parts), cfg.grid_sensor,
                      remote, q_low, q_high, ", ".join(q_parts))


class NetflexStation:
    """The IEC-104 station (one common address) holding the Netflex data model."""

    def __init__(self, cfg: ModelConfig, state_file: StateFile, publish: Callable[[GridLimits], None],
                 measure: Callable[[str], tuple[float, float, bool]], clock: Callable[[], float] = time.time,
                 ) -> None:
        self.cfg, self.file, self.publish, self.measure, self.clock = cfg, state_file, publish, measure, clock
        self.state = state_file.load()
        self.by_ioa = {ioa: name for name, ioa in cfg.ioas.items()}
        self.selected: dict[str, tuple[float, float]] = {}  # name -> (value, when)
        self.clock_offset = 0.0  # operator's clock - ours, from the last clock sync
        self.refused = 0
        self._ratelog = RateLog(log, every_s=3.0, burst=WARN_BURST)  # a hostile peer cannot flood the log
        self.commands = 0
        publish(limits_of(self.state, cfg))

    # -- helpers ------------------------------------------------------------------------------
    def _refuse(self, msg: str, *args: object) -> None:
        self.refused += 1
        self._ratelog.log(logging.WARNING, "refused", msg, *args)

    def now(self) -> float:
        return self.clock() + self.clock_offset

    def _asdu(self, type_id: int, cot: int, objects: list[tuple[int, bytes]]) -> bytes:
        return codec.encode_asdu(codec.Asdu(type_id, cot, self.cfg.ca, tuple(objects)))

    def _value(self, name: str) -> float:
        if name == "q_mode":
            return float(self.state.q_mode)
        if name in COMMANDS:
            return float(getattr(self.state, name))
        return self.state.setpoints[name]

    def feedback(self, name: str, cot: int) -> bytes:
        # time-tagged types are defined for causes 3, 5, 11 and 12 only: interrogation answers go untagged
        timed = self.cfg.time_tags and cot != codec.COT_INTERROGATED
        ioa, v = self.cfg.ioas[f"{name}.feedback"], self._value(name)
        tag = codec.encode_cp56(self.now()) if timed else b""
        if name == "q_mode":
            type_id, elem = (codec.M_DP_TB_1 if timed else codec.M_DP_NA_1), codec.diq(int(v))
        elif name in COMMANDS:
            type_id, elem = (codec.M_SP_TB_1 if timed else codec.M_SP_NA_1), codec.siq(bool(v))
        else:
            type_id, elem = (codec.M_ME_TF_1 if timed else codec.M_ME_NC_1), codec.short_float(v)
        return self._asdu(type_id, cot, [(ioa, elem + tag)])

    def measurements(self, cot: int) -> list[bytes]:
        """P and Q per category (kW, kvar) in one ASDU, plus the interface version."""
        objs = []
        for c in CATEGORIES:
            p, q, ok = self.measure(c)
            objs.append((self.cfg.ioas[f"{c}.p"], codec.short_float(p / 1000.0, not ok)))
            objs.append((self.cfg.ioas[f"{c}.q"], codec.short_float(q / 1000.0, not ok)))
        objs.append((self.cfg.ioas["interface_version"], codec.short_float(INTERFACE_VERSION)))
        return [self._asdu(codec.M_ME_NC_1, cot, objs)]

    # -- the link's calls ---------------------------------------------------------------------
    def started(self) -> list[bytes]:
        """After STARTDT: end of initialisation; the operator then interrogates and syncs the clock."""
        return [self._asdu(codec.M_EI_NA_1, codec.COT_INITIALISED, [(0, b"\x00")])]

    def handle(self, raw: bytes, peer: str) -> list[bytes]:
        a = codec.decode_asdu(raw)
        if a.type_id not in ACCEPTED or not a.objects:
            self._refuse("iec104: %s sent type %d, which this station does not accept", peer, a.type_id)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_UNKNOWN_TYPE, True))] if a.objects else []
        if a.cot not in (codec.COT_ACT, codec.COT_DEACT) or (a.cot == codec.COT_DEACT
                                                             and a.type_id == codec.C_CS_NA_1):
            self._refuse("iec104: %s sent type %d with cause %d", peer, a.type_id, a.cot)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_UNKNOWN_CAUSE, True))]
        if a.ca != self.cfg.ca and not (a.type_id == codec.C_IC_NA_1 and a.ca == codec.BROADCAST_CA):
            self._refuse("iec104: %s sent type %d to common address %d", peer, a.type_id, a.ca)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_UNKNOWN_CA, True))]
        if a.type_id == codec.C_IC_NA_1:
            return self._interrogation(a)
        if a.type_id == codec.C_CS_NA_1:
            return self._clock_sync(a, peer)
        return self._command(a, peer)

    def _interrogation(self, a: codec.Asdu) -> list[bytes]:
        ioa, qoi = a.objects[0][0], a.objects[0][1][0]
        if ioa != 0:
            return [codec.encode_asdu(codec.mirror(a, codec.COT_UNKNOWN_IOA, True))]
        if a.cot == codec.COT_DEACT or qoi != codec.QOI_STATION:  # groups are not served
            return [codec.encode_asdu(codec.mirror(a, a.cot + 1, True))]
        ca = codec.Asdu(a.type_id, codec.COT_ACT_CON, self.cfg.ca, a.objects, originator=a.originator)
        out = [codec.encode_asdu(ca)]
        out += [self.feedback(n, codec.COT_INTERROGATED) for n in (*COMMANDS, *SETPOINTS)]
        out += self.measurements(codec.COT_INTERROGATED)
        out.append(codec.encode_asdu(codec.Asdu(a.type_id, codec.COT_ACT_TERM, self.cfg.ca, a.objects,
                                                originator=a.originator)))
        return out

    def _clock_sync(self, a: codec.Asdu, peer: str) -> list[bytes]:
        try:
            t = codec.decode_cp56(a.objects[0][1])
        except codec.FrameError as exc:
            self._refuse("iec104: clock sync from %s refused: %s", peer, exc)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_ACT_CON, True))]
        self.clock_offset = t - self.clock()
        log.info("iec104: clock sync from %s: operator's clock is %+.3f s from ours", peer, self.clock_offset)
        return [codec.encode_asdu(codec.mirror(a, codec.COT_ACT_CON))]

    def _command(self, a: codec.Asdu, peer: str) -> list[bytes]:
        ioa, elem = a.objects[0]
        name = self.by_ioa.get(ioa)
        if len(a.objects) != 1 or name not in COMMAND_POINTS[a.type_id]:
            self._refuse("iec104: %s sent type %d to IOA %d, which is not such a command",
                         peer, a.type_id, ioa)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_UNKNOWN_IOA, True))]
        cmd = codec.decode_command(a.type_id, ioa, elem)
        self.commands += 1
        what = f"{name} = {cmd.value:g}{' (select)' if cmd.select else ''}"
        if a.cot == codec.COT_DEACT:
            self.selected.pop(name, None)
            log.info("iec104: command from %s: %s deactivated", peer, name)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_DEACT_CON))]
        why = self._check(name, cmd)
        if why is not None:
            self._refuse("iec104: command from %s refused: %s: %s", peer, what, why)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_ACT_CON, True))]
        if cmd.select:
            self.selected[name] = (cmd.value, time.monotonic())
            log.info("iec104: command from %s: %s selected", peer, what)
            return [codec.encode_asdu(codec.mirror(a, codec.COT_ACT_CON))]
        self.selected.pop(name, None)
        self._apply(name, cmd.value)
        log.info("iec104: command from %s: %s executed", peer, what)
        return [codec.encode_asdu(codec.mirror(a, codec.COT_ACT_CON)),
                self.feedback(name, codec.COT_SPONTANEOUS),
                codec.encode_asdu(codec.mirror(a, codec.COT_ACT_TERM))]

    def _check(self, name: str, cmd: codec.Command) -> str | None:
        if name == "q_mode" and cmd.value not in (DPI_LOCAL, DPI_REMOTE):
            return "a double command is 1 (local) or 2 (remote)"
        if name in SETPOINT_RANGE:
            lo, hi = SETPOINT_RANGE[name]
            if not math.isfinite(cmd.value) or not lo <= cmd.value <= hi:
                return f"outside {lo:g}..{hi:g}"
        if name in self.cfg.select and not cmd.select:
            sel = self.selected.get(name)
            if sel is None or time.monotonic() - sel[1] > self.cfg.select_timeout_s:
                return "select-before-operate: no valid select precedes this execute"
            if sel[0] != cmd.value:
                return f"select-before-operate: execute value differs from the selected {sel[0]:g}"
        return None

    def _apply(self, name: str, value: float) -> None:
        if self._value(name) == value:
            return  # idempotent: a repeated command costs no flash write
        if name == "q_mode":
            self.state.q_mode = int(value)
        elif name in COMMANDS:
            setattr(self.state, name, bool(value))
        else:
            self.state.setpoints[name] = float(value)
        self.file.save(self.state)
        self.publish(limits_of(self.state, self.cfg))
