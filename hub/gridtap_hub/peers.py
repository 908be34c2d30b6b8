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


_MAIN = ("SELECT DISTINCT ON (d.owner) d.owner, s.sid FROM device d JOIN sensor s ON s.device = d.id "
         "WHERE s.function = 'main' AND d.owner = ANY(%s) ORDER BY d.owner, s.sid")


def streams(conn: psycopg.Connection, uid: int) -> list[Stream]:
    """The user's main stream first, then each subscribed peer's that still shares, by name."""
    users = conn.execute(
        "SELECT u.id, u.name, u.id = %(me)s FROM hub_user u WHERE u.id = %(me)s OR u.id IN "
        "(SELECT s.peer FROM subscription s JOIN hub_user p ON p.id = s.peer "
        " WHERE s.user_id = %(me)s AND p.shares) ORDER BY u.id <> %(me)s, u.name", {"me": uid}).fetchall()
    main: dict[int, int] = dict(conn.execute(_MAIN, ([u[0] for u in users],)).fetchall())
    return [Stream(name, main[i], own) for i, name, own in users if i in main]


def peer_points(conn: psycopg.Connection, uid: int, q: read.Query, now: float,
                tz: str = "UTC") -> list[tuple[Stream, list[tuple[int, float | None]]]]:
    return [(s, read.series(conn, s.sid, q, now, tz)) for s in streams(conn, uid)]


def stats(points: list[tuple[int, float | None]]) -> Stats:
    vals = [v for _, v in points if v is not None]
    if not vals:
        return Stats(None, None, None, None)
    return Stats(min(vals), max(vals), sum(vals) / len(vals), vals[-1])


def fluksonians(conn: psycopg.Connection, uid: int, limit: int = 30) -> list[tuple[str, bool]]:
    """Who ``uid`` subscribes to, then other users who share, comparable homes (same size band
    and PV) first, at most ``limit`` in all: a list of every sharer would not scale."""
    rows = conn.execute(
        "SELECT u.name, s.peer IS NOT NULL FROM hub_user u "
        "LEFT JOIN subscription s ON s.peer = u.id AND s.user_id = %(me)s "
        "CROSS JOIN (SELECT size_band, has_pv FROM hub_user WHERE id = %(me)s) m "
        "WHERE u.shares AND u.id <> %(me)s "
        "ORDER BY s.peer IS NULL, (u.size_band, u.has_pv) <> (m.size_band, m.has_pv), u.name "
        "LIMIT %(n)s", {"me": uid, "n": limit}).fetchall()
    return sorted((str(n), bool(sub)) for n, sub in rows)


@dataclass(frozen=True)
class Rank:
    rank: int
    of: int
    kwh_per_year: float
    size_band: int
    has_pv: bool


def rank(conn: psycopg.Connection, uid: int) -> Rank | None:
    """Where the user's 30-day use ranks among homes of the same size band and PV (1 = least)."""
    row = conn.execute(
        "SELECT rank, n, kwh_per_year, size_band, has_pv FROM ("
        "  SELECT user_id, kwh_per_year, size_band, has_pv,"
        "         rank() OVER (PARTITION BY size_band, has_pv ORDER BY kwh_per_year) AS rank,"
        "         count(*) OVER (PARTITION BY size_band, has_pv) AS n"
        "  FROM home_usage WHERE kwh_per_year IS NOT NULL"
        "    AND (size_band, has_pv) = (SELECT size_band, has_pv FROM hub_user WHERE id = %(me)s)"
        ") r WHERE user_id = %(me)s", {"me": uid}).fetchone()
    if row is None:
        return None
    return Rank(int(row[0]), int(row[1]), float(row[2]), int(row[3]), bool(row[4]))
