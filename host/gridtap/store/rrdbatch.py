"""The per-series RRDs without rrdcached: the daemon coalesces the updates itself.

OpenWrt's feed has only rrdtool 1.0 (`utils/rrdtool1`): no rrdcached, no
`--daemon`, no `create --no-overwrite`. On such a system the daemon does what
rrdcached does for it on Debian: it keeps each series' updates in memory and
writes each file once per flush interval (`[daemon] rrdcached_flush_s`) with
one multi-value `rrdtool update`, so flash sees one batched write per file and
interval. Only rrdtool 1.0's commands and options are used: `create` with
DS/RRA definitions, `update` with many values, `fetch`, `last` (and `graph` in
graph.py); tools/openwrt/rrdtool1/ holds the list and a wrapper that refuses
anything else, which the tests run through.

Nothing of the energy depends on these writes: the counter is cumulative and
the DS a DERIVE, so values lost in a crash (at most one interval, as with
rrdcached, which keeps no journal here either) become one flat average across
the gap. Every value is written on stop.

Readers outside the daemon (`gridtap graph`) ask for the values still held
with rrdcached's own FLUSH / FLUSHALL commands on a unix socket,
`<state_dir>/rrdflush.sock`, which the daemon answers once the file is written
(see FlushServer). `BatchedRrdStore` has RrdStore's interface, so the daemon,
the REST API and the night values use either store alike.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from gridtap.errors import UserError
from gridtap.store.faults import StorageHealth
from gridtap.store.rrd import RrdStore, rrdtool_exe

log = logging.getLogger("gridtap.store.rrdbatch")

MAX_BATCH = 1000  # values of one series that go out at once (a replayed backlog): ~25 kB of argv
MAX_HELD = 8640  # a day of 10 s steps per series while writes fail; older ones are dropped
RETRY_S = 60.0  # a failed write is tried again this much later (not a whole interval)
SOCKET_NAME = "rrdflush.sock"


def last_of_dump(xml: str) -> tuple[int, int] | None:
    """(last update, last counter) of an `rrdtool dump`; None if it holds no known counter."""
    t = re.search(r"<lastupdate>\s*(\d+)\s*</lastupdate>", xml)
    v = re.search(r"<last_ds>\s*([0-9.eE+-]+)\s*</last_ds>", xml)
    if t is None or v is None or int(t.group(1)) <= 0:
        return None
    try:
        return int(t.group(1)), int(float(v.group(1)))
    except ValueError:
        return None


class BatchedRrdStore(RrdStore):
    """One RRD per series, written by the daemon itself once per flush_s (see the module doc).

    update() only queues (under a lock: the REST API and the flush socket write
    from their own threads); send()/release() write the series that are due,
    flush() one series now, flush_all() everything.
    """

    def __init__(self, rrd_dir: Path, flush_s: float, health: StorageHealth | None = None) -> None:
        super().__init__(rrd_dir, None, health)
        self.flush_s = float(flush_s)
        self.held: dict[str, list[tuple[int, int]]] = {}  # per series: values not written yet
        self.due: dict[str, float] = {}  # per series with held values: when (monotonic) to write them
        self.lock = threading.RLock()
        self.writes = 0  # `rrdtool update` runs
        self.dropped = 0  # values given up while their file could not be written

    def create_file(self, p: Path, spec: list[str]) -> bool:
        """rrdtool 1.0 has no --no-overwrite: create under a temporary name, then link it into place,
        which fails (and leaves the existing file alone) if another process created it meanwhile.
        True if this call made the file."""
        tmp = p.with_name(f".{p.name}.{os.getpid()}.new")
        res = subprocess.run([rrdtool_exe(), "create", str(tmp), *spec], capture_output=True, text=True)
        try:
            if res.returncode != 0:
                raise OSError(f"rrdtool create {p}: {res.stderr.strip()}")
            try:
                os.link(tmp, p)
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def update(self, sensor: str, t: int, value: int) -> bool:
        """Hold one counter value for the next write of its file; skip it unless newer than the last."""
        with self.lock:
            if not self.is_new(sensor, t):
                return False
            held = self.held.setdefault(sensor, [])
            held.append((t, value))
            if sensor not in self.due:
                self.due[sensor] = time.monotonic() + self.flush_s
            if len(held) >= MAX_BATCH:
                self.due[sensor] = 0.0  # a backlog: write it with the next send()
            self.taken(sensor, t, value)
            return True

    def last_value(self, sensor: str) -> tuple[int, int] | None:
        """(time, counter) of the series' newest update: the newest held one, else the file's, read
        from `rrdtool dump` (rrdtool 1.0 has no `lastupdate`)."""
        with self.lock:
            held = self.held.get(sensor)
            if held:
                return held[-1]
        p = self.path(sensor)
        if not p.exists():
            return None
        res = subprocess.run([rrdtool_exe(), "dump", str(p)], capture_output=True, text=True, timeout=60)
        return last_of_dump(res.stdout) if res.returncode == 0 else None

    def send(self) -> int:
        """Write the series that are due; return how many values went to disk."""
        now = time.monotonic()
        with self.lock:
            due = [s for s, at in self.due.items() if at <= now]
            return sum(self._write(s) for s in due)

    def release_at(self) -> float | None:
        """When (monotonic s) the next series is due to be written; None while nothing is held."""
        with self.lock:
            return min(self.due.values(), default=None)

    def release(self) -> None:
        """The ingest loop's call at release_at(): write what is due."""
        self.send()

    def check_refused(self, wait: bool = False) -> int:
        """Writes are synchronous here: a refusal was counted and logged when it happened."""
        return 0

    def flush(self, sensor: str, min_age_s: float = 0.0) -> None:
        """Write this series' held values now, unless it was written less than min_age_s ago."""
        now = time.monotonic()
        with self.lock:
            if sensor not in self.held or now - self.flushed.get(sensor, -1e9) < min_age_s:
                return
            self._write(sensor)

    def flush_all(self) -> bool:
        """Write every held value; True if all of it went to disk."""
        with self.lock:
            for sensor in list(self.held):
                self._write(sensor)
            return not self.held

    def rewind(self, sensor: str, to_ts: int) -> bool:
        """As RrdStore.rewind; values still held that are stamped after to_ts are dropped first (the
        clock that ran ahead stamped them, and a later value carries their counter), the others
        written, so that nothing held puts the file's last update back in the future."""
        with self.lock:
            held = self.held.get(sensor)
            if held:
                held[:] = [(t, v) for t, v in held if t <= to_ts]
                if held:
                    self._write(sensor)
                else:
                    self.held.pop(sensor, None)
                    self.due.pop(sensor, None)
            return super().rewind(sensor, to_ts)

    def _write(self, sensor: str) -> int:
        """One `rrdtool update` with the series' held values (in MAX_BATCH pieces); return how many
        were written. On failure they stay held (the oldest beyond MAX_HELD are dropped) and are
        tried again RETRY_S later; a file deleted under the daemon is made again first."""
        held = self.held.get(sensor, [])
        written = 0
        while held:
            batch = held[:MAX_BATCH]
            why = self._update(sensor, batch)
            self.writes += 1
            if why is not None:
                self.errors += 1
                if len(held) > MAX_HELD:
                    self.dropped += len(held) - MAX_HELD
                    del held[: len(held) - MAX_HELD]
                self.due[sensor] = time.monotonic() + min(self.flush_s, RETRY_S)
                log.warning("rrd write of %d values for %s failed (kept for a retry): %s",
                            len(held), sensor, why)
                return written
            del held[: len(batch)]
            written += len(batch)
        self.held.pop(sensor, None)
        self.due.pop(sensor, None)
        self.flushed[sensor] = time.monotonic()
        return written

    def _update(self, sensor: str, batch: list[tuple[int, int]]) -> str | None:
        """One `rrdtool update` of the series' file with batch; None if it went to disk, else why not
        (a storage fault degrades the RRDs, never the daemon)."""
        p = self.path(sensor)
        try:
            if not p.exists():
                self.ensure(sensor, batch[0][0])
            res = subprocess.run([rrdtool_exe(), "update", str(p), *(f"{t}:{v}" for t, v in batch)],
                                 capture_output=True, text=True)
        except (OSError, UserError, subprocess.SubprocessError) as exc:
            return str(exc)
        return None if res.returncode == 0 else res.stderr.strip()

    def sensor_of(self, path: str) -> str | None:
        """The series whose file is path (as a reader names it), if this store has one."""
        p = Path(path)
        if p.parent.resolve() != self.rrd_dir.resolve() or p.suffix != ".rrd":
            return None
        return p.stem


