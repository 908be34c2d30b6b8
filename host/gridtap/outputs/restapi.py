"""The local REST API, compatible with the Flukso FLM (port 8080) and the Flukso server's time series.

    GET /sensor/<32hex>?version=1.0&interval=minute&unit=watt[&callback=fn]
    GET /sensor/<32hex>?version=1.0&start=<unix>[&end=<unix>]&unit=watt[&resolution=15min]
    GET /sensor/<32hex>?version=1.0&param=all      the sensor's metadata (Flukso's param=all)
    GET /sensors   the configured series (id, name, role, type), for the web page
    GET /reactive  per CT its latest reactive power (var, + lagging) and its Q+ / Q- series ids
                   with their stored totals (varh); /sensor/<Q+ or Q- id> answers like any series,
                   in var (unit=var, or watt: the same factor) from its RRD and the live window
    GET /status    the daemon's health as JSON: link and decoder counters, refused tuples, the
                   board's last HELLO, the outputs' backlog and last upload
    GET /          the local web page (gridtap.outputs.web)

`minute` answers the last 60 seconds from memory, one point a second, padded
with "nan" (as the FLM does). `15min, hour, day, week, month, year, decade`
answer from the RRD at the Flukso server's default resolution for that
interval (or `resolution=minute|15min|day|week`); `night` from the daily
night RRD (the mean of 02:00-05:00 local, Flukso's standby baseload).
As the Flukso server, a window may be given as `start` (and `end`, default
now) in Unix seconds instead of an interval, at `resolution` (default minute);
both are aligned down to the resolution and clamped to what that resolution
keeps (minute: a day, 15min: a week, day: a year, week: a decade), the points
are those stamped in (start, end], and an end before the start is a 400.
`start` with an `interval` (not minute or night) is the interval's length
from start at its resolution (gridtap's; the Flukso server refuses it).
A client that accepts `text/csv` but not `application/json` (the Accept
header, as the Flukso server negotiates it) gets `ts,value` lines ending in
CRLF, "nan" where there is no value; one that accepts neither gets a 406.
Units multiply the stored rate (thousandths per second):
watt, kwhperyear, eurperyear (price from the config), lpermin, lperday,
m3peryear. Anything malformed is a 400 with the reason; an unknown sensor a
404. Requests are small (the request line and headers are bounded), slow
clients time out, and at most MAX_CLIENTS are served at once, so no request
can crash or stall the daemon.

Exposure (live power shows when a house is occupied): the API listens on
127.0.0.1 unless ``[daemon] bind`` says otherwise; browsers on other origins
may read it only when ``cors_origins`` lists them, and JSONP callbacks are
refused unless ``jsonp = true``. A slow client cannot starve the others: one
address holds at most MAX_PER_CLIENT of the MAX_CLIENTS slots, and a request
line plus headers must be complete within HEADER_S of the connection (a
slowloris client trickling a byte a second is cut then, not after TOTAL_S).

The API reads through `StoreView`, a read-only view of the daemon's stores (the
configured series, the live window, RRD and night fetches, the status), never
the daemon itself. The daemon builds it only when the API is on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from gridtap.outputs import web

if TYPE_CHECKING:
    from gridtap.config import Config, SensorConfig
    from gridtap.store.live import LiveStore
    from gridtap.store.rrd import Fetched, NightStore, RrdStore

log = logging.getLogger("gridtap.outputs.restapi")

MAX_CLIENTS = 8
MAX_PER_CLIENT = 4
HEADER_S = 3.0
TIMEOUT_S = 5.0
TOTAL_S = 10.0
MAX_LINE = 2048
MAX_HEADERS = 32

# interval -> (length in s, default resolution)
INTERVALS = {
    "minute": (60, "second"),
    "15min": (900, "minute"),
    "hour": (3600, "minute"),
    "day": (86400, "15min"),
    "week": (604800, "day"),
    "month": (2419200, "day"),
    "year": (31536000, "week"),
    "decade": (315360000, "week"),
    "night": (2419200, "day"),
}
RESOLUTIONS = {"minute": 60, "15min": 900, "day": 86400, "week": 604800}
# Longest interval per resolution (Flukso's limits).
MAX_SPAN = {"minute": 86400, "15min": 604800, "day": 31536000, "week": 315360000}
ELECTRIC_UNITS = {"watt": 3600.0, "kwhperyear": 31536.0, "eurperyear": None}
WATER_UNITS = {"lpermin": 60.0, "lperday": 86400.0, "m3peryear": 31536.0}
SENSOR_PATH = re.compile(r"^/sensor/([0-9a-f]{32})$")
CALLBACK = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$")
KNOWN_PARAMS = {"version", "interval", "unit", "callback", "jsonp_callback", "resolution", "start", "end",
                "param"}
UNIX_TIME = re.compile(r"^[0-9]{1,10}$")
JSON, CSV = "application/json", "text/csv"


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def unit_factor(unit: str, is_water: bool, price_per_kwh: float) -> float:
    """Factor from a rate in thousandths per second to the asked unit."""
    if unit in ELECTRIC_UNITS:
        if is_water:
            raise BadRequest(
                400,
                f"unit {unit} is for electricity; this is a water/gas sensor (use {', '.join(WATER_UNITS)})",
            )
        f = ELECTRIC_UNITS[unit]
        return (31536.0 * price_per_kwh if f is None else f) / 1000.0
    if unit in WATER_UNITS:
        if not is_water:
            raise BadRequest(
                400,
                f"unit {unit} is for water/gas; this is an electricity sensor "
                f"(use {', '.join(ELECTRIC_UNITS)})",
            )
        return WATER_UNITS[unit] / 1000.0
    raise BadRequest(400, f"unknown unit {unit!r}; known: {', '.join([*ELECTRIC_UNITS, *WATER_UNITS])}")


def parse_query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=16)
    except ValueError as exc:
        raise BadRequest(400, f"malformed query string: {exc}") from exc
    out: dict[str, str] = {}
    for k, v in pairs:
        if k not in KNOWN_PARAMS:
            raise BadRequest(400, f"unknown parameter {k!r}; known: {', '.join(sorted(KNOWN_PARAMS))}")
        if k in out:
            raise BadRequest(400, f"parameter {k!r} given twice")
        out[k] = v
    if "version" not in out:
        raise BadRequest(400, "malformed query string: version is required (version, interval and unit are)")
    if out["version"] != "1.0":
        raise BadRequest(400, f"unsupported version {out['version']!r}; only 1.0")
    cb = out.get("callback", out.get("jsonp_callback"))
    if cb is not None and not CALLBACK.match(cb):
        raise BadRequest(400, "callback must be a JavaScript identifier of at most 64 characters")
    if "param" in out:
        return _param_query(out)
    _check_window(out)
    for k in ("interval", "unit"):
        if k not in out and not (k == "interval" and "start" in out):
            raise BadRequest(400, f"malformed query string: {k} is required (version, interval and unit are; "
                                  "start[, end] may stand for the interval)")
    interval = out.get("interval")
    if interval is not None and interval not in INTERVALS:
        raise BadRequest(400, f"unknown interval {interval!r}; known: {', '.join(INTERVALS)}")
    if "resolution" in out:
        if interval in ("minute", "night"):
            raise BadRequest(400, f"interval {interval} has a fixed resolution")
        res = out["resolution"]
        if res not in RESOLUTIONS:
            raise BadRequest(400, f"unknown resolution {res!r}; known: {', '.join(RESOLUTIONS)}")
        if interval is not None and INTERVALS[interval][0] > MAX_SPAN[res]:
            raise BadRequest(400, f"interval {interval} is too long for resolution {res}")
    return out


def _param_query(q: dict[str, str]) -> dict[str, str]:
    """param=all asks for the sensor's metadata, and nothing else (the Flukso server's rule)."""
    if q["param"] != "all":
        raise BadRequest(400, f"unknown param {q['param']!r}; only param=all")
    extra = sorted(set(q) & {"interval", "start", "end", "resolution", "unit"})
    if extra:
        raise BadRequest(400, f"param=all takes no {', '.join(extra)}: it answers the sensor's metadata")
    return q


def _check_window(q: dict[str, str]) -> None:
    """start/end: Unix seconds; end only with start; start only with an interval that has one."""
    for k in ("start", "end"):
        if k in q and not UNIX_TIME.match(q[k]):
            raise BadRequest(400, f"{k} must be a Unix time in whole seconds, got {q[k][:20]!r}")
    if "end" in q and "start" not in q:
        raise BadRequest(400, "end needs a start (start=<unix>&end=<unix>)")
    if "start" in q and "interval" in q:
        if "end" in q:
            raise BadRequest(400, "give end or interval with start, not both")
        if q["interval"] in ("minute", "night"):
            raise BadRequest(400, f"interval {q['interval']} is the latest one and takes no start")


def time_window(q: dict[str, str], now: int) -> tuple[int, int, int]:
    """(start, end, resolution in s) of a series query: its points are those stamped in (start, end]."""
    interval = q.get("interval")
    res_name = q.get("resolution") or (INTERVALS[interval][1] if interval else "minute")
    res = RESOLUTIONS[res_name]
    newest = now - now % res
    if "start" not in q:
        assert interval is not None
        return newest - INTERVALS[interval][0], newest, res
    start = int(q["start"])
    end = start + INTERVALS[interval][0] if interval else int(q.get("end", now))
    # As the Flukso server: nothing newer than the last whole row, nothing older than the
    # resolution's archive keeps; both aligned down to the resolution.
    start = max(start, newest - MAX_SPAN[res_name])
    start -= start % res
    end = min(end, newest)
    end -= end % res
    if end < start:
        raise BadRequest(400, f"the window ends ({end}) before it starts ({start}) at resolution {res_name}")
    return start, end, res


def negotiate(accept: str | None) -> str:
    """JSON or CSV by the Accept header (JSON when both or anything will do); 406 for neither."""
    if not accept:
        return JSON
    best: dict[str, float] = {}
    for part in accept.split(",")[:32]:
        media, *params = (x.strip() for x in part.split(";"))
        qv = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    qv = float(p[2:])
                except ValueError:
                    qv = 0.0
        for ctype in (JSON, CSV):
            kind = ctype.split("/")[0]
            if media.lower() in (ctype, f"{kind}/*", "*/*"):
                best[ctype] = max(best.get(ctype, 0.0), qv)
    if best.get(JSON, 0.0) <= 0.0 and best.get(CSV, 0.0) <= 0.0:
        raise BadRequest(406, f"this API answers {JSON} or {CSV}; the request accepts neither")
    return CSV if best.get(CSV, 0.0) > best.get(JSON, 0.0) else JSON


def csv_lines(points: list[list[Any]]) -> str:
    """The Flukso server's CSV: one `ts,value` line per point, CRLF, "nan" where there is none."""
    return "".join(f"{t},{v}\r\n" for t, v in points)


