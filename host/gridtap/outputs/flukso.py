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
from gridtap.fluksoapi import HEX32, ILLEGAL_UPDATE, VERSION, check_sensor_id, digest
from gridtap.secretfile import read_secret_line
from gridtap.store.spool import Spool

if TYPE_CHECKING:
    from gridtap.config import Section
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

    @property
    def ok(self) -> bool:
        return self.error is None


class FluksoUploader:
    """Send the spool's ``flukso`` destination to ``base_url``, one sensor at a time."""

    def __init__(self, spool: Spool, base_url: str, device_key: Secret, sensors: Iterable[str],
                 dest: str = DEST, batch: int = 1000, timeout: float = 5.0, interval: float = 300.0,
                 backoff: Backoff | None = None, cafile: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"Flukso base URL {base_url!r} must be http(s)://host[:port]/[path/]")
        if not isinstance(device_key, Secret):
            raise TypeError("device_key must be a Secret (see load_device_key)")
        if batch < 1:
            raise UserError(f"Flukso upload batch must be >= 1 point, got {batch}")
        self.spool = spool
        self.dest = dest
        self.sensors = [check_sensor_id(s) for s in sensors]
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

    def post(self, sensor: str, body: bytes) -> tuple[int, bytes]:
        """One signed POST; returns (status, body). Raises OSError/HTTPException on transport errors."""
        sig = digest(self._key.reveal(), body)
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
        """Send every committed point of every sensor; stop at the first failure."""
        report = UploadReport()
        try:
            for sensor in self.sensors:
                try:
                    err = self._upload_sensor(sensor, report)
                except sqlite3.Error as exc:  # a full disk: the server has the points, the spool does
                    # not know; the next pass sends them again and recovers from the server's
                    # "last update time" answer, without duplicates
                    err = f"sensor {sensor}: the spool cannot record the upload: {exc}"
                if err is not None:
                    report.error = err
                    break
        finally:
            self._close()
        self.last_report = report
        return report

    def _upload_sensor(self, sensor: str, report: UploadReport) -> str | None:
        while True:
            points = self.spool.pending(self.dest, sensor, limit=self.batch)
            if not points:
                return None
            body = self.body(points)
            report.requests += 1
            try:
                status, data = self.post(sensor, body)
            except (OSError, http.client.HTTPException) as exc:
                return f"sensor {sensor}: {type(exc).__name__}: {exc}"
            if status != 200:
                hint = " (check the device key)" if status == 401 else ""
                return f"sensor {sensor}: HTTP {status}{hint}"
            try:
                answer = json.loads(data).get("response")
            except (ValueError, AttributeError):
                return f"sensor {sensor}: HTTP 200 without a JSON response"
            if answer == "ok":
                n = self.spool.ack(self.dest, sensor, points[-1][0])
            else:
                m = ILLEGAL_UPDATE.search(str(answer))
                if m is None:
                    return f"sensor {sensor}: server answered {str(answer)[:200]!r}"
                # the server already holds everything up to its last update: clear that, send the rest
                n = self.spool.ack(self.dest, sensor, int(m.group(2)))
                if n == 0:
                    return f"sensor {sensor}: server refused points older than its last update {m.group(2)}"
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
            if report.ok:
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
class FluksoConfig:
    base_url: str
    key_file: Path | None = None
    key_env: str | None = None
    interval_s: int = 300


class FluksoOutput:
    """[flukso]: the uploader thread that empties the spool's destination "flukso"."""

    section = DEST
    live = False
    spooled = True  # counters reach it through the durable spool (the daemon adds them there)

    @classmethod
    def parse(cls, sec: Section) -> FluksoConfig:
        sec.keys({"base_url", "key_file", "key_env", "interval_s"})
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
                                       wall_clock=ctx.clock)
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
