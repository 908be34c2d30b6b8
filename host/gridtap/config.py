"""gridtap.toml: load, validate, and explain every mistake with its key and line.

    cfg = load_config(Path("gridtap.toml"))

Errors raise `UserError("gridtap.toml line 23: sensor #2 key 'gain': ...")`,
never a traceback. An output's section ([mqtt], [flukso], [pvoutput], ...:
`gridtap.outputs.REGISTRY`) is parsed by that output's class through a
`Section`, which reads values with the same checks and line numbers; a
section for an output that is not installed is rejected as "not available"
rather than silently ignored.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridtap import outputs
from gridtap.errors import UserError
from gridtap_fw import wire

if TYPE_CHECKING:
    from gridtap.tomllines import Path as KeyPath

SENSOR_ID = re.compile(r"^[0-9a-f]{32}$")
BAUDS = wire.LINK_BAUDS
KINDS = ("ct", "pulse")
TRIGGERS = ("edge", "level")
UNITS = ("wh", "litre")
RRD_MODES = ("auto", "rrdcached", "batched")
# The line a CT sits on, and how far its voltage lags the VT's (the VT is on
# L1; a one-VT board takes L2 and L3 to be L1's voltage a third of a cycle
# later: hardware/analogue.md section 2a).
LINE_LAG_DEG = {"L1": 0, "L2": 120, "L3": 240}
LINES = tuple(LINE_LAG_DEG)
MAX_CT = 8
MAX_PULSE = 8


def wrap_mdeg(mdeg: int) -> int:
    """A phase in millidegrees brought into the board's range, -180000..179999."""
    return (mdeg + 180000) % 360000 - 180000


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/gridtap")
    rrd_dir: Path = Path("/var/lib/gridtap/rrd")
    rrdcached_socket: Path | None = None  # None: the daemon starts its own rrdcached
    rrdcached_flush_s: int = 1800  # how often each RRD file is written (by rrdcached or, batched, the daemon)
    # "rrdcached": through rrdcached; "batched": the daemon holds the updates itself and writes each
    # file once per rrdcached_flush_s with rrdtool 1.0's commands (OpenWrt); "auto": rrdcached if it
    # is installed or rrdcached_socket is set, else batched.
    rrd_mode: str = "auto"
    bind: str = "127.0.0.1"  # the LAN (or the world) only by explicit choice, as on the Flukso FLM
    port: int = 8080
    api: bool = True
    cors_origins: tuple[str, ...] = ()  # origins whose pages may read the API ("*": any); none by default
    jsonp: bool = False  # JSONP callbacks let any web page read live power: off unless asked for
    price_per_kwh: float = 0.18  # the `eurperyear` unit (Flukso hard-coded 0.18)
    state_flush_s: int = 300  # how often counter state is written to SQLite


@dataclass(frozen=True)
class BoardConfig:
    port: str = "/dev/ttyUSB0"
    baud: int = 115200
    save_wh: int | None = None
    save_min: int | None = None
    # How long (board time) the board's frames may wait in the port's buffer before the daemon
    # reads them: one wake-up per read_batch_s instead of one per burst fragment. Unset in the
    # file: 1 s, or 0 (read at once) when MQTT is configured, whose subscribers get live values
    # within 200 ms.
    read_batch_s: float = 1.0
    # The board's description (hardware/board.json, as `gridtap flash` copied it to the board): its
    # channels and ratings bound what the daemon believes of it (gridtap.board.plausible). None: the
    # reference board's file of this installation.
    board_file: Path | None = None


@dataclass(frozen=True)
class SensorConfig:
    name: str
    id: str
    kind: str  # "ct" | "pulse"
    index: int  # CT channel or pulse input, 0-based
    enabled: bool = True
    export_id: str | None = None
    voltage_id: str | None = None  # a CT's Vrms gauge as its own Flukso sensor (MQTT), as the FLM03's
    gain: float = 1.0
    phase_deg: float = 0.0
    line: str = "L1"
    invert: bool = False
    meter_constant: float = 1000.0  # impulses per kWh (or per m3)
    debounce_ms: int = 20
    trigger: str = "edge"
    unit: str = "wh"
    # "board": a channel of the board; otherwise a virtual sensor (no channel, index -1) computed or
    # measured elsewhere ("meter": a [[meter]] expression, "ev": a wallbox over OCPP), fed to the same
    # stores and outputs through the board session (gridtap.virtual)
    source: str = "board"
    max_w: float = 0.0  # a virtual sensor's plausible power bound (W); board channels use board.json

    @property
    def phase_mdeg(self) -> int:
        """The board's phase_mdeg: the calibration's phase_deg plus the line's lag
        behind the VT, in millidegrees within -180000..179999 (L3's 240 is -120)."""
        return wrap_mdeg(round((self.phase_deg + LINE_LAG_DEG[self.line]) * 1000))

    @property
    def series(self) -> list[tuple[str, str]]:
        """(sensor id, role) of every series this sensor feeds: import/export/pulse."""
        if self.kind == "ct":
            out = [(self.id, "import")]
            if self.export_id:
                out.append((self.export_id, "export"))
            return out
        return [(self.id, "pulse")]


