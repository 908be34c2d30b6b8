"""The end-to-end virtual board: `gridtap sim` plus the taps an end-to-end proof needs.

    python -m tests.support.e2e.simboard --plan plan.json

It runs the same simulator and the same unmodified firmware as `gridtap sim`
(`gridtap_sim.runner.VirtualBoard`, scenario `household-pv`, with the plan's
mains failures and UART bursts as `gridtap sim --outage/--ber-burst` gives
them) and adds, in this process only, what the e2e harness
(`tests/support/e2e/harness.py`) needs and the CLI does not offer:

* **The simulated clock** is published in a shared 8-byte file (Unix seconds,
  float64) whenever the firmware tells the simulator its time (every request
  carries it), so the daemon and the test servers see the time the board lives in;
  with `board_clock_fast_ppm` the board's crystal runs that much fast against it
  (the daemon's TIME_SET sets the board clock back now and then).
* **The tuple tap**: the COUNTER/PULSE/HELLO frames the firmware hands to its
  UART (before the fault injector) are logged with the simulated instant,
  `tuples.jsonl`; that is "what the firmware said", the start of the chain.
  To keep a month small it logs, per series, the first new tuple of every
  boot, the last one before every reset and at the end, and the two tuples
  around every minute boundary of board time (the RRD rows the analysis
  checks; PVOutput's 5-minute interval ends are among them), and every tuple
  stamped before the newest of its boot (a TIME_SET set the board clock back:
  the daemon places those right after the newest), with the newest before them
  and the first tuple after them;
  resent (RETX) tuples are only counted.
* **Brownouts during EEPROM writes** are counted (supply-monitor instant inside
  a write cycle).

At `duration` the board stops (the firmware is frozen, as if its clock
stopped), every byte still in the UART is delivered, and the process keeps
serving the pty until SIGTERM, then writes the record, the EEPROM image and a
summary (`summary.json`).
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gridtap_fw import wire
from gridtap_sim.board import load_board
from gridtap_sim.engine import Simulation
from gridtap_sim.runner import VirtualBoard

# One ADC request is answered with up to a simulated second of blocks. The simulator writes the
# board's UART bytes to the pty as the firmware hands them over (not at its next request), so long
# batches cost only host-to-board latency: host bytes reach the board with the next batch, at most
# a second of board time later (docs/e2e.md, finding 4).
BATCH_MAX_S = 1.0
TAP_GRID_S = 60  # the tap brackets every boundary of this grid (analysis.ROW_S, PVOutput's 300 s on it)


class SimClock:
    """Writer of the shared clock file: one float64, Unix seconds of simulated time."""

    def __init__(self, path: Path, t: float) -> None:
        if not path.exists() or path.stat().st_size < 8:
            path.write_bytes(struct.pack("<d", t) + bytes(8))
        self.f = open(path, "r+b")
        self.mm = mmap.mmap(self.f.fileno(), 16)
        self.set(t)

    def set(self, t: float) -> None:
        struct.pack_into("<d", self.mm, 0, t)

    def close(self) -> None:
        self.mm.close()
        self.f.close()


def read_clock(path: Path) -> float:
    return float(struct.unpack("<d", path.read_bytes()[:8])[0])


class TupleTap:
    """Which of the firmware's tuples the tap writes (the module's docstring), per series."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self.write = write
        self.pending: dict[tuple[str, int], dict[str, Any]] = {}   # newest tuple not written yet
        self.slot: dict[tuple[str, int], int] = {}   # TAP_GRID_S slot of the last tuple (board time)
        self.seen_this_boot: set[tuple[str, int]] = set()
        # the newest stamp (board ms) per series in this boot: a tuple stamped before it (the board
        # clock was set back) is always written, and so are the newest one before it and the first
        # one after it
        self.newest_ms: dict[tuple[str, int], int] = {}
        self.late: set[tuple[str, int]] = set()   # the last tuple was stamped before the newest
        self.boot = 0

    def tuple(self, rec: dict[str, Any]) -> None:
        key = (rec["k"], int(rec["i"]))
        slot = int(rec["t"]) // TAP_GRID_S
        t_ms = int(rec["t"]) * 1000 + int(rec["ms"])
        first = key not in self.seen_this_boot
        crossed = self.slot.get(key, slot) != slot   # a minute boundary lies between these two
        late = t_ms < self.newest_ms.get(key, t_ms)
        after_late = key in self.late
        self.newest_ms[key] = max(t_ms, self.newest_ms.get(key, t_ms))
        self.seen_this_boot.add(key)
        self.slot[key] = slot
        (self.late.add if late else self.late.discard)(key)
        if first or crossed or late or after_late:
            before = self.pending.pop(key, None)
            if before is not None:
                self.write(before)   # brackets the boundary (or the clock step) from below
            self.write(rec)
        else:
            self.pending[key] = rec

    def flush(self) -> None:
        for rec in self.pending.values():
            self.write(rec)
        self.pending.clear()

    def hello(self, boot: int) -> None:
        """A HELLO: every boot sends one, and so does a boot the daemon asks again (HELLO_REQ, e.g.
        after a restart); only a new boot starts its series' stamps afresh."""
        self.flush()
        self.seen_this_boot.clear()
        if boot != self.boot:
            self.boot = boot
            self.newest_ms.clear()
            self.late.clear()


