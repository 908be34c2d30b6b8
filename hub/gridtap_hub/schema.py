"""The hub's tables, their time partitions and their retention (docs/hub.md "Storage").

Counters are stored as Flukso stores them, ``(ts, counter)`` per sensor, with
the energy counted since the sensor's first point beside them (``energy``,
Wh, never falling: a counter reset starts a new run without negative energy).
Roll-ups hold, per sensor and bucket, the energy in the bucket and the
seconds of it that points cover, so a bucket's mean power is
``wh / secs`` even when it is only partly covered. They are maintained by the
ingest in the same transaction as the points (ingest.py).

Every series table is range-partitioned on time; ``maintain`` creates
partitions ahead and drops whole partitions past their retention, which ages
the data like Flukso's RRAs did (1 day of minutes, a week of 15 minutes, a
year of days), a little more generously.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

DAY = 86400


@dataclass(frozen=True)
class Series:
    """One time-partitioned table: bucket length, partition span and how long it is kept (s)."""

    table: str
    bucket: int
    span: int
    keep: int


HOUR = 3600
# raw points: 30 h writable (a day offline replays in full), minutes: 2 days, quarter hours: 4 weeks
# (the night interval), days: 10 years. Flukso's RRAs: 1 day, 1 week, 1 year (and weeks for 10 years).
RAW = Series("measurement", 0, 6 * HOUR, 36 * HOUR)
MINUTE = Series("rollup_minute", 60, DAY, 3 * DAY)
Q15 = Series("rollup_q15", 900, 7 * DAY, 35 * DAY)
DAYS = Series("rollup_day", DAY, 365 * DAY, 10 * 365 * DAY)
ROLLUPS = (MINUTE, Q15, DAYS)
ALL = (RAW, *ROLLUPS)

DDL = """
CREATE TABLE IF NOT EXISTS hub_user (
    id serial PRIMARY KEY,
    name text UNIQUE NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,32}$'),
    pwhash text NOT NULL,
    token char(32) UNIQUE NOT NULL,
    shares boolean NOT NULL DEFAULT false,
    size_band smallint NOT NULL DEFAULT 2 CHECK (size_band BETWEEN 1 AND 5),
    has_pv boolean NOT NULL DEFAULT false,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS device (
    id char(32) PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    key char(32) NOT NULL CHECK (key ~ '^[0-9a-f]{32}$'),
    owner int REFERENCES hub_user ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS device_owner ON device (owner);
CREATE TABLE IF NOT EXISTS sensor (
    sid serial PRIMARY KEY,
    id char(32) UNIQUE NOT NULL CHECK (id ~ '^[0-9a-f]{32}$'),
    device char(32) NOT NULL REFERENCES device ON DELETE CASCADE,
    function text NOT NULL DEFAULT 'main',
    config jsonb,
    last_ts bigint,
    last_counter bigint,
    energy bigint NOT NULL DEFAULT 0,
    resets int NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sensor_device ON sensor (device);
CREATE TABLE IF NOT EXISTS subscription (
    user_id int NOT NULL REFERENCES hub_user ON DELETE CASCADE,
    peer int NOT NULL REFERENCES hub_user ON DELETE CASCADE,
    PRIMARY KEY (user_id, peer),
    CHECK (user_id <> peer)
);
CREATE TABLE IF NOT EXISTS web_session (
    token char(64) PRIMARY KEY,
    user_id int NOT NULL REFERENCES hub_user ON DELETE CASCADE,
    expires timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS measurement (
    sid int NOT NULL,
    ts bigint NOT NULL,
    counter bigint NOT NULL,
    energy bigint NOT NULL,
    PRIMARY KEY (sid, ts)
) PARTITION BY RANGE (ts);
"""

ROLLUP_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    sid int NOT NULL,
    secs int NOT NULL,
    t bigint NOT NULL,
    wh double precision NOT NULL,
    PRIMARY KEY (sid, t)
) PARTITION BY RANGE (t);
"""

# Each home's use over the last 30 days (its 'main' sensors), refreshed by maintain():
# the rank among comparable homes is computed in SQL over this, not over the roll-ups per page view.
USAGE_VIEW = """
CREATE MATERIALIZED VIEW IF NOT EXISTS home_usage AS
SELECT u.id AS user_id, u.size_band, u.has_pv,
       sum(r.wh) / nullif(sum(r.secs), 0) * 31536.0 AS kwh_per_year
FROM hub_user u
JOIN device d ON d.owner = u.id
JOIN sensor s ON s.device = d.id AND s.function = 'main'
JOIN rollup_day r ON r.sid = s.sid AND r.t >= extract(epoch FROM now())::bigint - 30 * 86400
GROUP BY u.id, u.size_band, u.has_pv
WITH NO DATA;
CREATE UNIQUE INDEX IF NOT EXISTS home_usage_user ON home_usage (user_id);
CREATE INDEX IF NOT EXISTS home_usage_band ON home_usage (size_band, has_pv, kwh_per_year);
CREATE TABLE IF NOT EXISTS usage_refreshed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO usage_refreshed DEFAULT VALUES ON CONFLICT DO NOTHING;
"""


def create(conn: psycopg.Connection, now: float) -> None:
    """Create every table (idempotent) and the partitions around ``now``."""
    with conn.transaction():
        conn.execute(DDL)
        for s in ROLLUPS:
            conn.execute(ROLLUP_DDL.format(table=s.table))
        conn.execute(USAGE_VIEW)
    maintain(conn, now)


def partitions(conn: psycopg.Connection, table: str) -> list[tuple[str, int, int]]:
    """(name, lower, upper) of each partition of ``table``, from the catalog's partition bounds."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = %s", (table,)).fetchall()
    out = []
    for name, bound in rows:
        # FOR VALUES FROM ('1700000000') TO ('1700086400')
        lo, hi = (int(x.strip(" ()'")) for x in bound.split("FROM", 1)[1].split("TO"))
        out.append((name, lo, hi))
    return sorted(out, key=lambda p: p[1])


def maintain(conn: psycopg.Connection, now: float, ahead: int = 3) -> dict[str, int]:
    """Create partitions ``ahead`` spans past now, drop those wholly past retention.

    Returns how many partitions were created and dropped. Safe to run from
    several processes: creation is IF NOT EXISTS and a drop of a partition
    another process just dropped is skipped.
    """
    made = dropped = 0
    for s in ALL:
        have = {name for name, _, _ in partitions(conn, s.table)}
        first = (int(now) - s.keep) // s.span * s.span
        for lo in range(first, int(now) + ahead * s.span, s.span):
            name = f"{s.table}_{lo}"
            if name not in have:
                with conn.transaction():
                    conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {s.table} "
                                 f"FOR VALUES FROM ({lo}) TO ({lo + s.span})")
                made += 1
        for name, _lo, hi in partitions(conn, s.table):
            if hi <= now - s.keep:
                with conn.transaction():
                    conn.execute(f"DROP TABLE IF EXISTS {name}")
                dropped += 1
    return {"created": made, "dropped": dropped}


def refresh_usage(conn: psycopg.Connection, every: float = 0.0) -> bool:
    """Recompute home_usage (concurrently once it has data, so pages never wait on it), unless some
    hub process did so less than ``every`` s ago: with ``--workers N`` each process's housekeeping
    asks, one of them refreshes. The row lock on usage_refreshed also keeps two refreshes from
    running at once. True if this call refreshed."""
    populated = conn.execute("SELECT ispopulated FROM pg_matviews WHERE matviewname = 'home_usage'"
                             ).fetchone()
    with conn.transaction():
        due = conn.execute("UPDATE usage_refreshed SET at = now() "
                           "WHERE at <= now() - make_interval(secs => %s) RETURNING at", (every,)).fetchone()
        if due is None:
            return False
        if populated and populated[0]:
            conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY home_usage")
        else:
            conn.execute("REFRESH MATERIALIZED VIEW home_usage")
    return True


def window(s: Series, now: float) -> int:
    """The oldest time a row of ``s`` may be written at now: one span inside retention.

    The margin keeps a write clear of a partition that ``maintain`` in
    another process may be dropping at the same moment.
    """
    return int(now) - s.keep + s.span
