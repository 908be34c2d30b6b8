"""Counters into PostgreSQL: points, energy and roll-ups in one transaction per batch.

Both ingest paths end here. A batch holds many requests (HTTP POSTs or MQTT
messages); it is applied in one transaction and each request learns its
fate only after the commit, so an answer of "stored" (HTTP 200, a PUBACK) is
never given for a point that a crash could still lose.

The rules, per sensor (flukso.md §4.3, §5.1, §7):

* **Strict** (the Flukso server API): every timestamp must be later than the
  sensor's last one; the first that is not refuses the whole request with
  rrdupdate's text, so a replayed request stores nothing twice.
* **Idempotent** (MQTT, where a shared subscription may hand one sensor's
  points to two ingesters out of order and a broker redelivers after a
  crash): a point already stored is dropped; a late point between two stored
  ones is inserted and the energy between them re-spread.
* **Energy never goes negative.** A counter below the last one is a *reset*
  (a reflashed or repaired meter starts again from zero) if it is no more
  than the meter could have counted from zero since the last point at 72 kW
  (Flukso's DERIVE maximum, 20 Wh/s); the energy of that interval is then the
  new counter, and the energy before the reset is kept. Any other fall is a
  counter going backwards and is refused, as is a rise faster than 72 kW.
* A timestamp more than ``FUTURE_S`` ahead of the hub's clock is refused.

Energy between two points is spread evenly over the time between them (the
flat interpolation of an RRD's DERIVE), into minute, 15-minute and day
buckets, each only inside its table's retention window.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import psycopg

from gridtap.fluksoapi import illegal_update
from gridtap_hub import schema

log = logging.getLogger(__name__)

MAX_WH_PER_S = 20  # rrd.erl DS:meter:DERIVE:8640000:-20:20
FUTURE_S = 600
GONE = "ERROR: sensor is no longer provisioned"


def pg_array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of numbers, ``{1,2,3}``, sent as one text parameter.

    psycopg adapts a Python list element by element in Python; a batch of
    thousands of rows spent more time there than PostgreSQL spent storing them.
    ``repr`` of a float round-trips exactly.
    """
    return "{" + ",".join(map(repr, values)) + "}"


_UPSERT = ("{table} AS (INSERT INTO {table} AS r (sid, t, secs, wh) "
           "SELECT * FROM unnest(%s::int[], %s::bigint[], %s::int[], %s::float8[]) "
           "ON CONFLICT (sid, t) DO UPDATE SET secs = r.secs + excluded.secs, wh = r.wh + excluded.wh)")
# Every write of a batch in one statement (one round trip, prepared after a few batches): the raw
# points, the three roll-ups' upserts and the sensors' new state.
WRITE = ("WITH raw AS (INSERT INTO measurement (sid, ts, counter, energy) "
         "SELECT * FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[])), "
         + ", ".join(_UPSERT.format(table=s.table) for s in schema.ROLLUPS)
         + ", state AS (UPDATE sensor s SET last_ts = v.ts, last_counter = v.c, energy = v.e, resets = v.n "
         "FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[]) AS v(sid, ts, c, e, n) "
         "WHERE s.sid = v.sid) SELECT 1")


@dataclass
class Request:
    """One request's points for one sensor (``sid`` from the directory)."""

    sid: int
    points: list[tuple[int, int]]
    strict: bool = True
    # filled in by apply(): None = stored, else the refusal (Flukso text)
    error: str | None = None
    stored: int = 0
    duplicates: int = 0


@dataclass
class _State:
    last_ts: int | None
    last_counter: int | None
    energy: int
    resets: int
    committed_ts: int | None  # last_ts as of the start of the batch


@dataclass
class _Batch:
    rows: list[tuple[int, int, int, int]] = field(default_factory=list)
    buckets: dict[str, dict[tuple[int, int], list[float]]] = field(
        default_factory=lambda: {s.table: defaultdict(lambda: [0.0, 0.0]) for s in schema.ROLLUPS})


def spread(t0: int, t1: int, wh: float, bucket: int, lo: int) -> Iterator[tuple[int, int, float]]:
    """(bucket start, seconds, Wh) of the energy ``wh`` spread evenly over (t0, t1], from ``lo`` on."""
    start = max(t0, lo)
    if t1 <= start:
        return
    span = t1 - t0
    b = start // bucket * bucket
    while b < t1:
        overlap = min(t1, b + bucket) - max(start, b)
        yield b, overlap, wh * overlap / span
        b += bucket


class Refused(Exception):
    pass