class FlushServer:
    """rrdcached's FLUSH and FLUSHALL on a unix socket, answered by a BatchedRrdStore.

    `gridtap graph` (graph.flush_for_reading) and any rrdcached client send
    `FLUSH <file>` and read `0 ...` once the file holds every value; other
    commands get a negative status. One thread sleeps in accept() (no wake-ups
    while nobody asks); a connection is served to its end, one at a time.
    """

    def __init__(self, store: BatchedRrdStore, path: Path) -> None:
        self.store = store
        self.path = path
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; without the socket (a path too long for one, a read-only directory) the daemon
        runs on and readers outside it see the RRDs as last written."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.unlink(missing_ok=True)
            s.bind(str(self.path))
            os.chmod(self.path, 0o600)  # it makes the daemon write flash: only its own user may ask
            s.listen(4)
        except OSError as exc:
            s.close()
            log.warning("no flush socket %s (gridtap graph will show the RRDs as last written): %s",
                        self.path, exc)
            return
        self.sock = s
        self.thread = threading.Thread(target=self._serve, name="rrdflush", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        listener = self.sock  # its own reference: stop() clears self.sock while this waits
        assert listener is not None
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # stop() shut the socket down
            with conn:
                conn.settimeout(5.0)
                try:
                    self._session(conn)
                except (OSError, UnicodeDecodeError) as exc:
                    log.debug("flush socket client: %s", exc)

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            while b"\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk or len(buf) > 8192:
                    return
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            conn.sendall(self.answer(line.decode().strip()).encode() + b"\n")

    def answer(self, line: str) -> str:
        """One command's status line, in rrdcached's form (`<status> <message>`, negative on error)."""
        cmd, _, arg = line.partition(" ")
        cmd = cmd.upper()
        if cmd == "FLUSHALL":
            ok = self.store.flush_all()
            return "0 Started flush." if ok else "-1 writing the RRDs failed (see the daemon's log)"
        if cmd == "FLUSH":
            sensor = self.store.sensor_of(arg.strip())
            if sensor is None:
                return f"-1 No such file: {arg.strip()}"
            with self.store.lock:
                self.store.flush(sensor)
                ok = sensor not in self.store.held
            return "0 Successfully flushed." if ok else "-1 writing the RRD failed (see the daemon's log)"
        return f"-1 Unknown command: {cmd}"

    def stop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        if self.thread is not None:
            self.thread.join(timeout=5)
            self.thread = None
        self.path.unlink(missing_ok=True)
