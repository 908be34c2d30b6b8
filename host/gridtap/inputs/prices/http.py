"""One bounded HTTP GET for the price sources: timeout, size cap, 429/Retry-After, no secret in errors."""

from __future__ import annotations

import email.utils
import time
import urllib.error
import urllib.request

from gridtap.inputs.prices.series import PriceError

MAX_BODY = 4 << 20  # a month of quarter-hour prices is well under 1 MB


class RateLimited(PriceError):
    """The server said 429; `retry_after_s` is how long it asked us to wait."""

    def __init__(self, what: str, retry_after_s: float) -> None:
        super().__init__(f"{what}: rate limited (HTTP 429), retry after {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class HttpStatus(PriceError):
    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: HTTP {status}{': ' + detail if detail else ''}")
        self.status = status
        self.detail = detail


def retry_after(value: str | None, now: float | None = None) -> float:
    """Seconds from a Retry-After header (delta seconds or an HTTP date); 60 when absent or odd."""
    if not value:
        return 60.0
    value = value.strip()
    if value.isdigit():
        return min(float(value), 86400.0)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 60.0
    return min(max(0.0, when - (time.time() if now is None else now)), 86400.0)


def get(url: str, what: str, timeout: float = 20.0, headers: dict[str, str] | None = None) -> bytes:
    """GET url; PriceError naming `what` (never the URL: it may hold a token) on any failure."""
    req = urllib.request.Request(url, headers={"User-Agent": "gridtap", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http(s) only, checked)
            body: bytes = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(2000).decode("utf-8", "replace")
        except OSError:
            detail = ""
        if exc.code == 429:
            raise RateLimited(what, retry_after(exc.headers.get("Retry-After"))) from None
        raise HttpStatus(what, exc.code, _short(detail)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PriceError(f"{what}: cannot connect: {reason}") from None
    if len(body) > MAX_BODY:
        raise PriceError(f"{what}: answer larger than {MAX_BODY >> 20} MB")
    return body


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:200]


def check_url(url: str, what: str) -> str:
    if not url.startswith(("https://", "http://")):
        raise PriceError(f"{what}: base_url must start with https:// or http://, got {url!r}")
    return url.rstrip("/")