def _num(v: float | None, factor: float) -> float | int | str:
    if v is None:
        return "nan"
    x = v * factor
    return round(x) if abs(x) >= 100 else round(x, 3)


FLUSH_MIN_AGE_S = 60.0  # a fetch first has rrdcached write out updates older than this


class StoreView:
    """What the API may read of the daemon's data, and nothing it could change.

    It holds no reference to the daemon, the board session or the outputs, so
    a request cannot reach the link or the counter state, and this module does
    not import the daemon's.
    """

    def __init__(self, cfg: Config, live: LiveStore, rrd: RrdStore, nights: NightStore,
                 status: Callable[[], dict[str, Any]], now: Callable[[], float] = time.time) -> None:
        from gridtap.board.plausible import reactive_ids

        self._series = cfg.series()
        # each CT's Q+ and Q- series (board/plausible.py): RRDs of their own, not in /sensors
        self._reactive = {s.id: (s, *reactive_ids(s.id)) for s in cfg.sensors if s.kind == "ct"}
        self._reactive_series = {q: (s, role) for s, qp, qn in self._reactive.values()
                                 for q, role in ((qp, "reactive+"), (qn, "reactive-"))}
        self.price_per_kwh = cfg.daemon.price_per_kwh
        self._live = live
        self._rrd = rrd
        self._nights = nights
        self._status = status
        self.now = now

    def series(self) -> dict[str, tuple[SensorConfig, str]]:
        """sensor id -> (its sensor's config, role: import, export or pulse)."""
        return dict(self._series)

    def reactive_series(self) -> dict[str, tuple[SensorConfig, str]]:
        """Q+ / Q- series id -> (its CT's config, role reactive+ or reactive-)."""
        return dict(self._reactive_series)

    def reactive(self) -> list[dict[str, Any]]:
        """Per CT its latest reactive power (var, + lagging; None if none or refused) and its Q+ and
        Q- series with their newest stored totals (varh)."""
        out = []
        for sid, (s, qpos, qneg) in self._reactive.items():
            t, var = self._live.reactive.get(sid, (None, None))
            item: dict[str, Any] = {"id": sid, "name": s.name, "t": t, "var": var}
            for key, q in (("qpos", qpos), ("qneg", qneg)):
                last = self.last_value(q)
                item[f"{key}_id"] = q
                item[f"{key}_varh"] = None if last is None else last[1] / 1000.0
            out.append(item)
        return out

    def live_window(self, sensor: str, end: int, seconds: int = 60) -> list[tuple[int, float | None]]:
        """The last `seconds` of per-second rates up to `end`, None where there is none; [] if never seen."""
        if not self._live.has(sensor):
            return []
        return self._live.window(sensor, end, seconds)

    def _flush(self, sensor: str) -> None:
        """Have rrdcached (or the batched store) write out what it held of that series (best effort)."""
        try:
            self._rrd.flush(sensor, min_age_s=FLUSH_MIN_AGE_S)
        except (OSError, ConnectionError) as exc:
            log.debug("flush before reading failed: %s", exc)

    def fetch(self, sensor: str, cf: str, start: int, end: int, resolution: int) -> Fetched:
        """An RRD fetch, after the series' held updates are written out."""
        self._flush(sensor)
        return self._rrd.fetch(sensor, cf, start, end, resolution)

    def last_value(self, sensor: str) -> tuple[int, int] | None:
        """(time, counter in thousandths) of the series' newest RRD update, after the same flush."""
        self._flush(sensor)
        return self._rrd.last_value(sensor)

    def nights(self, sensor: str, start: int, end: int) -> list[tuple[int, float | None]]:
        """The daily night values (02:00-05:00 mean) between start and end."""
        return self._nights.fetch(sensor, start, end)

    def status(self) -> dict[str, Any]:
        return self._status()


