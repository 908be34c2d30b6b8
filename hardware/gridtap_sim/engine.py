"""Simulation = scenario model + pulse meters + ground truth, served second by second."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gridtap_sim import scenarios
from gridtap_sim.board import Board
from gridtap_sim.model import TRUTH_HZ, Chunk

RECORD_VERSION = 1


class TruthLog:
    """The ground truth of every simulated second, kept compact for runs of weeks.

    One row per second: import, export and net energy, RMS current and net reactive energy
    (var.s) per CT, RMS voltage and frequency, in float64 arrays that grow by doubling
    (17 numbers, 136 bytes a second with 3 CTs, ~12 MB a simulated day). The 20 ms window
    energies and the samples of a chunk are not kept: the record does not use them, and they
    were ~1.5 KB a second (4 GB a month).
    """

    FIELDS = ("e_imp", "e_exp", "e_net", "irms", "e_q")

    def __init__(self, nct: int) -> None:
        self.n = 0
        self.per_ct = {f: np.zeros((1024, nct)) for f in self.FIELDS}
        self.vrms = np.zeros(1024)
        self.freq = np.zeros(1024)

    def __len__(self) -> int:
        return self.n

    def append(self, c: Chunk) -> None:
        if self.n == self.vrms.size:
            self.per_ct = {f: np.concatenate([a, np.zeros_like(a)]) for f, a in self.per_ct.items()}
            self.vrms = np.concatenate([self.vrms, np.zeros_like(self.vrms)])
            self.freq = np.concatenate([self.freq, np.zeros_like(self.freq)])
        for f, a in self.per_ct.items():
            a[self.n] = getattr(c, f)
        self.vrms[self.n] = c.vrms
        self.freq[self.n] = c.freq
        self.n += 1

    def column(self, name: str, n: int | None = None) -> npt.NDArray[np.float64]:
        """The first n seconds (all by default) of one field, a copy."""
        m = self.n if n is None else min(n, self.n)
        a = self.per_ct[name] if name in self.per_ct else getattr(self, name)
        return np.array(a[:m])


class Simulation:
    def __init__(self, board: Board, scenario: str, seed: int, start_of_day_s: float | None = None,
                 adc: bool = True, outage_every_s: float = 120.0,
                 battery: Callable[[], float] | None = None, ev: Callable[[], float] | None = None) -> None:
        self.board = board
        self.seed = seed
        # The battery's power is read once per simulated second and held for that second, so the
        # grid CT's truth of the second is the house plus exactly that power: `house_net_w` (the
        # house's net load at the grid connection without the battery, what a hybrid inverter's
        # own grid CT regulates to zero) is then the grid CT minus it, with no loop through itself.
        self._battery_src = battery
        self._battery_w = 0.0
        self.house_net_w = 0.0
        self.battery_log: list[float] = []  # the battery's W in each second made (the record's battery_w)
        held = None if battery is None else (lambda: self._battery_w)
        self.scn = scenarios.build(scenario, board, seed, start_of_day_s, outage_every_s, held, ev)
        self._grid_ct = self.scn.ct_names.index("grid") if "grid" in self.scn.ct_names else None
        self.model = scenarios.model_for(self.scn, board, seed, adc=adc)
        self.fs = board.sets_per_s
        self.next_k = 0
        self.chunks: dict[int, Chunk] = {}
        self.edges: list[tuple[float, int, int]] = []       # pending (t, input, level)
        self.truth = TruthLog(self.model.nct)
        self.keep_from = 0                                   # oldest second whose samples we keep
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: Future[tuple[Chunk, list[tuple[float, int, int]]]] | None = None
        self._spare: tuple[Chunk, list[tuple[float, int, int]]] | None = None

    def add_outages(self, spans: list[tuple[float, float]]) -> None:
        """Mains failures [(fail, restore)] in simulated seconds, besides the scenario's own.

        Only before the first second is made (truth and samples must agree); instants are put on
        the model's fine grid and overlapping failures merge into one.
        """
        if self.next_k:
            raise ValueError("outages must be added before the simulation starts")
        grid = float(TRUTH_HZ)
        merged: list[tuple[float, float]] = []
        for a, b in sorted([(round(a * grid) / grid, round(b * grid) / grid) for a, b in spans]
                           + list(self.scn.outages.spans)):
            if not 0.0 <= a < b:
                raise ValueError(f"outage ({a}, {b}): need 0 <= fail < restore")
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self.scn.outages.spans[:] = merged

    def start_prefetch(self) -> None:
        """Compute the next second on a worker thread while the firmware works on this one.

        numpy releases the GIL in its loops, so the model overlaps with the
        firmware process. Chunks are still made one at a time, in order, so
        the result is identical. While prefetching, only the worker touches
        the model and the pulse meters.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridtap-sim-model")

    def stop_prefetch(self) -> None:
        if self._ahead is not None:      # made already (meters stepped, noise drawn): keep it
            self._spare = self._ahead.result()
            self._ahead = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _produce(self, k: int) -> tuple[Chunk, list[tuple[float, int, int]]]:
        """Second k of the model and the S0 edges its energy makes (in order: meters keep state)."""
        if self._battery_src is not None:
            self._battery_w = float(self._battery_src())
            self.battery_log.append(self._battery_w)
        c = self.model.chunk(k)
        if self._battery_src is not None and self._grid_ct is not None:
            # in a mains failure the CT sees nothing: the inverter has no load to follow (0, not -battery)
            live = c.vrms > 100.0
            self.house_net_w = float(c.e_net[self._grid_ct]) - self._battery_w if live else 0.0
        new: list[tuple[float, int, int]] = []
        for mt in self.scn.meters:
            new += mt.step(k, c.window_e)
        return c, new

    def _make_chunk(self, k: int) -> tuple[Chunk, list[tuple[float, int, int]]]:
        spare = self._spare
        if spare is not None:
            self._spare = None
            assert spare[0].k == k
            if self._pool is not None:
                self._ahead = self._pool.submit(self._produce, k + 1)
            return spare
        if self._pool is None:
            return self._produce(k)
        ahead = self._ahead
        c = ahead.result() if ahead is not None else self._pool.submit(self._produce, k).result()
        self._ahead = self._pool.submit(self._produce, k + 1)
        return c

    def ensure_second(self, k: int) -> None:
        """Generate every second up to and including k, in order."""
        while self.next_k <= k:
            c, new = self._make_chunk(self.next_k)
            assert c.k == self.next_k
            self.chunks[self.next_k] = c
            if new:
                self.edges = sorted(self.edges + new)
            self.truth.append(c)
            for old in [j for j in self.chunks if j < min(self.keep_from, self.next_k)]:
                del self.chunks[old]
            self.next_k += 1

    def samples(self, n0: int, n: int) -> npt.NDArray[np.uint16]:
        """Sets n0 .. n0+n-1 (global set index) as an (n, channels) array."""
        fs = self.fs
        k_last = (n0 + n - 1) // fs
        if n0 // fs < self.next_k and n0 // fs not in self.chunks:
            raise ValueError(f"samples of second {n0 // fs} were already discarded (time only moves forward)")
        self.keep_from = n0 // fs
        self.ensure_second(k_last)
        parts = []
        i = n0
        end = n0 + n
        while i < end:
            k = i // fs
            j = i - k * fs
            take = min(fs - j, end - i)
            parts.append(self.chunks[k].samples[j:j + take])
            i += take
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def take_edges(self, t0: float, t1: float) -> list[tuple[float, int, int]]:
        """Edges with t < t1 (older than t0 are discarded: the board was not listening)."""
        self.ensure_second(int(math.floor(t1)))
        cut = 0
        while cut < len(self.edges) and self.edges[cut][0] < t1:
            cut += 1
        out = [e for e in self.edges[:cut] if e[0] >= t0]
        del self.edges[:cut]
        return out

    def run_model(self, duration_s: float) -> float:
        """Generate `duration_s` simulated seconds with no firmware; return wall seconds."""
        t0 = time.perf_counter()
        for k in range(self.next_k, int(math.ceil(duration_s))):
            self.keep_from = k
            self.ensure_second(k)
        return time.perf_counter() - t0

    # -- ground truth --------------------------------------------------------
    def truth_arrays(self, n_seconds: int | None = None) -> dict[str, Any]:
        n = len(self.truth) if n_seconds is None else min(n_seconds, len(self.truth))
        def stack(attr: str) -> npt.NDArray[np.float64]:
            return self.truth.column(attr, n)
        starts: list[float] = []
        inputs: list[int] = []
        widths: list[float] = []
        for mt in self.scn.meters:
            starts += mt.starts
            inputs += [mt.input] * len(mt.starts)
            widths += mt.widths
        order = np.argsort(np.asarray(starts), kind="stable")
        limit = float(n)
        st = np.asarray(starts)[order] if starts else np.zeros(0)
        keep = st < limit
        return {
            "t_s": np.arange(n, dtype=np.float64),
            "e_imp_j": stack("e_imp"),
            "e_exp_j": stack("e_exp"),
            "e_net_j": stack("e_net"),
            "irms_a": stack("irms"),
            "e_q_vars": stack("e_q"),
            "vrms_v": self.truth.column("vrms", n),
            "freq_hz": self.truth.column("freq", n),
            "pulse_t_s": st[keep],
            "pulse_input": (np.asarray(inputs, dtype=np.uint8)[order] if inputs
                            else np.zeros(0, np.uint8))[keep],
            "pulse_width_s": (np.asarray(widths)[order] if widths else np.zeros(0))[keep],
            "outage_s": np.asarray(
                [s for s in self.scn.outages.spans if s[0] < limit], dtype=np.float64).reshape(-1, 2),
            **({"battery_w": np.asarray(self.battery_log[:n], dtype=np.float64)}
               if self._battery_src is not None else {}),
        }

    def meta(self) -> dict[str, Any]:
        return {
            "format": "gridtap-sim-record",
            "version": RECORD_VERSION,
            "seed": self.seed,
            "scenario": self.scn.name,
            "description": self.scn.description,
            "start_of_day_s": self.scn.start_of_day_s,
            "ct_names": self.scn.ct_names,
            "ct_phase_deg": self.scn.ct_phase_deg,
            "loads": [{"name": ld.name, "kind": ld.kind, "cts": sorted(ld.cts), "p_nominal_w": ld.p_nominal_w}
                      for ld in self.scn.loads],
            "meters": [{"input": mt.input, "unit_per_pulse": mt.unit_per_pulse} for mt in self.scn.meters],
            "board_file": str(self.board.path),
            "board": json.loads(self.board.text),
            "adc_offset_counts": self.model.offset.tolist(),
            "adc_gain": self.model.gain.tolist(),
            "adc_noise_sd_counts": self.model.noise_sd,
        }

    def write_record(self, path: str | Path, n_seconds: int | None = None,
                     extra_meta: dict[str, Any] | None = None,
                     extra_arrays: dict[str, Any] | None = None) -> None:
        meta = self.meta()
        meta.update(extra_meta or {})
        arrays = self.truth_arrays(n_seconds)
        arrays.update(extra_arrays or {})
        with open(path, "wb") as f:
            np.savez_compressed(f, meta=np.asarray(json.dumps(meta)), **arrays)


def load_record(path: str | Path) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """Read a record back: (meta, arrays)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in z.files if k != "meta"}
    return meta, arrays
