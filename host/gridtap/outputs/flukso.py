"""Upload spooled counters to a Flukso-compatible server (api.flukso.net or your own).

Wire format, as the Fluksometer sends it (flukso.md §3.2, §4.3)::

    POST <base_url>sensor/<sensor id>
    Content-Type: application/json
    X-Version: 1.0
    User-Agent: gridtap/<version>
    X-Digest: <hex HMAC-SHA1 of the body under the device key>

    {"measurements":[[ts,counter],...]}

Counters go out as integers (Wh or litres, rounded down): the server drops
any pair whose counter is not an integer, and a cumulative counter rounded
down stays cumulative.

Rules:

* **Only a success clears points**: HTTP 200 with ``{"response":"ok"}``. The
  real server also answers 200 when its RRD update fails, with the error text
  as the response; gridtap does not take that as a success.
* One exception, needed for exactly-once delivery: when a reply was lost on
  the way back, the retry is refused with ``ERROR: illegal attempt to update
  using time T when last update time is L``. The server then provably holds
  the series up to ``L``, so the uploader clears points up to ``L`` and sends
  the rest at once.
* Any other answer (connection refused, timeout, 4xx, 5xx, a refused digest)
  leaves the points in the spool, where they are aged, and the next try waits
  for ``Backoff`` (exponential with jitter, 10 s doubling to 1 h by default).
  After a success the next pass comes after ``interval`` (300 s, as Flukso).
* The device key comes from a file or the environment (``load_device_key``)
  and is held in a ``Secret`` that never prints; neither it nor the digest is
  logged.
* A refusal of one sensor (HTTP 400/401/403/404: not provisioned, a wrong key;
  or HTTP 200 with an error as the response: its RRD refused the points) does
  not hold back the others: that sensor alone backs off (its own ``Backoff``,
  skipped by the passes until it is due) and the pass goes on. Anything else
  (no connection, 5xx, 429, an answer that is not JSON) ends the pass and
  backs the whole uploader off.

What goes up: every board sensor's series under its own id (a board sensor's
``id``/``export_id`` is its Flukso sensor id), and each virtual sensor (a
wallbox's ``E<n>``, an expression meter) named in a ``[[flukso.sensor]]``
table under the Flukso id given there, signed with that table's own key if it
has one (``key_file``/``key_env``: a sensor provisioned under another Flukso
device), else the device key. A virtual sensor's points sit in the spool
under its series id (gridtap.inputs.virtual), so each upload is a ``Target``:
the spool's series, the server's sensor id, the key that signs it.
"""

from __future__ import annotations

import hmac
import http.client
import json
import logging
import math
import os
import re
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gridtap import __version__
from gridtap.backoff import Backoff
from gridtap.config import REQUIRED, in_range
from gridtap.errors import UserError
from gridtap.fluksoapi import HEX32, ILLEGAL_UPDATE, VERSION, check_sensor_id, digest, is_sensor_id
from gridtap.secretfile import read_secret_line
from gridtap.store.spool import Spool

if TYPE_CHECKING:
    from gridtap.config import Section, SensorConfig
    from gridtap.outputs import OutputContext

log = logging.getLogger(__name__)

DEST = "flukso"
KEY_ENV = "GRIDTAP_FLUKSO_KEY"


