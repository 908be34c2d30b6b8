"""The integrity campaign: hostile and faulty input against the real daemon (issue 13).

    python -m tests.support.integrity                 # every case: PASS/FAIL, figures; exit 1 if one fails
    python -m tests.support.integrity future_stamp    # some cases (names from CASES)
    python bench/run.py integrity                     # every case, figures into bench/results.json

Each case runs `gridtap daemon` as its own process, with its own rrdcached, the
spool and the Flukso and PVOutput uploads to the test servers
(`tests/support/flukso_server.py`, `pvoutput_server.py`), against the fake board on a real pty
(`tests/support/fakeboard.py`) on a simulated clock (`--clock-file`) that runs
about 100x. The board meters a steady load (2.4 kW and 0.7 kW on two CTs, 1.8
kW of S0 pulses), so every RRD row, Flukso point and PVOutput status has one
right value. The case injects its hostile or faulty input between good
tuples, lets the chain go on, stops the daemon with SIGTERM and checks from
outside, against what the issue demands whatever the daemon's code does:

* nothing implausible stored or uploaded: the counter store's totals and each
  RRD's last counter equal the registers of the good tuples the board sent;
  no RRD row above what board.json's channels can measure, none NaN where the
  board counted, no update stamped ahead of the host clock; every Flukso point
  between the registers around it; every PVOutput status's energies right, its
  power its interval's, no interval skipped;
* the daemon up through the fault (or restarted cleanly), exit 0 on SIGTERM, no
  process of it left behind, no traceback in its log;
* no data the board still holds dropped: all of the above end on the board's
  registers (the board keeps every tuple until it is ACKed);

plus what the case itself demands (its `must` line). docs/integrity.md lists
the cases and the last results.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridtap.simclock import ClockWriter
from gridtap_fw import wire
from gridtap_sim.procs import stop_process
from tests.support.broker import free_port
from tests.support.e2e import analysis
from tests.support.e2e.harness import orphaned, rrdcached_socket
from tests.support.fakeboard import FakeBoard
from tests.support.flukso_server import FluksoServer
from tests.support.pvoutput_server import PVOutputServer

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC).timestamp()
SPEED = 100.0        # simulated seconds per wall second
STEP_S = 10          # the board sends its tuples every 10 simulated seconds
POWER_W = (2400.0, 700.0)   # CT1 (mains, import), CT2 (heat pump)
PULSES_PER_STEP = 5  # 1000 imp/kWh: 5 Wh per 10 s, 1.8 kW
FLUKSO_KEY = "1e7e" * 8
PVO_KEY = "integrity-pvoutput-key"
PVO_SID = 4343
IMP, EXP, IMP2, PULSE = "f" * 31 + "1", "f" * 31 + "2", "f" * 31 + "3", "f" * 31 + "4"
SERIES = (IMP, EXP, IMP2, PULSE)
NAMES = {IMP: "mains", EXP: "mains.export", IMP2: "heatpump", PULSE: "meter"}
BOARD_JSON = REPO / "hardware" / "board.json"


def ceiling_w() -> float:
    """The most one CT channel of board.json can measure: full-scale V times full-scale I (rms).

    A stored or uploaded rate above this (with a margin for rounding) cannot have come from the board.
    """
    adc = json.loads(BOARD_JSON.read_text())["adc"]
    half = adc["midscale"] / 2 ** 0.5
    v = max(c["v_per_count"] for c in adc["channels"] if c["kind"] == "voltage") * half
    a = max(c["a_per_count"] for c in adc["channels"] if c["kind"] == "ct") * half
    return v * a


def board_channels() -> tuple[int, int]:
    """(CT channels, pulse inputs) of board.json: the most a HELLO may make the daemon ask about."""
    d = json.loads(BOARD_JSON.read_text())
    return sum(1 for c in d["adc"]["channels"] if c["kind"] == "ct"), len(d["pulse_inputs"])


class SimBoard(FakeBoard):
    """The fake board with its clock on the simulated one (TIME_SET sets it against that clock)."""

    def __init__(self, link_dir: Path, clock: Callable[[], float], **kw: Any) -> None:
        super().__init__(link_dir, **kw)
        self.clock = clock

    def board_time(self) -> float:
        return self.clock() + self.clock_offset

    def _handle(self, msg: wire.Message) -> None:
        super()._handle(msg)
        if msg.mtype == wire.HELLO_REQ and self.answer:
            # like the firmware's link (RETX after a silence): a host that speaks again gets the
            # whole backlog at once, oldest first, not one RETX period later
            with self.lock:
                for seq, (frame, _sent) in list(self.ring.items()):
                    self.ring[seq] = (frame, float("-inf"))
        if msg.mtype == wire.TIME_SET and self.answer:
            with self.lock:
                self.clock_offset = msg.values[0] + msg.values[1] / 1000.0 - self.clock()


def daemon_toml(work: Path, data: Path, tty: Path, flukso_url: str, pvo_url: str) -> str:
    """No rrdcached_socket: the daemon starts and owns its rrdcached, as installed."""
    return f"""
