"""PVOutput HTTP client and response classification (no state, no retries here).

Requests are form POSTs with the key in the ``X-Pvoutput-Apikey`` header
(never in the URL, never logged) and ``X-Rate-Limit: 1`` so the service
returns ``X-Rate-Limit-Remaining/-Limit/-Reset``.

`classify` maps a response to what the uploader must do, by PVOutput's
documented error texts:

=========  ===============================================================
ok         200
skip       400 date too old, Moon Powered, energy lower than before, value
           too high / exceeds 250,000Wh, invalid net and cumulative, could
           not read a field, missing net power value, no statuses added
retry      network errors, 5xx, 400 date in the future (clock skew),
           other 400s (a bounded number of times; then skip)
rate       403 exceeded number of requests per hour: wait for the reset
stop       401 invalid/disabled/missing key or system id, 403 read only
           key, 403 donation mode, 405: alert the user, send nothing more
=========  ===============================================================
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from gridtap.outputs.pvoutput.settings import Secret

OK, SKIP, RETRY, RATE, STOP = "ok", "skip", "retry", "rate", "stop"

_SKIP_TEXTS = ("date is older", "too far in the past", "moon powered", "lower than previously recorded",
               "cannot exceed 250,000", "too high for system size", "invalid net and cumulative",
               "could not read", "missing net power value", "no statuses added or updated")
_RETRY_TEXTS = ("date is in the future", "invalid future date")
_STOP_TEXTS = ("invalid api key", "invalid system id", "disabled api key", "missing, invalid or inactive",
               "read only key", "donation mode", "post or get only")


@dataclass
class Response:
    status: int                 # HTTP status, 0 for a network error
    body: str
    headers: dict[str, str] = field(default_factory=dict)

    def header_int(self, name: str) -> int | None:
        v = self.headers.get(name.lower())
        try:
            return int(float(v)) if v is not None else None
        except ValueError:
            return None


def classify(resp: Response) -> str:
    text = resp.body.lower()
    if resp.status == 200:
        return OK
    if resp.status == 0 or resp.status >= 500:
        return RETRY
    if "exceeded number" in text or resp.status == 429:
        return RATE
    if any(t in text for t in _STOP_TEXTS) or resp.status in (401, 405):
        return STOP
    if resp.status == 403:
        return STOP
    if any(t in text for t in _RETRY_TEXTS):
        return RETRY
    if any(t in text for t in _SKIP_TEXTS):
        return SKIP
    return RETRY


class Client:
    def __init__(self, base_url: str, system_id: int, key: Secret, timeout_s: float = 15.0) -> None:
        self.base_url = base_url
        self.system_id = system_id
        self._key = key
        self.timeout_s = timeout_s

    def post(self, endpoint: str, params: dict[str, str]) -> Response:
        body = urllib.parse.urlencode(params).encode("ascii")
        req = urllib.request.Request(self.base_url + endpoint, data=body, method="POST", headers={
            "X-Pvoutput-Apikey": self._key.reveal(),
            "X-Pvoutput-SystemId": str(self.system_id),
            "X-Rate-Limit": "1",
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "gridtap",
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return Response(r.status, r.read(65536).decode("utf-8", "replace").strip(),
                                {k.lower(): v for k, v in r.headers.items()})
        except urllib.error.HTTPError as exc:
            text = exc.read(65536).decode("utf-8", "replace").strip() if exc.fp is not None else ""
            headers = {k.lower(): v for k, v in exc.headers.items()} if exc.headers else {}
            return Response(exc.code, text, headers)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Response(0, f"network error: {reason}")