class Secret:
    """A key that never shows in ``repr``, ``str``, f-strings or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value.encode()

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))


def load_device_key(path: str | os.PathLike[str] | None = None, env: str = KEY_ENV) -> Secret:
    """Read the 32-hex Flukso device key from ``path`` (first line) or else ``$env``.

    Raises ``UserError`` naming the file or variable (never the key) when it
    is missing or malformed.
    """
    if path is not None:
        where = f"key file {path}"
        value = read_secret_line(path, "Flukso device key file")
    else:
        where = f"environment variable {env}"
        value = os.environ.get(env, "").strip()
        if not value:
            raise UserError(f"no Flukso device key: give a key file or set {env}")
    if not HEX32.fullmatch(value.lower()):
        raise UserError(f"the Flukso device key in the {where} must be 32 hex digits "
                        f"(got {len(value)} characters)")
    return Secret(value.lower())


@dataclass
class UploadReport:
    """What one pass did: requests made, points confirmed, and the first error if any."""

    requests: int = 0
    cleared: int = 0
    error: str | None = None
    per_sensor: dict[str, int] = field(default_factory=dict)
    fatal: bool = False  # the error ended the pass (the server, not one sensor's refusal)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Target:
    """One series to upload: its id in the spool, the server's sensor id, the key that signs its posts."""

    series: str
    sensor: str
    key: Secret | None = None  # None: the device key
    name: str = ""  # a virtual sensor's name, for messages ("E1")

    @property
    def label(self) -> str:
        return f"{self.name} ({self.sensor})" if self.name else self.sensor


# A refusal of this one sensor (its id or key): the others are still tried in the same pass.
SENSOR_REFUSALS = frozenset({400, 401, 403, 404})


