"""Round-robin databases per sensor series, written through rrdcached.

One RRD per series (CT import, CT export, pulse), fed with the host's
cumulative counter in thousandths (mWh or mL) as a DERIVE data source with
min 0, so every stored value is a rate in thousandths per second and gaps are
filled with the flat average: no Wh is lost when the daemon or the link was
down. RRAs: 10 s x 1 h for live views, then Flukso's 1 min x 1 day,
15 min x 1 week, 1 day x 1 year and 1 week x 10 years, with MAX next to the
shorter ones so that peaks survive consolidation.

Updates go to a real rrdcached over its socket protocol; rrdcached writes
each file once per flush interval, so flash sees batched writes. Reads use
the `rrdtool` CLI, so what the API serves is exactly what `rrdtool fetch`
shows.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridtap.errors import UserError
from gridtap.store.faults import StorageHealth

log = logging.getLogger("gridtap.store.rrd")

STEP = 10
RRD_FILES = "RRD files"  # the stores' names in storage fault messages (gridtap.store.faults)
RRDCACHED = "rrdcached"
RELEASE_S = 1.0  # the daemon closes its rrdcached connection this long after a batch of updates
DS_NAME = "counter"
HEARTBEAT = 8_640_000  # 100 days, as Flukso: a gap is interpolated as a flat average
# (steps per row, rows, consolidation functions)
RRAS = (
    (1, 360, ("AVERAGE",)),  # 10 s x 1 h
    (6, 1440, ("AVERAGE", "MAX")),  # 1 min x 1 day
    (90, 672, ("AVERAGE", "MAX")),  # 15 min x 1 week
    (8640, 365, ("AVERAGE", "MAX")),  # 1 day x 1 year
    (60480, 520, ("AVERAGE",)),  # 1 week x 10 years
)


def rrdtool_exe() -> str:
    exe = shutil.which("rrdtool")
    if exe is None:
        raise UserError("rrdtool is not installed (Debian/OpenWrt package rrdtool); run `make setup`")
    return exe


def create_spec(start: int) -> list[str]:
    """A series RRD's `rrdtool create` arguments after the file name (rrdtool 1.0's syntax)."""
    args = ["--start", str(start), "--step", str(STEP), f"DS:{DS_NAME}:DERIVE:{HEARTBEAT}:0:U"]
    for steps, rows, cfs in RRAS:
        args += [f"RRA:{cf}:0.5:{steps}:{rows}" for cf in cfs]
    return args


SERIES_FILE = re.compile(r"[0-9a-f]{32}")  # <sensor id>.rrd; the night RRDs are named otherwise
_ROW = re.compile(r"<row>.*?</row>", re.S)


def rewind_dump(xml: str, to_ts: int) -> str:
    """An `rrdtool dump` whose last update is moved back to to_ts: the rows after it are dropped
    (each archive shifts in as many unknown rows at its old end, so its length stays), the
    consolidations in progress start afresh, and last_ds (the last counter) is kept, so the next
    update's energy is spread over the time since to_ts."""
    m = re.search(r"<lastupdate>\s*(\d+)\s*</lastupdate>", xml)
    step_m = re.search(r"<step>\s*(\d+)\s*</step>", xml)
    if m is None or step_m is None:
        raise ValueError("not an rrdtool dump: no <lastupdate> or <step>")
    old, step = int(m.group(1)), int(step_m.group(1))
    if to_ts >= old:
        return xml
    xml = xml[: m.start()] + f"<lastupdate>{to_ts}</lastupdate>" + xml[m.end():]
    head, *rras = xml.split("<rra>")
    head = re.sub(r"<value>[^<]*</value>", "<value>0.0000000000e+00</value>", head)
    head = re.sub(r"<unknown_sec>[^<]*</unknown_sec>", f"<unknown_sec> {to_ts % step} </unknown_sec>", head)
    out = [head]
    for rra in rras:
        pdp = re.search(r"<pdp_per_row>\s*(\d+)\s*</pdp_per_row>", rra)
        if pdp is None:
            raise ValueError("not an rrdtool dump: an archive without <pdp_per_row>")
        span = int(pdp.group(1)) * step
        k = (old - old % span - (to_ts - to_ts % span)) // span
        db_start, db_end = rra.index("<database>") + len("<database>"), rra.index("</database>")
        rows = _ROW.findall(rra[db_start:db_end])
        if k > 0 and rows:
            nan = "<row>" + "<v>NaN</v>" * rows[0].count("<v>") + "</row>"
            rows = [nan] * min(k, len(rows)) + rows[: max(0, len(rows) - k)]
        prep = rra[:db_start]
        prep = re.sub(r"<(primary_value|secondary_value|value)>[^<]*</\1>", r"<\1>NaN</\1>", prep)
        prep = re.sub(r"<unknown_datapoints>[^<]*</unknown_datapoints>",
                      f"<unknown_datapoints>{(to_ts % span) // step}</unknown_datapoints>", prep)
        out.append(prep + "\n" + "\n".join(rows) + "\n" + rra[db_end:])
    return "<rra>".join(out)


