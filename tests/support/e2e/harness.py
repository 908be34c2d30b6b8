"""The end-to-end harness: board, link, daemon and every uplink as real processes, under faults.

    plan = day_plan(sim_s=3 * 3600, seed=1)
    result = run(plan, workdir)          # dict; result["ok"] says whether no Wh was lost
    # python -m tests.support.e2e.harness --sim-s 10800 --out /tmp/e2e   (the same from a shell)

What runs, all on 127.0.0.1 with free ports and a temporary directory:

* the virtual board (`tests/support/e2e/simboard.py`: `household-pv`, 3 CT + 2 pulse,
  the real MicroPython firmware), its UART on a pty behind a stable symlink;
* `gridtap daemon --clock-file --time-sync-s 5` (the simulated clock) with
  rrdcached, the spool, MQTT, Flukso and PVOutput;
* rrdcached and mosquitto as their own processes (so they can be restarted);
* the Flukso-compatible and PVOutput test servers (`tests/support`), real HTTP
  servers in this process; the PVOutput one on the simulated clock.

Faults follow the plan, in simulated seconds: mains failures (brownouts),
some followed by a flicker (the mains returns and fails again while the
rebooted board writes its boot record to EEPROM), `kill -9` of the daemon
(restarted at once), UART bursts at BER 1e-3, outages of both upload servers,
a restart of the broker and of rrdcached, and a board reset (the board is
unplugged: it saves, the simulator process ends, and a new one boots from the
same EEPROM image). At the end every process is stopped,
the values each stage holds are read back and `tests/support/e2e/analysis.py` compares
them with the firmware and with the truth (docs/e2e.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridtap.store.rrd import RrdCached
from gridtap_sim.board import load_board
from tests.support.broker import Collector, Mosquitto, free_port
from tests.support.e2e import analysis
from tests.support.e2e.simboard import read_clock
from tests.support.flukso_server import FluksoServer
from tests.support.pvoutput_server import PVOutputServer

REPO = Path(__file__).resolve().parents[3]
DAY = 86400.0
# The e2e board: board.json's channels and inputs at half its sample rate (2400 sets/s in 40 ms
# blocks), the same firmware and model with half the per-sample work, so a simulated month fits
# in hours (docs/e2e.md). Metrology at 4800 sets/s is the HIL campaigns' job (tests/hil).
SOAK_BOARD = str(REPO / "hardware" / "board-soak.json")
# A flicker fails the mains again this long after the rebooted board started its boot-record
# write (half the 5 ms write cycle of board.json's EEPROM), for FLICKER_S.
FLICKER_INTO_WRITE_S = 0.0025
FLICKER_S = 1.5
MIN_UP_S = 3.0  # a kill -9 waits until the daemon has run this long (wall s): its rrdcached is up
ORPHAN_GRACE_S = 5.0  # a process a killed daemon left running longer than this is an orphan
FLUKSO_KEY = "e2e0" * 8
PVO_KEY = "e2e-pvoutput-key"
PVO_SID = 4242
# 2026-06-01 12:00 UTC: simulated t = 0 of the first segment (household-pv starts at noon)
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
START_OF_DAY_S = 12 * 3600.0

# The five sensors of household-pv on board.json (3 CT + 2 pulse inputs): name, kind, index, ids
SENSORS: tuple[tuple[str, str, int, str, str | None], ...] = (
    ("pv", "ct", 0, "a0000000000000000000000000000001", "a0000000000000000000000000000002"),
    ("grid", "ct", 1, "a0000000000000000000000000000003", "a0000000000000000000000000000004"),
    ("kitchen", "ct", 2, "a0000000000000000000000000000005", None),
    ("gridmeter", "pulse", 0, "a0000000000000000000000000000006", None),
    ("pvmeter", "pulse", 1, "a0000000000000000000000000000007", None),
)
# PVOutput fields carrying each series' lifetime energy (donation account: v7..v12 are free)
PVO_POWER = ("v2", "pv.export")   # field, series: the power over each status's interval
PVO_FIELDS = {"pv.export": "v1", "grid": "v3", "pv": "v7", "grid.export": "v8", "kitchen": "v9",
              "gridmeter": "v10", "pvmeter": "v11"}


class HarnessError(RuntimeError):
    pass


@dataclass
class Plan:
    """What to simulate and which faults to inject; every instant is simulated seconds from the start."""

    sim_s: float
    seed: int = 1
    speed: float = math.inf
    board: str | None = SOAK_BOARD
    batch_max_s: float = 1.0    # simulated time one ADC request may cover (docs/e2e.md, finding 4)
    brownouts: list[float] = field(default_factory=list)       # mains failure instants
    brownout_len_s: list[float] = field(default_factory=list)  # and how long each lasts
    # brownouts (indices) whose mains comes back only to fail again while the rebooted board writes
    # its boot record: the supply monitor fires inside an EEPROM write cycle (a flickering supply)
    write_hits: list[int] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)           # kill -9 of the daemon
    bursts: list[tuple[float, float]] = field(default_factory=list)  # BER windows
    burst_ber: float = 1e-3
    server_outages: list[tuple[float, float]] = field(default_factory=list)  # Flukso + PVOutput down
    broker_restarts: list[float] = field(default_factory=list)
    rrdcached_restarts: list[float] = field(default_factory=list)
    # from this instant the daemon runs its own rrdcached (no rrdcached_socket): the kills after it
    # hit a daemon whose own rrdcached holds the cache (issue 13, finding 4)
    own_rrdcached_from: float | None = None
    board_reset_at: float | None = None
    # the board's crystal runs this much fast against the host clock: the daemon sets the board clock
    # back whenever it is 5 s ahead (docs/architecture.md, "Board clock steps")
    board_clock_fast_ppm: float = 0.0
    quiet_tail_s: float = 600.0   # no fault in the last stretch: the chain settles before the end
    harvest_s: float = 6 * 3600.0  # read the RRDs' 1-minute rows this often (the archive holds a day)
    wall_limit_s: float = 3600.0
    settle_wall_s: float = 90.0   # after the board stops: how long the uplinks may take to catch up

    def faults(self) -> int:
        return (len(self.brownouts) + len(self.write_hits) + len(self.kills) + len(self.bursts)
                + 2 * len(self.server_outages)
                + len(self.broker_restarts) + len(self.rrdcached_restarts)
                + (self.board_reset_at is not None) + (self.own_rrdcached_from is not None))


def _instants(rng: random.Random, n: int, lo: float, hi: float) -> list[float]:
    return sorted(rng.uniform(lo, hi) for _ in range(n))


def day_plan(sim_s: float = DAY, seed: int = 1, outage_s: float = 900.0) -> Plan:
    """One fault of each kind, spread over the run (the `make test` run)."""
    rng = random.Random(seed)
    end = sim_s - 600.0
    q = end / 8
    p = Plan(sim_s=sim_s, seed=seed)
    p.brownouts = [rng.uniform(0.3 * q, 0.9 * q)]
    p.brownout_len_s = [rng.uniform(2.0, 20.0)]
    p.write_hits = [0]
    p.kills = [rng.uniform(1 * q, 2 * q)]
    b = rng.uniform(2 * q, 2.5 * q)
    p.bursts = [(b, b + min(600.0, 0.4 * q))]
    s = rng.uniform(3 * q, 3.5 * q)
    p.server_outages = [(s, s + min(outage_s, 1.5 * q))]
    p.broker_restarts = [rng.uniform(5 * q, 5.5 * q)]
    p.rrdcached_restarts = [rng.uniform(5.6 * q, 6 * q)]
    p.board_reset_at = rng.uniform(6.5 * q, 7 * q)
    # drawn last, so the instants above stay what they were for a seed
    p.own_rrdcached_from = rng.uniform(6.05 * q, 6.15 * q)
    p.kills.append(rng.uniform(6.25 * q, 6.45 * q))  # a kill -9 while the daemon's own rrdcached holds cache
    p.board_clock_fast_ppm = 1000.0  # a TIME_SET sets the board clock back every hour or two
    return p


def soak_plan(days: float, seed: int = 1, kills: int = 24, long_outages: tuple[float, ...] = (3.0, 20.0)
              ) -> Plan:
    """The `make soak` run: a brownout every day, >= 20 kills, bursts, a 3- and a 20-day server outage."""
    rng = random.Random(seed)
    sim_s = days * DAY
    end = sim_s - 3600.0
    p = Plan(sim_s=sim_s, seed=seed, wall_limit_s=sim_s / 20.0 + 3600.0)
    # one brownout in every simulated day (or part of a day) the run covers
    p.brownouts = [d * DAY + rng.uniform(300.0, min(DAY, end - d * DAY) - 300.0)
                   for d in range(int(math.ceil(end / DAY))) if end - d * DAY > 900.0]
    p.brownout_len_s = [rng.uniform(2.0, 20.0) for _ in p.brownouts]
    p.write_hits = list(range(0, len(p.brownouts), 3))  # every third day's brownout flickers
    p.kills = _instants(rng, kills, 300.0, end)
    starts = _instants(rng, max(2, int(days)), 300.0, end - 900)
    p.bursts = [(t, t + rng.uniform(60.0, 900.0)) for t in starts]
    # long outages of both servers, scaled down when the run is shorter than they are
    scale = min(1.0, 0.8 * end / (sum(long_outages) * DAY))
    t = 0.1 * end
    for length in long_outages:
        span = length * DAY * scale
        p.server_outages.append((t, t + span))
        t += span + 0.05 * end
    p.broker_restarts = [rng.uniform(0.2 * end, 0.3 * end)]
    p.rrdcached_restarts = [rng.uniform(0.4 * end, 0.5 * end)]
    p.board_reset_at = rng.uniform(0.6 * end, 0.7 * end)
    p.own_rrdcached_from = 0.55 * end  # the kills after it hit the daemon's own rrdcached
    return p


# ---------------------------------------------------------------------------------------------

def daemon_toml(work: Path, tty: Path, mqtt_port: int, flukso_url: str, pvo_url: str, api_port: int,
                own_rrdcached: bool = False) -> str:
    lines = [
        "[daemon]",
        f'state_dir = "{work / "state"}"',
        f'rrd_dir = "{work / "rrd"}"',
        'rrd_mode = "rrdcached"',
        *([] if own_rrdcached else [f'rrdcached_socket = "{work / "rrdcached.sock"}"']),
        "rrdcached_flush_s = 600",
        'bind = "127.0.0.1"',
        f"port = {api_port}",
        "api = true",
        "state_flush_s = 300",
        "",
        "[board]",
        f'port = "{tty}"',
        "baud = 115200",
        "",
    ]
    for name, kind, idx, sid, exp in SENSORS:
        lines += ["[[sensor]]", f'name = "{name}"', f'kind = "{kind}"', f'id = "{sid}"']
        if kind == "ct":
            lines.append(f"channel = {idx}")
            if exp:
                lines.append(f'export_id = "{exp}"')
        else:
            lines += [f"input = {idx}", "meter_constant = 1000", 'unit = "wh"']
        lines.append("")
    lines += [
        "[mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}", 'device_id = "gridtap-e2e"', "",
        "[flukso]", f'base_url = "{flukso_url}"', 'key_env = "GRIDTAP_E2E_FLUKSO_KEY"', "interval_s = 2", "",
        "[pvoutput]", f"system_id = {PVO_SID}", "interval = 5", 'timezone = "UTC"', "donation = true",
        f'base_url = "{pvo_url}"', f'{PVO_POWER[0]} = "{PVO_POWER[1]}:power"',
    ]
    lines += [f'{fld} = "{series}:energy_total"' for series, fld in PVO_FIELDS.items()]
    return "\n".join(lines) + "\n"


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """utime + stime of a process, seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def group_members(pgid: int) -> list[int]:
    """Live processes in process group pgid (a killed daemon's session: what it left behind)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def rrdcached_args(pid: int) -> tuple[Path, Path] | None:
    """(base directory, unix socket) of an rrdcached process, from its command line; None otherwise."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return None
    if not argv or Path(argv[0]).name != "rrdcached" or "-b" not in argv[:-1]:
        return None
    sock = next((a[5:] for a in argv if a.startswith("unix:")), None)
    return (Path(argv[argv.index("-b") + 1]), Path(sock)) if sock else None