@dataclass(frozen=True)
class Config:
    path: Path
    daemon: DaemonConfig
    board: BoardConfig
    sensors: tuple[SensorConfig, ...]
    outputs: dict[str, Any] = field(default_factory=dict)  # section -> the settings its output parsed
    sections: dict[str, Any] = field(default_factory=dict)  # SECTIONS ([prices], [control]) -> their settings
    meters: tuple[Any, ...] = ()  # gridtap.meters.MeterSpec of each [[meter]]
    # sensors with no board channel: expression meters, wallboxes ([ev]); see SensorConfig.source
    virtual: tuple[SensorConfig, ...] = ()

    @property
    def all_sensors(self) -> tuple[SensorConfig, ...]:
        """The board's sensors, then the virtual ones: what the stores and outputs serve."""
        return self.sensors + self.virtual

    def sensor(self, ident: str) -> SensorConfig:
        for s in self.all_sensors:
            if ident in (s.name, s.id, s.export_id):
                return s
        raise UserError(f"no sensor named or with id {ident!r} in {self.path}")

    def series(self) -> dict[str, tuple[SensorConfig, str]]:
        """Every series with an RRD: the board sensors' and the virtual sensors'."""
        return {sid: (s, role) for s in self.all_sensors for sid, role in s.series}


# Sections that are not outputs, each parsed by its own module: section -> "module:function".
SECTIONS: dict[str, str] = {
    "prices": "gridtap.inputs.prices:parse_config",
    "control": "gridtap.control.settings:parse_config",
}


def series_name(sensor: SensorConfig, role: str) -> str:
    """A series' name where outputs name series (PVOutput): the sensor's name, `<name>.export` for export."""
    return f"{sensor.name}.export" if role == "export" else sensor.name


class _Checker:
    """Reads typed values out of the parsed dict; errors name key and line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text
        self._lines: Any = None

    @property
    def lines(self) -> Any:
        """Key path -> line, mapped only once an error needs it (a good config never pays for it)."""
        if self._lines is None:
            from gridtap.tomllines import locate

            self._lines = locate(self.text)
        return self._lines

    def fail(self, key: KeyPath, why: str) -> UserError:
        from gridtap.tomllines import line_of

        line = line_of(self.lines, key)
        where = f"{self.path.name} line {line}" if line else str(self.path.name)
        return UserError(f"{where}: {_describe(key)}: {why}")

    def table(self, data: dict[str, Any], key: KeyPath, known: set[str]) -> None:
        for name in data:
            if name not in known:
                hint = ", ".join(sorted(known))
                raise self.fail((*key, name), f"unknown key (known here: {hint})")

    def get(
        self,
        data: dict[str, Any],
        key: KeyPath,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        name = key[-1]
        assert isinstance(name, str)
        if name not in data:
            if default is _REQUIRED:
                raise self.fail(key, "is required")
            return default
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            if set(kinds) == {int, float}:
                want = "a number"
            else:
                want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            got = _TYPE_NAMES.get(type(value), type(value).__name__)
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise self.fail(key, f"expected {want}, got {got} {shown}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if check is not None:
            why = check(value)
            if why:
                raise self.fail(key, why)
        return value


_REQUIRED = object()
_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true/false",
    list: "an array",
    dict: "a table",
}


def _describe(key: KeyPath) -> str:
    if len(key) >= 2 and isinstance(key[1], int):
        head = f"[[{key[0]}]] #{key[1] + 1}"
        rest = key[2:]
    else:
        head = f"[{key[0]}]" if len(key) > 1 else ""
        rest = key[1:] if len(key) > 1 else key
    names = ".".join(str(k) for k in rest)
    if not names:
        return head or "file"
    return f"{head} key '{names}'" if head else f"key '{names}'"


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if lo <= v <= hi else f"must be {lo}..{hi}, got {v!r}"


def _board_range(pid: int, scale: float = 1.0) -> Callable[[Any], str | None]:
    """The values the board accepts for a parameter (wire.PARAMS min..max), in the file's unit."""
    lo, hi = wire.PARAMS[pid][3], wire.PARAMS[pid][4]
    assert lo is not None and hi is not None
    if scale == 1.0:
        return _range(lo, hi)
    return _range(lo / scale, hi / scale)


