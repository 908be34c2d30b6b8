"""Spool and uplink figures: aging after a long outage, energy exactness, flash writes, GAUGE -> MQTT latency.

* ``host.spool_points_after_30d_outage``: one sensor, one tuple every 10 s
  for 30 days with no uplink (259,200 tuples), Flukso's aging filters; the
  points left in the spool. The result does not depend on the commit cadence
  (the 60/900/86400 s buckets nest, so a point removed early is one a later
  pass would remove too), so the run commits hourly to finish quickly.
* ``host.spool_energy_exact``: true when, for every filter, every bucket that
  no coarser filter reaches keeps its first and last counter, the newest and
  oldest points survive, and every kept point carries the counter the board
  sent.
* ``host.spool_wal_bytes_per_day``: SQLite WAL bytes written per day by a
  board with 5 series at one tuple per second, default commit cadence (30 s)
  and an upload clearing the spool every 300 s: the flash-wear figure.
* ``host.sample_to_mqtt_ms_p99``: a GAUGE frame's bytes go through the frame
  decoder, ``MqttPublisher.gauge``, a real mosquitto on 127.0.0.1 and back to
  a subscriber; 99th percentile of 1000 sequential round trips. It excludes
  the serial line and the daemon's ingest loop (the daemon's own figure, if
  any, covers those).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "host", ROOT / "firmware"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from gridtap.board.link import make_decoder  # noqa: E402
from gridtap.outputs.mqtt import MqttPublisher, MqttSensor, gauge_topic  # noqa: E402
from gridtap.store.spool import FLUKSO_AGING, Spool  # noqa: E402
from gridtap_fw import wire  # noqa: E402
from tests.support.fakes import FakeClock  # noqa: E402

T0 = 1_700_000_000
SID = "1994ad6054785f2db8f726086c486ca9"

ANCHORS = {
    "host.spool_points_after_30d_outage": "unaged: 259,200; Flukso: same filters (about 664) but in RAM, "
                                          "lost on reboot; emonhub: 100,000-item RAM list, oldest dropped",
    "host.spool_energy_exact": "Flukso keeps first and last point per bucket (exact); "
                               "emonhub drops the oldest",
    "host.spool_wal_bytes_per_day": "per-tuple commits would mean 5 fsyncs/s (432,000 a day)",
    "host.sample_to_mqtt_ms_p99": "emonhub: 0.1 s interfacer loop + 0.2 s hub tick before MQTT",
}
HOW = {
    "host.spool_points_after_30d_outage": "1 sensor, 1 tuple/10 s, 30 days, FLUKSO_AGING, real SQLite file",
    "host.spool_energy_exact": "checked bucket by bucket against the unaged series",
    "host.spool_wal_bytes_per_day": "WAL growth over 2 h of simulated time with autocheckpoint off, x12",
    "host.sample_to_mqtt_ms_p99": "decode -> publish -> mosquitto -> subscriber, 1000 sequential samples",
}


def outage(tmp: Path, days: int = 30, step: int = 10) -> tuple[int, bool]:
    mono, wall = FakeClock(0.0), FakeClock(float(T0))
    sp = Spool(tmp / "outage.db", ["flukso"], commit_interval=3600, clock=mono, wall_clock=wall)
    truth: list[tuple[int, int]] = []
    c = 0
    for i in range(days * 86400 // step):
        ts = T0 + step * i
        c += 1 + (i * 7919) % 17
        mono.t = wall.t = float(ts)
        truth.append((ts, c))
        sp.add(SID, ts, c)
        sp.maybe_commit()
    sp.commit()
    now = truth[-1][0]
    sp.age(now)
    kept = sp.pending("flukso", SID, limit=10**7)
    sp.close()
    exact = kept[0] == truth[0] and kept[-1] == truth[-1] and set(kept) <= set(truth)
    kept_ts = {t for t, _ in kept}
    cuts = [now - off for _span, off in FLUKSO_AGING]
    for i, (span, _off) in enumerate(FLUKSO_AGING):
        lo = cuts[i + 1] if i + 1 < len(cuts) else 0
        buckets: dict[int, list[int]] = {}
        for t, _ in truth:
            buckets.setdefault(t // span, []).append(t)
        for b, members in buckets.items():
            if b * span >= lo and not (members[0] in kept_ts and members[-1] in kept_ts):
                exact = False
    return len(kept), exact


def wal_bytes_per_day(tmp: Path) -> int:
    mono, wall = FakeClock(0.0), FakeClock(float(T0))
    path = tmp / "wear.db"
    sp = Spool(path, ["flukso"], clock=mono, wall_clock=wall)  # default cadence: 30 s / 1000 points
    sp._db.execute("PRAGMA wal_autocheckpoint=0")  # measure every byte the WAL receives
    sensors = [f"{i:032x}" for i in range(5)]
    hours = 2
    for s in range(hours * 3600):
        mono.t = wall.t = float(T0 + s)
        for n, sid in enumerate(sensors):
            sp.add(sid, T0 + s, s * (n + 1))
        sp.maybe_commit()
        if s % 300 == 299:
            for sid in sensors:
                pend = sp.pending("flukso", sid, limit=10**6)
                if pend:
                    sp.ack("flukso", sid, pend[-1][0])
    size = os.path.getsize(str(path) + "-wal")
    sp.close()
    return int(size * 24 / hours)


def sample_to_mqtt_p99(tmp: Path, n: int = 1000) -> float | None:
    from tests.support.broker import Collector, Mosquitto

    try:
        broker = Mosquitto(tmp).start()
    except RuntimeError as exc:
        print(f"  (no mosquitto: {exc})")
        return None
    sensor = MqttSensor(SID, "Mains")
    pub = MqttPublisher("127.0.0.1", broker.port, "bench", [sensor], discovery=False)
    topic = gauge_topic(SID)
    got = threading.Event()
    seen: list[float] = []
    try:
        pub.start()
        pub.wait_connected(10)
        sub = Collector(broker.port, topics=(topic,))

        want = [b""]

        def on_message(c: object, u: object, msg: Any) -> None:
            if bytes(msg.payload) == want[0]:  # this sample's message, not an older one
                seen.append(time.monotonic())
                got.set()

        sub.client.on_message = on_message
        dec = make_decoder()
        lat: list[float] = []
        for i in range(n):
            frame = wire.encode(wire.GAUGE, i & 0xFFFF,
                                (0, T0 + i, 0, 1500250 + i, 1530000, 230125, 6648, 9805, 49987,
                                 302517, 1234, 567, 89, 999))
            want[0] = b'[%d,%s,"W"]' % (T0 + i, str(round((1500250 + i) / 1000, 3)).encode())
            got.clear()
            t0 = time.monotonic()
            for msg in dec.feed(frame):
                ch, t, _ms, p_mw = msg.values[:4]
                pub.gauge(SID, t, p_mw / 1000)
            if not got.wait(5):
                raise RuntimeError("a GAUGE never reached the subscriber")
            lat.append((seen[-1] - t0) * 1000)
        sub.close()
    finally:
        pub.stop()
        broker.stop()
    lat.sort()
    print(f"  GAUGE -> MQTT: median {lat[len(lat) // 2]:.3f} ms, max {lat[-1]:.3f} ms")
    return round(lat[int(0.99 * (len(lat) - 1))], 3)


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        points, exact = outage(tmp)
        wal = wal_bytes_per_day(tmp)
        p99 = sample_to_mqtt_p99(tmp)
    out: dict[str, object] = {
        "host.spool_points_after_30d_outage": points,
        "host.spool_energy_exact": exact,
        "host.spool_wal_bytes_per_day": wal,
    }
    if p99 is not None:
        out["host.sample_to_mqtt_ms_p99"] = p99
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k} = {v}")