class Ingest:
    """Applies batches on one connection (autocommit off inside ``apply``)."""

    def __init__(self, conn: psycopg.Connection, clock: Callable[[], float] = time.time) -> None:
        self.conn = conn
        # The same few statements over partitioned tables, thousands of times: planning them anew
        # (PostgreSQL's custom plans for a prepared statement) was a fifth of its CPU per batch.
        conn.execute("SET plan_cache_mode = force_generic_plan")
        self.clock = clock
        self.counts: dict[str, int] = defaultdict(int)

    def apply(self, requests: list[Request]) -> None:
        """Apply every request in one transaction; sets each one's ``error``/``stored``.

        Raises on a database error: then nothing of the batch is stored and
        the caller answers every request with a failure.
        """
        now = int(self.clock())
        for r in requests:
            r.error, r.stored, r.duplicates = None, 0, 0
        sids = sorted({r.sid for r in requests})
        batch = _Batch()
        with self.conn.transaction():
            states = self._lock(sids)
            for r in requests:
                st = states.get(r.sid)
                if st is None:  # deleted since the directory looked it up
                    r.error = GONE
                    continue
                try:
                    if r.strict:
                        self._strict(r, st, batch, now)
                    else:
                        self._idempotent(r, st, batch, now)
                except Refused as exc:
                    r.error = str(exc)
            self._write(batch, states, now)
        for r in requests:
            self.counts["stored"] += r.stored
            self.counts["duplicates"] += r.duplicates
            if r.error is not None:
                self.counts["refused"] += 1

    # -- state -------------------------------------------------------------------------

    def _lock(self, sids: list[int]) -> dict[int, _State]:
        # in sid order, so two ingesters locking overlapping sensors cannot deadlock
        rows = self.conn.execute(
            "SELECT sid, last_ts, last_counter, energy, resets FROM sensor WHERE sid = ANY(%s::int[]) "
            "ORDER BY sid FOR UPDATE", (pg_array(sids),)).fetchall()
        return {sid: _State(ts, c, e, n, ts) for sid, ts, c, e, n in rows}

    # -- the rules -----------------------------------------------------------------------

    def _step(self, st: _State, ts: int, counter: int, now: int) -> int:
        """Energy (Wh) between the last point and (ts, counter); raises Refused."""
        if ts > now + FUTURE_S:
            raise Refused(f"ERROR: time {ts} is in the future (hub time {now})")
        if st.last_ts is None or st.last_counter is None:
            return 0  # the first point is the baseline, as an RRD's first DERIVE update
        dt = ts - st.last_ts
        if counter >= st.last_counter:
            de = counter - st.last_counter
        elif counter <= MAX_WH_PER_S * dt:
            de = counter  # a reset: counted again from zero
            st.resets += 1
        else:
            raise Refused(f"ERROR: counter went backwards at time {ts}: {counter} after "
                          f"{st.last_counter} at {st.last_ts} (not a reset to zero)")
        if de > MAX_WH_PER_S * dt:
            raise Refused(f"ERROR: counter rose {de} Wh in {dt} s at time {ts}, above 72 kW")
        return de

    def _strict(self, r: Request, st: _State, batch: _Batch, now: int) -> None:
        # check the whole request first: a refused request stores nothing
        trial = _State(st.last_ts, st.last_counter, st.energy, st.resets, st.committed_ts)
        steps = []
        for ts, counter in r.points:
            if trial.last_ts is not None and ts <= trial.last_ts:
                raise Refused(illegal_update(ts, trial.last_ts))
            de = self._step(trial, ts, counter, now)
            steps.append((ts, counter, de))
            trial.last_ts, trial.last_counter, trial.energy = ts, counter, trial.energy + de
        path: list[tuple[int, int, float]] = []
        for ts, counter, de in steps:
            self._append(r.sid, st, ts, counter, de, batch, now, path)
        self._spread_path(r.sid, path, batch, now)
        st.resets = trial.resets
        r.stored = len(steps)

    def _idempotent(self, r: Request, st: _State, batch: _Batch, now: int) -> None:
        problems = []
        for ts, counter in sorted(r.points):
            try:
                if st.last_ts is not None and ts <= st.last_ts:
                    if st.committed_ts is not None and ts <= st.committed_ts:
                        inserted = self._late(r.sid, ts, counter, batch, now)
                        r.stored += inserted
                        r.duplicates += 1 - inserted
                    else:
                        r.duplicates += 1  # repeated inside this batch
                    continue
                de = self._step(st, ts, counter, now)
                self._append(r.sid, st, ts, counter, de, batch, now)
                r.stored += 1
            except Refused as exc:
                problems.append(str(exc))
        if problems:
            r.error = problems[0]

    def _append(self, sid: int, st: _State, ts: int, counter: int, de: int, batch: _Batch,
                now: int, path: list[tuple[int, int, float]] | None = None) -> None:
        """The point goes in; the energy since the last one into the roll-ups, or onto ``path``
        (contiguous intervals, spread together by ``_spread_path``)."""
        if st.last_ts is not None:
            if path is not None:
                path.append((st.last_ts, ts, de))
            else:
                self._spread(sid, st.last_ts, ts, de, batch, now)
        st.energy += de
        st.last_ts, st.last_counter = ts, counter
        if ts >= schema.window(schema.RAW, now):
            batch.rows.append((sid, ts, counter, st.energy))

    def _spread(self, sid: int, t0: int, t1: int, wh: float, batch: _Batch, now: int,
                sign: int = 1) -> None:
        """Add (sign -1: take out) the interval (t0, t1] holding ``wh`` to the roll-ups."""
        for s in schema.ROLLUPS:
            acc = batch.buckets[s.table]
            for b, secs, share in spread(t0, t1, wh, s.bucket, schema.window(s, now)):
                cell = acc[(sid, b)]
                cell[0] += sign * secs
                cell[1] += sign * share

    def _spread_path(self, sid: int, path: list[tuple[int, int, float]], batch: _Batch, now: int) -> None:
        """``_spread`` of contiguous intervals: where they all fall in one bucket (a minute of points
        in a quarter hour or a day, mostly) the bucket takes their sum at once; the sums are the same."""
        if not path:
            return
        t0, t1 = path[0][0], path[-1][1]
        for s in schema.ROLLUPS:
            if t0 >= schema.window(s, now) and t0 // s.bucket == (t1 - 1) // s.bucket:
                cell = batch.buckets[s.table][(sid, t0 // s.bucket * s.bucket)]
                cell[0] += t1 - t0
                cell[1] += sum(wh for _, _, wh in path)
                continue
            acc = batch.buckets[s.table]
            lo = schema.window(s, now)
            for a, b, wh in path:
                for t, secs, share in spread(a, b, wh, s.bucket, lo):
                    cell = acc[(sid, t)]
                    cell[0] += secs
                    cell[1] += share

    def _late(self, sid: int, ts: int, counter: int, batch: _Batch, now: int) -> int:
        """A point at or before the committed last one: 1 if inserted, 0 if already there.

        Raises Refused when it does not fit between its stored neighbours.
        """
        q = ("SELECT ts, counter, energy FROM measurement WHERE sid = %s AND ts {op} %s "
             "ORDER BY ts {order} LIMIT 1")
        cur = self.conn.execute(q.format(op="<=", order="DESC"), (sid, ts)).fetchone()
        if cur is not None and cur[0] == ts:
            if cur[1] != counter:
                raise Refused(f"ERROR: time {ts} already stored with counter {cur[1]}, not {counter}")
            return 0
        nxt = self.conn.execute(q.format(op=">", order=""), (sid, ts)).fetchone()
        if nxt is None:
            raise Refused(f"ERROR: time {ts} is older than the stored points")
        if cur is None:  # before the first stored point: it becomes the first
            t1, c1, e1 = nxt
            if counter > c1:
                raise Refused(f"ERROR: counter {counter} at time {ts} is above {c1} at {t1}, later")
            e = e1 - (c1 - counter)
            self._spread(sid, ts, t1, e1 - e, batch, now)
            self.conn.execute("INSERT INTO measurement (sid, ts, counter, energy) VALUES (%s, %s, %s, %s)",
                              (sid, ts, counter, e))
            return 1
        (t0, c0, e0), (t1, c1, e1) = cur, nxt
        if not (e1 - e0 == c1 - c0 and c0 <= counter <= c1):
            raise Refused(f"ERROR: counter {counter} at time {ts} does not fit between "
                          f"{c0} at {t0} and {c1} at {t1}")
        e = e0 + (counter - c0)
        self._spread(sid, t0, t1, e1 - e0, batch, now, sign=-1)
        self._spread(sid, t0, ts, e - e0, batch, now)
        self._spread(sid, ts, t1, e1 - e, batch, now)
        self.conn.execute("INSERT INTO measurement (sid, ts, counter, energy) VALUES (%s, %s, %s, %s)",
                          (sid, ts, counter, e))
        return 1

    # -- writing ---------------------------------------------------------------------------

    def _write(self, batch: _Batch, states: dict[int, _State], now: int) -> None:
        rows = batch.rows
        params: list[str] = [pg_array(col) for col in (
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])]
        for s in schema.ROLLUPS:
            acc = batch.buckets[s.table]
            keys = sorted(acc)  # a stable order: two writers upserting the same buckets cannot deadlock
            params += [pg_array(k[0] for k in keys), pg_array(k[1] for k in keys),
                       pg_array(round(acc[k][0]) for k in keys), pg_array(float(acc[k][1]) for k in keys)]
        changed = [(sid, st) for sid, st in states.items() if st.last_ts != st.committed_ts]
        params += [pg_array(sid for sid, _ in changed), pg_array(st.last_ts for _, st in changed),
                   pg_array(st.last_counter for _, st in changed), pg_array(st.energy for _, st in changed),
                   pg_array(st.resets for _, st in changed)]
        self.conn.execute(WRITE, params)