def _one_of(options: tuple[Any, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(map(str, options))}, got {v!r}"


def _line(v: str) -> str | None:
    if v in LINE_LAG_DEG:
        return None
    return (f"must be one of {', '.join(LINES)} (the line the CT's cable is on; the board's VT is on L1), "
            f"got {v!r}")


def _sensor_id(v: str) -> str | None:
    return None if SENSOR_ID.match(v) else f"must be 32 lowercase hex digits, got {v!r}"


#: A gridtap.toml is a few kB; anything this big is a mistake (or an attack on a 64 MB router).
MAX_CONFIG_BYTES = 256 * 1024
REQUIRED = _REQUIRED  # for outputs' parse functions: Section.get(key, kind, REQUIRED)
in_range = _range
one_of = _one_of


class Section:
    """An output's table, read with the config's checks: every error names the key and its line."""

    def __init__(self, checker: _Checker, name: str, data: dict[str, Any], series: frozenset[str],
                 sensors: tuple[SensorConfig, ...] = ()) -> None:
        self._c = checker
        self.name = name
        self.data = data
        self.series = series  # the series names sensors provide (series_name)
        self.sensors = sensors  # the board's sensors, then the virtual ones ([flukso] names the latter)

    def keys(self, known: set[str]) -> None:
        self._c.table(self.data, (self.name,), known)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any,
            check: Callable[[Any], str | None] | None = None) -> Any:
        return self._c.get(self.data, (self.name, key), kind, default, check)

    def fail(self, key: str | None, why: str) -> UserError:
        return self._c.fail((self.name,) if key is None else (self.name, key), why)

    def file(self, value: str) -> Path:
        """A path from this section, relative to the config file's directory."""
        return _dir(self._c.path, value)


def load_config(path: Path) -> Config:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"config file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path = Path("gridtap.toml")) -> Config:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise UserError(f"{path.name}: larger than {MAX_CONFIG_BYTES // 1024} kB; "
                        "a gridtap config is a few kB (is this the right file?)")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path.name}: not valid TOML: {exc}") from exc
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively
        raise UserError(f"{path.name}: arrays or inline tables nested too deeply") from None
    c = _Checker(path, text)
    known = {"daemon", "board", "sensor", "meter", "rules", *outputs.REGISTRY, *SECTIONS}
    c.table(data, (), known)
    for name in ("daemon", "board", *outputs.REGISTRY, *SECTIONS):
        if name in data and not isinstance(data[name], dict):
            raise c.fail((name,), "must be a table, written [" + name + "]")
    if "rules" in data:
        raise c.fail(("rules",), "a top-level [rules] section has no effect in the daemon; "
                     "put PVOutput rules in [pvoutput] (rules = {...} or custom_rules)")
    daemon = _daemon(c, data.get("daemon", {}), path)
    classes = {name: _output_class(c, name) for name in outputs.REGISTRY if name in data}
    board = _board(c, data.get("board"), live_subscribers=any(cls.live for cls in classes.values()))
    sensors = _sensors(c, data.get("sensor"))
    meters: tuple[Any, ...] = ()
    if "meter" in data:  # the formula compiler loads only for a config that has meters
        from gridtap.meters import parse_meters

        meters = parse_meters(data["meter"], (s.name for s in sensors))
    virtual = [m.sensor_config() for m in meters if m.series]
    for n, v in enumerate(virtual):
        _check_virtual(c, ("meter", n), v, sensors, virtual[:n])
    # Outputs that measure sensors of their own ([ev]'s wallboxes) are parsed first, so the others
    # (PVOutput fields, IEC-104 assets) may name those sensors' series.
    providers = [name for name, cls in classes.items() if hasattr(cls, "virtual_sensors")]
    parsed: dict[str, Any] = {}
    for name in providers:
        parsed[name] = _parse_output(c, classes[name], Section(c, name, data[name], frozenset()))
        for v in classes[name].virtual_sensors(parsed[name]):
            _check_virtual(c, (name,), v, sensors, virtual)
            virtual.append(v)
    series = frozenset(series_name(s, role) for s in (*sensors, *virtual) for _sid, role in s.series)
    for name, cls in classes.items():
        if name not in parsed:
            parsed[name] = _parse_output(c, cls, Section(c, name, data[name], series, (*sensors, *virtual)))
    parsed = {name: parsed[name] for name in classes}  # REGISTRY order: the daemon builds them so
    sections = {name: _parse_section(c, name, data[name]) for name in SECTIONS if name in data}
    if "control" in sections:
        _check_policy(c, sections["control"], sensors, text)
    return Config(path=path, daemon=daemon, board=board, sensors=sensors, outputs=parsed, sections=sections,
                  meters=meters, virtual=tuple(virtual))