def create_args(path: Path, start: int) -> list[str]:
    return [rrdtool_exe(), "create", str(path), "--no-overwrite", *create_spec(start)]


@dataclass
class Fetched:
    start: int
    step: int
    values: list[tuple[int, float | None]]  # (end of interval, rate in thousandths per second)


def _tag(xml: str, name: str) -> str:
    m = re.search(rf"<{name}>\s*([^<]*?)\s*</{name}>", xml)
    if m is None:
        raise ValueError(f"not an rrdtool dump: no <{name}>")
    return m.group(1)


def _rate(text: str) -> float:
    v = float(text)
    return 0.0 if v != v else v  # unknown: no energy known


def stored_rates(xml: str) -> list[tuple[int, int, float]]:
    """The finest stored rate at every time of a series RRD, from its `rrdtool dump`: pieces
    (from, to, thousandths per second), oldest first, without overlap.

    Each AVERAGE archive is used back to where the next coarser one takes over at one of its own
    row boundaries (so no row is cut), and the step in progress after the last whole one comes from
    the data source's accumulated value: the sum over any window is the counter's delta.
    """
    last = int(_tag(xml, "lastupdate"))
    step = int(_tag(xml, "step"))
    head, *rras = xml.split("<rra>")
    r = last - last % step  # the end of the newest whole step
    archives: list[tuple[int, list[float]]] = []
    for rra in rras:
        if _tag(rra, "cf") != "AVERAGE":
            continue
        rows = re.findall(r"<row><v>\s*([^<]*?)\s*</v>", rra[rra.index("<database>"):])
        archives.append((int(_tag(rra, "pdp_per_row")) * step, [_rate(v) for v in rows]))
    archives.sort(key=lambda a: a[0])
    pieces: list[tuple[int, int, float]] = []
    if last > r and int(_tag(head, "unknown_sec")) == 0:
        pieces.append((r, last, _rate(_tag(head, "value")) / (last - r)))
    hi = r
    for k, (span, rows) in enumerate(archives):
        end = r - r % span
        first = end - len(rows) * span
        lo = first
        if k + 1 < len(archives):
            coarse = archives[k + 1][0]
            lo = max(first, -(-first // coarse) * coarse)
        for j, v in enumerate(rows):
            a = first + j * span
            if a >= lo and a + span <= hi:
                pieces.append((a, a + span, v))
        hi = lo
    pieces.sort()
    return pieces


def window_energy(pieces: list[tuple[int, int, float]], start: float, end: float) -> float:
    """Thousandths (mWh, mL) stored over (start, end]; a row the window cuts counts pro rata."""
    total = 0.0
    for a, b, v in pieces:
        lo, hi = max(a, start), min(b, end)
        if hi > lo:
            total += v * (hi - lo)
    return total


_NOT_NEWER = re.compile(r"illegal attempt to update using time ([0-9.]+) when last update time is ([0-9.]+)")


def stored_already(message: str) -> bool:
    """Whether an rrdcached refusal is of an update not newer than the file's last one."""
    m = _NOT_NEWER.search(message)
    return m is not None and float(m.group(1)) <= float(m.group(2))


def parse_fetch(text: str) -> list[tuple[int, float | None]]:
    out: list[tuple[int, float | None]] = []
    for line in text.splitlines():
        ts, sep, rest = line.partition(":")
        if not sep or not ts.strip().isdigit():
            continue
        word = rest.split()[0] if rest.split() else "nan"
        try:
            value = float(word)
        except ValueError:
            continue
        out.append((int(ts), None if value != value else value))
    return out


PR_SET_PDEATHSIG = 1
ADOPT_WAIT_S = 30.0  # how long an rrdcached left behind may take to write its cache and exit


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that has the child sent SIGTERM when the forking thread dies (Linux prctl).

    rrdcached runs with -F, so SIGTERM makes it write its whole cache before
    it exits: a daemon killed with -9 takes its rrdcached along, and no
    cached update is lost. The libc function is looked up here, in the
    parent: the child only calls it.
    """
    try:  # imported here: only rrdcached mode needs it, and OpenWrt's batched mode ships no ctypes
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would ever come
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def socket_served(path: Path) -> int | None:
    """The pid of the process serving the unix socket at path (SO_PEERCRED), None if nobody does."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(path))
            cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", cred)[0]
    return pid if pid > 0 else None


def _is_rrdcached(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "rrdcached"
    except OSError:
        return False


def pid_gone(pid: int) -> bool:
    """True once pid has exited (or is a zombie whose parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1] in ("Z", "X")
    except (OSError, IndexError):
        return True


class RrdCached:
    """An rrdcached process the daemon owns: started with a flush interval, stopped with -F (flush all).

    It dies with the daemon (PR_SET_PDEATHSIG, SIGTERM: it writes its cache
    first). One that outlived an older daemon is found through its pidfile or
    its socket and stopped, cache written, before a new one starts on the same
    directory: two on one directory would lose the first one's cache.
    """

    def __init__(self, base_dir: Path, socket_path: Path, flush_s: int) -> None:
        self.base_dir = base_dir
        self.socket_path = socket_path
        self.flush_s = flush_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        exe = shutil.which("rrdcached")
        if exe is None:
            raise UserError("rrdcached is not installed (Debian/OpenWrt package rrdcached); run `make setup`")
        if len(str(self.socket_path)) > 100:
            raise UserError(f"rrdcached socket path is too long for a unix socket: {self.socket_path}")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.retire_leftover()
        self._remove_files()
        pidfile = self.pidfile
        jitter = max(1, self.flush_s // 5)
        args = [
            exe,
            "-g",
            "-F",
            "-B",
            "-b",
            str(self.base_dir),
            "-p",
            str(pidfile),
            "-w",
            str(self.flush_s),
            "-z",
            str(jitter),
            "-f",
            str(max(self.flush_s * 2, 3600)),
            "-t",
            "1",
            "-m",
            "0660",
            "-l",
            f"unix:{self.socket_path}",
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_pdeathsig(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                raise UserError(f"rrdcached failed to start: {err or 'exit ' + str(self.proc.returncode)}")
            if self.socket_path.exists():
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                        s.connect(str(self.socket_path))
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise UserError(f"rrdcached did not open {self.socket_path} within {timeout:.0f} s")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def pidfile(self) -> Path:
        return self.socket_path.with_suffix(".pid")

    def _remove_files(self) -> None:
        for p in (self.socket_path, self.pidfile):
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _leftover_pid(self) -> int | None:
        """An rrdcached on our directory that this process did not start: from the socket, else the
        pidfile (only if that pid is an rrdcached whose command line names our directory)."""
        pid = socket_served(self.socket_path)
        if pid is not None and pid != os.getpid():
            return pid
        try:
            pid = int(self.pidfile.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        if _is_rrdcached(pid) and os.fsencode(self.base_dir) in cmdline:
            return pid
        return None

    def retire_leftover(self, timeout: float = ADOPT_WAIT_S) -> bool:
        """Stop an rrdcached a killed daemon left on our directory, after it wrote its cache to the
        files; True if there was one. Its updates reach the RRDs before the new one starts."""
        pid = self._leftover_pid()
        if pid is None or not _is_rrdcached(pid):
            return False
        log.warning("rrdcached %d of an earlier daemon still serves %s: writing its cache and stopping it",
                    pid, self.socket_path)
        try:
            os.kill(pid, signal.SIGTERM)  # started with -F: it writes every cached update, then exits
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while not pid_gone(pid):
            if time.monotonic() > deadline:
                log.error("rrdcached %d did not exit within %.0f s: killing it (its cache is lost)",
                          pid, timeout)
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        return True

    def stop(self, flushed: bool = False) -> None:
        """SIGTERM (rrdcached -F then writes everything and exits within about a second).

        With flushed=True the caller has already FLUSHed every file synchronously,
        so a process that is still up after a short grace may simply be killed.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=0.1 if flushed else 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        self._remove_files()  # a stale socket would send `rrdtool graph` to a server that is gone


class CacheClient:
    """The rrdcached text protocol over its unix socket.

    `command()` sends one command and waits for its answer. `pipeline()` sends
    several commands in one write and does not wait: rrdcached answers each in
    order, and those answers are read by the next call (they are there by
    then), so a batch of updates costs the daemon no round trip and no extra
    wake-up. A lock keeps the ingest thread and the REST API threads apart.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.sock: socket.socket | None = None
        self.buf = b""
        self.lock = threading.Lock()
        self.unread = 0  # answers to pipelined commands not read yet
        self.refused: list[str] = []  # messages of pipelined commands rrdcached refused, not yet taken

    def _connect(self) -> socket.socket:
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10.0)
            s.connect(str(self.socket_path))
            self.sock = s
            self.buf = b""
            self.unread = 0
        return self.sock

    def _line(self, s: socket.socket) -> str:
        while b"\n" not in self.buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("rrdcached closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")

    def _drain(self, s: socket.socket) -> None:
        """Read the answers of pipelined commands (one status line each: UPDATE answers have no body)."""
        while self.unread:
            status_text, _, message = self._line(s).partition(" ")
            self.unread -= 1
            if int(status_text) < 0:
                self.refused.append(message)

    def command(self, text: str) -> tuple[int, str, list[str]]:
        """Send one command; return (status, message, extra lines). status < 0 is an error."""
        with self.lock:
            for attempt in (0, 1):
                try:
                    s = self._connect()
                    self._drain(s)
                    s.sendall(text.encode() + b"\n")
                    head = self._line(s)
                    status_text, _, message = head.partition(" ")
                    status = int(status_text)
                    extra = (
                        [self._line(s) for _ in range(status)]
                        if status > 0 and not text.startswith("UPDATE")
                        else []
                    )
                    return status, message, extra
                except (OSError, ConnectionError, ValueError):
                    self.close_locked()
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def pipeline(self, lines: list[str]) -> None:
        """Send commands that answer with one line (UPDATE) in one write; do not wait for the answers."""
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        with self.lock:
            for attempt in (0, 1):
                try:
                    s = self._connect()
                    self._drain(s)
                    s.sendall(data)
                    self.unread += len(lines)
                    return
                except (OSError, ConnectionError, ValueError):
                    self.close_locked()
                    if attempt:
                        raise

    def take_refused(self, wait: bool = False) -> list[str]:
        """The refusals among the answers read so far (each returned once); with wait, first read
        the answers still due (blocking until rrdcached has handled every pipelined command)."""
        with self.lock:
            if wait and self.unread and self.sock is not None:
                try:
                    self._drain(self.sock)
                except (OSError, ConnectionError, ValueError):
                    self.close_locked()
            out, self.refused = self.refused, []
            return out

    def release(self) -> None:
        """Read the answers still due, then close the connection (the next command opens a new one).

        rrdcached's thread for an open connection wakes twice a second to look
        for a shutdown; a connection held between batches costs it more than a
        new one per batch.
        """
        with self.lock:
            if self.sock is None:
                return
            try:
                self._drain(self.sock)
            except (OSError, ConnectionError, ValueError):
                pass
            self.close_locked()

    def close_locked(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.unread = 0

    def close(self) -> None:
        with self.lock:
            self.close_locked()


class RrdStore:
    """One RRD file per sensor series under rrd_dir, named <sensor id>.rrd."""

    def __init__(self, rrd_dir: Path, socket_path: Path | None, health: StorageHealth | None = None) -> None:
        self.rrd_dir = rrd_dir
        self.health = health if health is not None else StorageHealth()
        self.socket_path = socket_path
        self.client = CacheClient(socket_path) if socket_path else None
        self.last: dict[str, int] = {}  # per series the newest update time; a series in it has a file
        self.flushed: dict[str, float] = {}
        self.queued: list[str] = []  # UPDATE lines for rrdcached not sent yet (see send())
        self.sent_at = 0.0  # monotonic time of the last send()
        self.paths: dict[str, str] = {}
        self.missing: dict[str, int] = {}  # series whose file could not be created -> first time
        self.created: set[str] = set()  # series whose file this process made, until their first value
        self.errors = 0
        self.updates = 0
        self.replayed = 0  # updates refused as not newer than what the file holds: stored already

    def path(self, sensor: str) -> Path:
        return self.rrd_dir / f"{sensor}.rrd"

    def exists(self, sensor: str) -> bool:
        return self.path(sensor).exists()

    def ensure(self, sensor: str, first_t: int) -> Path:
        p = self.path(sensor)
        created = False
        if not p.exists():
            self.rrd_dir.mkdir(parents=True, exist_ok=True)
            created = self.create_file(p, create_spec(first_t - STEP))
            if created:
                self.created.add(sensor)
            if not p.exists():  # rrdtool create may exit 0 on a full disk and leave no file
                st = os.statvfs(self.rrd_dir)
                raise OSError(f"rrdtool create {p.name}: no file written "
                              f"({st.f_bavail * st.f_frsize} bytes free in {self.rrd_dir})")
        if sensor not in self.last:
            # a file made just now was last updated at its start: no `rrdtool last` run needed
            self.last[sensor] = first_t - STEP if created else self._last_update(p)
            self.paths[sensor] = str(p)
        return p

    def create_file(self, p: Path, spec: list[str]) -> bool:
        """Create RRD p from `rrdtool create` arguments, never over an existing file; True if this
        call made it (False: it was there already)."""
        res = subprocess.run([rrdtool_exe(), "create", str(p), "--no-overwrite", *spec],
                             capture_output=True, text=True)
        if res.returncode != 0 and not p.exists():
            raise OSError(f"rrdtool create {p}: {res.stderr.strip()}")
        return res.returncode == 0

    def _last_update(self, p: Path) -> int:
        res = subprocess.run(
            [rrdtool_exe(), "last", str(p), *self._daemon_args()], capture_output=True, text=True
        )
        try:
            return int(res.stdout.strip())
        except ValueError:
            return 0

    def last_value(self, sensor: str) -> tuple[int, int] | None:
        """(time, counter) of the series' newest update (rrdcached's cache included), None if unknown."""
        p = self.path(sensor)
        if not p.exists():
            return None
        res = subprocess.run([rrdtool_exe(), "lastupdate", str(p), *self._daemon_args()],
                             capture_output=True, text=True)
        for ts, value in parse_fetch(res.stdout if res.returncode == 0 else ""):
            if value is not None and ts > 0:
                return ts, int(value)
        return None

    def _daemon_args(self) -> list[str]:
        return ["--daemon", f"unix:{self.socket_path}"] if self.socket_path else []

    def create_missing(self) -> bool:
        """Create the files that could not be created (a full disk), now, unless the retry is not
        due yet; True if none is missing any more. A file that is missing is a storage fault: the
        series' updates are lost to its RRD until it exists (its counter is not)."""
        if not self.health.ready(RRD_FILES):
            return False
        for sensor, first_t in sorted(self.missing.items()):
            try:
                self.ensure(sensor, first_t)
            except (OSError, subprocess.SubprocessError) as exc:
                self.errors += 1
                self.health.failed(RRD_FILES, exc)
                return False
            del self.missing[sensor]
        self.health.ok(RRD_FILES)
        return True

    def is_new(self, sensor: str, t: int) -> bool:
        """Whether t is newer than the series' last update; its file is created or found on first use
        (False while it cannot be: a full disk, see create_missing)."""
        if self.missing and self.health.ready(RRD_FILES):
            self.create_missing()
        last = self.last.get(sensor)
        if last is None:  # first update of this series in this process: create or find the file
            self.missing.setdefault(sensor, t)
            if not self.create_missing():
                return False
            last = self.last[sensor]
        return t > last

    def update(self, sensor: str, t: int, value: int) -> bool:
        """Queue one counter value; skip it if it is not newer than the last one (RRDs only go forward).

        With rrdcached the value goes out with the next send() (one write for all
        that were queued, answers read later: a refusal shows in `errors` and the
        log then); without it, `rrdtool update` runs at once. True if taken.
        """
        if not self.is_new(sensor, t):
            return False
        if self.client is not None:
            self.queued.append(f"UPDATE {self.paths[sensor]} {t}:{value}")
        else:
            p = self.path(sensor)
            res = subprocess.run(
                [rrdtool_exe(), "update", str(p), f"{t}:{value}"], capture_output=True, text=True
            )
            if res.returncode != 0:
                self.errors += 1
                log.warning("rrd update %s refused: %s", sensor, res.stderr.strip())
                return False
        self.taken(sensor, t, value)
        return True

    def taken(self, sensor: str, t: int, value: int) -> None:
        """Book an update that was queued or written."""
        self.last[sensor] = t
        self.updates += 1
        if sensor in self.created:  # where its graphs begin: the counter there is in no RRD row
            self.created.discard(sensor)
            log.info("rrd %s: new file, first counter %d at %d", sensor, value, t)

    def rewind(self, sensor: str, to_ts: int) -> bool:
        """Move sensor's last update back to to_ts if it is later (the host clock stepped back after
        a clock that ran ahead stamped updates): an RRD takes only updates after its last one, so
        without this it would discard every reading until that time came round. rrdcached writes
        what it holds and forgets the file first (it keeps its own last-update time per file).
        True if the file was rewound."""
        p = self.path(sensor)
        if not p.exists():
            return False
        self.send()
        last = self.last.get(sensor)
        if last is None:
            last = self._last_update(p)
        if last <= to_ts:
            return False
        if self.client is not None:
            self.client.command(f"FLUSH {p}")
            self.client.command(f"FORGET {p}")
        exe = rrdtool_exe()
        dump = subprocess.run([exe, "dump", str(p)], capture_output=True, text=True, timeout=60)
        if dump.returncode != 0:
            raise OSError(f"rrdtool dump {p}: {dump.stderr.strip()}")
        tmp = p.with_name(p.name + ".rewind.xml")
        try:
            tmp.write_text(rewind_dump(dump.stdout, to_ts))
            res = subprocess.run([exe, "restore", "-f", str(tmp), str(p)], capture_output=True, text=True,
                                 timeout=60)
        finally:
            tmp.unlink(missing_ok=True)
        if res.returncode != 0:
            raise OSError(f"rrdtool restore {p}: {res.stderr.strip()}")
        log.warning("rrd %s: last update moved back from %d to %d (the clock stepped back)",
                    sensor, last, to_ts)
        self.last[sensor] = to_ts
        self.paths[sensor] = str(p)
        return True

    def send(self) -> int:
        """Send the queued updates to rrdcached in one write; return how many were sent.

        The answers to the previous batch are read (they are there by then) and
        its refusals logged and counted in `errors`.
        """
        if self.client is None or not self.queued:
            return 0
        lines, self.queued = self.queued, []
        self.sent_at = time.monotonic()
        try:
            self.client.pipeline(lines)
        except (OSError, ConnectionError) as exc:
            self.errors += len(lines)
            self.health.failed(RRDCACHED, f"{len(lines)} updates not sent: {exc}")
            return 0
        finally:
            self.check_refused()
        self.health.ok(RRDCACHED)
        return len(lines)

    def release_at(self) -> float | None:
        """When (monotonic s) the rrdcached connection should be let go: RELEASE_S after the last
        batch, once its answers are surely in; None while no connection is open."""
        if self.client is None or self.client.sock is None:
            return None
        return self.sent_at + RELEASE_S

    def release(self) -> None:
        """Close the rrdcached connection until the next batch (its answers are read first)."""
        if self.client is not None:
            self.client.release()
            self.check_refused()

    def check_refused(self, wait: bool = False) -> int:
        """Count and log the updates rrdcached refused since the last call; return how many.

        Answers are read when the next batch goes out; wait=True reads those still due now.
        """
        if self.client is None:
            return 0
        refused = self.client.take_refused(wait)
        for message in refused:
            if stored_already(message):
                # a value rrdcached held when the daemon asked for the file's last update, sent again
                # after a restart: it is in the file, nothing is lost
                self.replayed += 1
                log.debug("rrd update already stored: %s", message)
                continue
            self.errors += 1
            log.warning("rrd update refused: %s", message)
        if refused:  # a file deleted under the daemon is made again on its series' next update
            for sensor in [s for s, path in self.paths.items() if not os.path.exists(path)]:
                self.last.pop(sensor, None)
                self.paths.pop(sensor, None)
        return len(refused)

    def flush(self, sensor: str, min_age_s: float = 0.0) -> None:
        """Ask rrdcached to write this file now, unless it did so less than min_age_s ago."""
        if self.client is None or not self.exists(sensor):
            return
        now = time.monotonic()
        if now - self.flushed.get(sensor, -1e9) < min_age_s:
            return
        self.flushed[sensor] = now
        self.client.command(f"FLUSH {self.path(sensor)}")

    def fetch(self, sensor: str, cf: str, start: int, end: int, resolution: int) -> Fetched:
        p = self.path(sensor)
        if not p.exists():
            return Fetched(start, resolution, [])
        res = subprocess.run(
            [rrdtool_exe(), "fetch", str(p), cf, "-r", str(resolution), "-s", str(start), "-e", str(end)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if res.returncode != 0:
            raise OSError(f"rrdtool fetch {p}: {res.stderr.strip()}")
        values = parse_fetch(res.stdout)
        step = values[1][0] - values[0][0] if len(values) > 1 else resolution
        return Fetched(start, step, values)

    def flush_all(self) -> bool:
        """Send what is queued, then synchronously write every file this store touched; True if all
        went to disk."""
        if self.client is None:
            return True
        self.send()
        ok = True
        for sensor in list(self.last):
            try:
                status, message, _ = self.client.command(f"FLUSH {self.path(sensor)}")
            except (OSError, ConnectionError):
                return False
            ok = ok and status >= 0
        self.check_refused(wait=True)
        return ok

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


NIGHT_STEP = 86400
NIGHT_FROM_H = 2  # Flukso's night: the mean of the 15-minute values from 02:00 to 05:00 local time
NIGHT_TO_H = 5
NIGHT_READY_H = 6  # computed once the day's 05:00 is an hour behind


def night_window(day: datetime.date) -> tuple[int, int]:
    """Unix start and end of the 02:00-05:00 local window of day."""
    start = time.mktime((day.year, day.month, day.day, NIGHT_FROM_H, 0, 0, 0, 0, -1))
    end = time.mktime((day.year, day.month, day.day, NIGHT_TO_H, 0, 0, 0, 0, -1))
    return int(start), int(end)


def night_slot(day: datetime.date) -> int:
    """The night RRD's step (one per UTC day) that holds day's value: it ends at this time."""
    return (datetime.date.toordinal(day) - datetime.date(1970, 1, 1).toordinal() + 1) * NIGHT_STEP


class NightStore:
    """Per series a daily GAUGE RRD of the standby baseload, like Flukso's `night` RRD.

    Written once a day per series with `rrdtool update` (no need for rrdcached):
    RRAs 1 day x 1 year and 1 week x 10 years.
    """

    def __init__(self, rrd: RrdStore) -> None:
        self.rrd = rrd

    def path(self, sensor: str) -> Path:
        return self.rrd.rrd_dir / f"{sensor}.night.rrd"

    def last(self, sensor: str) -> int:
        p = self.path(sensor)
        if not p.exists():
            return 0
        res = subprocess.run([rrdtool_exe(), "last", str(p)], capture_output=True, text=True)
        try:
            return int(res.stdout.strip())
        except ValueError:
            return 0

    def compute(self, sensor: str, day: datetime.date) -> float | None:
        """Mean rate (thousandths per second) over day's 02:00-05:00 from the 15-minute RRA."""
        start, end = night_window(day)
        self.rrd.flush(sensor)
        got = self.rrd.fetch(sensor, "AVERAGE", start, end, 900)
        vals = [v for t, v in got.values if start < t <= end and v is not None]
        return sum(vals) / len(vals) if vals else None

    def update(self, sensor: str, day: datetime.date) -> bool:
        """Store day's night value if it is known and not stored yet; True if stored."""
        slot = night_slot(day)
        if self.last(sensor) >= slot:
            return False
        value = self.compute(sensor, day)
        if value is None:
            return False
        p = self.path(sensor)
        if not p.exists():
            self.rrd.create_file(p, ["--start", str(slot - NIGHT_STEP), "--step", str(NIGHT_STEP),
                                     f"DS:night:GAUGE:{NIGHT_STEP + 3600}:0:U",
                                     "RRA:AVERAGE:0.5:1:365", "RRA:AVERAGE:0.5:7:520"])
        res = subprocess.run(
            [rrdtool_exe(), "update", str(p), f"{slot}:{value:.6f}"], capture_output=True, text=True
        )
        if res.returncode != 0:
            log.warning("night update of %s refused: %s", sensor, res.stderr.strip())
            return False
        return True

    def due(self, now: float) -> list[datetime.date]:
        """The days whose night value can be computed at now: yesterday, and today after 06:00."""
        today = datetime.date.fromtimestamp(now)
        days = [today - datetime.timedelta(days=1)]
        if time.localtime(now).tm_hour >= NIGHT_READY_H:
            days.append(today)
        return days

    def fetch(self, sensor: str, start: int, end: int) -> list[tuple[int, float | None]]:
        p = self.path(sensor)
        if not p.exists():
            return []
        res = subprocess.run(
            [
                rrdtool_exe(),
                "fetch",
                str(p),
                "AVERAGE",
                "-r",
                str(NIGHT_STEP),
                "-s",
                str(start),
                "-e",
                str(end),
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if res.returncode != 0:
            raise OSError(f"rrdtool fetch {p}: {res.stderr.strip()}")
        return parse_fetch(res.stdout)


def default_socket(state_dir: Path) -> Path:
    p = state_dir / "rrdcached.sock"
    if len(str(p)) <= 100:
        return p
    return Path("/tmp") / f"gridtap-rrdcached-{os.getpid()}.sock"


# A series' first value in a process is written at the start of the 1-minute archive's row it falls
# in too: a row whose steps are partly unknown (before a new file's first value) holds the mean of
# the known ones, which would count the unknown steps' energy twice. (The file's 15 min and longer rows
# still begin so: an energy older than a day over a new series' first quarter hour is not exact.)
FIRST_ALIGN_S = RRAS[1][0] * STEP
FILL_GRACE_MS = 3000  # an unchanged series is written at a step boundary once the board is this far past it
FILL_MAX_JUMP_MS = 5000  # a bigger jump of the board's time is a gap (an outage): nothing is filled over it


class RrdSink:
    """Counter outputs into the per-series RRDs; a refused update is logged, never fatal.

    The RRD step is 10 s, so one value per series per step is enough: the
    first reading of each step is written at its whole second, and rrdcached
    gets a tenth of the updates. The board sends a reading a little more than
    once a second (its commit follows the ADC batch that ends the second; about
    every 1.02 s in the demo), stamped in ms: the value written is the counter interpolated to that whole
    second between the readings on either side of it. (Written as it came, a
    reading from late in its second now and then gave a row 9 s of energy: a
    comb of notches in the curves.)

    A series whose register does not move (an S0 meter between its pulses, a
    CT at 0 W) gets no new reading for up to a minute: its unchanged counter
    is written at every step boundary once the board's time (the newest stamp
    of any series) is FILL_GRACE_MS past it, so its rows read its true average
    instead of "unknown" until the next pulse. At stop the newest readings
    are written (flush_held), so the last partial step reaches the RRDs too.
    """

    wants_gauges = False

    def __init__(self, store: RrdStore) -> None:
        self.store = store
        self.prev: dict[str, tuple[int, int]] = {}  # per series its newest reading (ms, counter)
        self.written: dict[str, int] = {}  # per series the time (s) of its newest write
        self.now_ms = 0  # the board's present: the newest stamp of any series
        self.filled_to = 0  # the newest boundary (s) the unchanged series were written at

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        self.counter_ms(sensor, role, t * 1000, total_milli)

    def reactive_counter(self, series: str, t_ms: int, total_mvarh: int) -> None:
        """A CT's Q+ or Q- total (board/plausible.py): an RRD of its own, like any counter (mvarh)."""
        self.counter_ms(series, "reactive", t_ms, total_mvarh)

    def counter_ms(self, sensor: str, role: str, t_ms: int, total_milli: int) -> None:
        """A reading stamped t_ms (Unix ms); older than the series' newest it is ignored."""
        prev = self.prev.get(sensor)
        if prev is not None and t_ms <= prev[0]:
            return  # an RRD only goes forward
        self.prev[sensor] = (t_ms, total_milli)
        if prev is None:
            # the series' first reading in this process: the same counter at the start of its minute
            # and at its second, so that minute's steps are all known (see FIRST_ALIGN_S), those
            # before the reading as 0 (its energy is not known); an RRD that is further on already
            # takes neither
            start, sec = t_ms // (FIRST_ALIGN_S * 1000) * FIRST_ALIGN_S, t_ms // 1000
            self._write(sensor, start, total_milli)
            if sec > start:
                self._write(sensor, sec, total_milli)
        else:
            done = self.written.get(sensor, 0)
            sec = t_ms // 1000
            t0, c0 = prev
            if sec // STEP > done // STEP and sec > done and t0 < sec * 1000:
                self._write(sensor, sec, c0 + (total_milli - c0) * (sec * 1000 - t0) // (t_ms - t0))
        if t_ms > self.now_ms:
            jump, self.now_ms = t_ms - self.now_ms, t_ms
            self._fill(jump <= FILL_MAX_JUMP_MS)

    def _fill(self, write: bool) -> None:
        b = (self.now_ms - FILL_GRACE_MS) // (STEP * 1000) * STEP
        if b <= self.filled_to:
            return
        self.filled_to = b
        if not write:
            return
        for sensor, (t_ms, total) in list(self.prev.items()):
            if self.written.get(sensor, 0) < b and t_ms <= b * 1000:
                self._write(sensor, b, total)  # no reading since: the register stood still

    def _write(self, sensor: str, t: int, total_milli: int) -> None:
        self.written[sensor] = t
        try:
            self.store.update(sensor, t, total_milli)
        except (OSError, ConnectionError) as exc:
            self.store.errors += 1
            log.warning("rrd update for %s failed: %s", sensor, exc)

    def rewind(self, to_ts: int) -> None:
        """The host clock stepped back: every RRD whose last update is after to_ts is moved back."""
        on_disk = {p.stem for p in self.store.rrd_dir.glob("*.rrd") if SERIES_FILE.fullmatch(p.stem)}
        for sensor in sorted(set(self.prev) | set(self.store.last) | on_disk):
            prev = self.prev.get(sensor)
            if prev is not None and prev[0] > to_ts * 1000:
                del self.prev[sensor]
            if self.written.get(sensor, 0) > to_ts:
                self.written[sensor] = to_ts
            try:
                self.store.rewind(sensor, to_ts)
            except (OSError, ConnectionError, subprocess.SubprocessError) as exc:
                self.store.errors += 1
                log.error("rrd %s: cannot move its last update back to %d: %s", sensor, to_ts, exc)
        self.now_ms = min(self.now_ms, to_ts * 1000)
        self.filled_to = min(self.filled_to, to_ts)

    def flush_held(self) -> None:
        """At stop: every series' counter as of the board's present, at the next whole second (its
        newest reading, or the unchanged counter), so the last partial step is stored too."""
        end = -(-self.now_ms // 1000)
        for sensor, (t_ms, total) in sorted(self.prev.items()):
            t = max(end, -(-t_ms // 1000))
            if self.written.get(sensor, 0) < t:
                self._write(sensor, t, total)

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        """Live values are not stored: the RRDs hold energy, from which power follows exactly."""
