"""Simulated homes for the tests and the bench: light publishers, not virtual boards.

A home has a device, its key and five sensors. Each sensor's counter follows
a household profile with the appliances of the virtual board's household
scenarios (hardware/gridtap_sim/scenarios.py: standby, fridge, kettle, hob, washing
machine, lights, computer; on/off times drawn from exponentials with the
same means) and, on some homes, a PV inverter on a clear-sky day; here in
pure Python at 10 s steps, cheap enough for ten thousand homes.

``FlmClient`` posts like a Fluksometer (flukso.md §3.2): every minute a
POST per sensor with the points not yet acknowledged, signed with the device
key; only ``{"response": "ok"}`` clears them, and rrdupdate's "illegal
attempt … last update time is L" clears up to L (the reply to a request
whose answer was lost). Anything else keeps them for the next round.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import secrets
from dataclasses import dataclass, field

import psycopg

from gridtap.fluksoapi import ILLEGAL_UPDATE, digest

STEP_S = 10
# (watts, mean seconds on, mean seconds off); standby is always on
APPLIANCES = ((110.0, 600.0, 1200.0), (2200.0, 150.0, 1800.0), (1800.0, 900.0, 2400.0),
              (450.0, 1200.0, 5400.0), (180.0, 1800.0, 900.0), (90.0, 3600.0, 1800.0))
STANDBY_W = 35.0
SENSOR_SHARE = (1.0, 0.35, 0.25, 0.2, 0.1)  # main, then sub-circuits


class Household:
    """Power of one home at 10 s steps, deterministic for its seed."""

    def __init__(self, seed: int, pv_w: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.pv_w = pv_w
        self._next = [self.rng.expovariate(1 / off) for _, _, off in APPLIANCES]
        self._on = [False] * len(APPLIANCES)
        self.t = 0.0

    def step(self, dt: float = STEP_S) -> float:
        """Mean watts over the next ``dt`` seconds."""
        self.t += dt
        for i, (_, on, off) in enumerate(APPLIANCES):
            while self._next[i] <= self.t:
                self._on[i] = not self._on[i]
                self._next[i] += self.rng.expovariate(1 / (on if self._on[i] else off))
        return STANDBY_W + sum(w for (w, _, _), o in zip(APPLIANCES, self._on, strict=True) if o)


def clear_sky(ts: int, peak_w: float) -> float:
    """A clear day from 07:00 to 19:00 UTC, sine shaped."""
    h = (ts % 86400) / 3600
    return peak_w * math.sin(math.pi * (h - 7) / 12) if 7 <= h <= 19 else 0.0


@dataclass
class Sensor:
    id: str
    share: float
    counter: float = 1000.0
    pending: list[tuple[int, int]] = field(default_factory=list)
    generated: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Home:
    """A simulated home: a device with five sensors and their counters."""

    device: str
    key: str
    sensors: list[Sensor]
    model: Household
    pv: bool = False

    @classmethod
    def new(cls, seed: int, n_sensors: int = 5) -> Home:
        rng = random.Random(seed)
        pv = rng.random() < 0.3
        sensors = [Sensor(rng.randbytes(16).hex(), SENSOR_SHARE[i % len(SENSOR_SHARE)])
                   for i in range(n_sensors)]
        return cls(rng.randbytes(16).hex(), rng.randbytes(16).hex(), sensors,
                   Household(seed, 4000.0 if pv else 0.0), pv)

    def advance(self, ts: int) -> None:
        """One 10 s step ending at ``ts``: every counter moves, the point is queued."""
        w = self.model.step()
        for i, s in enumerate(self.sensors):
            watts = w * s.share
            if self.pv and i > 0 and i == len(self.sensors) - 1:
                watts = clear_sky(ts, self.model.pv_w)  # the last sensor is the PV meter
            s.counter += watts * STEP_S / 3600
            p = (ts, int(s.counter))
            s.pending.append(p)
            s.generated.append(p)


class FlmClient:
    """Posts a home's pending points as a Fluksometer does; keeps what was not acknowledged."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None
        self.last_error = ""  # why the last upload() left points pending ("" if it did not)

    def _post(self, sensor: str, key: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the server closed: one fresh try
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", f"/sensor/{sensor}", body=body, headers={
                    "Content-Type": "application/json", "X-Version": "1.0", "X-Digest": digest(key, body)})
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.close()
                return resp.status, data
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def upload(self, home: Home, batch: int = 1000) -> int:
        """Send every sensor's pending points; returns how many were acknowledged."""
        cleared = 0
        self.last_error = ""
        for s in home.sensors:
            while s.pending:
                chunk = s.pending[:batch]
                body = json.dumps({"measurements": chunk}, separators=(",", ":")).encode()
                try:
                    status, data = self._post(s.id, home.key, body)
                except (OSError, http.client.HTTPException) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"[:120]
                    return cleared
                if status != 200:
                    self.last_error = f"HTTP {status}: {data[:80]!r}"
                    return cleared
                answer = str(json.loads(data).get("response"))
                if answer == "ok":
                    upto = chunk[-1][0]
                else:
                    m = ILLEGAL_UPDATE.search(answer)
                    if m is None:
                        self.last_error = answer[:120]
                        return cleared
                    upto = int(m.group(2))
                n = sum(1 for t, _ in s.pending if t <= upto)
                if n == 0:
                    self.last_error = answer[:120]
                    return cleared
                del s.pending[:n]
                cleared += n
        return cleared


def provision(conn: psycopg.Connection, homes: list[Home], prefix: str = "home") -> list[int]:
    """Users ``<prefix><i>`` owning home i, with their devices and sensors, by COPY; their user ids.

    Every third user shares; size bands cycle 1..5. One password hash for all
    (scrypt per home would take minutes for ten thousand).
    """
    from gridtap_hub.accounts import hash_password
    pw = hash_password("loadgen-home")
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY hub_user (name, pwhash, token, size_band, has_pv, shares) FROM STDIN") as cp:
            for i, h in enumerate(homes):
                cp.write_row((f"{prefix}{i}", pw, secrets.token_hex(16), 1 + i % 5, h.pv, i % 3 == 0))
        ids: dict[str, int] = dict(cur.execute("SELECT name, id FROM hub_user WHERE name LIKE %s",
                               (prefix + "%",)).fetchall())
        uids = [int(ids[f"{prefix}{i}"]) for i in range(len(homes))]
        with cur.copy("COPY device (id, key, owner) FROM STDIN") as cp:
            for h, uid in zip(homes, uids, strict=True):
                cp.write_row((h.device, h.key, uid))
        with cur.copy("COPY sensor (id, device, function) FROM STDIN") as cp:
            for h in homes:
                for j, x in enumerate(h.sensors):
                    fn = "main" if j == 0 else ("solar" if h.pv and j == len(h.sensors) - 1 else "other")
                    cp.write_row((x.id, h.device, fn))
    return uids