def _check_virtual(c: _Checker, where: KeyPath, v: SensorConfig, sensors: tuple[SensorConfig, ...],
                   earlier: list[SensorConfig]) -> None:
    """A virtual sensor's ids are 32 lowercase hex digits and its ids and name are nobody else's."""
    taken = {sid for s in (*sensors, *earlier) for sid, _ in s.series}
    taken |= {s.voltage_id for s in sensors if s.voltage_id}
    for sid, _role in v.series:
        if _sensor_id(sid) is not None or sid in taken:
            raise c.fail(where, f"series id {sid!r} must be 32 lowercase hex digits "
                         "and not another series' id")
        taken.add(sid)
    if v.name in {s.name for s in (*sensors, *earlier)}:
        raise c.fail(where, f"the sensor name {v.name!r} is taken by another sensor")


def _parse_section(c: _Checker, name: str, data: dict[str, Any]) -> Any:
    """A SECTIONS table through its module's parse_config; its "key 'x'" errors get x's line."""
    import importlib

    from gridtap.tomllines import line_of

    module, func = SECTIONS[name].split(":")
    try:
        return getattr(importlib.import_module(module), func)(data)
    except UserError as exc:
        msg = str(exc)
        m = re.search(r"key '([^']+)'", msg)
        # a dotted key is a sub-table's key ("battery.efficiency" in [control.battery])
        line = (line_of(c.lines, (name, *m.group(1).split("."))) if m else None) or line_of(c.lines, (name,))
        if not msg.startswith(f"[{name}]"):
            msg = f"[{name}]: {msg}"
        raise UserError(f"{c.path.name} line {line}: {msg}") from exc


def _check_policy(c: _Checker, control: Any, sensors: tuple[SensorConfig, ...], text: str) -> None:
    """Compile [control]'s policy against the configured sensors; errors get the file's line."""
    from gridtap.tomllines import line_of

    try:
        control.build_policy(sensors)
    except UserError as exc:
        msg = str(exc)
        start = line_of(c.lines, ("control", "policy")) or 0
        m = re.search(r"policy line (\d+)", msg)
        if m and start:
            # a multi-line string that opens with a newline starts on the next file line
            first = text.splitlines()[start - 1].rstrip().endswith(("'''", '"""'))
            line = start + int(m.group(1)) - (0 if first else 1)
            msg = msg.replace(f"policy line {m.group(1)}", "policy")
        else:
            line = start
        raise UserError(f"{c.path.name} line {line}: {msg}") from exc


def _output_class(c: _Checker, section: str) -> Any:
    try:
        return outputs.load(section)
    except ImportError as exc:
        raise c.fail((section,), f"the {section} feature is not available in this gridtap ({exc})") from exc


def _parse_output(c: _Checker, cls: Any, section: Section) -> Any:
    try:
        return cls.parse(section)
    except UserError as exc:
        msg = str(exc)
        if msg.startswith(c.path.name):
            raise  # from Section: it has the line already
        # The output's own parser names the key ("[pvoutput] key 'interval': ..."); add that key's line.
        from gridtap.tomllines import line_of

        m = re.search(r"key '([^']+)'", msg)
        # a dotted key such as 'wallbox.1.rule' names the second [[ev.wallbox]]'s rule
        key = tuple(int(p) if p.isdigit() else p for p in m.group(1).split(".")) if m else ()
        line = line_of(c.lines, (section.name, *key))
        if not msg.startswith(f"[{section.name}]"):
            msg = f"[{section.name}]: {msg}"
        raise UserError(f"{c.path.name} line {line}: {msg}") from exc