class Answerer:
    """The API's logic, independent of HTTP: (sensor, query) -> JSON-able list."""

    def __init__(self, view: StoreView, jsonp: bool = False) -> None:
        self.view = view
        self.jsonp = jsonp  # [daemon] jsonp: answer ?callback= requests (off by default)

    def answer(self, path: str, query: str, now: float | None = None,
               accept: str | None = None) -> tuple[str, str]:
        """(body, content type) of a GET; BadRequest for anything else."""
        if path == "/status":  # the board link's health: decoder counters, refused tuples, RRD errors
            return json.dumps(self.view.status(), separators=(",", ":")), JSON
        if path == "/sensors":
            return json.dumps(self.sensors(), separators=(",", ":")), JSON
        if path == "/reactive":
            try:
                return json.dumps(self.view.reactive(), separators=(",", ":")), JSON
            except (OSError, ConnectionError, subprocess.SubprocessError) as exc:
                raise BadRequest(503, f"cannot read the RRD: {exc}") from exc
        m = SENSOR_PATH.match(path)
        if m is None:
            page = web.page(path)
            if page is not None:
                return page
            if path.startswith("/sensor/"):
                raise BadRequest(404, "a sensor id is 32 lowercase hex digits: /sensor/<id>")
            raise BadRequest(404, "not found; the API is GET /sensor/<id>?version=1.0&interval=...&unit=...")
        sensor = m.group(1)
        q = parse_query(query)
        series = self.view.series()
        reactive = sensor not in series and sensor in self.view.reactive_series()
        if reactive:
            series = self.view.reactive_series()
            if q.get("unit") == "var":
                q["unit"] = "watt"  # mvarh per second to var is mWh per second to W
        if sensor not in series:
            raise BadRequest(404, f"no sensor {sensor} on this gridtap")
        cb = q.get("callback", q.get("jsonp_callback"))
        if cb is not None and not self.jsonp:
            raise BadRequest(403, "JSONP is off on this gridtap (set [daemon] jsonp = true to allow it)")
        if "param" in q:
            body = json.dumps(self.metadata(sensor), separators=(",", ":"))
            return (f"{cb}({body});", "application/javascript") if cb else (body, JSON)
        ctype = negotiate(accept)
        cfg, _role = series[sensor]
        is_water = cfg.kind == "pulse" and cfg.unit == "litre"
        factor = unit_factor(q["unit"], is_water, self.view.price_per_kwh)
        now_s = int(self.view.now() if now is None else now)
        if q.get("interval") == "minute":
            points: list[list[Any]] = [[t, _num(v, factor)] for t, v in self.view.live_window(sensor, now_s)]
        else:
            points = self._rrd(sensor, q, now_s, factor)
        if ctype == CSV:
            return csv_lines(points), "text/csv; charset=utf-8"
        body = json.dumps(points, separators=(",", ":"))
        return (f"{cb}({body});", "application/javascript") if cb else (body, JSON)

    def sensors(self) -> list[dict[str, Any]]:
        """The configured series: what the web page shows, in the config's order."""
        out = []
        for sid, (cfg, role) in self.view.series().items():
            water = cfg.kind == "pulse" and cfg.unit == "litre"
            out.append({"id": sid, "name": cfg.name, "role": role,
                        "type": "water" if water else "electricity", "unit": "lpermin" if water else "watt"})
        return out

    def metadata(self, sensor: str) -> dict[str, Any]:
        """Flukso's param=all: the sensor's settings and `lastupdate` [ts, counter in Wh or L]."""
        cfg, role = {**self.view.reactive_series(), **self.view.series()}[sensor]
        water = cfg.kind == "pulse" and cfg.unit == "litre"
        try:
            last = self.view.last_value(sensor)
        except (OSError, ConnectionError, subprocess.SubprocessError) as exc:
            raise BadRequest(503, f"cannot read the RRD: {exc}") from exc
        return {
            "access": None if last is None else last[0],
            "type": "water" if water else "electricity",
            "function": f"{cfg.name}.{role}" if role in ("export", "reactive+", "reactive-") else cfg.name,
            "class": "analog" if cfg.kind == "ct" else "pulse",
            "voltage": None,  # measured by the board, not a setting (FLM02 had a nominal one)
            "current": None,
            "phase": None,
            # Wh (or L) per pulse, as Flukso's; meter_constant is pulses per kWh (or m3)
            "constant": round(1000.0 / cfg.meter_constant, 6) if cfg.kind == "pulse" else None,
            "enabled": 1 if cfg.enabled else 0,
            "lastupdate": None if last is None else [last[0], _num(last[1], 0.001)],
        }

    def _rrd(self, sensor: str, q: dict[str, str], now: int, factor: float) -> list[list[Any]]:
        start, end, res = time_window(q, now)
        if q.get("interval") == "night":
            try:
                got_night = self.view.nights(sensor, start, end)
            except (OSError, TimeoutError) as exc:
                raise BadRequest(503, f"cannot read the night RRD: {exc}") from exc
            return [[t, _num(v, factor)] for t, v in got_night if start < t <= end]
        if end <= start:
            return []
        try:
            got = self.view.fetch(sensor, "AVERAGE", start, end, res)
        except (OSError, TimeoutError) as exc:
            raise BadRequest(503, f"cannot read the RRD: {exc}") from exc
        return [[t, _num(v, factor)] for t, v in got.values if start < t <= end]


