"""The gridtap daemon: serial link -> session -> epochs -> RRDs, live view, REST API and the outputs.

    d = Daemon(load_config(path))
    d.start()          # opens the state, starts rrdcached and the REST API
    d.run(stop_event)  # the ingest loop, until stop_event is set
    d.close()          # flushes counter state and rrdcached, stops everything

One thread reads the board; the REST API answers from its own threads.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gridtap import outputs
from gridtap.board.link import SerialLink
from gridtap.board.plausible import check_fits, load_board_limits, reference_board
from gridtap.board.session import Session, Sink, board_health
from gridtap.config import Config, DaemonConfig
from gridtap.errors import UserError
from gridtap.store.epochs import STORE as COUNTER_STORE
from gridtap.store.epochs import CounterStore
from gridtap.store.faults import GuardedSpool, StorageHealth
from gridtap.store.live import LiveStore
from gridtap.store.rrd import RRD_FILES, NightStore, RrdCached, RrdSink, RrdStore, default_socket
from gridtap_fw import wire

if TYPE_CHECKING:
    from gridtap.outputs.restapi import StoreView

log = logging.getLogger("gridtap.daemon")

# Published (REST /status, MQTT diagnostic entities) and logged when they move: the decoder's
# counters (docs/protocol.md section 4) and what the session refused (gridtap.board.session.Stats).
INTEGRITY = ("unsynced", "rejected_future", "rejected_backwards", "rejected_step", "gauges_future",
             "clock_steps_back", "hello_channels_clamped", "events_not_logged", "late_stamped")
DIAGNOSTICS = (*wire.COUNTER_NAMES, *INTEGRITY)
ROUTINE = {"unsynced", "events_not_logged", "late_stamped"}  # moved by a healthy board too
DIAG_PUBLISH_S = 60.0  # diagnostics go out at most this often while they change
DIAG_LOG_S = 600.0  # link errors are logged at most this often
MORE_READS = 4  # reads without waiting that may join one pass (bounded: timers still get their turn)
CHECK_S = 10.0  # how often rrdcached's liveness is polled where a pidfd cannot watch it
SPOOL_COMMIT_S = 30.0  # the spool commits (and the board is ACKed) at least this often


class Clock(Protocol):
    """The daemon's Unix clock, an object its parts are given (never a patched `time.time`).

    `SystemClock` is the host's; `gridtap.simclock.ClockReader` (`gridtap daemon --clock-file`)
    a simulated one. The daemon hands `clock.now` to every part that needs Unix time (the board
    session, the spool, PVOutput, the REST API, the counter store), so a simulation or a test
    sets time by passing a clock. Monotonic time (timeouts, retries) stays `time.monotonic`.
    """

    def now(self) -> float: ...


class SystemClock:
    """The host's own clock."""

    def now(self) -> float:
        return time.time()


def rrd_mode(d: DaemonConfig) -> str:
    """The RRD mode to run in: [daemon] rrd_mode, or for "auto" rrdcached where it is installed
    (or a running one is configured) and the daemon's own batches where it is not (OpenWrt)."""
    if d.rrd_mode != "auto":
        return d.rrd_mode
    return "rrdcached" if d.rrdcached_socket is not None or shutil.which("rrdcached") else "batched"