def _dir(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base.parent / p).resolve()


def _daemon(c: _Checker, d: dict[str, Any], path: Path) -> DaemonConfig:
    k: KeyPath = ("daemon",)
    c.table(
        d,
        k,
        {
            "state_dir",
            "rrd_dir",
            "rrdcached_socket",
            "rrdcached_flush_s",
            "rrd_mode",
            "bind",
            "port",
            "api",
            "cors_origins",
            "jsonp",
            "price_per_kwh",
            "state_flush_s",
        },
    )
    dflt = DaemonConfig()
    state = c.get(d, (*k, "state_dir"), str, None)
    rrd = c.get(d, (*k, "rrd_dir"), str, None)
    sock = c.get(d, (*k, "rrdcached_socket"), str, None)
    state_dir = _dir(path, state) if state else dflt.state_dir
    mode = c.get(d, (*k, "rrd_mode"), str, dflt.rrd_mode, _one_of(RRD_MODES))
    if mode == "batched" and sock:
        raise c.fail((*k, "rrd_mode"), 'is "batched", so the daemon writes the RRDs itself: '
                     "remove rrdcached_socket or set rrd_mode to \"rrdcached\"")
    return DaemonConfig(
        state_dir=state_dir,
        rrd_dir=_dir(path, rrd) if rrd else state_dir / "rrd",
        rrdcached_socket=_dir(path, sock) if sock else None,
        rrdcached_flush_s=c.get(d, (*k, "rrdcached_flush_s"), int, dflt.rrdcached_flush_s, _range(10, 86400)),
        rrd_mode=mode,
        bind=c.get(d, (*k, "bind"), str, dflt.bind),
        port=c.get(d, (*k, "port"), int, dflt.port, _range(0, 65535)),
        api=c.get(d, (*k, "api"), bool, dflt.api),
        cors_origins=tuple(c.get(d, (*k, "cors_origins"), list, [], _origins)),
        jsonp=c.get(d, (*k, "jsonp"), bool, dflt.jsonp),
        price_per_kwh=float(
            c.get(d, (*k, "price_per_kwh"), (int, float), dflt.price_per_kwh, _range(0, 100))
        ),
        state_flush_s=c.get(d, (*k, "state_flush_s"), int, dflt.state_flush_s, _range(1, 86400)),
    )


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\*$")


def _origins(v: list[Any]) -> str | None:
    """CORS origins as browsers send them: scheme://host[:port], or "*" for any page."""
    for o in v:
        if not isinstance(o, str) or not _ORIGIN.fullmatch(o):
            return f"{o!r} is not an origin: expected \"http(s)://host[:port]\" or \"*\""
    return None


def _board(c: _Checker, d: Any, live_subscribers: bool) -> BoardConfig:
    k: KeyPath = ("board",)
    if d is None:
        raise c.fail(k, "section [board] is required (it names the serial port)")
    c.table(d, k, {"port", "baud", "save_wh", "save_min", "read_batch_s", "board_file"})
    # under the board's 2 s resend time (firmware RETX_MS), so batched frames are ACKed before it
    batch = c.get(d, (*k, "read_batch_s"), (int, float), 0.0 if live_subscribers else 1.0, _range(0, 1.5))
    return BoardConfig(
        port=c.get(d, (*k, "port"), str, _REQUIRED, lambda v: None if v else "must not be empty"),
        baud=c.get(d, (*k, "baud"), int, 115200, _one_of(BAUDS)),
        save_wh=c.get(d, (*k, "save_wh"), int, None, _board_range(wire.P_SAVE_WH)),
        save_min=c.get(d, (*k, "save_min"), int, None, _board_range(wire.P_SAVE_MIN)),
        read_batch_s=float(batch),
        board_file=_path_of(c, c.get(d, (*k, "board_file"), str, None, _nonempty)),
    )


def _nonempty(v: str) -> str | None:
    return None if v else "must not be empty"


def _path_of(c: _Checker, text: str | None) -> Path | None:
    """A path from the file: relative ones are taken from the config file's folder."""
    if text is None:
        return None
    p = Path(text).expanduser()
    return p if p.is_absolute() else c.path.parent / p


