"""A Flukso-compatible API server for tests: a real HTTP server on 127.0.0.1.

It implements the documented behaviour of ``POST /sensor/<id>`` of the Flukso
server (docs: shared/reference/flukso.md §4.3; the fls webmachine resource),
so the uploader is tested against the same rules the real one enforces:

* **400 Bad Request** (webmachine ``malformed_request``) unless ``X-Version``
  is ``1.0``, the sensor id is 32 lowercase hex digits and ``X-Digest`` is 40
  lowercase hex digits.
* **401 Unauthorized** (``is_authorized``) with ``WWW-Authenticate: Incorrect
  digest`` when the digest is not the hex HMAC-SHA1 of the body under the
  sensor's key, or ``No proper provisioning for this sensor`` for an unknown
  sensor.
* **500** when the body is not a JSON object, has neither or both of
  ``measurements`` and ``config``, or the measurements are not a non-empty
  list ending in a ``[ts, value]`` pair with integer timestamps (the real
  resource crashes on those).
* ``{"measurements": [[ts, counter], ...]}``: pairs whose counter is not an
  integer are skipped, as the real server does; the rest go into the sensor's
  RRD in order. RRD rules apply: every timestamp must be later than the last
  update (initially the RRD start, 1199487600); the first one that is not
  stops the update, keeps what came before it, and the reply is still HTTP 200
  with ``{"response": "ERROR: illegal attempt to update using time T when last
  update time is L (minimum one second step)"}``. A clean update replies
  ``{"response": "ok"}``.
* ``{"config": {...}}`` stores the sensor's configuration: 204 No Content.

Accepted measurements are kept (the raw ``ts:counter`` updates the RRD would
get), so tests can read the energy back. Fault injection for tests of the
client: ``fail_next(n, status)`` answers the next n POSTs with that status,
``drop_reply_next(n)`` processes the next n POSTs and then closes the
connection without answering (a reply lost on the way back),
``rrd_error_next(sensor, text)`` answers that sensor's next measurements
with HTTP 200 and ``text`` as the response, storing nothing (an RRD update
that failed: the real server reports it so). Pass an
``ssl.SSLContext`` as ``tls`` to serve HTTPS.

Run it by hand: ``python -m tests.support.flukso_server --port 8080
--sensor <32hex>:<key>``.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gridtap.fluksoapi import (
    BAD_DIGEST,
    MALFORMED,
    RRD_START,
    UNPROVISIONED,
    digest,
    digest_ok,
    illegal_update,
    pairs,
    well_formed,
)
from gridtap_sim.localhttp import send

__all__ = ["FluksoServer", "digest"]


class FluksoServer:
    """A threaded Flukso API on 127.0.0.1; ``keys`` maps sensor id -> key."""

    def __init__(self, keys: dict[str, str], port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.keys = dict(keys)
        self.lock = threading.Lock()
        self.stored: dict[str, list[tuple[int, int]]] = {s: [] for s in keys}
        self.last_update: dict[str, int] = {s: RRD_START for s in keys}
        self.config: dict[str, dict[str, Any]] = {}
        self.posts = 0  # POST requests received (its access log, in short)
        self._fail: list[int] = []
        self._drop = 0
        self._rrd_errors: dict[str, list[str]] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:  # HTTPS, like api.flukso.net
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def start(self) -> FluksoServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="flukso-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FluksoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ---------------------------------------------------------

    def measurements(self, sensor: str) -> list[tuple[int, int]]:
        with self.lock:
            return list(self.stored.get(sensor, []))

    def energy(self, sensor: str, t0: int | None = None, t1: int | None = None) -> int:
        """Counter difference between the first point at/after t0 and the last at/before t1."""
        pts = [p for p in self.measurements(sensor)
               if (t0 is None or p[0] >= t0) and (t1 is None or p[0] <= t1)]
        return pts[-1][1] - pts[0][1] if pts else 0

    # -- fault injection -----------------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def fail_none(self) -> None:
        """Answer every POST again (the failures fail_next queued and not used yet are dropped)."""
        with self.lock:
            self._fail.clear()

    def drop_reply_next(self, n: int = 1) -> None:
        with self.lock:
            self._drop += n

    def rrd_error_next(self, sensor: str, text: str, n: int = 1) -> None:
        with self.lock:
            self._rrd_errors.setdefault(sensor, []).extend([text] * n)

    # -- the resource ----------------------------------------------------------------

    def handle_post(self, sensor: str, headers: dict[str, str],
                    body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Apply one POST /sensor/<id>; returns (status, headers, body)."""
        with self.lock:
            self.posts += 1
            if self._fail:
                status = self._fail.pop(0)
                return status, {}, b"injected failure"
            if not well_formed(sensor, headers):
                return 400, {}, MALFORMED.encode()
            key = self.keys.get(sensor)
            if key is None:
                return 401, {"WWW-Authenticate": UNPROVISIONED}, b""
            if not digest_ok(key, body, headers["x-digest"]):
                return 401, {"WWW-Authenticate": BAD_DIGEST}, b""
            try:
                doc = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                return 500, {}, b"bad JSON"
            if not isinstance(doc, dict):
                return 500, {}, b"not an object"
            meas, cfg = doc.get("measurements"), doc.get("config")
            if (meas is None) == (cfg is None):
                return 500, {}, b"need exactly one of measurements, config"
            if cfg is not None:
                if not isinstance(cfg, dict):
                    return 500, {}, b"config is not an object"
                self.config[sensor] = cfg
                return 204, {}, b""
            return self._measurements(sensor, meas)

    def _measurements(self, sensor: str, meas: object) -> tuple[int, dict[str, str], bytes]:
        updates = pairs(meas)
        if isinstance(updates, str):
            return 500, {}, updates.encode()
        if not updates:
            response = "ERROR: Not enough arguments"
        elif self._rrd_errors.get(sensor):
            response = self._rrd_errors[sensor].pop(0)
        else:
            response = "ok"
            for ts, counter in updates:
                if ts <= self.last_update[sensor]:
                    response = illegal_update(ts, self.last_update[sensor])
                    break
                self.stored[sensor].append((ts, counter))
                self.last_update[sensor] = ts
        body = json.dumps({"response": response}).encode()
        if self._drop:
            self._drop -= 1
            return -1, {}, body  # processed, but the reply never arrives
        return 200, {"Content-Type": "application/json"}, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                pass

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                if status < 0:
                    self.close_connection = True
                    return
                send(self, status, headers, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                m = re.fullmatch(r"/sensor/([^/?]+)", self.path)
                if m is None:
                    self._reply(404, {}, b"Not found")
                    return
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                self._reply(*server.handle_post(m.group(1), hdrs, body))

            def do_GET(self) -> None:
                # GET needs a token or a session; this server has neither: refused as malformed
                self._reply(400, {}, b"Malformed request")

            def do_PUT(self) -> None:
                self._reply(405, {"Allow": "GET, POST"}, b"")

            do_DELETE = do_PUT

        return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description="Flukso-compatible API server for local tests")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--sensor", action="append", default=[], metavar="ID:KEY", required=True)
    args = ap.parse_args()
    keys = dict(s.split(":", 1) for s in args.sensor)
    srv = FluksoServer(keys, port=args.port)
    print(f"Flukso test server on {srv.url}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