class TimeRate:
    """Unix seconds per wall second: 1 on a real clock, the speed-up under `--clock-file`.

    The board's resend timer runs on its own clock (the simulated one when the
    board is virtual), so a read batch given in board seconds lasts
    batch / rate of wall time.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.t = clock.now()
        self.m = time.monotonic()
        self.rate = 1.0

    def update(self, mono: float) -> float:
        if mono - self.m >= 1.0:
            t = self.clock.now()
            self.rate = min(max((t - self.t) / (mono - self.m), 1.0), 1e4)
            self.t, self.m = t, mono
        return self.rate


def check(cfg: Config) -> None:
    """What parsing the config cannot check, for `gridtap daemon --check` too: the board file's limits, and
    that the sensors and the baud rate fit the board it describes."""
    limits = load_board_limits(cfg.board.board_file)
    check_fits(limits, cfg, str(cfg.board.board_file or reference_board()))


class _NoInbox:
    """Meters whose values go nowhere: a config whose [[meter]] tables only collect board sensors."""

    def counter(self, sensor: str, t: float, wh: float, boot: int = 0) -> None:
        pass

    def power(self, sensor: str, t: float, watts: float) -> None:
        pass


class Daemon:
    def __init__(self, cfg: Config, start_rrdcached: bool = True, clock: Clock | None = None) -> None:
        self.cfg = cfg
        # Unix time for every part (the board session, spool, PVOutput, REST API, stores): the host's,
        # or a simulated one (`--clock-file`) passed in, never a process-wide patch of time.time.
        self.clock: Clock = clock or SystemClock()
        d = cfg.daemon
        self.state_dir = d.state_dir
        self.store: CounterStore | None = None
        self.live = LiveStore()
        self.cached: RrdCached | None = None
        self.health = StorageHealth()
        self.rrd_mode = rrd_mode(d)
        self.flush_server: Any = None  # batched mode: rrdbatch.FlushServer for readers outside the daemon
        self.rrd: RrdStore
        if self.rrd_mode == "batched":
            from gridtap.store.rrdbatch import SOCKET_NAME, BatchedRrdStore

            self.start_rrdcached = False
            self.socket_path = d.state_dir / SOCKET_NAME
            self.rrd = BatchedRrdStore(d.rrd_dir, d.rrdcached_flush_s, self.health)
        else:
            self.start_rrdcached = start_rrdcached and d.rrdcached_socket is None
            self.socket_path = d.rrdcached_socket or default_socket(d.state_dir)
            self.rrd = RrdStore(d.rrd_dir, self.socket_path, self.health)
        self.nights = NightStore(self.rrd)
        self.nights_done: set[tuple[str, datetime.date]] = set()
        # What the REST API reads (series, live window, RRD fetches), never the daemon itself; built with it.
        self.view: StoreView | None = None
        self.link = SerialLink(cfg.board.port, cfg.board.baud)
        self.session: Session | None = None
        self.rrd_sink: RrdSink | None = None
        self.meters: Any = None  # gridtap.meters.MeterHub, loaded only for a config with [[meter]]
        self.inbox: Any = None  # gridtap.inputs.virtual.VirtualInbox, for a config with virtual sensors
        self.virtual: Any = None  # ... and the VirtualFeed that hands its values to the session
        self.api: Any = None
        self.started = self.clock.now()
        self.limits = load_board_limits(cfg.board.board_file)  # what the board can be believed
        self.diag_outputs: list[Any] = []  # outputs that publish diagnostics() (MQTT)
        self.diag_last: dict[str, int] = {}
        self.diag_logged: dict[str, int] = {}
        self.next_diag = 0.0  # monotonic: when diagnostics may next be published
        self.next_diag_log = 0.0
        self.outputs: list[outputs.Output] = []
        self.spool: Any = None  # the durable spool, when an output is spooled
        self._stop: threading.Event | None = None
        self._pidfd: int | None = None
        self._cached_lock = threading.Lock()

    def start(self, stop: threading.Event | None = None) -> None:
        """Open the stores, start rrdcached, the outputs and the REST API.

        While the counter store cannot be opened (a full disk) this waits and
        retries, until stop is set (then run() returns at once).
        """
        d = self.cfg.daemon
        try:
            d.state_dir.mkdir(parents=True, exist_ok=True)
            d.rrd_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the state directory {d.state_dir}: {exc.strerror}") from exc
        self._stop = stop or threading.Event()
        self.store = self._open_counter_store(d.state_dir / "counters.sqlite", self._stop)
        if self.store is None:
            return
        if self.start_rrdcached:
            self.cached = RrdCached(d.rrd_dir, self.socket_path, d.rrdcached_flush_s)
            self.cached.start()
            self._watch_rrdcached()
        if self.store.rebuilt:
            self._seed_rebuilt_store()
        if self.rrd_mode == "batched":
            from gridtap.store.rrdbatch import BatchedRrdStore, FlushServer

            assert isinstance(self.rrd, BatchedRrdStore)
            self.flush_server = FlushServer(self.rrd, self.socket_path)
            self.flush_server.start()
        log.info("RRDs in %s, %s mode", d.rrd_dir, self.rrd_mode)
        self.rrd_sink = RrdSink(self.rrd)
        sinks: list[Sink] = [self.rrd_sink]
        if self.cfg.virtual:
            from gridtap.inputs.virtual import VirtualInbox

            # sensors without a board channel (expression meters, wallboxes) take the board's path
            self.inbox = VirtualInbox(self.link.wake)
        self._start_outputs()
        sinks += self.outputs
        if self.cfg.meters:
            from gridtap.meters import MeterHub

            # The hub sees the board's values; its meters' values come back through the inbox.
            out = self.inbox if self.inbox is not None else _NoInbox()
            self.meters = MeterHub(self.cfg.meters, self.cfg.sensors, out, d.state_dir / "meters.json",
                                   boot=int(self.clock.now()))
            sinks.append(self.meters)
            log.info("%d meter(s) for cFos formulas", len(self.cfg.meters))
        spool = None if self.spool is None else GuardedSpool(self.spool, self.health)
        self.session = Session(self.cfg.board, self.cfg.sensors, self.store, self.live, self.link.send,
                               sinks=sinks, spool=spool, storage=self.health, clock=self.clock.now,
                               limits=self.limits)
        if self.inbox is not None:
            from gridtap.inputs.virtual import VirtualFeed

            self.virtual = VirtualFeed(self.cfg.virtual, self.session, self.clock.now)
        self.link.on_connect = self.session.connected
        if d.api:
            from gridtap.outputs.restapi import ApiServer, StoreView

            self.view = StoreView(self.cfg, self.live, self.rrd, self.nights, self.status, self.clock.now)
            self.api = ApiServer(self.view, d.bind, d.port, d.cors_origins, d.jsonp)
            self.api.start()
            log.info("REST API on http://%s:%d/sensor/<id>", d.bind, self.api.port)

    def _open_counter_store(self, path: Path, stop: threading.Event) -> CounterStore | None:
        """The counter store, once it opens; None if stop was set first.

        A store that cannot be opened for want of space or by an I/O error
        (a corrupt one is moved aside, see CounterStore) is a storage fault:
        the daemon waits and retries with backoff, the board keeps its
        tuples meanwhile. Exiting instead would only have procd restart it
        into the same error until it gives up on it.
        """
        while True:
            try:
                store = CounterStore(path, self.health, clock=self.clock.now)
            except sqlite3.Error as exc:
                delay = self.health.failed(COUNTER_STORE, f"cannot open {path}: {exc}")
                if stop.wait(delay):
                    return None
                continue
            self.health.ok(COUNTER_STORE)
            return store

    def _seed_rebuilt_store(self) -> None:
        """A counter store begun anew: each series continues from the last total its RRD holds, so
        the host total does not fall back to the board's register (epochs.CounterStore.seed)."""
        assert self.store is not None
        for sensor in self.cfg.series():
            try:
                last = self.rrd.last_value(sensor)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("rebuilding the counter of %s: its RRD cannot be read: %s", sensor, exc)
                continue
            if last is not None:
                t, total = last
                self.store.seed(sensor, total, t)
                log.warning("rebuilt counter store: %s continues from %d (its RRD's last value, %d)",
                            sensor, total, t)

    def _start_outputs(self) -> None:
        """Every configured output, from the registry; the spooled ones share one durable spool."""
        spooled = [name for name in self.cfg.outputs if outputs.load(name).spooled]
        if spooled:
            from gridtap.store.spool import Spool

            self.spool = Spool(self.cfg.daemon.state_dir / "spool.sqlite", spooled,
                               commit_interval=SPOOL_COMMIT_S, wall_clock=self.clock.now)
        built: dict[str, outputs.Output] = {}
        for name, settings in self.cfg.outputs.items():
            ctx = outputs.OutputContext(self.cfg, self.spool if name in spooled else None, self.clock.now,
                                        DIAGNOSTICS, self.health, peers=dict(built), virtual=self.inbox)
            built[name] = outputs.build(name, settings, ctx)
            self.outputs.append(built[name])
        self.diag_outputs = [out for out in self.outputs if hasattr(out, "diagnostics")]
        for out in self.outputs:
            out.start()

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """The ingest loop: one select() until the board speaks or the earliest deadline is due.

        Deadlines: a command retry or ACK flush (the session's), the spool
        commit, the counter-state flush (only while counters moved), the night
        values (hourly), closing the rrdcached connection 1 s after a batch
        of updates (an open one wakes rrdcached twice a second). rrdcached's
        liveness comes as a readable pidfd in the same select (a 10 s check
        where pidfds are not available), so an idle daemon with a silent board
        sleeps for minutes, not seconds.
        """
        if stop.is_set():  # stopped while start() waited for its stores
            return
        assert self.session is not None and self.store is not None
        # Counter progress goes to SQLite every state_flush_s, of wall time or of metered
        # time, whichever comes first (a replayed backlog is metered time too).
        flush_every = self.cfg.daemon.state_flush_s
        mono = time.monotonic
        now = mono()
        next_flush = now + flush_every
        next_flush_t = 0
        next_night = now + 900  # housekeeping waits until the daemon has settled
        next_check = now + CHECK_S
        end = None if max_seconds is None else now + max_seconds
        session = self.session
        rate = TimeRate(self.clock)
        batch_s = self.cfg.board.read_batch_s
        link = self.link
        store = self.store
        rrd = self.rrd
        self._stop = stop
        while not stop.is_set():
            deadline = next_night
            if store.pending and next_flush < deadline:
                deadline = next_flush
            retry = self._storage_retry_at()
            if retry is not None and retry < deadline:
                deadline = retry
            if self._pidfd is None and self.cached is not None and next_check < deadline:
                deadline = next_check
            if end is not None and end < deadline:
                deadline = end
            release_at = rrd.release_at()
            if release_at is not None and release_at < deadline:
                deadline = release_at
            # The session's deadlines (command retries, the ACK flush) are served by tick(), which
            # runs only while the board is connected: with the port gone they must not shorten the
            # wait, or an unplugged board would have the daemon spin at full CPU until it returns.
            longest = max(0.0, deadline - now)
            # Batched reads only while no command awaits its answer: a reply must not sit in the
            # buffer past the command's retry time.
            batch = 0.0
            if batch_s > 0.0 and not session.pending:
                batch = batch_s / rate.update(now)
            msgs = link.poll(session.wait_hint(longest) if link.connected else longest, batch)
            burst = bool(msgs)
            if msgs:
                for msg in msgs:
                    session.handle(msg)
                # Prompt reads take the rest of the burst if it came in meanwhile; a batched read
                # already took everything there was.
                for _ in range(0 if batch else MORE_READS):
                    msgs = link.read_more()
                    if not msgs:
                        break
                    for msg in msgs:
                        session.handle(msg)
            # virtual sensors' values (expression meters of this burst, wallboxes): the same path
            fed = self.virtual.feed(self.inbox.take()) if self.inbox is not None and len(self.inbox) else 0
            if burst or fed:
                rrd.send()  # this burst's RRD updates: one write to rrdcached
            if link.connected:
                session.tick()
            now = mono()
            if now >= self.next_diag:
                self.publish_diagnostics(now)
            release_at = rrd.release_at()  # again: this pass may have sent a new batch
            if release_at is not None and now >= release_at and not rrd.queued:
                rrd.release()
            if link.alerts or (self._pidfd is None and now >= next_check):
                self.check_rrdcached()
                next_check = now + CHECK_S
            if now >= next_night:
                self.update_nights(self.clock.now())
                next_night = now + 3600
            retry = self._storage_retry_at()
            if retry is not None and now >= retry:
                store.flush()  # each waits for its own retry time
                rrd.create_missing()
            elif now >= next_flush or session.newest_t >= next_flush_t:
                store.flush()
                next_flush = now + flush_every
                next_flush_t = session.newest_t + flush_every
            if end is not None and now >= end:
                break

    def _storage_retry_at(self) -> float | None:
        """The earliest retry of a failing store the loop serves (the spool's is the session's)."""
        due = [self.health.retry_at(COUNTER_STORE), self.health.retry_at(RRD_FILES)]
        return min((t for t in due if t is not None), default=None)

    def _watch_rrdcached(self) -> None:
        """Have the ingest loop's select() wake when our rrdcached exits (Linux pidfd)."""
        self._unwatch_rrdcached()
        c = self.cached
        if c is None or c.proc is None or not hasattr(os, "pidfd_open"):
            return
        try:
            self._pidfd = os.pidfd_open(c.proc.pid)
        except OSError:  # a kernel before 5.3: check on a timer instead
            return
        self.link.watch = [self._pidfd]

    def _unwatch_rrdcached(self) -> None:
        if self._pidfd is not None:
            self.link.watch = []
            self.link.alerts = []
            os.close(self._pidfd)
            self._pidfd = None

    def check_rrdcached(self) -> bool:
        """Restart our rrdcached if it died; True if it had to be restarted."""
        with self._cached_lock:
            return self._check_rrdcached()

    def _check_rrdcached(self) -> bool:
        c = self.cached
        if c is None or c.proc is None or c.proc.poll() is None:
            return False
        log.error("rrdcached exited with status %s: restarting it", c.proc.returncode)
        self._unwatch_rrdcached()
        c.proc = None
        if self.rrd.client is not None:
            self.rrd.client.close()
        try:
            c.start()
        except UserError as exc:
            log.error("%s", exc)
        self._watch_rrdcached()
        return True

    def update_nights(self, now: float) -> int:
        """Store the night values (02:00-05:00 baseload) that are due; return how many were stored."""
        stored = 0
        for day in self.nights.due(now):
            for sensor in self.cfg.series():
                if (sensor, day) in self.nights_done or not self.rrd.exists(sensor):
                    continue
                try:
                    stored += self.nights.update(sensor, day)
                except (OSError, ConnectionError, subprocess.SubprocessError) as exc:
                    log.warning("night value of %s for %s: %s", sensor, day, exc)
                    continue
                self.nights_done.add((sensor, day))  # stored, or no data for that night: done either way
        return stored

    def request_stop(self) -> None:
        """Stop run() promptly, also when it is waiting for the board (safe from a signal handler)."""
        if self._stop is not None:
            self._stop.set()
        self.link.wake()

    def diagnostics(self) -> dict[str, int]:
        """DIAGNOSTICS by name: the decoder's counters and what the board session refused."""
        out = dict(self.link.counters())
        stats = None if self.session is None else self.session.stats
        for name in INTEGRITY:
            out[name] = 0 if stats is None else int(getattr(stats, name))
        return out

    def publish_diagnostics(self, mono: float) -> None:
        """Hand changed diagnostics to the outputs (at most every DIAG_PUBLISH_S) and log the link's
        and the session's refusals (at most every DIAG_LOG_S): a noisy cable or a lying board shows
        up as numbers, not as a mystery."""
        self.next_diag = mono + DIAG_PUBLISH_S
        values = self.diagnostics()
        if values != self.diag_last:
            self.diag_last = values
            for out in self.diag_outputs:
                out.diagnostics(values)
        if mono >= self.next_diag_log:
            moved = {k: v - self.diag_logged.get(k, 0) for k, v in values.items()
                     if k != "frames_ok" and v != self.diag_logged.get(k, 0)}
            if moved:
                # tuples before TIME_SET come with every board boot, and held-back EVENT lines were
                # logged in part: news, not a fault
                level = logging.WARNING if set(moved) - ROUTINE else logging.INFO
                log.log(level, "board link: %s since the last report (%d frames ok in all)",
                        ", ".join(f"{v} {k}" for k, v in sorted(moved.items())), values["frames_ok"])
                self.diag_logged = values
                self.next_diag_log = mono + DIAG_LOG_S

    def status(self) -> dict[str, Any]:
        s = self.session
        return {
            "connected": self.link.connected,
            "reconnects": self.link.reconnects,
            "decoder": self.link.counters(),
            "session": None if s is None else s.stats.as_dict(),
            "epoch": None if s is None else s.epoch,
            "rrd_mode": self.rrd_mode,
            "rrd_updates": self.rrd.updates,
            "rrd_errors": self.rrd.errors,
            "storage": self.health.status(),
            "held": 0 if s is None else s.stats.held,
            "board": board_health(s),
            "outputs": {out.section: out.status() for out in self.outputs if hasattr(out, "status")},
            "virtual": None if self.virtual is None else {**self.virtual.status(),
                                                          "dropped": self.inbox.dropped},
        }

    def close(self) -> None:
        try:
            self._close_outputs()
        finally:  # whatever failed above, rrdcached must not outlive the daemon
            self._close_rrd()

    def _close_outputs(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None
        self.link.dispose()
        if self.meters is not None:
            self.meters.save()  # an integrating meter's register survives the restart
        for out in reversed(self.outputs):
            try:
                out.stop()
            except Exception:  # one output failing to stop must not keep the others from stopping
                log.exception("stopping %s failed", type(out).__name__)
        self.outputs.clear()
        if self.spool is not None:  # after its readers have stopped
            self.spool.close()
            self.spool = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _close_rrd(self) -> None:
        flushed = False
        try:
            if self.rrd_sink is not None:
                self.rrd_sink.flush_held()
            if self.flush_server is not None:
                self.flush_server.stop()
                self.flush_server = None
            self.rrd.send()
            # an rrdcached of our own, or the daemon's own batches: everything is written now
            flushed = self.rrd.flush_all() if self.cached is not None or self.rrd_mode == "batched" else False
            if not flushed:  # an rrdcached of its own or not: it has taken every update before we hang up
                self.rrd.check_refused(wait=True)
        finally:
            self.rrd.close()
            self._unwatch_rrdcached()
            if self.cached is not None:
                self.cached.stop(flushed=flushed)
                self.cached = None