def rrdcacheds(base: Path) -> list[tuple[int, Path]]:
    """Live rrdcached processes serving base (pid, socket), oldest first."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (args := rrdcached_args(int(d.name))) and args[0].resolve() == base.resolve():
            try:
                start = int((d / "stat").read_text().rsplit(")", 1)[1].split()[19])
            except (OSError, IndexError, ValueError):
                continue
            out.append((start, int(d.name), args[1]))
    return [(pid, sock) for _s, pid, sock in sorted(out)]


def rrdcached_socket(base: Path) -> Path | None:
    """The socket of the newest rrdcached serving base that is still reachable there."""
    live = [sock for _pid, sock in rrdcacheds(base) if sock.exists()]
    return live[-1] if live else None


def orphaned(pid: int) -> bool:
    """A process a killed daemon left running is an orphan unless it is an rrdcached the next
    daemon adopted: still reachable at its socket and the only one on its directory."""
    args = rrdcached_args(pid)
    if args is None:
        return True
    return not args[1].exists() or len(rrdcacheds(args[0])) > 1


class Chain:
    """Owns every process and server of one run; `close()` ends all of them, whatever happened."""

    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.clock_file = work / "clock.bin"
        self.tty = work / "board.tty"
        self.eeprom = work / "eeprom.bin"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.broker: Mosquitto | None = None
        self.cached: RrdCached | None = None
        self.flukso: FluksoServer | None = None
        self.flukso_port = free_port()
        self.pvo: PVOutputServer | None = None
        self.events: list[dict[str, Any]] = []
        self.kills = 0
        self.daemon_starts = 0
        self.segments: list[dict[str, Any]] = []
        self.seg_dirs: list[Path] = []
        self.env = dict(os.environ, GRIDTAP_E2E_CLOCK=str(self.clock_file),
                        GRIDTAP_E2E_FLUKSO_KEY=FLUKSO_KEY, GRIDTAP_PVOUTPUT_KEY=PVO_KEY,
                        PYTHONPATH=f"{REPO}:{REPO / 'host'}:{REPO / 'firmware'}:{REPO / 'hardware'}")
        self.wall0 = time.monotonic()
        self.progress = Progress(plan.sim_s)
        self.cpu: dict[str, dict[int, float]] = {}
        self.next_cpu = 0.0
        self.drive_wall_s = 0.0
        self.next_trim = 0.0
        self.flukso_points: dict[str, int] = {}   # points trimmed away (accepted earlier)
        self.own_rrdcached = False
        self.kills_own_rrdcached = 0
        # daemons killed with -9: (pid = process group, its children then, when): what they leave
        # running for longer than ORPHAN_GRACE_S is counted
        self.dead_daemons: list[tuple[int, list[int], float]] = []
        self.orphans_seen: set[int] = set()
        self.next_orphan_check = 0.0
        self.rows: dict[str, dict[int, float | None]] = {}   # the RRDs' 1-minute rows read so far
        self.next_harvest = 0.0
        self.daemon_up_at = 0.0

    def trim_flukso(self) -> None:
        """Keep the Flukso server's RAM bounded over a month: only the newest points matter here."""
        if self.flukso is None or time.monotonic() < self.next_trim:
            return
        self.next_trim = time.monotonic() + 30.0
        with self.flukso.lock:
            for sid, pts in self.flukso.stored.items():
                if len(pts) > 5000:
                    self.flukso_points[sid] = self.flukso_points.get(sid, 0) + len(pts) - 1000
                    with open(self.work / "flukso_trimmed.jsonl", "a") as f:  # checked at the end
                        f.write(json.dumps([sid, pts[:-1000]]) + "\n")
                    del pts[:-1000]

    def harvest_rrd(self, force: bool = False, daemon: bool = True) -> None:
        """Read every RRD's final 1-minute rows (the archive holds one day: a soak reads as it goes)."""
        if not force and self.sim_t() < self.next_harvest:
            return
        self.next_harvest = self.sim_t() + self.plan.harvest_s
        sock = rrdcached_socket(self.work / "rrd") if daemon else None
        for _n, _k, _i, a, b in SENSORS:
            for sid in (a, b):
                p = self.work / "rrd" / f"{sid}.rrd"
                if sid and p.exists():
                    have = self.rows.setdefault(sid, {})
                    have.update(analysis.rrd_rows(p, 0, sock))

    def left_behind(self, older_than_s: float = 0.0) -> list[int]:
        """Processes of killed daemons (their group or their children at the kill) still alive."""
        now = time.monotonic()
        out: set[int] = set()
        for pgid, kids, at in self.dead_daemons:
            if now - at >= older_than_s:
                out.update(group_members(pgid))
                out.update(k for k in kids if cpu_s(k) is not None)
        return sorted(out)

    def count_orphans(self) -> None:
        if self.dead_daemons and time.monotonic() >= self.next_orphan_check:
            self.next_orphan_check = time.monotonic() + 1.0
            self.orphans_seen.update(p for p in self.left_behind(ORPHAN_GRACE_S) if orphaned(p))

    def end_orphans(self) -> None:
        """SIGTERM what killed daemons left running (an rrdcached flushes then), then SIGKILL."""
        self.next_orphan_check = 0.0
        self.count_orphans()
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            left = self.left_behind()
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = self.left_behind()

    def sample_cpu(self, force: bool = False) -> None:
        """CPU seconds per process role: the simulator, the firmware, the daemon, rrdcached, mosquitto."""
        if not force and time.monotonic() < self.next_cpu:
            return
        self.next_cpu = time.monotonic() + 0.5
        roles: list[tuple[str, int]] = []
        if "board" in self.procs:
            roles.append(("simulator", self.procs["board"].pid))
            roles += [("firmware", c) for c in children(self.procs["board"].pid)]
        if "daemon" in self.procs:
            roles.append(("daemon", self.procs["daemon"].pid))
        if self.cached is not None and self.cached.proc is not None:
            roles.append(("rrdcached", self.cached.proc.pid))
        if self.broker is not None and self.broker.proc is not None:
            roles.append(("mosquitto", self.broker.proc.pid))
        for role, pid in roles:
            v = cpu_s(pid)
            if v is not None:
                self.cpu.setdefault(role, {})[pid] = max(v, self.cpu.get(role, {}).get(pid, 0.0))

    def cpu_totals(self) -> dict[str, float]:
        out = {role: round(sum(d.values()), 2) for role, d in self.cpu.items()}
        t = os.times()
        out["harness+servers"] = round(t.user + t.system, 2)
        return out

    # -- clock -------------------------------------------------------------------
    def now(self) -> float:
        return read_clock(self.clock_file)

    def sim_t(self) -> float:
        return self.now() - T0

    def log(self, what: str, **kw: Any) -> None:
        self.events.append({"what": what, "sim_t": round(self.sim_t(), 3),
                            "wall_s": round(time.monotonic() - self.wall0, 2), **kw})

    # -- servers -----------------------------------------------------------------
    def start_flukso(self, carry: FluksoServer | None = None) -> None:
        keys = {i: FLUKSO_KEY for _n, _k, _x, sid, exp in SENSORS for i in (sid, exp) if i}
        srv = FluksoServer(keys, port=self.flukso_port)
        if carry is not None:  # the server's database outlives its outage
            srv.stored, srv.last_update, srv.config = carry.stored, carry.last_update, carry.config
        self.flukso = srv.start()

    def start_all(self) -> None:
        (self.work / "state").mkdir()
        (self.work / "rrd").mkdir()
        self.clock_file.write_bytes(bytes(16))
        from tests.support.e2e.simboard import SimClock

        c = SimClock(self.clock_file, T0)
        c.close()
        self.broker = Mosquitto(self.work).start()
        self.cached = RrdCached(self.work / "rrd", self.work / "rrdcached.sock", 600)
        self.cached.start()
        self.start_flukso()
        self.pvo = PVOutputServer(clock=self.now)
        self.pvo.add_system(PVO_SID, PVO_KEY, donation=True, tz="UTC")
        self.pvo.start()
        assert self.flukso is not None
        self.api_port = free_port()
        self.write_toml()

    def write_toml(self) -> None:
        assert self.flukso is not None and self.broker is not None and self.pvo is not None
        (self.work / "gridtap.toml").write_text(daemon_toml(
            self.work, self.tty, self.broker.port, self.flukso.url, self.pvo.url, self.api_port,
            own_rrdcached=self.own_rrdcached))

    # -- the board -----------------------------------------------------------------
    def start_board(self, seg: int, t_from: float, t_to: float) -> None:
        p = self.plan
        d = self.work / f"seg{seg}"
        self.seg_dirs.append(d)
        last = seg == 1 and p.board_reset_at is not None
        outages = [(b - t_from, b - t_from + ln) for b, ln in zip(p.brownouts, p.brownout_len_s, strict=True)
                   if t_from <= b < t_to - 60.0]
        boot_s = float(load_board(p.board).sim["boot_s"])
        for i in p.write_hits:
            b, ln = p.brownouts[i], p.brownout_len_s[i]
            if t_from <= b < t_to - 60.0:  # the board boots boot_s after the mains returns and first
                f = b - t_from + ln + boot_s + FLICKER_INTO_WRITE_S  # writes its boot record, then
                outages.append((f, f + FLICKER_S))
        if last:  # the board is unplugged: the supply fails 5 s before this segment ends and stays off
            outages.append((t_to - t_from - 5.0, t_to - t_from + 3600.0))
        spec = {
            "out_dir": str(d), "seed": p.seed + 1000 * seg, "duration": t_to - t_from,
            "start_of_day_s": (START_OF_DAY_S + t_from) % DAY, "t0": T0 + t_from,
            "clock_file": str(self.clock_file), "outages": outages, "board": p.board,
            "bursts": [(a - t_from, b - t_from) for a, b in p.bursts if t_from <= a < t_to],
            "burst_ber": p.burst_ber, "eeprom": str(self.eeprom), "speed": p.speed,
            "batch_max_s": p.batch_max_s, "since_start_s": t_from,
            "board_clock_fast_ppm": p.board_clock_fast_ppm,
        }
        d.mkdir()
        (d / "plan.json").write_text(json.dumps(spec))
        self.segments.append({"t_from": t_from, "t_to": t_to, "spec": spec})
        self.procs["board"] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.e2e.simboard", "--plan", str(d / "plan.json")], cwd=REPO,
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(d / "sim.stderr", "wb"),
            start_new_session=True)
        deadline = time.monotonic() + 60
        while not (d / "pty").exists():
            if self.procs["board"].poll() is not None or time.monotonic() > deadline:
                err = (d / "sim.stderr").read_text()[-2000:]
                raise HarnessError(f"the virtual board did not start: {err}")
            time.sleep(0.05)
        tmp = self.work / "board.tty.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to((d / "pty").read_text().strip())
        tmp.replace(self.tty)
        self.log("board started", segment=seg)

    def stop_board(self) -> None:
        self.sample_cpu(force=True)
        proc = self.procs.pop("board", None)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def board_done(self) -> bool:
        return (self.seg_dirs[-1] / "done").exists()

    # -- the daemon ----------------------------------------------------------------
    def start_daemon(self) -> None:
        self.daemon_starts += 1
        self.daemon_up_at = time.monotonic()
        log = open(self.work / "daemon.log", "ab")
        # the unmodified daemon on the simulated clock; its own wall-time latency is a simulated
        # second or two at 50x, so the board clock is re-set only beyond 5 s (docs/e2e.md)
        self.procs["daemon"] = subprocess.Popen(
            [sys.executable, "-m", "gridtap.cli", "daemon", "-c", str(self.work / "gridtap.toml"),
             "--log-level", "info", "--clock-file", str(self.clock_file), "--time-sync-s", "5"],
            cwd=REPO, env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def kill_daemon(self) -> None:
        self.sample_cpu(force=True)
        proc = self.procs["daemon"]
        kids = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1
        self.dead_daemons.append((proc.pid, kids, time.monotonic()))
        self.kills_own_rrdcached += self.own_rrdcached
        self.log("daemon kill -9", own_rrdcached=self.own_rrdcached)
        self.start_daemon()

    def switch_to_own_rrdcached(self) -> None:
        """Stop the daemon and the harness's rrdcached (both flush), restart the daemon owning one."""
        self.stop_daemon()
        self.harvest_rrd(force=True)
        assert self.cached is not None
        self.cached.stop()
        self.cached = None
        self.own_rrdcached = True
        self.write_toml()
        self.start_daemon()
        self.log("daemon now owns its rrdcached")

    def stop_daemon(self) -> int:
        self.sample_cpu(force=True)
        proc = self.procs.pop("daemon", None)
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise HarnessError("the daemon did not stop within 60 s of SIGTERM") from None

    # -- faults ----------------------------------------------------------------------
    def servers_down(self) -> None:
        assert self.flukso is not None and self.pvo is not None
        self.flukso.stop()
        self.pvo.offline = True
        self.log("upload servers down")

    def servers_up(self) -> None:
        carry = self.flukso
        self.start_flukso(carry)
        assert self.pvo is not None
        self.pvo.offline = False
        self.log("upload servers up")

    def restart_broker(self) -> None:
        assert self.broker is not None
        self.broker.restart()
        self.log("broker restarted")

    def restart_rrdcached(self) -> None:
        if self.cached is None:
            raise HarnessError("rrdcached restart planned after the daemon took over its rrdcached")
        self.cached.stop()
        self.cached.start()
        self.log("rrdcached restarted")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                if name == "daemon":
                    tail = (self.work / "daemon.log").read_text(errors="replace")[-3000:]
                else:
                    tail = (self.seg_dirs[-1] / "sim.stderr").read_text(errors="replace")[-3000:]
                raise HarnessError(f"{name} exited with {proc.returncode} on its own:\n{tail}")
        if time.monotonic() - self.wall0 > self.plan.wall_limit_s:
            raise HarnessError(f"wall-time limit of {self.plan.wall_limit_s:.0f} s reached at simulated "
                               f"t = {self.sim_t():.0f} s")

    def close(self) -> None:
        for name in ("daemon", "board"):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM if name == "board" else signal.SIGKILL)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        try:
            self.end_orphans()
        except OSError as exc:
            self.events.append({"what": "teardown error", "error": repr(exc)})
        for part in (self.cached, self.broker, self.flukso, self.pvo):
            if part is None:
                continue
            try:
                part.stop()
            except Exception as exc:  # teardown must reach every process
                self.events.append({"what": "teardown error", "error": repr(exc)})
        self.cached = None


