"""Peer benchmarking, as the Flukso dashboard did it: own stream beside subscribed peers'.

A user sees another's stream only while that user shares it (``shares``);
subscribing needs it and stopping to share ends the subscriptions. The rank
among comparable homes (same household size band, PV or not) is computed in
SQL with ``rank()`` over ``home_usage`` (schema.py), which holds no stream,
only each home's mean use over 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from gridtap_hub import read


@dataclass(frozen=True)
class Stream:
    user: str
    sid: int
    own: bool


@dataclass(frozen=True)
class Stats:
    min: float | None
    max: float | None
    avg: float | None
    last: float | None


Points = list[tuple[int, float | None]]

# The user's own main stream, then each subscribed peer's that still shares, by name: one statement
# (a page used to take one for the users and one for their sensors).
_STREAMS = """
SELECT w.name, w.own, m.sid FROM (
    SELECT id, name, true AS own FROM hub_user WHERE id = %(me)s
    UNION ALL
    SELECT p.id, p.name, false FROM subscription s JOIN hub_user p ON p.id = s.peer
    WHERE s.user_id = %(me)s AND p.shares) w
CROSS JOIN LATERAL (SELECT s.sid FROM device d JOIN sensor s ON s.device = d.id
                    WHERE d.owner = w.id AND s.function = 'main' ORDER BY s.sid LIMIT 1) m
ORDER BY NOT w.own, w.name
"""


def streams(conn: psycopg.Connection, uid: int) -> list[Stream]:
    """The user's main stream first, then each subscribed peer's that still shares, by name."""
    return [Stream(str(n), int(sid), bool(own)) for n, own, sid in conn.execute(_STREAMS, {"me": uid})]


def peer_points(conn: psycopg.Connection, uid: int, q: read.Query, now: float,
                tz: str = "UTC") -> list[tuple[Stream, Points]]:
    """Every stream's series, read in one statement for all of them."""
    ss = streams(conn, uid)
    pts = read.many(conn, [s.sid for s in ss], q, now, tz) if ss else {}
    return [(s, pts[s.sid]) for s in ss]


def stats(points: list[tuple[int, float | None]]) -> Stats:
    vals = [v for _, v in points if v is not None]
    if not vals:
        return Stats(None, None, None, None)
    return Stats(min(vals), max(vals), sum(vals) / len(vals), vals[-1])


# Three walks that each stop at the limit (a later one does not run once it is reached) instead of
# sorting every sharer per page view: subscribed peers, then sharers of the user's size band and
# PV, then the others, both in the order of hub_user's name index. At 10,000 homes the second
# reads ~200 index entries to find 30 (EXPLAIN in docs/hub.md "Peer page cost"); the old sort read
# every user.
_FLUKSONIANS = """
WITH m AS (SELECT size_band, has_pv FROM hub_user WHERE id = %(me)s)
(SELECT u.name, true FROM subscription s JOIN hub_user u ON u.id = s.peer CROSS JOIN m
 WHERE s.user_id = %(me)s AND u.shares
 ORDER BY (u.size_band, u.has_pv) <> (m.size_band, m.has_pv), u.name LIMIT %(n)s)
UNION ALL
(SELECT u.name, false FROM hub_user u JOIN m ON u.size_band = m.size_band AND u.has_pv = m.has_pv
 WHERE u.shares AND u.id <> %(me)s
   AND NOT EXISTS (SELECT 1 FROM subscription s WHERE s.user_id = %(me)s AND s.peer = u.id)
 ORDER BY u.name LIMIT %(n)s)
UNION ALL
(SELECT u.name, false FROM hub_user u CROSS JOIN m
 WHERE u.shares AND u.id <> %(me)s AND (u.size_band, u.has_pv) <> (m.size_band, m.has_pv)
   AND NOT EXISTS (SELECT 1 FROM subscription s WHERE s.user_id = %(me)s AND s.peer = u.id)
 ORDER BY u.name LIMIT %(n)s)
LIMIT %(n)s
"""


def fluksonians(conn: psycopg.Connection, uid: int, limit: int = 30) -> list[tuple[str, bool]]:
    """Who ``uid`` subscribes to, then other users who share, comparable homes (same size band
    and PV) first, at most ``limit`` in all: a list of every sharer would not scale."""
    rows = conn.execute(_FLUKSONIANS, {"me": uid, "n": limit}).fetchall()
    return sorted((str(n), bool(sub)) for n, sub in rows)


@dataclass(frozen=True)
class Rank:
    rank: int
    of: int
    kwh_per_year: float
    size_band: int
    has_pv: bool


# Whether the user shares, and the rank of their 30-day use among homes of their size band and PV:
# 1 + the homes of the band that use less (what rank() gives), counted on home_usage_band's index
# (schema.py) instead of ranking the whole band with a window per page view.
_STANDING = """
SELECT u.shares, h.kwh_per_year, u.size_band, u.has_pv,
       (SELECT count(*) FROM home_usage o WHERE o.size_band = u.size_band AND o.has_pv = u.has_pv
                                            AND o.kwh_per_year < h.kwh_per_year),
       (SELECT count(*) FROM home_usage o WHERE o.size_band = u.size_band AND o.has_pv = u.has_pv
                                            AND o.kwh_per_year IS NOT NULL)
FROM hub_user u
LEFT JOIN home_usage h ON h.user_id = u.id AND h.size_band = u.size_band AND h.has_pv = u.has_pv
WHERE u.id = %(me)s
"""


def standing(conn: psycopg.Connection, uid: int) -> tuple[bool, Rank | None]:
    """(shares, rank) of the user; rank None until home_usage has their main sensor's use."""
    row = conn.execute(_STANDING, {"me": uid}).fetchone()
    if row is None:
        return False, None
    shares, kwh, band, pv, less, n = row
    if kwh is None:
        return bool(shares), None
    return bool(shares), Rank(int(less) + 1, int(n), float(kwh), int(band), bool(pv))