# -- HTTP/1.0, one request per connection ----------------------------------------------------------
# Just what the API needs, in place of http.server: that module loads http.client, and with it
# email (header parsing) and ssl (libssl and libcrypto), about 7 MB of a 64 MB router's memory.

REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


class _Headers(dict[str, str]):
    """Request headers by lower-case name; get() takes any case."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


class _HttpHandler(socketserver.StreamRequestHandler):
    """The request line and at most MAX_HEADERS header lines, each at most MAX_LINE bytes; replies
    with a status line (none to a request that is not HTTP/1.x, as HTTP/0.9 had none)."""

    protocol_version = "HTTP/1.0"
    server_version = "gridtap"
    error_message_format = "%(code)d %(message)s\n"
    error_content_type = "text/plain; charset=utf-8"

    raw_requestline = b""
    requestline = ""
    request_version = "HTTP/0.9"
    command = ""
    path = ""
    headers: _Headers | None = None
    close_connection = True

    def handle(self) -> None:
        self._out: list[bytes] = []
        self.handle_one_request()

    def handle_one_request(self) -> None:
        raise NotImplementedError

    def parse_request(self) -> bool:
        self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if len(words) != 3 or not re.fullmatch(r"HTTP/1\.\d", words[2]):
            self.send_error(400, f"Bad request syntax ({self.requestline[:80]!r})")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(MAX_HEADERS):
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                self.send_error(431, "header line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                self.headers = headers
                return True
            name, sep, value = line.decode("iso-8859-1").partition(":")
            if not sep or not name.strip():
                self.send_error(400, "malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        self.send_error(431, f"more than {MAX_HEADERS} header lines")
        return False

    def send_response(self, code: int, message: str | None = None) -> None:
        if self.request_version != "HTTP/0.9":
            self._out.append(f"{self.protocol_version} {code} {message or REASONS.get(code, '')}\r\n"
                             f"Server: {self.server_version}\r\n".encode("latin-1", "replace"))

    def send_header(self, name: str, value: str) -> None:
        if self.request_version != "HTTP/0.9":
            self._out.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))

    def end_headers(self) -> None:
        if self.request_version != "HTTP/0.9":
            self._out.append(b"\r\n")
        self.wfile.write(b"".join(self._out))
        self._out.clear()

    def send_error(self, code: int, message: str | None = None) -> None:
        text = self.error_message_format % {"code": code, "message": message or REASONS.get(code, "")}
        body = text.encode()
        self.send_response(code, message)
        self.send_header("Content-Type", self.error_content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Handler(_HttpHandler):
    server: _Server
    timeout = TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(TIMEOUT_S)

    def _reply(self, status: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        allowed = self._cors_origin()
        if allowed is not None:
            self.send_header("Access-Control-Allow-Origin", allowed)
            if allowed != "*":
                self.send_header("Vary", "Origin")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _cors_origin(self) -> str | None:
        """The Access-Control-Allow-Origin to send: only for an origin the config lists."""
        origins = self.server.cors_origins
        if "*" in origins:
            return "*"
        origin = self.headers.get("Origin") if self.headers is not None else None
        return origin if origin is not None and origin in origins else None

    def handle_one_request(self) -> None:
        # The request line and headers get HEADER_S and the whole request TOTAL_S, however
        # slowly a client trickles bytes in (the socket timeout alone restarts with every byte).
        header_timer = threading.Timer(HEADER_S, self._cut)
        timer = threading.Timer(TOTAL_S, self._cut)
        for t in (header_timer, timer):
            t.daemon = True
            t.start()
        self._header_timer = header_timer
        try:
            self._one_request()
        finally:
            header_timer.cancel()
            timer.cancel()

    def _cut(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_LINE + 1)
            if len(self.raw_requestline) > MAX_LINE:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(414, "request line too long")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self._header_timer.cancel()
            if self.command not in ("GET", "HEAD"):
                self._reply(405, f"method {self.command} not allowed; use GET\n", "text/plain")
                return
            self.do_get()
            self.wfile.flush()
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def do_get(self) -> None:
        split = urlsplit(self.path)
        try:
            accept = self.headers.get("Accept") if self.headers is not None else None
            body, ctype = self.server.answerer.answer(split.path, split.query, accept=accept)
        except BadRequest as exc:
            self._reply(exc.status, exc.reason + "\n", "text/plain; charset=utf-8")
            return
        except Exception as exc:  # a bug must cost one request, never the daemon
            log.exception("REST API request %r failed", self.path)
            self._reply(500, f"internal error: {type(exc).__name__}\n", "text/plain")
            return
        self._reply(200, body, ctype)


def _refusal(reason: str) -> bytes:
    body = reason.encode() + b"\n"
    return (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 16
    answerer: Answerer
    cors_origins: tuple[str, ...] = ()

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        super().__init__(address, handler)
        self.lock = threading.Lock()
        self.busy = 0
        self.per_client: dict[str, int] = {}
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        host = str(client_address[0])
        with self.lock:
            if self.busy >= MAX_CLIENTS:
                reason = "too many users"
            elif self.per_client.get(host, 0) >= MAX_PER_CLIENT:
                reason = "too many connections from your address"
            else:
                reason = ""
                self.busy += 1
                self.per_client[host] = self.per_client.get(host, 0) + 1
        if reason:
            self.refused += 1
            try:
                request.sendall(_refusal(reason))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            host = str(client_address[0])
            with self.lock:
                self.busy -= 1
                left = self.per_client.get(host, 1) - 1
                if left > 0:
                    self.per_client[host] = left
                else:
                    self.per_client.pop(host, None)


class ApiServer:
    def __init__(self, view: StoreView, bind: str, port: int, cors_origins: tuple[str, ...] = (),
                 jsonp: bool = False) -> None:
        try:
            self.httpd = _Server((bind, port), _Handler)
        except OSError as exc:
            from gridtap.errors import UserError

            raise UserError(f"cannot listen on {bind}:{port} for the REST API: {exc.strerror}") from exc
        self.httpd.answerer = Answerer(view, jsonp)
        self.httpd.cors_origins = cors_origins
        self.port = self.httpd.server_address[1]
        self._wake_r, self._wake_w = os.pipe()
        self.thread = threading.Thread(target=self._serve, name="gridtap-api", daemon=True)

    def _serve(self) -> None:
        """Sleep in select until a client or stop() comes: no periodic wake-ups on an idle router."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.httpd, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj == self._wake_r:
                        return
                    # accept and hand to a thread: socketserver's own step of serve_forever
                    self.httpd._handle_request_noblock()  # type: ignore[attr-defined]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=5)
        self.httpd.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)
