"""The HIL rig: drives a board's pins and talks to it over its UART only.

By default the rig is the virtual board (`gridtap_sim`): the simulator is the
signal generator, the reference meter and the programmable supply, and its
record is the ground truth. The firmware is reached only through the pty with
pyserial and the wire codec (`gridtap.board.client.BoardClient`), exactly as a
real board on /dev/ttyACM0 would be; no test imports firmware internals.

Time: the host never sends TIME_SET in these campaigns, so every stamp the
board sends (COUNTER, PULSE, GAUGE) is milliseconds since its boot. The rig
knows when each boot happened (it controls the supply), which maps a stamp
to simulated seconds.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import serial

from gridtap.board.client import BoardClient
from gridtap_fw import wire
from gridtap_sim.board import DEFAULT_BOARD, load_board
from gridtap_sim.engine import Simulation, load_record
from gridtap_sim.pulses import PulseMeter
from gridtap_sim.runner import VirtualBoard

F64 = npt.NDArray[np.float64]
IDEAL = {"gain_error_sd": 0.0, "vt_lead_deg": 0.0, "ct_lead_deg": 0.0}


def board_file(tmp: Path, sim: dict[str, Any] | None = None, top: dict[str, Any] | None = None,
               base: Path = DEFAULT_BOARD) -> Path:
    """A copy of board.json with some `sim` (and top-level) values replaced."""
    raw = json.loads(base.read_text())
    raw.setdefault("sim", {}).update(sim or {})
    for key, value in (top or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp / "board.json"
    path.write_text(json.dumps(raw))
    return path


@dataclass
class Capture:
    """What the host saw: messages in arrival order, split by boot (HELLO)."""

    msgs: list[wire.Message] = field(default_factory=list)
    decoder: dict[str, int] = field(default_factory=dict)

    def by_boot(self) -> list[list[wire.Message]]:
        """Messages per boot; a resent reliable frame (RETX) is left out when its original arrived.

        Seqs wrap at 65536, so a RETX is matched to the original by seq, type and
        values, and an original is always kept.
        """
        out: list[list[wire.Message]] = []
        seen: dict[int, tuple[int, tuple[Any, ...]]] = {}
        for m in self.msgs:
            if m.mtype == wire.HELLO or not out:
                out.append([])
                seen = {}
            if m.mtype in (wire.COUNTER, wire.PULSE, wire.EVENT):
                if m.flags & wire.FLAG_RETX and seen.get(m.seq) == (m.mtype, m.values):
                    continue
                seen[m.seq] = (m.mtype, m.values)
            out[-1].append(m)
        return out

    def unique(self) -> list[wire.Message]:
        return [m for boot in self.by_boot() for m in boot]

    def of(self, mtype: int, msgs: Iterable[wire.Message] | None = None) -> list[dict[str, Any]]:
        return [m.as_dict() for m in (self.unique() if msgs is None else msgs) if m.mtype == mtype]


def stamp_s(d: dict[str, Any]) -> float:
    return float(d["unix_s"]) + d["ms"] / 1000.0


def register_times(msgs: list[wire.Message]) -> list[tuple[float, dict[str, Any]]]:
    """Each COUNTER with the board time its registers hold for, in stamp order.

    The board adds a second's energy to the registers in the same step that
    sends that second's GAUGEs, so the registers in a COUNTER stamped t were
    complete at the last GAUGE stamped at or before t (within one ADC block).
    Stamps, not arrival order, decide: a resent (RETX) COUNTER keeps its
    original stamp and values however late it arrives.
    """
    gauges = sorted({stamp_s(m.as_dict()) for m in msgs if m.mtype == wire.GAUGE})
    out: list[tuple[float, dict[str, Any]]] = []
    for m in msgs:
        if m.mtype == wire.COUNTER:
            d = m.as_dict()
            i = bisect.bisect_right(gauges, stamp_s(d))
            out.append((gauges[i - 1] if i else 0.0, d))
    out.sort(key=lambda x: (stamp_s(x[1]), x[0]))
    return out


def same_registers(a: list[wire.Message], b: list[wire.Message], min_shared: float = 0.9) -> bool:
    """Two boards' COUNTER and PULSE messages hold the same values at every stamp both sent.

    Which stamps a board reports depends on when its host ACKs (a tuple waiting for
    its ACK is replaced by a newer one), so the sets may differ a little; at least
    `min_shared` of each side's stamps must be shared, and none may differ.
    """
    def by_stamp(msgs: list[wire.Message]) -> dict[tuple, tuple]:
        return {(m.mtype, *m.values[:3]): m.values for m in msgs if m.mtype in (wire.COUNTER, wire.PULSE)}
    x, y = by_stamp(a), by_stamp(b)
    shared = x.keys() & y.keys()
    return (bool(shared) and len(shared) >= min_shared * max(len(x), len(y))
            and all(x[k] == y[k] for k in shared))


def cumulative(per_second: F64, t: float) -> float:
    """Integral of a per-second series from 0 to t (linear inside a second)."""
    if t <= 0:
        return 0.0
    k = int(math.floor(t))
    whole = float(per_second[:k].sum())
    if k < len(per_second):
        whole += float(per_second[k]) * (t - k)
    return whole


class _Stopped(Exception):
    pass


class StoppableBoard(VirtualBoard):
    """A VirtualBoard whose run() can be ended early from another thread (at its next ADC block)."""

    stop_requested = False

    def _on_adc(self, payload: bytes) -> bool:
        if self.stop_requested:
            raise _Stopped()
        return super()._on_adc(payload)


class VirtualRig:
    """One virtual board run: scenario, faults and supply on one side, a host on the pty."""

    def __init__(self, tmp: Path, scenario: str, seed: int = 1, *, sim: dict[str, Any] | None = None,
                 top: dict[str, Any] | None = None, ber: float = 0.0, speed: float = 1e9,
                 start: float | None = None, outage_every_s: float = 120.0,
                 meters: list[PulseMeter] | None = None, firmware: Path | None = None,
                 board: Path | None = None,
                 command: Callable[[Path], list[str]] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        path = board if board is not None else board_file(tmp, sim, top)
        self.sim = Simulation(load_board(path), scenario, seed, start, outage_every_s=outage_every_s)
        if meters is not None:
            self.sim.scn.meters = meters
        self.vb = StoppableBoard(self.sim, speed=speed, ber=ber, fw_log=tmp / "fw.log", firmware=firmware,
                                 command=command)
        assert self.vb.pty_path is not None
        self.port = self.vb.pty_path
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._truth: dict[str, Any] | None = None

    def start(self, duration: float) -> None:
        def body() -> None:
            try:
                self.vb.run(duration)
            except _Stopped:
                pass
            except BaseException as exc:   # reported by join()
                self.error = exc
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def client(self, timeout: float = 0.5) -> BoardClient:
        port = serial.Serial(self.port, 115200, timeout=0.01)
        return BoardClient(port, timeout=timeout)

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise AssertionError(f"virtual board failed: {self.error}\n{self.fw_log()[-3000:]}")

    def capture(self, duration: float, client: BoardClient | None = None) -> Capture:
        """Run for `duration` simulated seconds as a host that ACKs every tuple."""
        own = client is None
        cl = client or self.client()
        cap = Capture()
        try:
            if self.thread is None:
                self.start(duration)
            cap.msgs += cl.backlog
            cl.backlog = []
            while self.running:
                cap.msgs += cl.poll()
            quiet = time.monotonic() + 0.2
            while time.monotonic() < quiet:
                got = cl.poll()
                cap.msgs += got
                if got:
                    quiet = time.monotonic() + 0.2
            cap.decoder = cl.decoder.counters()
        finally:
            if own:
                cl.close()
        self.join()
        return cap

    def truth(self) -> dict[str, Any]:
        """The ground truth as `gridtap sim --record` writes it, read back with load_record."""
        if self._truth is None:
            path = self.tmp / "truth.npz"
            meta, arrays = self.vb.record_extras()
            self.sim.write_record(path, int(math.floor(self.vb.now)), meta, arrays)
            self._truth = dict(load_record(path)[1])
        return self._truth

    def boot_times(self) -> list[float]:
        return [t for t, _ in self.vb.stats.boots]

    def fw_log(self) -> str:
        try:
            return (self.tmp / "fw.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """End the run now (a fixture's board that is no longer needed)."""
        self.vb.stop_requested = True
        if self.thread is not None:
            self.thread.join()

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join()
        self.vb.close()


def pulse_train(rate_hz: Any, until_s: float, rng_seed: int = 7, inp: int = 0) -> PulseMeter:
    """An S0 source at `rate_hz(k)` pulses per second in second k, silent from `until_s`.

    Pulses last 30..45 ms, so at 10 Hz the line is idle (after the 5 ms of
    release bounce) for at least 50 ms: an S0 output within EN 62053-31
    (pulse and pause >= 30 ms). The simulator's default 30..100 ms only
    limits a width by the interval to the previous pulse, which is not a
    valid S0 signal when the rate rises above 5 Hz.
    """
    def src(k: int, window_e: F64) -> F64:
        n = window_e.shape[0]
        r = 0.0 if k >= until_s else float(rate_hz(k))
        return np.full(n, r / n, dtype=np.float64)
    return PulseMeter(inp, 1.0, src, np.random.default_rng(rng_seed), width_s=(0.030, 0.045))