_SENSOR_KEYS = {
    "name",
    "id",
    "kind",
    "channel",
    "input",
    "enabled",
    "export_id",
    "voltage_id",
    "gain",
    "phase_deg",
    "line",
    "invert",
    "meter_constant",
    "debounce_ms",
    "trigger",
    "unit",
}
_CT_ONLY = {"channel", "export_id", "voltage_id", "gain", "phase_deg", "line", "invert"}
_PULSE_ONLY = {"input", "meter_constant", "debounce_ms", "trigger", "unit"}


def _sensors(c: _Checker, items: Any) -> tuple[SensorConfig, ...]:
    if items is None:
        raise c.fail(("sensor",), "no sensors: add at least one [[sensor]] table")
    if not isinstance(items, list):
        raise c.fail(("sensor",), "must be an array of tables, written [[sensor]]")
    out: list[SensorConfig] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    seen_slots: dict[tuple[str, int], int] = {}
    for i, d in enumerate(items):
        k: KeyPath = ("sensor", i)
        if not isinstance(d, dict):
            raise c.fail(k, "must be a table")
        c.table(d, k, _SENSOR_KEYS)
        name = c.get(
            d,
            (*k, "name"),
            str,
            _REQUIRED,
            lambda v: (
                None
                if re.match(r"^[A-Za-z0-9_.\-]{1,40}$", v)
                else "must be 1..40 letters, digits, '_', '-' or '.'"
            ),
        )
        ident = c.get(d, (*k, "id"), str, _REQUIRED, _sensor_id)
        kind = c.get(d, (*k, "kind"), str, _REQUIRED, _one_of(KINDS))
        wrong = (_PULSE_ONLY if kind == "ct" else _CT_ONLY) & set(d)
        if wrong:
            bad = sorted(wrong)[0]
            raise c.fail((*k, bad), f"does not apply to a {kind} sensor")
        if kind == "ct":
            index = c.get(d, (*k, "channel"), int, _REQUIRED, _range(0, MAX_CT - 1))
            export_id = c.get(d, (*k, "export_id"), str, None, _sensor_id)
            s = SensorConfig(
                name=name,
                id=ident,
                kind=kind,
                index=index,
                enabled=c.get(d, (*k, "enabled"), bool, True),
                export_id=export_id,
                voltage_id=c.get(d, (*k, "voltage_id"), str, None, _sensor_id),
                gain=float(c.get(d, (*k, "gain"), (int, float), 1.0, _board_range(wire.P_GAIN_E6, 1e6))),
                phase_deg=float(c.get(d, (*k, "phase_deg"), (int, float), 0.0,
                                      _board_range(wire.P_PHASE_MDEG, 1000.0))),
                line=c.get(d, (*k, "line"), str, "L1", _line),
                invert=c.get(d, (*k, "invert"), bool, False),
            )
        else:
            index = c.get(d, (*k, "input"), int, _REQUIRED, _range(0, MAX_PULSE - 1))
            s = SensorConfig(
                name=name,
                id=ident,
                kind=kind,
                index=index,
                enabled=c.get(d, (*k, "enabled"), bool, True),
                meter_constant=float(
                    c.get(d, (*k, "meter_constant"), (int, float), _REQUIRED,
                          _board_range(wire.P_METER_CONST_MILLI, 1000.0))
                ),
                debounce_ms=c.get(d, (*k, "debounce_ms"), int, 20, _board_range(wire.P_DEBOUNCE_MS)),
                trigger=c.get(d, (*k, "trigger"), str, "edge", _one_of(TRIGGERS)),
                unit=c.get(d, (*k, "unit"), str, "wh", _one_of(UNITS)),
            )
        for sid, key in ((s.id, "id"), (s.export_id, "export_id"), (s.voltage_id, "voltage_id")):
            if sid is None:
                continue
            if sid in seen_ids:
                raise c.fail((*k, key), f"sensor id {sid} is already used by [[sensor]] #{seen_ids[sid] + 1}")
            seen_ids[sid] = i
        if name in seen_names:
            raise c.fail((*k, "name"), f"name {name!r} is already used by [[sensor]] #{seen_names[name] + 1}")
        seen_names[name] = i
        slot = (kind, index)
        if slot in seen_slots:
            what = "channel" if kind == "ct" else "input"
            raise c.fail(
                (*k, what), f"{kind} {what} {index} is already used by [[sensor]] #{seen_slots[slot] + 1}"
            )
        seen_slots[slot] = i
        out.append(s)
    return tuple(out)
