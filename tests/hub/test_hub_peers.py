"""The peer page's SQL at a few hundred users: the rank counted on an index equals rank() over the
band, the list of Fluksonians equals the one sort it replaced, and a page runs a fixed number of
statements however many peers are subscribed (docs/hub.md "Peer page cost")."""

from __future__ import annotations

import random
from typing import Any

import psycopg

from gridtap_hub import accounts, peers, read, schema
from gridtap_hub.server import HubServer

USERS = 240
USAGE_ALL = USERS + 10  # a limit above the number of sharers


def _populate(conn: psycopg.Connection) -> list[int]:
    """Users with random bands, PV and sharing; a home_usage filled directly (the view's definition
    is exercised by the dashboard test) by swapping in a table of the same shape."""
    rng = random.Random(19)
    rows = [(f"u{i:03d}", "x", f"{i:032x}", rng.randint(1, 5), rng.random() < 0.3, rng.random() < 0.5)
            for i in range(USERS)]
    with conn.cursor() as cur, cur.copy(
            "COPY hub_user (name, pwhash, token, size_band, has_pv, shares) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)
    uids = [int(r[0]) for r in conn.execute("SELECT id FROM hub_user ORDER BY id")]
    conn.execute("DROP MATERIALIZED VIEW home_usage")
    conn.execute("CREATE TABLE home_usage (user_id int PRIMARY KEY, size_band smallint, has_pv boolean, "
                 "kwh_per_year double precision)")
    conn.execute("CREATE INDEX ON home_usage (size_band, has_pv, kwh_per_year)")
    # ties (whole hundreds) and homes without a figure, as rank() must handle them
    conn.execute("INSERT INTO home_usage SELECT id, size_band, has_pv, "
                 "CASE WHEN id % 7 = 0 THEN NULL ELSE (id * 37 % 20) * 100 END FROM hub_user")
    for uid in rng.sample(uids, 60):
        for peer in rng.sample(uids, 4):
            if peer != uid:
                conn.execute("INSERT INTO subscription VALUES (%s, %s) ON CONFLICT DO NOTHING", (uid, peer))
    return uids


def test_standing_is_rank_over_the_band(hub_conn: psycopg.Connection) -> None:
    uids = _populate(hub_conn)
    window = {int(u): (int(r), int(n)) for u, r, n in hub_conn.execute(
        "SELECT user_id, rank() OVER w, count(*) OVER (PARTITION BY size_band, has_pv) FROM home_usage "
        "WHERE kwh_per_year IS NOT NULL WINDOW w AS (PARTITION BY size_band, has_pv ORDER BY kwh_per_year)")}
    shares: dict[int, bool] = dict(hub_conn.execute("SELECT id, shares FROM hub_user").fetchall())
    for uid in uids:
        sh, r = peers.standing(hub_conn, uid)
        assert sh == shares[uid]
        assert (None if r is None else (r.rank, r.of)) == window.get(uid), uid
    assert peers.standing(hub_conn, 10**6) == (False, None)


_ONE_SORT = (
    "SELECT u.name, s.peer IS NOT NULL FROM hub_user u "
    "LEFT JOIN subscription s ON s.peer = u.id AND s.user_id = %(me)s "
    "CROSS JOIN (SELECT size_band, has_pv FROM hub_user WHERE id = %(me)s) m "
    "WHERE u.shares AND u.id <> %(me)s "
    "ORDER BY s.peer IS NULL, (u.size_band, u.has_pv) <> (m.size_band, m.has_pv), u.name LIMIT %(n)s")


def test_fluksonians_are_the_single_sort_they_replace(hub_conn: psycopg.Connection) -> None:
    uids = _populate(hub_conn)
    for uid in uids[::7]:
        for limit in (1, 3, 30, USAGE_ALL):
            want = sorted((str(n), bool(s)) for n, s in hub_conn.execute(_ONE_SORT, {"me": uid, "n": limit}))
            assert peers.fluksonians(hub_conn, uid, limit) == want, (uid, limit)


def test_a_page_runs_four_statements_however_many_peers(hub_dsn: str, hub_conn: psycopg.Connection,
                                                         monkeypatch: Any) -> None:
    me = accounts.add_user(hub_conn, "me", "password1", shares=True)
    for i in range(6):
        accounts.claim(hub_conn, None, f"{i:032x}", "a" * 32, [(f"{i + 100:032x}", "main")])
        peer = accounts.add_user(hub_conn, f"p{i}", "password1", shares=True)
        hub_conn.execute("UPDATE device SET owner = %s WHERE id = %s", (me if i == 0 else peer, f"{i:032x}"))
        if i:
            accounts.subscribe(hub_conn, me, f"p{i}")
    schema.refresh_usage(hub_conn)
    n = [0]
    plain = psycopg.Connection.execute

    def counting(self: psycopg.Connection, *a: Any, **k: Any) -> Any:
        n[0] += 1
        return plain(self, *a, **k)

    hub = HubServer(hub_dsn, maintain_every=3600, usage_every=3600)
    try:
        for interval in ("day", "night", "year"):
            hub.dashboard(me, "me", interval, "watt")  # the pool's connection made outside the count
            monkeypatch.setattr(psycopg.Connection, "execute", counting)
            n[0] = 0
            html = hub.dashboard(me, "me", interval, "watt")
            monkeypatch.setattr(psycopg.Connection, "execute", plain)
            assert html.count('class="stream"') == 6
            assert n[0] == 4, interval  # streams, their series, Fluksonians, shares and rank
    finally:
        hub.stop()


def test_many_is_series_per_sensor(hub_conn: psycopg.Connection) -> None:
    now = 1_800_000_000
    schema.maintain(hub_conn, now)
    hub_conn.execute("INSERT INTO rollup_q15 SELECT sid, 900, t, sid * 7 + t / 900 %% 97 "
                     "FROM generate_series(1, 3) sid, generate_series(%s, %s, 900) t", (now - 86400, now))
    for interval in ("day", "night", "week"):
        q = read.Query.parse(interval, None, "watt")
        got = read.many(hub_conn, [1, 2, 3], q, now)
        assert got == {sid: read.series(hub_conn, sid, q, now) for sid in (1, 2, 3)}
        assert any(v is not None for v in got[2]) or interval == "week"


def test_usage_refreshed_once_per_interval(hub_conn: psycopg.Connection) -> None:
    assert schema.refresh_usage(hub_conn, 300)
    assert not schema.refresh_usage(hub_conn, 300)  # another hub process asking within the interval
    assert schema.refresh_usage(hub_conn)
