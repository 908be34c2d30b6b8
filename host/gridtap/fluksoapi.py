"""The Flukso server API's wire rules, shared by the uploader, the test server and the hub.

``POST /sensor/<id>`` (flukso.md §4.3): the sensor id is 32 lowercase hex
digits, ``X-Version`` is ``1.0`` and ``X-Digest`` is the hex HMAC-SHA1 of the
body under the device key (40 lowercase hex digits). Counters go into an RRD
whose first allowed update is after ``RRD_START``; an update at or before the
last one is refused with the text ``illegal_update`` builds, which a client
parses back with ``ILLEGAL_UPDATE``.

Pure Python, no I/O: the daemon imports it on a router.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gridtap.errors import UserError

VERSION = "1.0"
RRD_START = 1199487600  # rrd.erl: --start 1199487600
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX40 = re.compile(r"[0-9a-f]{40}")
ILLEGAL_UPDATE = re.compile(r"illegal attempt to update using time (\d+) when last update time is (\d+)")
# webmachine's answers for the request as a whole
MALFORMED = "Malformed request"
UNPROVISIONED = "No proper provisioning for this sensor"
BAD_DIGEST = "Incorrect digest"


def digest(key: str | bytes, body: bytes) -> str:
    """The X-Digest of a body: hex HMAC-SHA1 under the (device) key."""
    raw = key.encode() if isinstance(key, str) else key
    return hmac.new(raw, body, hashlib.sha1).hexdigest()


def digest_ok(key: str | bytes, body: bytes, given: str) -> bool:
    """Constant-time check of a request's X-Digest."""
    return hmac.compare_digest(digest(key, body), given)


def is_sensor_id(sensor: object) -> bool:
    return isinstance(sensor, str) and HEX32.fullmatch(sensor) is not None


def check_sensor_id(sensor: str) -> str:
    if not is_sensor_id(sensor):
        raise UserError(f"Flukso sensor id {sensor!r} must be 32 lowercase hex digits")
    return sensor


def well_formed(sensor: str, headers: dict[str, str]) -> bool:
    """webmachine ``malformed_request``: version 1.0, a 32-hex sensor id, a 40-hex digest.

    ``headers`` has lower-case names.
    """
    return (headers.get("x-version") == VERSION and is_sensor_id(sensor)
            and HEX40.fullmatch(headers.get("x-digest", "")) is not None)


def illegal_update(ts: int, last: int) -> str:
    """rrdupdate's refusal of a timestamp that is not after the last update."""
    return (f"ERROR: illegal attempt to update using time {ts} when last update "
            f"time is {last} (minimum one second step)")


def pairs(meas: object) -> list[tuple[int, int]] | str:
    """The ``[ts, counter]`` pairs of a ``measurements`` value, or why the server fails on it.

    As the real resource: the list must be non-empty and end in a pair;
    entries that are not pairs are skipped, a timestamp that is not an
    integer fails the request (HTTP 500), and a pair whose counter is not an
    integer is skipped.
    """
    if not isinstance(meas, list) or not meas:
        return "measurements must be a non-empty list"
    last = meas[-1]
    if not (isinstance(last, list) and len(last) == 2):
        return "last measurement is not a pair"
    out: list[tuple[int, int]] = []
    for m in meas:
        if not (isinstance(m, list) and len(m) == 2):
            continue
        ts, counter = m
        if not isinstance(ts, int) or isinstance(ts, bool):
            return "timestamp is not an integer"
        if isinstance(counter, int) and not isinstance(counter, bool):
            out.append((ts, counter))
    return out
