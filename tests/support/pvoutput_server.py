"""A PVOutput-compatible test server: real HTTP on 127.0.0.1, threaded.

Implements the documented parts of ``/service/r2/addstatus.jsp`` and
``/service/r2/addbatchstatus.jsp`` (shared/reference/uploads-rules-control.md
§1.1):

* auth by the ``X-Pvoutput-Apikey``/``X-Pvoutput-SystemId`` headers or the
  ``key``/``sid`` parameters; ``401 Invalid System ID``, ``401 Invalid API
  Key``, ``401 Disabled API Key``, ``401 Missing, invalid or inactive api key
  information``; writing with a read-only key is ``403 Read only key``;
* a per-key hourly request budget (60, 300 with donation) in fixed clock
  hours: over it, ``403 Exceeded number requests per hour``; with the request
  header ``X-Rate-Limit: 1`` every reply carries ``X-Rate-Limit-Remaining``,
  ``-Limit`` and ``-Reset`` (Unix time of the next hour);
* parameters: ``d`` yyyymmdd, ``t`` hh:mm, v1..v4 numbers, v5/v6 decimals,
  ``c1`` 1..3, ``n`` 1, v7..v12 and ``m1`` (30 chars) only with donation
  (``403 Donation Mode``); at least one of v1..v4; ``400 Could not read
  [field]``; back-dating at most 14 days (90 with donation): ``400 Date is
  older than 14 days``; future dates: ``400 Invalid future date``; with ``n``
  both v2 and v4 are needed: ``400 Missing net power value``; a lower
  energy-today than an earlier status of the same day: ``400 Energy value
  [v1] lower than previously recorded value``;
* batches: ``data`` = ``d,t,v1,v2,v3,v4,v5,v6[,v7..v12]`` joined by ``;``,
  at most 30 (100 with donation); the reply lists ``d,t,1|0`` per status;
  when none was added: ``400 No statuses added or updated``; net statuses
  in one batch must share a date;
* ``405 POST or GET only`` for other methods.

Statuses are stored per system keyed by (date, time); an update replaces the
stored fields. The clock is injectable so a test can run days in seconds.
Fault injection: ``offline = True`` answers 503; ``fail_next(n, status, body)``.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

BASE = "/service/r2/"
DATE = re.compile(r"^\d{8}$")
TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass
class Account:
    key: str
    donation: bool = False
    read_only: bool = False
    disabled: bool = False
    tz: str = "UTC"


@dataclass
class Request:
    endpoint: str
    sid: str
    statuses: int
    status: int
    body: str
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


class BadStatus(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


PREFIX = {400: "Bad request 400: ", 401: "Unauthorized 401: ", 403: "Forbidden 403: ",
          405: "Method Not Allowed 405: ", 503: "Service Unavailable 503: "}


class PVOutputServer:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.statuses: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
        self.requests: list[Request] = []
        self.offline = False
        self._fail: list[tuple[int, str]] = []
        self._hour: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                server._handle(self, urllib.parse.parse_qs(query, keep_blank_values=True))

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace")
                params = urllib.parse.parse_qs(body, keep_blank_values=True)
                query = urllib.parse.urlsplit(self.path).query
                for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items():
                    params.setdefault(k, v)
                server._handle(self, params)

            def do_PUT(self) -> None:
                server._reply(self, 405, PREFIX[405] + "POST or GET only", {})

            do_DELETE = do_PUT

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    # ---- control ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{BASE}"

    def add_system(self, sid: int, key: str, **kw: Any) -> Account:
        acc = Account(key, **kw)
        self.accounts[str(sid)] = acc
        self.statuses.setdefault(str(sid), {})
        return acc

    def fail_next(self, n: int, status: int, body: str) -> None:
        self._fail.extend([(status, body)] * n)

    def start(self) -> PVOutputServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> PVOutputServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol ---------------------------------------------------------------------
    def _reply(self, h: BaseHTTPRequestHandler, code: int, text: str, headers: dict[str, str]) -> None:
        data = text.encode()
        h.send_response(code)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, params: dict[str, list[str]]) -> None:
        flat = {k: v[-1] for k, v in params.items()}
        with self.lock:
            code, text, headers, endpoint, sid, n = self._process(h, flat)
            self.requests.append(Request(endpoint, sid, n, code, text, self.clock(),
                                         {k.lower(): v for k, v in h.headers.items()},
                                         dict(flat)))
        self._reply(h, code, text, headers)

    def _process(self, h: BaseHTTPRequestHandler, p: dict[str, str]) -> tuple[int, str, dict[str, str], str,
                                                                             str, int]:
        path = urllib.parse.urlsplit(h.path).path
        endpoint = path[len(BASE):] if path.startswith(BASE) else path
        sid = h.headers.get("X-Pvoutput-SystemId") or p.get("sid", "")
        key = h.headers.get("X-Pvoutput-Apikey") or p.get("key", "")
        headers: dict[str, str] = {}
        if self.offline:
            return 503, PREFIX[503] + "Service temporarily unavailable", headers, endpoint, sid, 0
        if self._fail:
            code, body = self._fail.pop(0)
            return code, body, headers, endpoint, sid, 0
        if endpoint not in ("addstatus.jsp", "addbatchstatus.jsp"):
            return 404, "Not Found 404: " + path, headers, endpoint, sid, 0
        try:
            acc = self._auth(sid, key)
            now = self.clock()
            hour = int(now // 3600)
            start, count = self._hour.get(key, (hour, 0))
            if start != hour:
                start, count = hour, 0
            limit = 300 if acc.donation else 60
            count += 1
            self._hour[key] = (start, count)
            if h.headers.get("X-Rate-Limit") == "1":
                headers = {"X-Rate-Limit-Remaining": str(max(0, limit - count)),
                           "X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Reset": str((hour + 1) * 3600)}
            if count > limit:
                raise BadStatus(403, "Exceeded number requests per hour")
            if acc.read_only:
                raise BadStatus(403, "Read only key")
            if endpoint == "addstatus.jsp":
                self._addstatus(sid, acc, p)
                return 200, "OK 200: Added Status", headers, endpoint, sid, 1
            text, n = self._batch(sid, acc, p)
            return 200, text, headers, endpoint, sid, n
        except BadStatus as exc:
            return exc.code, PREFIX[exc.code] + exc.text, headers, endpoint, sid, 0

    def _auth(self, sid: str, key: str) -> Account:
        if not sid or not key:
            raise BadStatus(401, "Missing, invalid or inactive api key information")
        acc = self.accounts.get(sid)
        if acc is None:
            raise BadStatus(401, "Invalid System ID")
        if key != acc.key:
            raise BadStatus(401, "Invalid API Key")
        if acc.disabled:
            raise BadStatus(401, "Disabled API Key")
        return acc

    def _today(self, acc: Account) -> date:
        return datetime.fromtimestamp(self.clock(), ZoneInfo(acc.tz)).date()

    def _check(self, acc: Account, p: dict[str, str], net: bool) -> dict[str, str]:
        d, t = p.get("d", ""), p.get("t", "")
        if not DATE.match(d):
            raise BadStatus(400, "Could not read [d]")
        try:
            day = datetime.strptime(d, "%Y%m%d").date()
        except ValueError:
            raise BadStatus(400, "Could not read [d]") from None
        if not TIME.match(t):
            raise BadStatus(400, "Could not read [t]")
        today = self._today(acc)
        age = 90 if acc.donation else 14
        if day < today - timedelta(days=age):
            raise BadStatus(400, f"Date is older than {age} days [{d}]")
        if day > today:
            raise BadStatus(400, "Invalid future date")
        out: dict[str, str] = {}
        for i in range(1, 13):
            k = f"v{i}"
            v = p.get(k, "")
            if v == "":
                continue
            if i >= 7 and not acc.donation:
                raise BadStatus(403, "Donation Mode")
            if not NUMBER.match(v):
                raise BadStatus(400, f"Could not read [{k}]")
            out[k] = v
        if p.get("m1"):
            if not acc.donation:
                raise BadStatus(403, "Donation Mode")
            if len(p["m1"]) > 30:
                raise BadStatus(400, "Could not read [m1]")
            out["m1"] = p["m1"]
        if not any(k in out for k in ("v1", "v2", "v3", "v4")):
            raise BadStatus(400, "Could not read [v1,v2,v3,v4]")
        if net and not ("v2" in out and "v4" in out):
            raise BadStatus(400, "Missing net power value")
        return out

    def _store(self, sid: str, d: str, t: str, fields: dict[str, str], cumulative: bool) -> None:
        table = self.statuses[sid]
        if not cumulative and "v1" in fields:
            for (d2, t2), f2 in table.items():
                if d2 == d and t2 < t and "v1" in f2 and float(f2["v1"]) > float(fields["v1"]):
                    raise BadStatus(400, f"Energy value [{fields['v1']}] lower than previously recorded "
                                         f"value: {f2['v1']}")
        table[(d, t)] = fields

    def _flags(self, p: dict[str, str]) -> tuple[bool, bool]:
        c1, n = p.get("c1", ""), p.get("n", "")
        if c1 not in ("", "1", "2", "3"):
            raise BadStatus(400, "Could not read [c1]")
        if n not in ("", "0", "1"):
            raise BadStatus(400, "Could not read [n]")
        if c1 and n == "1":
            raise BadStatus(400, "Invalid net and cumulative")
        return c1 in ("1", "2"), n == "1"

    def _addstatus(self, sid: str, acc: Account, p: dict[str, str]) -> None:
        cumulative, net = self._flags(p)
        fields = self._check(acc, p, net)
        self._store(sid, p["d"], p["t"], fields, cumulative)

    def _batch(self, sid: str, acc: Account, p: dict[str, str]) -> tuple[str, int]:
        cumulative, net = self._flags(p)
        data = p.get("data", "")
        if not data:
            raise BadStatus(400, "Missing required data")
        entries = [e for e in data.split(";") if e]
        limit = 100 if acc.donation else 30
        if len(entries) > limit:
            raise BadStatus(400, f"Maximum number of statuses exceeded [{limit}]")
        parsed = []
        for e in entries:
            bits = e.split(",")
            if len(bits) < 3 or len(bits) > 14:
                raise BadStatus(400, "Could not read [data]")
            params = {"d": bits[0], "t": bits[1], **{f"v{i}": v for i, v in enumerate(bits[2:], start=1)}}
            parsed.append(params)
        if net and len({x["d"] for x in parsed}) > 1:
            raise BadStatus(400, "Net statuses in a batch must share one date")
        results = []
        added = 0
        for params in parsed:
            try:
                fields = self._check(acc, params, net)
                self._store(sid, params["d"], params["t"], fields, cumulative)
                results.append(f"{params['d']},{params['t']},1")
                added += 1
            except BadStatus as exc:
                if exc.code == 403:
                    raise
                results.append(f"{params['d']},{params['t']},0")
        if added == 0:
            raise BadStatus(400, "No statuses added or updated")
        return ";".join(results), len(parsed)