def _schedule(plan: Plan) -> list[tuple[float, str]]:
    ev: list[tuple[float, str]] = [(t, "kill") for t in plan.kills]
    for a, b in plan.server_outages:
        ev += [(a, "servers_down"), (b, "servers_up")]
    ev += [(t, "broker") for t in plan.broker_restarts]
    ev += [(t, "rrdcached") for t in plan.rrdcached_restarts]
    if plan.own_rrdcached_from is not None:
        ev.append((plan.own_rrdcached_from, "own_rrdcached"))
    return sorted(ev)


class Progress:
    """A line on the real stderr every `every_s` simulated seconds (pytest captures sys.stderr, and
    `make test` sat silent for minutes in the e2e day): how far the run is, in wall seconds too."""

    def __init__(self, sim_s: float, out: Any = None, parts: int = 12) -> None:
        self.sim_s = sim_s
        self.every_s = max(3600.0, sim_s / parts)
        self.next_s = self.every_s
        self.out = out if out is not None else sys.__stderr__
        self.wall0 = time.monotonic()

    def tick(self, sim_t: float) -> None:
        if sim_t < self.next_s or self.out is None:
            return
        self.next_s = (sim_t // self.every_s + 1) * self.every_s
        h, m = divmod(int(sim_t) // 60, 60)
        self.out.write(f"\n  e2e: {h:02d}:{m:02d} of {self.sim_s / 3600:.0f} h simulated "
                       f"({sim_t / self.sim_s:.0%}), {time.monotonic() - self.wall0:.0f} s wall\n")
        self.out.flush()


def _drive(chain: Chain, events: list[tuple[float, str]], t_to: float) -> None:
    """Run until the current board segment has reached t_to, firing the faults that fall in it."""
    while not chain.board_done():
        chain.progress.tick(chain.sim_t())
        chain.check_alive()
        chain.sample_cpu()
        chain.trim_flukso()
        chain.harvest_rrd()
        chain.count_orphans()
        t = chain.sim_t()
        while events and events[0][0] <= t and events[0][0] < t_to:
            if events[0][1] == "kill" and time.monotonic() - chain.daemon_up_at < MIN_UP_S:
                break  # a crash of a daemon that has not started yet tells nothing: wait for it
            _when, what = events.pop(0)
            if what == "kill":
                chain.kill_daemon()
            elif what == "servers_down":
                chain.servers_down()
            elif what == "servers_up":
                chain.servers_up()
            elif what == "broker":
                chain.restart_broker()
            elif what == "rrdcached":
                chain.restart_rrdcached()
            elif what == "own_rrdcached":
                chain.switch_to_own_rrdcached()
        time.sleep(0.02)


def _expected_finals(chain: Chain) -> dict[str, int]:
    paths = [d / "tuples.jsonl" for d in chain.seg_dirs]
    tuples = analysis.load_tuples(paths, [float(s["t_from"]) for s in chain.segments])
    return analysis.host_reference(tuples, SENSORS)


def _settle(chain: Chain, collector: Collector) -> dict[str, Any]:
    """Wait (bounded) until MQTT and Flukso hold the firmware's last values; report how long it took."""
    want = _expected_finals(chain)
    t0 = time.monotonic()
    state: dict[str, Any] = {}
    while time.monotonic() - t0 < chain.plan.settle_wall_s:
        chain.check_alive()
        assert chain.flukso is not None
        fl = {sid: (chain.flukso.measurements(sid) or [(0, -1)])[-1][1] for sid in want}
        mq: dict[str, float | None] = {}
        for sid in want:
            v = collector.last_json(f"/sensor/{sid}/counter")
            mq[sid] = None if v is None else v[1]
        state = {"flukso_ok": all(fl[s] == want[s] // 1000 for s in want),
                 "mqtt_ok": all(abs((mq[s] or -1.0) * 1000 - want[s]) < 0.5 for s in want)}
        # MQTT is read as it is; only the uploader's catch-up is waited for (it backs off in wall time)
        if state["flukso_ok"]:
            break
        time.sleep(0.25)
    state["settle_wall_s"] = round(time.monotonic() - t0, 2)
    return state


def run(plan: Plan, work: Path, keep: bool = False) -> dict[str, Any]:
    """Run the whole chain under the plan's faults; return the comparison (analysis.compare)."""
    work.mkdir(parents=True, exist_ok=True)
    chain = Chain(plan, work)
    wall0 = time.monotonic()
    result: dict[str, Any] = {"plan": asdict(plan)}
    try:
        chain.start_all()
        cut = None if plan.board_reset_at is None else float(round(plan.board_reset_at))
        spans = [(0.0, cut), (cut, plan.sim_s)] if cut is not None else [(0.0, plan.sim_s)]
        events = _schedule(plan)
        chain.start_board(1, *spans[0])
        chain.start_daemon()
        w = time.monotonic()
        _drive(chain, events, spans[0][1])
        if len(spans) > 1:
            chain.stop_board()   # the unplugged board's EEPROM image is written now
            chain.log("board reset (unplugged, EEPROM kept)")
            chain.start_board(2, *spans[1])
            _drive(chain, events, spans[1][1])
        chain.drive_wall_s = round(time.monotonic() - w, 2)
        for _t, what in events:  # a fault that did not fire is a broken plan, not a pass
            raise HarnessError(f"fault {what} at {_t:.0f} s never fired")
        assert chain.broker is not None
        collector = Collector(chain.broker.port, ("/sensor/+/counter",))
        try:
            result["settle"] = _settle(chain, collector)
            mqtt = {sid: collector.last_json(f"/sensor/{sid}/counter") for _n, _k, _i, a, b in SENSORS
                    for sid in (a, b) if sid}
        finally:
            collector.close()
        chain.harvest_rrd(force=True)
        result["daemon_exit"] = chain.stop_daemon()
        chain.stop_board()
        assert chain.flukso is not None and chain.pvo is not None
        if chain.cached is not None:
            chain.cached.stop()
            chain.cached = None
        chain.end_orphans()   # as at a shutdown of the router: what they still cache may reach the files
        chain.harvest_rrd(force=True, daemon=False)
        (work / "rrd_rows.json").write_text(json.dumps(chain.rows))
        stages: dict[str, Any] = {
            "mqtt": mqtt,
            "flukso": {sid: chain.flukso.measurements(sid) for sid in mqtt},
            "pvoutput": {k: dict(v) for k, v in chain.pvo.statuses.get(str(PVO_SID), {}).items()},
            "pvoutput_requests": [(r.endpoint, r.status, r.body[:200], r.at) for r in chain.pvo.requests],
        }
        pvo_statuses: dict[tuple[str, str], dict[str, str]] = stages["pvoutput"]
        saved = dict(stages, pvoutput={" ".join(k): v for k, v in pvo_statuses.items()})
        (work / "stages.json").write_text(json.dumps({"stages": saved, "segments": chain.segments}))
        result.update(analysis.compare(work, SENSORS, PVO_FIELDS, stages, chain.segments, T0, PVO_POWER))
        if chain.orphans_seen:
            result["ok"] = False
            result["failures"].append(f"{len(chain.orphans_seen)} processes outlived a daemon killed with -9 "
                                      "(an orphaned rrdcached keeps its cache from the files)")
    finally:
        chain.close()
        result["events"] = chain.events
        result["kills"] = chain.kills
        result["kills_own_rrdcached"] = chain.kills_own_rrdcached
        result["rrdcached_orphans"] = len(chain.orphans_seen)
        result["cpu_s"] = chain.cpu_totals()
        result["flukso_points_trimmed"] = chain.flukso_points
        result["drive_wall_s"] = chain.drive_wall_s
        result["wall_s"] = round(time.monotonic() - wall0, 1)
        result["faults_injected"] = plan.faults()
        (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def reanalyse(work: Path) -> int:
    """Run the comparison again on a kept work directory; update its result.json."""
    saved = json.loads((work / "stages.json").read_text())
    stages = saved["stages"]
    stages["pvoutput"] = {tuple(k.split(" ", 1)): v for k, v in stages["pvoutput"].items()}
    res = json.loads((work / "result.json").read_text())
    res.update(analysis.compare(work, SENSORS, PVO_FIELDS, stages, saved["segments"], T0, PVO_POWER))
    (work / "result.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps({k: res.get(k) for k in ("ok", "failures", "wh_lost_by_stage")}, indent=1))
    return 0 if res.get("ok") else 1


def stop_on_sigterm() -> None:
    """SIGTERM ends a run like Ctrl-C: every process is torn down and the partial result written."""
    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(description="gridtap end-to-end run under faults (docs/e2e.md)")
    ap.add_argument("--sim-s", type=float, default=3 * 3600.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--soak-days", type=float, default=None, help="use the soak plan over this many days")
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a new temporary one)")
    ap.add_argument("--batch-max-s", type=float, default=1.0,
                    help="simulated seconds one ADC request of the firmware may cover (default 1)")
    ap.add_argument("--board", default=SOAK_BOARD, help="board file (default hardware/board-soak.json)")
    ap.add_argument("--analyse", type=Path, default=None, metavar="DIR",
                    help="only compare again the stages a finished run saved in DIR (stages.json)")
    args = ap.parse_args(argv)
    if args.analyse:
        return reanalyse(args.analyse)
    plan = soak_plan(args.soak_days, args.seed) if args.soak_days else day_plan(args.sim_s, args.seed)
    plan.batch_max_s = args.batch_max_s
    plan.board = args.board
    work = args.out or Path(tempfile.mkdtemp(prefix="gte2e-"))
    res = run(plan, work, keep=True)
    print(json.dumps({k: res[k] for k in ("ok", "wall_s", "faults_injected", "wh_lost_by_stage") if k in res},
                     indent=1))
    print(f"details: {work / 'result.json'}")
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