class TapBoard(VirtualBoard):
    """VirtualBoard with the clock, tuple tap and write-cycle log."""

    def __init__(self, sim: Simulation, *, t0: float, clock: SimClock, tap: TextIO,
                 since_start_s: float = 0.0, fast_ppm: float = 0.0, **kw: Any) -> None:
        super().__init__(sim, **kw)
        self.t0 = t0
        self.since_start_s = since_start_s   # simulated seconds of the run before this segment
        self.slow = fast_ppm * 1e-6
        self.clock = clock
        self.tap = tap
        self.decoders: dict[int, wire.Decoder] = {}
        self.ee_cycles: list[tuple[float, float]] = []
        self.picker = TupleTap(self._write)
        self.tuples_tapped = 0
        self.published = 0.0
        self.retx_seen = 0
        self.committed = 0.0   # simulated instant the CT registers were last committed (see _on_uart_tx)

    def _sync(self, now_us: int, flags: int = 0) -> None:
        # every request carries the firmware's own time: that is the present the host lives in
        # (after an ADC reply `now` is the end of a batch the firmware has not worked through yet)
        super()._sync(now_us, flags)
        if self.now > self.published:
            self.published = self.now
            self.clock.set(self.host_time(self.now))

    def host_time(self, now: float) -> float:
        """The host's Unix time at simulated instant `now` of this segment. With `fast_ppm` the
        board's crystal runs that much fast against the host clock (over the whole run, so the
        host clock goes on smoothly across a board reset): the daemon sets it back now and then."""
        return self.t0 + now - self.slow * (self.since_start_s + now)

    def _on_uart_tx(self, payload: bytes) -> None:
        dec = self.decoders.get(self.boot_n)
        if dec is None:
            self.decoders = {self.boot_n: wire.Decoder()}
            dec = self.decoders[self.boot_n]
            self.committed = self.now   # a new boot: the registers hold what the EEPROM gave back
        for m in dec.feed(payload):
            # A CT register moves once a second, when the firmware closes a second of mains
            # periods and sends its GAUGEs, and once more when a brownout save folds in the
            # second in progress. A COUNTER says what the registers held at that commit, not at
            # the instant it is sent (up to a second later): the analysis compares registers with
            # the truth at "at" (docs/e2e.md, finding 6).
            if m.mtype == wire.GAUGE or (m.mtype == wire.EVENT and m.values[3] == wire.EV_BROWNOUT_SAVE):
                self.committed = self.now
            if m.mtype in (wire.COUNTER, wire.PULSE) and m.flags & wire.FLAG_RETX:
                self.retx_seen += 1
            elif m.mtype in (wire.COUNTER, wire.PULSE):
                v = m.values
                rec: dict[str, Any] = {"k": "c" if m.mtype == wire.COUNTER else "p", "sim_t": self.now,
                                       "boot": self.boot_n, "seq": m.seq, "retx": m.flags & 1,
                                       "i": v[0], "t": v[1], "ms": v[2]}
                if m.mtype == wire.COUNTER:
                    rec["at"] = self.committed
                    rec["imp"] = v[3] * 1000 + v[4]
                    rec["exp"] = v[5] * 1000 + v[6]
                else:
                    rec["reg"] = v[3] * 1000 + v[4]
                    rec["pulses"] = v[5]
                self.picker.tuple(rec)
            elif m.mtype == wire.HELLO:
                self.picker.hello(self.boot_n)
                h = m.as_dict()
                self.tap.write(json.dumps({"k": "h", "sim_t": self.now, "boot": self.boot_n,
                                           "boot_count": h["boot_count"], "cause": h["reset_cause"]}) + "\n")
        super()._on_uart_tx(payload)

    def _write(self, rec: dict[str, Any]) -> None:
        self.tap.write(json.dumps(rec) + "\n")
        self.tuples_tapped += 1

    def flush_pending(self) -> None:
        self.picker.flush()

    def _on_ee_write(self, payload: bytes) -> bool:
        self.ee_cycles.append((self.now, self.now + self.eeprom.cycle_s))
        return super()._on_ee_write(payload)

    def drain(self) -> None:
        """Deliver every byte still queued in the UART (the board has stopped)."""
        while self.tx:
            _, data = self.tx.popleft()
            if self.pty is not None:
                self.pty.write(data)
            self.stats.uart_from_board += len(data)