class FluksoUploader:
    """Send the spool's ``flukso`` destination to ``base_url``, one sensor at a time.

    ``sensors``: spool series uploaded under their own id with the device key (the board's);
    ``targets``: the others (virtual sensors), each with its own server id and maybe its own key.
    """

    def __init__(self, spool: Spool, base_url: str, device_key: Secret, sensors: Iterable[str],
                 dest: str = DEST, batch: int = 1000, timeout: float = 5.0, interval: float = 300.0,
                 backoff: Backoff | None = None, cafile: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, targets: Iterable[Target] = ()) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"Flukso base URL {base_url!r} must be http(s)://host[:port]/[path/]")
        if not isinstance(device_key, Secret):
            raise TypeError("device_key must be a Secret (see load_device_key)")
        if batch < 1:
            raise UserError(f"Flukso upload batch must be >= 1 point, got {batch}")
        self.spool = spool
        self.dest = dest
        self.targets = [Target(check_sensor_id(s), s) for s in sensors]
        for t in targets:
            check_sensor_id(t.sensor)
            if t.key is not None and not isinstance(t.key, Secret):
                raise TypeError("a target's key must be a Secret (see load_device_key)")
            self.targets.append(t)
        #: the spool series it uploads (the status's backlog counts these only)
        self.sensors = [t.series for t in self.targets]
        self.batch = batch
        self.timeout = timeout
        self.interval = interval
        self.backoff = backoff if backoff is not None else Backoff(base=10.0, cap=3600.0)
        self._key = device_key
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = (parts.path or "/").rstrip("/") + "/sensor/"
        self._ssl = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
        self._clock = clock
        self._wall = wall_clock
        #: Unix time the server last accepted points (the web page shows it)
        self.last_upload: float | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.last_report = UploadReport()
        #: spool series a sensor-specific refusal holds back: its own backoff and the refusal
        self.held: dict[str, tuple[Backoff, str]] = {}

    def status(self) -> dict[str, Any]:
        """Backlog (spooled points not yet accepted), last upload and the last pass's error."""
        stats = self.spool.stats().get(self.dest, {})
        # only what it uploads: the spool also holds virtual sensors' points for every destination
        return {"backlog": sum(int(v["points"] or 0) for k, v in stats.items() if k in self.sensors),
                "last_upload": self.last_upload, "error": self.last_report.error}

    # -- one request -------------------------------------------------------------

    def body(self, points: list[tuple[int, int | float]]) -> bytes:
        meas = [[ts, c if isinstance(c, int) else math.floor(c)] for ts, c in points]
        return json.dumps({"measurements": meas}, separators=(",", ":")).encode()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ssl is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, sensor: str, body: bytes, key: Secret | None = None) -> tuple[int, bytes]:
        """One POST signed with `key` (default: the device key); returns (status, body).

        Raises OSError/HTTPException on transport errors."""
        sig = digest((key or self._key).reveal(), body)
        headers = {"Content-Type": "application/json", "X-Version": VERSION,
                   "User-Agent": f"gridtap/{__version__}", "X-Digest": sig}
        conn = self._connection()
        try:
            conn.request("POST", self._prefix + sensor, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            self._close()
            raise
        if resp.will_close:
            self._close()
        return resp.status, data

    # -- one pass ------------------------------------------------------------------

    def upload(self) -> UploadReport:
        """Send every committed point of every sensor that is not held back; stop at the first
        failure that is not one sensor's refusal (``report.fatal``)."""
        report = UploadReport()
        now = self._clock()
        try:
            for target in self.targets:
                held = self.held.get(target.series)
                if held is not None and not held[0].ready(now):
                    report.error = report.error or held[1]
                    continue
                refused = False
                try:
                    err, refused = self._upload_sensor(target, report)
                except sqlite3.Error as exc:  # a full disk: the server has the points, the spool does
                    # not know; the next pass sends them again and recovers from the server's
                    # "last update time" answer, without duplicates
                    err = f"sensor {target.label}: the spool cannot record the upload: {exc}"
                if err is None:
                    self.held.pop(target.series, None)
                    continue
                report.error = report.error or err
                if not refused:
                    report.fatal = True
                    break
                self._hold(target, err, now)
        finally:
            self._close()
        self.last_report = report
        return report

    def _hold(self, target: Target, err: str, now: float) -> None:
        """Back this one sensor off, on the uploader's delays: its id or key is wrong, not the server."""
        backoff = self.held[target.series][0] if target.series in self.held else Backoff(
            base=self.backoff.base, cap=self.backoff.cap, factor=self.backoff.factor)
        delay = backoff.failure(now)
        self.held[target.series] = (backoff, err)
        log.warning("flukso: %s; the other sensors go on, this one is retried in %.0f s", err, delay)

    def _upload_sensor(self, target: Target, report: UploadReport) -> tuple[str | None, bool]:
        """Send one series' committed points; (the error or None, whether the server refused this
        sensor rather than failed)."""
        sensor, label = target.sensor, target.label
        while True:
            points = self.spool.pending(self.dest, target.series, limit=self.batch)
            if not points:
                return None, False
            body = self.body(points)
            report.requests += 1
            try:
                status, data = self.post(sensor, body, target.key)
            except (OSError, http.client.HTTPException) as exc:
                return f"sensor {label}: {type(exc).__name__}: {exc}", False
            if status != 200:
                hint = ""
                if status == 401:
                    hint = f" (check the {'sensor' if target.key is not None else 'device'} key)"
                return f"sensor {label}: HTTP {status}{hint}", status in SENSOR_REFUSALS
            try:
                answer = json.loads(data).get("response")
            except (ValueError, AttributeError):
                return f"sensor {label}: HTTP 200 without a JSON response", False
            if answer == "ok":
                n = self.spool.ack(self.dest, target.series, points[-1][0])
            else:
                m = ILLEGAL_UPDATE.search(str(answer))
                if m is None:
                    return f"sensor {label}: server answered {str(answer)[:200]!r}", True
                # the server already holds everything up to its last update: clear that, send the rest
                n = self.spool.ack(self.dest, target.series, int(m.group(2)))
                if n == 0:
                    return (f"sensor {label}: server refused points older than its last update "
                            f"{m.group(2)}", True)
            report.cleared += n
            report.per_sensor[sensor] = report.per_sensor.get(sensor, 0) + n
            if n:
                self.last_upload = self._wall()

    # -- scheduling ----------------------------------------------------------------

    def step(self) -> float:
        """Upload if due; return the seconds until the next pass is due."""
        now = self._clock()
        if self.backoff.ready(now):
            report = self.upload()
            if not report.fatal:  # a sensor's refusal holds back that sensor only (upload)
                self.backoff.success()
                self.backoff.not_before = now + self.interval
                if report.cleared:
                    log.info("flukso: uploaded %d points in %d requests", report.cleared, report.requests)
            else:
                delay = self.backoff.failure(now)
                log.warning("flukso: upload failed (%s); %d points cleared; retry in %.0f s",
                            report.error, report.cleared, delay)
        return max(0.0, self.backoff.not_before - self._clock())

    def run(self, stop: threading.Event) -> None:
        """Upload every ``interval`` seconds (backing off on failure) until ``stop`` is set."""
        while not stop.is_set():
            wait = self.step()
            stop.wait(wait)


# -- the [flukso] output ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VirtualUpload:
    """One ``[[flukso.sensor]]``: a virtual sensor's series and the Flukso sensor id it goes up as."""

    name: str  # the virtual sensor's name ("E1", an expression meter's)
    series: str  # its series id in the spool (gridtap.inputs.virtual)
    sensor: str  # the Flukso sensor id the server knows it by
    key_file: Path | None = None  # its own key (a sensor of another Flukso device); None, None: the
    key_env: str | None = None  # device key


@dataclass(frozen=True)
class FluksoConfig:
    base_url: str
    key_file: Path | None = None
    key_env: str | None = None
    interval_s: int = 300
    virtual: tuple[VirtualUpload, ...] = ()


_VIRTUAL_KEYS = {"name", "id", "export_id", "key_file", "key_env"}


def _fail(where: str, why: str) -> UserError:
    # "[flukso] key 'sensor.0.id'": config.py adds the line of that key
    return UserError(f"[flukso] key '{where}': {why}")


def _text(d: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None and required:
        raise _fail(where + key, "is required")
    if v is not None and (not isinstance(v, str) or not v):
        raise _fail(where + key, f"expected a non-empty string, got {v!r}")
    return v


def parse_virtual(sec: Section) -> tuple[VirtualUpload, ...]:
    """The ``[[flukso.sensor]]`` tables: which virtual sensors go up, as which Flukso sensor ids.

    As a board sensor's: an id is 32 lowercase hex digits and nobody else's (no
    board or virtual series, no other Flukso id). The name must be a virtual
    sensor's; a board sensor needs no table (its ``id`` is its Flukso id).
    """
    items = sec.data.get("sensor", [])
    if not isinstance(items, list):
        raise _fail("sensor", "must be an array of tables, written [[flukso.sensor]]")
    taken = {sid: s.name for s in sec.sensors for sid, _role in s.series}
    taken |= {s.voltage_id: s.name for s in sec.sensors if s.voltage_id}
    out: list[VirtualUpload] = []
    named: set[str] = set()
    for i, d in enumerate(items):
        where = f"sensor.{i}."
        if not isinstance(d, dict):
            raise _fail(f"sensor.{i}", "must be a table, written [[flukso.sensor]]")
        for k in d:
            if k not in _VIRTUAL_KEYS:
                raise _fail(where + k, f"unknown key (known here: {', '.join(sorted(_VIRTUAL_KEYS))})")
        s = _virtual_sensor(sec.sensors, _text(d, "name", where, required=True) or "", where)
        if s.name in named:
            raise _fail(where + "name", f"{s.name!r} has a [[flukso.sensor]] table already")
        named.add(s.name)
        key_file, key_env = _text(d, "key_file", where), _text(d, "key_env", where)
        if key_file is not None and key_env is not None:
            raise _fail(where + "key_env", "give its key as key_file or key_env, not both")
        path = sec.file(key_file) if key_file else None
        out += [VirtualUpload(s.name, series, ident, path, key_env)
                for series, ident in _flukso_ids(d, where, s, taken)]
    return tuple(out)


def _virtual_sensor(sensors: tuple[SensorConfig, ...], name: str, where: str) -> SensorConfig:
    """The virtual sensor a table names; an error that says what the name is if it is none."""
    virtual = {s.name: s for s in sensors if s.source != "board"}
    if name in virtual:
        return virtual[name]
    if any(s.name == name for s in sensors):
        raise _fail(where + "name", f"{name!r} is a board sensor: its [[sensor]] id is its Flukso sensor "
                                    "id and it is uploaded already")
    known = ", ".join(sorted(virtual)) or "none are configured"
    raise _fail(where + "name", f"no virtual sensor is named {name!r} (virtual sensors: {known}; a wallbox "
                                "of [ev] is E1, E2 ..., a [[meter]] with a formula goes by its name)")


def _flukso_ids(d: dict[str, Any], where: str, s: SensorConfig,
                taken: dict[str, str]) -> list[tuple[str, str]]:
    """(series, Flukso id) of a table's ``id`` and ``export_id``; records them in ``taken``."""
    out = []
    for key, series in (("id", s.id), ("export_id", s.export_id if s.kind == "ct" else None)):
        ident = _text(d, key, where, required=key == "id")
        if ident is None:
            continue
        if series is None:
            raise _fail(where + key, f"the virtual sensor {s.name!r} has no export series")
        if not is_sensor_id(ident):
            raise _fail(where + key, f"must be 32 lowercase hex digits, got {ident!r}")
        owner = taken.get(ident)
        if owner is not None and ident != series:  # its own series id would do, if the server knew it
            raise _fail(where + key, f"sensor id {ident} is already {owner!r}'s")
        taken[ident] = s.name
        out.append((series, ident))
    return out


def _target(v: VirtualUpload) -> Target:
    """A virtual sensor's upload, its own key read now (errors name the sensor, never the key)."""
    if v.key_file is None and v.key_env is None:
        return Target(v.series, v.sensor, None, v.name)
    try:
        key = load_device_key(v.key_file, env=v.key_env or "")
    except UserError as exc:
        raise UserError(f"[flukso] sensor {v.name}: {exc}") from None
    return Target(v.series, v.sensor, key, v.name)


class FluksoOutput:
    """[flukso]: the uploader thread that empties the spool's destination "flukso"."""

    section = DEST
    live = False
    spooled = True  # counters reach it through the durable spool (the daemon adds them there)

    @classmethod
    def parse(cls, sec: Section) -> FluksoConfig:
        sec.keys({"base_url", "key_file", "key_env", "interval_s", "sensor"})
        key_file = sec.get("key_file", str, None)
        key_env = sec.get("key_env", str, None)
        if key_file is None and key_env is None:
            raise sec.fail(None, "give the device key as key_file (a file holding it) or key_env "
                                 "(an environment variable)")
        return FluksoConfig(
            base_url=sec.get("base_url", str, REQUIRED, lambda v: None if re.match(r"^https?://[^\s/]+", v)
                             else "must be an http(s):// URL"),
            key_file=sec.file(key_file) if key_file else None,
            key_env=key_env,
            interval_s=sec.get("interval_s", int, 300, in_range(1, 86400)),
            virtual=parse_virtual(sec),
        )

    def __init__(self, f: FluksoConfig, ctx: OutputContext) -> None:
        if f.key_file is not None:
            key = load_device_key(f.key_file)
        else:
            key = load_device_key(None, env=f.key_env or "")
        assert ctx.spool is not None
        self.spool = ctx.spool
        ids = [sid for s in ctx.cfg.sensors for sid, _role in s.series]
        self.uploader = FluksoUploader(self.spool, f.base_url, key, ids, interval=float(f.interval_s),
                                       wall_clock=ctx.clock, targets=[_target(v) for v in f.virtual])
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.uploader.run, args=(self.stop_event,), name="gridtap-flukso", daemon=True
        )

    def status(self) -> dict[str, Any]:
        return self.uploader.status()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        """Counters reach the uploader through the spool, not from here."""

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        """The Flukso server stores counters only."""
