"""`gridtap hub serve`: the Flukso server API, the read API and the dashboard on one HTTP port.

* ``POST /sensor/<id>``: Flukso's upload (flukso.md §4.3). Answers as the
  Flukso server does (``gridtap.fluksoapi``): 400 ``Malformed request``, 401
  with ``WWW-Authenticate: No proper provisioning for this sensor`` or
  ``Incorrect digest``, 500 for a body the real resource crashes on, and 200
  with ``{"response": "ok"}`` or rrdupdate's ``ERROR: …`` text. The 200 comes
  only after the points are committed (committer.py); a request that is
  refused stores nothing. A body over ``MAX_BODY`` gets 413 unread. If
  PostgreSQL is unavailable: 503, so the client keeps its points and retries.
* ``GET /sensor/<id>?interval=…&unit=…&version=1.0&token=…`` (or
  ``X-Version``/``X-Token``): the series from the roll-ups (read.py); the
  token is an account's, of the sensor's owner or of anyone while the owner
  shares. ``callback`` wraps it as JSONP.
* ``/login``, ``/dashboard``, ``/subscribe``, ``/unsubscribe``, ``/share``,
  ``/claim``, ``/logout``: the dashboard (web.py), with a session cookie
  (HttpOnly, SameSite=Strict) and form posts checked against the Origin.

Every refusal is logged with the sensor and the reason (never a key or a
digest) and counted in ``HubServer.refused``.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg

from gridtap.errors import UserError
from gridtap.fluksoapi import BAD_DIGEST, MALFORMED, UNPROVISIONED, VERSION, digest_ok, pairs, well_formed
from gridtap_hub import accounts, peers, read, schema, web
from gridtap_hub.committer import Committer
from gridtap_hub.db import Pool
from gridtap_hub.directory import Directory
from gridtap_hub.ingest import GONE, Request

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # a day of one sensor at 10 s is ~0.2 MB; an FLM ages its backlog far below that
SENSOR_PATH = re.compile(r"/sensor/([^/?]+)")
CALLBACK = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]{0,63}")
COOKIE = "gthub"
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
# A batch waits this long for company after its first POST: at 10,000 homes batches grew from ~2 to
# ~5 POSTs and the CPU per point fell by a seventh (transaction, lock query and commit shared by more).
COMMIT_WAIT_S = 0.005


class _Server(ThreadingHTTPServer):
    """SO_REUSEPORT: several ``gridtap hub serve`` processes may share one port (``--workers``).

    The listen queue is long (socketserver's default is 5): thousands of Fluksometers connect in
    bursts, and while the accepting thread waits for the GIL behind busy handler threads the
    kernel drops or resets what does not fit (the failed uploads of #19's first 10,000-home runs:
    "connection reset by peer" on a new connection).
    """

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class HubServer:
    """The hub's HTTP side on ``host:port`` (127.0.0.1 by default)."""

    def __init__(self, dsn: str, host: str = "127.0.0.1", port: int = 0, tz: str = "UTC",
                 clock: Callable[[], float] = time.time, maintain_every: float = 600.0,
                 usage_every: float = 300.0, pool_size: int = 6, commit_wait: float = COMMIT_WAIT_S) -> None:
        self.dsn = dsn
        self.clock = clock
        self.tz = tz
        self.zone = ZoneInfo(tz)
        self.pool = Pool(dsn, pool_size)
        self.directory = Directory(self.pool)
        self.committer = Committer(dsn, clock, max_wait=commit_wait)
        self.refused: Counter[str] = Counter()
        self.maintain_every = maintain_every
        self.usage_every = usage_every
        self._stop = threading.Event()
        self._httpd = _Server((host, port), _handler(self))
        self._threads: list[threading.Thread] = []
        self._started = False

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}/"

    def start(self) -> HubServer:
        self._started = True
        self.committer.start()
        for target, name in ((self._httpd.serve_forever, "hub-http"), (self._housekeeping, "hub-maint")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def request_shutdown(self) -> None:
        """From a signal handler: stop serving (shutdown() must not run on the serving thread)."""
        threading.Thread(target=self._httpd.shutdown, daemon=True).start()

    def serve_forever(self) -> None:
        self._started = True
        self.committer.start()
        t = threading.Thread(target=self._housekeeping, name="hub-maint", daemon=True)
        t.start()
        try:
            self._httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close; also right for a hub made but never started."""
        self._stop.set()
        if self._started:
            self._httpd.shutdown()  # waits for serve_forever, which must have run
        self._httpd.server_close()
        if self._started:
            self.committer.stop()
        c = self.committer
        log.info("hub: committed %d requests in %d batches (%d failed); %d directory queries",
                 c.requests, c.batches, c.failures, self.directory.queries)
        self.pool.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _housekeeping(self) -> None:
        """The directory of sensors read in full (at start, then every half of its ttl); partitions
        ahead and retention every ``maintain_every`` s; the peers' usage view every ``usage_every`` s.
        A failure is logged and retried at the next turn."""
        next_maint = next_usage = next_dir = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_dir:
                    n = self.directory.preload()
                    log.info("hub: %d sensors in the directory", n)
                    next_dir = now + self.directory.ttl / 2
                if now >= next_maint:
                    with self.pool.connection() as conn:
                        done = schema.maintain(conn, self.clock())
                    if done["created"] or done["dropped"]:
                        log.info("hub: partitions %s", done)
                    next_maint = now + self.maintain_every
                if now >= next_usage:
                    with self.pool.connection() as conn:
                        schema.refresh_usage(conn, self.usage_every * 0.9)
                    next_usage = now + self.usage_every
            except (psycopg.Error, UserError) as exc:
                log.warning("hub: housekeeping failed: %s", str(exc).strip()[:200])
            self._stop.wait(5.0)

    # -- POST /sensor/<id> ---------------------------------------------------------------

    def refuse(self, sensor: str, reason: str, status: int, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        self.refused[reason.split(":")[0] if reason.startswith("ERROR") else reason] += 1
        log.warning("hub: refused POST /sensor/%s: %s", sensor[:40], reason[:200])
        return status, headers, body

    def post_sensor(self, sensor: str, headers: dict[str, str],
                    body: bytes) -> tuple[int, dict[str, str], bytes]:
        if not well_formed(sensor, headers):
            return self.refuse(sensor, MALFORMED, 400, {}, MALFORMED.encode())
        try:
            found = self.directory.lookup(sensor)
        except (psycopg.Error, UserError) as exc:
            log.warning("hub: directory unavailable: %s", str(exc).strip()[:200])
            return 503, {"Retry-After": "10"}, b"database unavailable"
        if found is None:
            return self.refuse(sensor, UNPROVISIONED, 401, {"WWW-Authenticate": UNPROVISIONED}, b"")
        sid, key, _ = found
        if not digest_ok(key, body, headers["x-digest"]):
            return self.refuse(sensor, BAD_DIGEST, 401, {"WWW-Authenticate": BAD_DIGEST}, b"")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self.refuse(sensor, "bad JSON", 500, {}, b"bad JSON")
        if not isinstance(doc, dict) or (doc.get("measurements") is None) == (doc.get("config") is None):
            return self.refuse(sensor, "neither measurements nor config", 500, {},
                               b"need exactly one of measurements, config")
        if doc.get("config") is not None:
            return self._config(sensor, sid, doc["config"])
        points = pairs(doc["measurements"])
        if isinstance(points, str):
            return self.refuse(sensor, points, 500, {}, points.encode())
        if not points:
            return self._answer("ERROR: Not enough arguments")
        req = Request(sid, points, strict=True)
        if not self.committer.apply(req):
            return 503, {"Retry-After": "10"}, b"database unavailable: not stored"
        if req.error == GONE:
            self.directory.forget(sensor)
            return self.refuse(sensor, UNPROVISIONED, 401, {"WWW-Authenticate": UNPROVISIONED}, b"")
        if req.error is not None:
            self.refuse(sensor, req.error, 200, {}, b"")
            return self._answer(req.error)
        return self._answer("ok")

    def _answer(self, response: str) -> tuple[int, dict[str, str], bytes]:
        return 200, {"Content-Type": "application/json"}, json.dumps({"response": response}).encode()

    def _config(self, sensor: str, sid: int, cfg: object) -> tuple[int, dict[str, str], bytes]:
        if not isinstance(cfg, dict) or len(json.dumps(cfg)) > 4096:
            return self.refuse(sensor, "bad config", 500, {}, b"config is not an object")
        with self.pool.connection() as conn:
            conn.execute("UPDATE sensor SET config = %s WHERE sid = %s", (json.dumps(cfg), sid))
        return 204, {}, b""

    # -- GET /sensor/<id> -----------------------------------------------------------------

    def get_sensor(self, sensor: str, query: dict[str, str],
                   headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        version = headers.get("x-version") or query.get("version")
        token = headers.get("x-token") or query.get("token") or ""
        callback = query.get("callback")
        if version != VERSION or (callback is not None and not CALLBACK.fullmatch(callback)):
            return 400, {}, MALFORMED.encode()
        try:
            q = read.Query.parse(query.get("interval"), query.get("resolution"), query.get("unit"),
                                 query.get("start"), query.get("end"))
            q.buckets(self.clock())  # a start-only span checked against now, before any query
        except read.BadQuery as exc:
            return 400, {}, f"{MALFORMED}: {exc}".encode()
        with self.pool.connection() as conn:
            uid = accounts.token_user(conn, token)
            if uid is None:
                return 403, {}, b"Forbidden: no valid token"
            row = conn.execute(
                "SELECT s.sid, d.owner = %s OR coalesce(u.shares, false) FROM sensor s "
                "JOIN device d ON d.id = s.device LEFT JOIN hub_user u ON u.id = d.owner WHERE s.id = %s",
                (uid, sensor)).fetchone()
            if row is None or not row[1]:
                return 403, {}, b"Forbidden"
            points = read.series(conn, int(row[0]), q, self.clock(), self.tz)
        body = json.dumps(read.to_json(points), separators=(",", ":"))
        if callback:
            return 200, {"Content-Type": "application/javascript"}, f"{callback}({body});".encode()
        return 200, {"Content-Type": "application/json"}, body.encode()

    # -- the dashboard ---------------------------------------------------------------------

    def dashboard(self, uid: int, name: str, interval: str, unit: str, message: str = "") -> str:
        q = read.Query.parse(interval, None, unit)
        with self.pool.connection() as conn:
            series = peers.peer_points(conn, uid, q, self.clock(), self.tz)
            fl = peers.fluksonians(conn, uid)
            shares, rank = peers.standing(conn, uid)
        stats = [(s, peers.stats(pts)) for s, pts in series]
        return web.dashboard(name, interval, unit, series, stats, fl, shares, rank, self.zone, message)


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "gridtap-hub"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - access log off
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _html(self, text: str, status: int = 200, extra: dict[str, str] | None = None) -> None:
            self._reply(status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                                 **(extra or {})}, text.encode())

        def _redirect(self, where: str, extra: dict[str, str] | None = None) -> None:
            self._reply(303, {"Location": where, **(extra or {})}, b"")

        def _headers(self) -> dict[str, str]:
            return {k.lower(): v for k, v in self.headers.items()}

        def _session(self) -> str:
            for part in (self.headers.get("Cookie") or "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE:
                    return v
            return ""

        def _user(self) -> tuple[int, str] | None:
            token = self._session()
            if not token:
                return None
            with hub.pool.connection() as conn:
                return accounts.session_user(conn, token)

        def _body(self) -> bytes | None:
            """The request body, or None after answering 413/400 (and closing: the rest is unread)."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                hub.refused["too large" if length > 0 else "bad length"] += 1
                log.warning("hub: refused %s %s: body of %d bytes", self.command, self.path[:60], length)
                self._reply(413 if length > 0 else 400, {"Connection": "close"},
                            b"Request Entity Too Large" if length > 0 else b"Bad Content-Length")
                return None
            return self.rfile.read(length)

        def _form(self) -> dict[str, str] | None:
            body = self._body()
            if body is None:
                return None
            origin = self.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
                self._reply(403, {}, b"cross-site form post refused")
                return None
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            try:
                m = SENSOR_PATH.fullmatch(path)
                if m is not None:
                    body = self._body()
                    if body is not None:
                        self._reply(*hub.post_sensor(m.group(1), self._headers(), body))
                    return
                form = self._form()
                if form is None:
                    return
                if path == "/login":
                    self._login(form)
                    return
                user = self._user()
                if user is None:
                    self._redirect("/login")
                    return
                self._action(path, form, user)
            except (psycopg.OperationalError, UserError) as exc:
                log.warning("hub: %s %s failed: %s", self.command, path, str(exc).strip()[:200])
                self._reply(503, {"Retry-After": "10"}, b"database unavailable")

        def _login(self, form: dict[str, str]) -> None:
            with hub.pool.connection() as conn:
                token = accounts.login(conn, form.get("name", ""), form.get("password", ""))
            if token is None:
                log.warning("hub: failed login for %r", form.get("name", "")[:32])
                self._html(web.login_page("wrong user name or password"), 401)
                return
            self._redirect("/dashboard", {"Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; "
                                                        f"Path=/; Max-Age={accounts.SESSION_DAYS * 86400}"})

        def _action(self, path: str, form: dict[str, str], user: tuple[int, str]) -> None:
            uid = user[0]
            back = form.get("back", "/dashboard")
            if not back.startswith("/dashboard"):
                back = "/dashboard"
            with hub.pool.connection() as conn:
                try:
                    if path == "/logout":
                        accounts.logout(conn, self._session())
                        self._redirect("/login", {"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path=/"})
                        return
                    if path == "/subscribe":
                        accounts.subscribe(conn, uid, form.get("peer", ""))
                    elif path == "/unsubscribe":
                        accounts.unsubscribe(conn, uid, form.get("peer", ""))
                    elif path == "/share":
                        accounts.set_sharing(conn, uid, form.get("on") == "1")
                    elif path == "/claim":
                        sensors = [(s.strip().lower(), "main" if i == 0 else "other")
                                   for i, s in enumerate(form.get("sensors", "").split(",")) if s.strip()]
                        accounts.claim(conn, uid, form.get("device", ""), form.get("key", ""), sensors)
                    else:
                        self._reply(404, {}, b"Not found")
                        return
                except UserError as exc:
                    self._html(hub.dashboard(uid, user[1], "hour", "watt", str(exc)), 400)
                    return
            self._redirect(back)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            try:
                m = SENSOR_PATH.fullmatch(parts.path)
                if m is not None:
                    self._reply(*hub.get_sensor(m.group(1), query, self._headers()))
                    return
                if parts.path == "/login":
                    self._html(web.login_page())
                    return
                if parts.path in ("/", "/dashboard"):
                    user = self._user()
                    if user is None:
                        self._redirect("/login")
                        return
                    interval, unit = query.get("interval", "hour"), query.get("unit", "watt")
                    if interval not in web.TABS or unit not in web.UNIT_LABELS:
                        self._reply(400, {}, b"unknown interval or unit")
                        return
                    self._html(hub.dashboard(user[0], user[1], interval, unit))
                    return
                self._reply(404, {}, b"Not found")
            except (psycopg.OperationalError, UserError) as exc:
                log.warning("hub: GET %s failed: %s", parts.path, str(exc).strip()[:200])
                self._reply(503, {"Retry-After": "10"}, b"database unavailable")

        def do_PUT(self) -> None:
            self._reply(405, {"Allow": "GET, POST"}, b"")

        do_DELETE = do_PUT

    return Handler
