"""Drive simulated homes at a hub in real time: each home posts a minute of 10 s points per minute.

Homes are spread evenly over the minute. ``processes`` worker processes
(forked, so the driver does not share the hub's or one another's GIL) each
run ``threads`` threads with their own kept-alive connection; a thread takes
the next due home, waits for its moment, advances it a minute and posts its
five sensors. *Lag* is how late a home's post started against its schedule:
if the hub cannot keep up, requests queue and lag grows without bound, which
is the backlog the bench watches.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from gridtap_hub.loadgen import STEP_S, FlmClient, Home

POST_EVERY_S = 60


@dataclass
class DriveResult:
    homes: int
    posts: int  # home uploads done (5 requests each)
    failed: int  # uploads that left points pending
    lags: list[tuple[float, float]]  # (seconds into the run, lag s) per upload
    latencies: list[float]  # seconds per upload (5 POSTs)
    errors: Counter[str] = field(default_factory=Counter)  # why uploads failed (FlmClient.last_error)


def _worker(port: int, seeds: list[int], n_total: int, index0: int, t0: float, duration: float,
            threads: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    homes = [Home.new(s) for s in seeds]
    # the schedule: home i of n posts at t0 + offset + k * 60
    heap = [(t0 + (index0 + i) * POST_EVERY_S / n_total, i) for i in range(len(homes))]
    heapq.heapify(heap)
    lock = threading.Lock()
    lags: list[tuple[float, float]] = []
    lat: list[float] = []
    counts = [0, 0]
    errors: Counter[str] = Counter()
    end = t0 + duration

    def run() -> None:
        client = FlmClient("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if not heap or heap[0][0] >= end:
                    break
                due, i = heapq.heappop(heap)
                heapq.heappush(heap, (due + POST_EVERY_S, i))
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            started = time.time()
            h = homes[i]
            last = int(due) // STEP_S * STEP_S
            for k in range(POST_EVERY_S // STEP_S, 0, -1):
                h.advance(last - (k - 1) * STEP_S)
            for s in h.sensors:  # the drive checks the hub, not the homes: it keeps no history
                s.generated.clear()
            client.upload(h)
            ok = all(not s.pending for s in h.sensors)
            done = time.time()
            with lock:
                lags.append((started - t0, started - due))
                lat.append(done - started)
                counts[0] += 1
                counts[1] += 0 if ok else 1
                if not ok:
                    errors[client.last_error or "points left pending"] += 1
        client.close()

    ts = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((counts[0], counts[1], lags, lat, errors))


def drive(port: int, n_homes: int, duration: float, processes: int = 4, threads: int = 16,
          seed0: int = 0, start_in: float = 2.0) -> DriveResult:
    """Run ``n_homes`` homes (seeds seed0 … seed0+n-1, provisioned beforehand) for ``duration`` s."""
    t0 = time.time() + start_in
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    per = (n_homes + processes - 1) // processes
    procs = []
    for p in range(processes):
        seeds = list(range(seed0 + p * per, seed0 + min(n_homes, (p + 1) * per)))
        if not seeds:
            continue
        pr = ctx.Process(target=_worker, args=(port, seeds, n_homes, p * per, t0, duration, threads, q),
                         daemon=True)
        pr.start()
        procs.append(pr)
    res = DriveResult(n_homes, 0, 0, [], [])
    for _ in procs:
        posts, failed, lags, lat, errors = q.get(timeout=duration + 600)
        res.posts += posts
        res.failed += failed
        res.lags += lags
        res.latencies += lat
        res.errors += errors
    for pr in procs:
        pr.join(timeout=10)
    res.lags.sort()
    return res