def brownouts_in_writes(fails: list[float], cycles: list[tuple[float, float]]) -> int:
    n = 0
    for f in fails:
        if any(a < f < b for a, b in cycles):  # a write already under way when the supply failed
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", required=True, type=Path, help="JSON plan written by the harness")
    args = ap.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    out = Path(plan["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    board = load_board(plan.get("board"))
    scenario = plan.get("scenario", "household-pv")
    sim = Simulation(board, scenario, int(plan["seed"]), float(plan["start_of_day_s"]))
    sim.add_outages([(float(a), float(b)) for a, b in plan.get("outages", [])])
    since = float(plan.get("since_start_s", 0.0))
    fast_ppm = float(plan.get("board_clock_fast_ppm", 0.0))
    clock = SimClock(Path(plan["clock_file"]), float(plan["t0"]) - fast_ppm * 1e-6 * since)
    tap = open(out / "tuples.jsonl", "a", buffering=1 << 16)
    ber = float(plan.get("burst_ber", 1e-3))
    vb = TapBoard(sim, t0=float(plan["t0"]), clock=clock, tap=tap, since_start_s=since, fast_ppm=fast_ppm,
                  ber_bursts=[(float(a), float(b), ber) for a, b in plan.get("bursts", [])],
                  speed=float(plan.get("speed", math.inf)), fw_log=out / "firmware.log",
                  batch_max_s=float(plan.get("batch_max_s", BATCH_MAX_S)))
    eeprom = plan.get("eeprom")
    if eeprom and Path(eeprom).exists():
        vb.eeprom.load_image(Path(eeprom).read_bytes())
    (out / "pty").write_text(str(vb.pty_path))
    print(f"pty: {vb.pty_path}", flush=True)
    stop = {"now": False}

    def on_term(signum: int, frame: object) -> None:
        if stop["now"]:
            return
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    duration = float(plan["duration"])
    interrupted = False
    try:
        vb.run(duration)
        vb.drain()
        vb.flush_pending()
        tap.flush()
        (out / "done").write_text(json.dumps({"sim_s": vb.now}))
        while True:  # the board is stopped; keep the pty open so the host reads everything
            vb._service_host()
            time.sleep(0.05)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        vb.flush_pending()
        n_seconds = int(math.floor(min(vb.now, duration)))
        meta, arrays = vb.record_extras()
        sim.write_record(out / "record.npz", n_seconds, meta, arrays)
        if eeprom:
            Path(eeprom).write_bytes(bytes(vb.eeprom.data))
        fails = [float(f) for f in vb.stats.brownout_flags]
        summary = {
            "sim_s": vb.now, "wall_s": vb.stats.wall_s, "boots": vb.stats.boots, "deaths": vb.stats.deaths,
            "brownout_flags_s": fails, "brownouts_in_eeprom_write": brownouts_in_writes(fails, vb.ee_cycles),
            "ee_writes": vb.stats.ee_writes, "torn_pages": len(vb.eeprom.torn),
            "uart": {"to_board": vars(vb.to_board.stats), "from_board": vars(vb.from_board.stats)},
            "tuples_tapped": vb.tuples_tapped, "retx_seen": vb.retx_seen,
            "interrupted_early": not (out / "done").exists(),
            "adc_blocks": vb.stats.adc_blocks,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        tap.close()
        vb.close()
        clock.close()
    return 0 if interrupted else 1


if __name__ == "__main__":
    sys.exit(main())