[daemon]
state_dir = "{data / 'state'}"
rrd_dir = "{data / 'rrd'}"
rrd_mode = "rrdcached"
rrdcached_flush_s = 3600
api = false
state_flush_s = 1

[board]
port = "{tty}"
baud = 115200

[[sensor]]
name = "mains"
kind = "ct"
channel = 0
id = "{IMP}"
export_id = "{EXP}"

[[sensor]]
name = "heatpump"
kind = "ct"
channel = 1
id = "{IMP2}"

[[sensor]]
name = "meter"
kind = "pulse"
input = 0
id = "{PULSE}"
meter_constant = 1000
unit = "wh"

[flukso]
base_url = "{flukso_url}"
key_env = "GRIDTAP_INTEGRITY_FLUKSO_KEY"
interval_s = 2

[pvoutput]
system_id = {PVO_SID}
interval = 5
timezone = "UTC"
donation = true
base_url = "{pvo_url}"
v3 = "mains:energy_total"
v4 = "mains:power"
v7 = "meter:energy_total"
"""


@dataclass
class Outcome:
    name: str
    must: str
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    rss_mb_max: float = 0.0
    flood: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems


class Rig:
    """One case's world: clock, board, servers, the daemon process; `close()` ends all of them."""

    def __init__(self, work: Path, data: Path | None = None) -> None:
        self.work = work
        self.data = data or work
        self.t = T0
        self.uptime = 0
        self.clock = ClockWriter(work / "clock.bin", T0)
        self.board = SimBoard(work, self.now, retx_s=10.0)
        self.board.appear()
        self.flukso = FluksoServer({s: FLUKSO_KEY for s in SERIES}, port=free_port()).start()
        self.pvo = PVOutputServer(clock=self.now)
        self.pvo.add_system(PVO_SID, PVO_KEY, donation=True, tz="UTC")
        self.pvo.start()
        (work / "gridtap.toml").write_text(daemon_toml(work, self.data, self.board.path, self.flukso.url,
                                                       self.pvo.url))
        self.refs: dict[str, list[tuple[float, int]]] = {s: [] for s in SERIES}
        self.newest: tuple[int, int] = (0, 0)   # (boot, stamp) of the boot's newest tuple
        # per series (own stamp, newest stamp, total) of each tuple stamped before its boot's newest
        self.late: dict[str, list[tuple[float, float, int]]] = {s: [] for s in SERIES}
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()      # every daemon and child seen: none may outlive the case
        self.exit_codes: list[int | None] = []
        self.rss_mb_max = 0.0
        self.sampling = False
        self.env = dict(os.environ, GRIDTAP_INTEGRITY_FLUKSO_KEY=FLUKSO_KEY, GRIDTAP_PVOUTPUT_KEY=PVO_KEY,
                        PYTHONPATH=f"{REPO}:{REPO / 'host'}:{REPO / 'firmware'}")

    # -- time and the board ------------------------------------------------------------------
    def now(self) -> float:
        return self.t

    def stamp(self) -> int:
        """What the board stamps a tuple with: its clock once set, its uptime (1970) before."""
        return int(self.board.board_time()) if self.board.clock_set else self.uptime

    def registers(self) -> dict[str, int]:
        b = self.board
        return {IMP: b.ct[0][0], EXP: b.ct[0][1], IMP2: b.ct[1][0], PULSE: b.pulse[0]}

    def advance(self, sim_s: float, keep_alive: bool = True) -> None:
        """Meter the steady load for sim_s simulated seconds, STEP_S at a time, at SPEED."""
        for _ in range(max(1, int(sim_s // STEP_S))):
            self.t += STEP_S
            self.uptime += STEP_S
            self.clock.publish(self.t - T0)
            st = self.stamp()
            self.board.step(st, list(POWER_W), [PULSES_PER_STEP], seconds=STEP_S)
            if self.board.clock_set:
                newest = self.newest[1] if self.newest[0] == self.board.boot_count else 0
                self.newest = (self.board.boot_count, max(newest, st))
                for s, v in self.registers().items():
                    if st >= newest:
                        self.refs[s].append((float(st), v))
                    else:  # the board clock was set back: placed right after the newest
                        self.refs[s].append((newest + 0.001, v))
                        self.late[s].append((float(st), float(newest), v))
            time.sleep(STEP_S / SPEED)
            if keep_alive and not self.alive():
                code = self.proc.returncode if self.proc else None
                raise CaseError(f"the daemon exited with {code} during the case: {self.log_tail(600)}")

    def reference(self, sensor: str) -> analysis.Reference:
        """What every stage must hold for a series: the good tuples' registers, a tuple stamped
        before its boot's newest right after the newest (docs/architecture.md, "Board clock steps";
        the spool and the uploads may hold its total in the newest's second)."""
        return analysis.Reference(self.refs[sensor], overlaps=self.late[sensor])

    def send_raw(self, data: bytes) -> None:
        self.board._write(data)  # bytes on the wire as they come, framed or not

    def counter(self, ch: int, t: int, imp_mwh: int, exp_mwh: int) -> None:
        """A CRC-valid COUNTER with these registers (reliable, like the board's own)."""
        self.board.send(wire.COUNTER, (ch, t, 0, imp_mwh // 1000, imp_mwh % 1000, exp_mwh // 1000,
                                       exp_mwh % 1000), True)

    # -- the daemon ------------------------------------------------------------------------------
    def start(self, wait_s: float = 20.0) -> None:
        log = open(self.work / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridtap.cli", "daemon", "-c", str(self.work / "gridtap.toml"),
             "--log-level", "info", "--clock-file", str(self.work / "clock.bin"), "--time-sync-s", "5"],
            cwd=REPO, env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.pids.add(self.proc.pid)
        deadline = time.monotonic() + wait_s
        sets = len(self.board.got(wire.TIME_SET))
        while len(self.board.got(wire.TIME_SET)) == sets:  # connected: a HELLO answered, the clock set
            if not self.alive() or time.monotonic() > deadline:
                raise CaseError(f"the daemon did not connect within {wait_s:.0f} s: {self.log_tail()}")
            self.advance(STEP_S, keep_alive=False)
        self.note_children()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def note_children(self) -> None:
        if self.proc is not None:
            self.pids.update(all_children(self.proc.pid))

    def kill9(self) -> None:
        assert self.proc is not None
        self.note_children()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.exit_codes.append(None)
        self.proc = None

    def stop(self) -> int | None:
        """SIGTERM, as procd or systemd stop it; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        self.note_children()
        code = stop_process(self.proc, 30)
        self.exit_codes.append(code)
        self.proc = None
        return code

    def rss_mb(self) -> float:
        if self.proc is None:
            return 0.0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def sample_rss(self) -> Callable[[], None]:
        """Sample the daemon's RSS every 20 ms until the returned function is called."""
        self.sampling = True

        def loop() -> None:
            while self.sampling:
                self.rss_mb_max = max(self.rss_mb_max, self.rss_mb())
                time.sleep(0.02)

        th = threading.Thread(target=loop, daemon=True)
        th.start()

        def done() -> None:
            self.sampling = False
            th.join()
        return done

    def log_text(self) -> str:
        p = self.work / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def log_tail(self, n: int = 1500) -> str:
        return self.log_text()[-n:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in list(self.pids):  # processes the daemons started (their rrdcached)
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.board.close()
        self.flukso.stop()
        self.pvo.stop()
        self.clock.close()


class CaseError(Exception):
    """The case could not go on: the daemon died, or did not connect."""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def all_children(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(x) for x in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            kids = []
        out.update(kids)
        todo += kids
    return out


# ---- the checks every case ends with -------------------------------------------------------

def stored_totals(rig: Rig) -> dict[str, int] | str:
    db = rig.data / "state" / "counters.sqlite"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return {s: int(t) for s, t in con.execute("SELECT sensor, total FROM series")}
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"{db.name} unreadable: {exc}"


def check_process(rig: Rig) -> list[str]:
    out = []
    if rig.exit_codes and rig.exit_codes[-1] != 0:
        out.append(f"the daemon's SIGTERM exit was {rig.exit_codes[-1]}, not 0")
    time.sleep(0.3)
    left = sorted(p for p in rig.pids if alive(p))
    if left:
        out.append(f"processes left running after the daemon stopped: {left} (an orphaned rrdcached?)")
    log = rig.log_text()
    if "Traceback" in log:
        after = log[log.index("Traceback"):].splitlines()[1:]
        what = next((line for line in after if line and not line[0].isspace()), "?")
        before = log[:log.index("Traceback")].splitlines()[-1:]
        out.append(f"a traceback in the daemon's log: {what[:200]} (after: {' '.join(before)[:160]})")
    return out


def check_stores(rig: Rig) -> list[str]:
    """Counter store, RRDs: the good registers, nothing implausible, no hole, nothing in the future."""
    out = []
    regs = rig.registers()
    totals = stored_totals(rig)
    if isinstance(totals, str):
        out.append(totals)
        totals = {}
    for s, want in regs.items():
        got = totals.get(s)
        if got != want:
            out.append(f"{NAMES[s]}: counter store holds {None if got is None else got / 1000.0} Wh, "
                       f"the board's register is {want / 1000.0} Wh")
    max_rate = ceiling_w() * 1.05 / 3.6  # mWh/s
    for s, pts in rig.refs.items():
        p = rig.data / "rrd" / f"{s}.rrd"
        if not p.exists():
            out.append(f"{NAMES[s]}: no RRD file")
            continue
        info = analysis.rrd_read(p, 0)
        if info["last_ds"] is None or abs(info["last_ds"] - regs[s]) > 1000:
            out.append(f"{NAMES[s]}: RRD's last counter {info['last_ds']} mWh, the register {regs[s]} mWh")
        if info["last_update"] > rig.now() + 60:
            out.append(f"{NAMES[s]}: RRD updated at {info['last_update']}, ahead of the host clock "
                       f"{rig.now():.0f}")
        rows = analysis.rrd_rows(p)
        res = analysis.rrd_rows_check(rows, rig.reference(s), tol_wh=1.0)
        expected = (pts[-1][0] - pts[0][0]) // analysis.ROW_S - 2 if pts else 0
        if res["rows_missing"]:
            out.append(f"{NAMES[s]}: {res['rows_missing']} RRD rows NaN where the board counted "
                       f"{res['holes'][:3]}")
        if res["rows_checked"] < 0.9 * expected:
            out.append(f"{NAMES[s]}: the RRD holds {res['rows_checked']} rows of the {expected:.0f} minutes "
                       "counted")
        big = [(t, v) for t, v in rows.items() if v is not None and v > max_rate]
        if big:
            out.append(f"{NAMES[s]}: {len(big)} RRD rows above what the board can measure, e.g. {big[0]}")
        if res["rows_wrong"]:
            out.append(f"{NAMES[s]}: {res['rows_wrong']} RRD rows off the registers "
                       f"{res['wrong_examples'][:2]}")
    return out


def check_uploads(rig: Rig) -> list[str]:
    out = []
    for s in rig.refs:
        got = rig.flukso.measurements(s)
        res = analysis.flukso_check(got, rig.reference(s))
        if res["points_wrong"]:
            out.append(f"{NAMES[s]}: {res['points_wrong']} Flukso points wrong {res['wrong_examples'][:2]}")
        ahead = [p for p in got if p[0] > rig.now() + 60]
        if ahead:
            out.append(f"{NAMES[s]}: Flukso points stamped ahead of the clock {ahead[:2]}")
    st = {k: dict(v) for k, v in rig.pvo.statuses.get(str(PVO_SID), {}).items()}
    refs = {k: rig.reference(k) for k in rig.refs}
    # where the board sent no valid tuple (a clock not set yet), a status cannot know its power
    pts = rig.refs[IMP]
    quiet = [(a[0], b[0]) for a, b in zip(pts, pts[1:], strict=False) if b[0] - a[0] > 3 * STEP_S]
    pv = analysis.pvoutput_check(st, {"v3": refs[IMP], "v7": refs[PULSE]}, ("v4", refs[IMP]), 300,
                                 quiet=quiet)
    if not pv["statuses_checked"]:
        out.append("PVOutput received no status")
    if pv["intervals_missing"] or pv["intervals_mislabelled"] or pv["energy_wrong"]:
        out.append(f"PVOutput: {pv['intervals_missing']} intervals missing {pv['missing_spans'][:2]}, "
                   f"{pv['intervals_mislabelled']} off their interval {pv['mislabelled_examples'][:1]}, "
                   f"{pv['energy_wrong']} energies wrong {pv['energy_wrong_examples'][:1]}")
    return out


def finish(rig: Rig, settle_sim_s: float = 600.0) -> list[str]:
    """Good data after the fault, then stop and check everything from outside."""
    rig.advance(settle_sim_s)
    time.sleep(2.0)  # the daemon reads the port once a second (read_batch_s): let it take the last tuples
    rig.stop()
    return check_process(rig) + check_stores(rig) + check_uploads(rig)


def warned(rig: Rig, number: str, since: int) -> bool:
    """A WARNING or worse in the log since byte `since` that names `number` (a regular expression
    for the number in the units a message may use)."""
    for line in rig.log_text()[since:].splitlines():
        if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line) and re.search(number, line):
            return True
    return False


# ---- the cases ------------------------------------------------------------------------------

def case_random_bytes(rig: Rig) -> list[str]:
    rng = random.Random(13)
    rig.start()
    rig.advance(600)
    done = rig.sample_rss()
    try:
        for n in range(40):
            junk = bytes(rng.getrandbits(8) for _ in range(2048))
            if n % 4 == 1:  # a frame with a bad CRC, one too long, an unknown type: well framed lies
                good = wire.encode(wire.COUNTER, 60000 + n, (0, rig.stamp(), 0, 1, 0, 0, 0))
                junk += good[:-3] + bytes([good[-3] ^ 0x55]) + good[-2:]
                junk += b"\x00" + bytes(rng.randrange(1, 256) for _ in range(600)) + b"\x00"
                junk += wire.cobs_encode(bytes([0xEE, 1, 0, 0, 0])) + b"\x00"
            rig.send_raw(junk)
            rig.advance(STEP_S)
    finally:
        done()
    return finish(rig)


def case_future_stamp(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    regs = rig.registers()
    rig.counter(0, int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()), regs[IMP] + 1000, regs[EXP])
    rig.advance(STEP_S)
    rig.counter(1, int(rig.now()) + 86400, regs[IMP2] + 500, 0)  # a day ahead (a clock not yet corrected)
    return finish(rig, 1200)


def case_past_stamp(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    regs = rig.registers()
    rig.counter(0, int(datetime(2001, 1, 1, tzinfo=UTC).timestamp()), regs[IMP] + 1000, regs[EXP])
    rig.counter(1, int(rig.now()) - 30 * 86400, regs[IMP2] + 500, 0)
    return finish(rig)


def case_unset_clock(rig: Rig) -> list[str]:
    """A reboot whose clock is not set yet: its 1970 stamps may not move stored state."""
    rig.start()
    rig.advance(600)
    rig.board.save_eeprom()
    time.sleep(2.5)  # state_flush_s = 1: what is stored is on disk now
    before, last_before = stored_totals(rig), rrd_last(rig)
    rig.board.answer = False   # a board that does not take TIME_SET (yet)
    rig.uptime = 0
    rig.board.reset("eeprom", wire.RESET_BROWNOUT)
    rig.advance(300)
    time.sleep(2.5)
    during, last_during = stored_totals(rig), rrd_last(rig)
    out = []
    if during != before:
        out.append(f"tuples stamped before the clock was set moved the counter store: {before} -> {during}")
    if last_during != last_before:
        out.append(f"tuples stamped before the clock was set moved the RRDs: {last_before} -> {last_during}")
    early = [(s, p) for s in SERIES for p in rig.flukso.measurements(s) if p[0] < 946684800]
    if early:
        out.append(f"uploaded to Flukso with a 1970 stamp: {early[:2]}")
    rig.board.answer = True
    rig.board.send_time()    # the board reports its unset clock; the daemon sets it
    return out + finish(rig)


def case_implausible_counter(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    at = len(rig.log_text())
    regs = rig.registers()
    rig.counter(0, rig.stamp(), 0xFFFFFFFF * 1000 + 999, regs[EXP])   # 4.29 GWh in one step
    rig.board.send(wire.PULSE, (0, rig.stamp(), 0, 0xFFFFFFFF, 0, rig.board.pulses[0] + 10**9), True)
    rig.advance(STEP_S)
    out = finish(rig)
    if not warned(rig, r"42949|4\.29", at):   # the register or the step: Wh, mWh, kWh or GWh
        out.append("no warning naming the implausible register (4294967295 Wh) in the log")
    return out


def case_backwards_counter(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    at = len(rig.log_text())
    low = rig.registers()[IMP2] - 50_000   # 50 Wh lower than the last, within one boot,
    rig.counter(1, rig.stamp() + STEP_S // 2, low, 0)  # stamped after it (not a resend of an older one)
    rig.advance(STEP_S)
    out = finish(rig)
    if not warned(rig, rf"(?<![\d.]){low // 1000}(?![\d])|(?<![\d.])50(?:\.0+)?(?![\d])", at):  # or the fall
        out.append(f"no warning naming the register that went backwards ({low // 1000} Wh) in the log")
    return out


def case_hello_flood(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    n_ct, n_pulse = board_channels()
    base = len(rig.board.got(wire.CONFIG_GET))
    b = rig.board
    done = rig.sample_rss()
    try:
        b.boot_count += 1   # a new boot: the daemon checks the config of every channel it claims
        b.send(wire.HELLO, (b.board_id, 0, 1, 0, 1, b.boot_count, wire.RESET_WATCHDOG, 0, 255, 255))
        rig.advance(60)
        for _ in range(300):
            b.hello(wire.RESET_UNKNOWN)
        rig.advance(120)
    finally:
        done()
    gets = rig.board.got(wire.CONFIG_GET)[base:]
    out = []
    beyond = [m.values[:2] for m in gets
              if (m.values[0] == wire.TARGET_CT and m.values[1] >= n_ct)
              or (m.values[0] == wire.TARGET_PULSE and m.values[1] >= n_pulse)]
    if beyond:
        out.append(f"{len(beyond)} CONFIG_GETs for channels board.json does not have, e.g. {beyond[:3]} "
                   f"({len(gets)} in all)")
    return out + finish(rig)


FORGED = "CRITICAL gridtap: forged by the board"


def case_event_flood(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(600)
    size0 = (rig.work / "daemon.log").stat().st_size
    done = rig.sample_rss()
    try:
        for n in range(2000):
            text = (f"x{n}\n2026-06-01 10:10:00,000 {FORGED}\x1b[2J\x1b[31mred" if n % 2
                    else f"event {n} \x1b[0m")
            rig.board.event(rig.stamp(), 4, 0x7F00, text[:wire.EVENT_MAX_TEXT])
        rig.advance(60)
    finally:
        done()
    grown = (rig.work / "daemon.log").stat().st_size - size0
    out = []
    log = rig.log_text()
    if re.search(r"(?m)^\S+ \S+ " + FORGED, log):
        out.append("a board EVENT's newline started a log line that reads as the daemon's CRITICAL")
    if "\x1b" in log:
        out.append("ANSI escapes from a board EVENT reached the log")
    if grown > 200_000:
        out.append(f"2000 EVENTs wrote {grown / 1000:.0f} KB of log (not rate-limited)")
    return out + finish(rig)


def case_disk_full(rig: Rig) -> list[str]:
    """The data directory on a small tmpfs, filled up for ten simulated minutes, then freed."""
    rig.start()
    rig.advance(600)
    filler = rig.data / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\xff" * 65536):
            pass
    except OSError:   # ENOSPC: full
        pass
    finally:
        os.close(fd)
    out = []
    rig.advance(600)   # keep_alive: a storage fault may degrade the daemon, never kill it
    unacked_full = rig.board.unacked()
    filler.unlink()
    rig.advance(300)
    if not rig.board.wait_acked(45.0):
        out.append(f"{rig.board.unacked()} tuples still un-ACKed 45 s after space returned")
    if unacked_full == 0:
        out.append("the daemon ACKed tuples it could not store while the disk was full")
    return out + finish(rig)


def corrupt(path: Path, how: str) -> int:
    """Garble a stopped daemon's SQLite file; return how many rows it certainly lost (0: all of them).

    "header": truncated to a page and a half, its header garbled (nothing is readable). "leaf": one
    leaf page of the `points` table garbled, one with readable pages after it in key order (rows on
    both sides of the damage stay readable; a salvage must not stop at it).
    """
    rng = random.Random(7)
    lost = 0
    data = bytearray(path.read_bytes())
    if how == "header":
        data = data[: min(len(data), 6144)]
        data[:100] = bytes(rng.getrandbits(8) for _ in range(100))
    else:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            size = con.execute("PRAGMA page_size").fetchone()[0]
            # dbstat's path is the page's place in the B-tree: sorted by it, leaves are in key order
            leaves = con.execute("SELECT pageno, ncell FROM dbstat WHERE name = 'points' "
                                 "AND pagetype = 'leaf' ORDER BY path").fetchall()
        finally:
            con.close()
        page, lost = leaves[(len(leaves) - 1) // 2]
        at = (page - 1) * size
        data[at + 8: at + size - 8] = bytes(rng.getrandbits(8) for _ in range(size - 16))
    path.write_bytes(bytes(data))   # (a clean stop left no WAL: the file is all there is)
    return lost


def restart_on_garbled(rig: Rig, name: str, how: str, meanwhile: Callable[[Path], None] | None = None
                       ) -> tuple[int, str | None]:
    """Stop the daemon, garble state/<name> (`meanwhile` sees it first), start it again: the rows
    certainly lost (corrupt()) and what went wrong if it did not start."""
    rig.stop()
    path = rig.data / "state" / name
    if meanwhile is not None:
        meanwhile(path)
    lost = corrupt(path, how)
    rig.advance(STEP_S, keep_alive=False)
    try:
        rig.start()
    except CaseError as exc:
        return lost, f"the daemon does not start on a garbled {name}: {exc}"
    return lost, None


def case_corrupt_counters(rig: Rig) -> list[str]:
    rig.start()
    rig.advance(1200)   # PVOutput's uploader ticks every 5 wall s (500 simulated): let it send
    _lost, broken = restart_on_garbled(rig, "counters.sqlite", "header")
    if broken:
        return [broken]
    out = []
    aside = [p.name for p in (rig.data / "state").iterdir()
             if p.name.startswith("counters") and p.name not in ("counters.sqlite", "counters.sqlite-wal",
                                                                 "counters.sqlite-shm")]
    if not aside:
        out.append("the garbled counters.sqlite was not kept aside")
    return out + finish(rig, 1200)


def case_corrupt_spool(rig: Rig) -> list[str]:
    """Points not uploaded yet (Flukso down) sit in a spool that is garbled while the daemon is stopped:
    every row that is still readable must reach Flukso after the restart."""
    rig.start()
    rig.advance(600)
    port = rig.flukso.port
    rig.flukso.stop()
    t_down = rig.now()
    rig.advance(900)
    t_stop = rig.now()
    held: list[int] = []

    def between(path: Path) -> None:  # the outage's points in the spool; Flukso back up
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            held.append(con.execute("SELECT count(*) FROM points WHERE ts > ?", (int(t_down),)).fetchone()[0])
        finally:
            con.close()
        with rig.board.lock:
            # The real board's 128-tuple ring holds 15 minutes of 4 series only thinned (and a power
            # cut that garbles the router's flash takes it too): the spool alone has these points.
            rig.board.ring.clear()
        carry = rig.flukso
        rig.flukso = FluksoServer({s: FLUKSO_KEY for s in SERIES}, port=port)
        rig.flukso.stored, rig.flukso.last_update = carry.stored, carry.last_update
        rig.flukso.start()

    lost, broken = restart_on_garbled(rig, "spool.sqlite", "leaf", between)  # a stop commits the outage
    if broken:
        return [broken]
    out = []
    deadline = time.monotonic() + 15.0
    got = 0
    while time.monotonic() < deadline:
        got = sum(1 for s in SERIES for p in rig.flukso.measurements(s) if t_down < p[0] <= t_stop)
        if got >= held[0] - lost:
            break
        rig.advance(STEP_S)
    if got < held[0] - lost:
        out.append(f"{got} of the outage's {held[0]} points reached Flukso, {lost} of them were on the "
                   "garbled page: readable rows of the spool were dropped")
    return out + finish(rig, 1200)


def case_kill9_own_rrdcached(rig: Rig) -> list[str]:
    """kill -9 while the daemon's own rrdcached holds 30 minutes of updates (it flushes every 3600 s)."""
    rig.start()
    rig.advance(1800)
    kids = all_children(rig.proc.pid) if rig.proc else set()
    rig.kill9()
    rig.advance(60, keep_alive=False)
    time.sleep(3.0)
    rig.start()
    rig.advance(60)
    out = []
    # what the killed daemon left running, unless the new one adopted it (its only rrdcached)
    left = sorted(p for p in kids if alive(p) and orphaned(p))
    if left:
        out.append(f"{len(left)} processes of the daemon killed with -9 run beside the new one "
                   "(an orphaned rrdcached)")
    return out + finish(rig, 1200)


def case_kill9_board_clock_back(rig: Rig) -> list[str]:
    """kill -9 between a board clock set back and the board's resends, Flukso down meanwhile (so the
    spool still holds the points after the resends' stamps for it). The restarted daemon must place
    them right after the newest reading, as the killed one did (its marks from the spool, not RAM).

    The stamps are laid out so that the spool's aging (first and last point of every minute) keeps
    a wrong order: the newest reading before the step is the last of its minute (..:55), the first
    resend is the first of that minute (..:10). Spooled at its own stamp, Flukso gets the resend's
    higher counter before the newest reading's lower one."""
    toml = rig.work / "gridtap.toml"
    # what a router's counter store holds between two flushes (every 300 s of wall time): here the
    # run's first reading, as the case is shorter than an hour of metered time
    toml.write_text(toml.read_text().replace("state_flush_s = 1\n", "state_flush_s = 3600\n", 1))
    rig.start()
    rig.advance(600)
    while rig.stamp() % 60 != 50:
        rig.advance(STEP_S)
    rig.flukso.fail_next(10**6)      # 503 from here on: the spool keeps every point for Flukso
    rig.board.clock_offset += 55.0   # the board clock 55 s ahead: within the 60 s the host accepts
    rig.advance(STEP_S)              # stamped ..:55 of the next minute
    if not rig.board.wait_acked(45):  # committed (the spool commits every 30 s of wall time)
        return [f"the tuple stamped ahead was not ACKed within 45 s: {rig.log_tail(600)}"]
    sets = len(rig.board.got(wire.TIME_SET))
    rig.board.send_time()            # the board reports it; the daemon sets it back 55 s
    deadline = time.monotonic() + 10.0
    while len(rig.board.got(wire.TIME_SET)) == sets:
        if time.monotonic() > deadline:
            return [f"no TIME_SET for a board clock 55 s ahead: {rig.log_tail(600)}"]
        time.sleep(0.05)
    rig.advance(40)                  # ..:10 to ..:40 of that minute: before the newest reading
    time.sleep(1.5)                  # taken (the port is read once a second), not committed
    rig.kill9()
    t_kill = rig.now()
    rig.advance(60, keep_alive=False)
    rig.start()
    rig.advance(60)                  # the resends are taken
    rig.flukso.fail_none()
    deadline = time.monotonic() + 60.0  # the uploader's backoff: 10 s doubling
    while not any(p[0] > t_kill for p in rig.flukso.measurements(IMP)):
        if time.monotonic() > deadline:
            return [f"nothing reached Flukso within 60 s after it came back: {rig.log_tail(600)}"]
        rig.advance(STEP_S)
    return finish(rig, 1200)


@dataclass
class Case:
    name: str
    must: str
    run: Callable[[Rig], list[str]]
    tmpfs_mb: int = 0      # the data directory on a tmpfs this small (needs root)
    flood: bool = False    # the daemon's RSS is sampled for integrity.rss_mb_max
    fast: bool = False     # in make test's subset


CASES = (
    Case("random_bytes", "80 KB of random bytes, bad-CRC, oversize and unknown frames between good tuples: "
         "daemon up, every good tuple stored", case_random_bytes, flood=True),
    Case("future_stamp", "COUNTERs stamped 2100 and a day ahead: rejected, storage and uploads go on with "
         "the good tuples, nothing stamped ahead of the host clock", case_future_stamp, fast=True),
    Case("past_stamp", "COUNTERs stamped 2001 and 30 days back: nothing moves backwards or is lost",
         case_past_stamp),
    Case("unset_clock", "a reboot's tuples stamped before its clock is set (1970) move no stored state; "
         "once it is set, its registers are taken", case_unset_clock),
    Case("implausible_counter", "a COUNTER of 0xFFFFFFFF Wh and a PULSE of 10^9 pulses: neither stored nor "
         "uploaded, warned with its number", case_implausible_counter, fast=True),
    Case("backwards_counter", "a register 50 Wh lower within one boot: no total goes down, warned with its "
         "number", case_backwards_counter),
    Case("hello_flood", "a HELLO claiming 255 CTs and 255 inputs, then 300 HELLOs: no CONFIG_GET beyond "
         "board.json's channels, daemon up, memory bounded", case_hello_flood, flood=True),
    Case("event_flood", "2000 EVENTs with newlines and ANSI escapes: no forged log line, no escape in the "
         "log, the log rate-limited", case_event_flood, flood=True),
    Case("disk_full", "the data directory full for 10 minutes, then freed: daemon up, the board left "
         "un-ACKed until space returns, nothing lost", case_disk_full, tmpfs_mb=8),
    Case("corrupt_counters", "a truncated, garbled counters.sqlite: the daemon starts, keeps it aside and "
         "rebuilds the totals from the board's registers", case_corrupt_counters),
    Case("corrupt_spool", "a spool holding an outage's points with one page garbled: the daemon starts "
         "and uploads every point that is still readable", case_corrupt_spool),
    Case("kill9_own_rrdcached", "kill -9 while the daemon's own rrdcached holds 30 minutes of updates: no "
         "orphan, no NaN row, the restarted daemon goes on", case_kill9_own_rrdcached),
    Case("kill9_board_clock_back", "kill -9 between a board clock set back 55 s and the board's resends: "
         "no stage's series goes back, nothing lost", case_kill9_board_clock_back),
)


def mount_tmpfs(path: Path, mb: int) -> str | None:
    """Mount a tmpfs of mb MB on path; an error message if this machine does not let us."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "needs root to mount a size-limited tmpfs"
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)],
                         capture_output=True, text=True)
    return None if res.returncode == 0 else f"mount -t tmpfs failed: {res.stderr.strip()}"


def run_case(case: Case, base: Path) -> Outcome:
    work = Path(tempfile.mkdtemp(prefix=f"gti-{case.name[:8]}-", dir=base))
    out = Outcome(case.name, case.must, flood=case.flood)
    t0 = time.monotonic()
    data: Path | None = None
    mounted = False
    try:
        if case.tmpfs_mb:
            data = work / "data"
            err = mount_tmpfs(data, case.tmpfs_mb)
            if err:
                out.problems.append(err)
                return out
            mounted = True
        rig = Rig(work, data)
        try:
            out.problems += case.run(rig)
        except CaseError as exc:
            out.problems.append(str(exc))
        except Exception as exc:  # the campaign goes on; the case did not get to say what holds
            out.problems.append(f"the case broke: {exc!r}")
        finally:
            out.rss_mb_max = rig.rss_mb_max
            rig.close()
    finally:
        if mounted and data is not None:
            if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(data)], capture_output=True)
        out.wall_s = round(time.monotonic() - t0, 1)
        if out.passed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            out.problems.append(f"(work directory kept: {work})")
    return out


def campaign(names: list[str] | None = None, fast_only: bool = False,
             report: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    base = Path(tempfile.gettempdir())
    chosen = [c for c in CASES if (not names or c.name in names) and (c.fast or not fast_only)]
    results = []
    for case in chosen:
        res = run_case(case, base)
        results.append(res)
        if report:
            report(res)
    return results


def figures(results: list[Outcome]) -> dict[str, object]:
    floods = [r.rss_mb_max for r in results if r.flood and r.rss_mb_max]
    return {"integrity.cases": len(results), "integrity.cases_passed": sum(r.passed for r in results),
            "integrity.rss_mb_max": round(max(floods), 1) if floods else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(c.name for c in CASES)
    ap.add_argument("cases", nargs="*", help=f"cases to run (default all): {names}")
    ap.add_argument("--fast", action="store_true", help="only make test's subset")
    args = ap.parse_args(argv)

    def show(r: Outcome) -> None:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.name} ({r.wall_s:.0f} s): {r.must}", flush=True)
        for p in r.problems:
            print(f"    {p}", flush=True)

    res = campaign(args.cases or None, args.fast, show)
    print(json.dumps(figures(res), indent=1))
    return 0 if all(r.passed for r in res) else 1


def rrd_last(rig: Rig) -> dict[str, str]:
    """Each RRD's last update as rrdcached holds it (what the files will say once flushed)."""
    sock = rrdcached_socket(rig.data / "rrd")
    daemon = ["--daemon", f"unix:{sock}"] if sock else []
    out = {}
    for s in SERIES:
        p = rig.data / "rrd" / f"{s}.rrd"
        if p.exists():
            out[s] = subprocess.run(["rrdtool", "last", str(p), *daemon], capture_output=True,
                                    text=True).stdout.strip()
    return out


if __name__ == "__main__":
    sys.exit(main())
