"""The e2e comparison: what each stage holds against the firmware, and the firmware against the truth.

Units: registers in thousandths (mWh) as the firmware keeps them; results in Wh.
docs/e2e.md explains the definitions; in short:

* **truth** is the simulator's record (exact energy per second per CT from the
  primary v·i, exact pulse instants), minus what no board can observe: energy
  that flows while the board is still booting after the mains returns.
* **firmware stage**: the firmware's own metrology error (CT gain/phase, ADC)
  is not loss. Loss happens where the register is not continuous: across a
  reset. For every reset the register step from the last tuple before it to
  the first tuple after it is compared with the truth energy between the
  instants the firmware committed those two registers (the tap's `at`),
  scaled by the run's metrology ratio (which changes the few Wh of such a
  span by a few mWh). Pulse counts are compared exactly.
* **chain stages** (RRD, MQTT, Flukso, PVOutput) are compared with the
  firmware's last register, which is exactly the number they should end on.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gridtap.store.rrd import parse_fetch
from gridtap_sim.engine import load_record

Sensors = tuple[tuple[str, str, int, str, str | None], ...]
TOL_WH = 1.0        # the documented rounding per sensor and stage
# A PVOutput status carries a lifetime total interpolated at its boundary between the samples the
# uploader holds (at most 120 s apart; the spool keeps the ends of each minute while an uplink is
# down) and rounded to a whole Wh: half a Wh of rounding plus the curvature of the load inside that
# gap. One status of 286 in the e2e day was 1.09 Wh off; no energy is lost (the totals are exact).
PVO_TOL_WH = 2.0
# A register stamped this much before its boot's newest reading is refused by the daemon
# (gridtap.board.plausible.FUTURE_TOLERANCE_S); one stamped less before is taken, with no point
LATE_REFUSED_S = 60.0
PULSE_LAG_S = 0.25  # a pulse is counted after its debounce; one that started this recently may be pending


def load_tuples(paths: list[Path], offsets: list[float] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n, p in enumerate(paths):
        off = offsets[n] if offsets else 0.0
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the end of the process
            # a CT register's value is as of its last commit ("at"), a pulse count as of sending
            r["gt"] = r.get("at", r["sim_t"]) + off
            r["seg"] = n
            out.append(r)
    return out


def series_of(sensors: Sensors) -> list[tuple[str, str, int, str]]:
    """(series id, kind, index, register) per series: register "imp", "exp" or "reg" (pulse)."""
    out = []
    for _name, kind, idx, sid, exp in sensors:
        if kind == "ct":
            out.append((sid, "c", idx, "imp"))
            if exp:
                out.append((exp, "c", idx, "exp"))
        else:
            out.append((sid, "p", idx, "reg"))
    return out


def firmware_finals(tuples: list[dict[str, Any]], sensors: Sensors) -> dict[str, int]:
    """The register of the last tuple the firmware emitted, per series (mWh)."""
    out: dict[str, int] = {}
    for sid, k, idx, reg in series_of(sensors):
        # a resent (RETX) tuple carries an older register: the newest *new* tuple holds the final value
        own = [r for r in tuples if r["k"] == k and r["i"] == idx and not r["retx"]]
        if own:
            out[sid] = int(max(own, key=lambda r: r["gt"])[reg])
    return out


def host_series(tuples: list[dict[str, Any]], k: str, idx: int, reg: str,
                overlaps: list[tuple[float, float, int]] | None = None) -> list[tuple[float, int]]:
    """(board time in whole s, host total in mWh) per new tuple: the registers through the epoch rule.

    `overlaps` collects, per reading stamped before the newest (the board clock was set back),
    (its stamp, the newest stamp, its total): see `Reference`.

    Within a boot a register only grows. Across a reset it either carries on (restored from
    EEPROM, maybe with energy counted since) or starts lower (a reset that lost energy); then
    the host keeps its total and adds only what the new boot counts from its first tuple
    (`gridtap.store.epochs`). The firmware stage is charged with such a fall; the outputs are not.
    """
    own = sorted((r for r in tuples if r["k"] == k and r["i"] == idx and not r["retx"]),
                 key=lambda r: r["gt"])
    out: list[tuple[float, int]] = []
    total = offset = raw = 0
    epoch: tuple[int, int] | None = None
    newest = 0.0
    for r in own:
        v = int(r[reg])
        e = (r["seg"], r["boot"])
        tf = float(r["t"]) + int(r.get("ms", 0)) / 1000.0
        if e == epoch and v >= raw and tf < newest:
            # A register at least the boot's newest, stamped before it: TIME_SET set the board
            # clock back. The daemon refuses it when stamped more than a minute before; else it
            # places the reading right after the newest one (docs/architecture.md, "Clock steps").
            if v > raw and tf >= newest - LATE_REFUSED_S:
                raw = v
                total = max(total, offset + raw)
                out.append((float(math.floor(newest)), total))
                if overlaps is not None:
                    overlaps.append((float(math.floor(tf)), newest, total))
            continue
        newest = tf if e != epoch else max(newest, tf)
        if epoch is None:
            offset, raw = 0, v
        elif e != epoch:
            if v < raw:
                offset = total - v
            raw = v
        else:
            raw = max(raw, v)
        epoch = e
        total = max(total, offset + raw)
        out.append((float(r["t"]), total))
    return out


def late_stamped(tuples: list[dict[str, Any]]) -> int:
    """CT tuples stamped before the newest of their series and boot: the board clock was set back."""
    newest: dict[tuple[int, int, int], float] = {}
    n = 0
    for r in sorted((r for r in tuples if r["k"] == "c" and not r["retx"]), key=lambda r: r["gt"]):
        key = (r["seg"], r["boot"], r["i"])
        tf = float(r["t"]) + int(r.get("ms", 0)) / 1000.0
        n += tf < newest.get(key, tf)
        newest[key] = max(tf, newest.get(key, tf))
    return n


def host_reference(tuples: list[dict[str, Any]], sensors: Sensors) -> dict[str, int]:
    """What every output must end on (mWh): the last host total of `host_series`."""
    out: dict[str, int] = {}
    for sid, k, idx, reg in series_of(sensors):
        ser = host_series(tuples, k, idx, reg)
        if ser:
            out[sid] = ser[-1][1]
    return out


class Truth:
    """Cumulative truth over the concatenated segments, per CT register, in mWh at global time t."""

    def __init__(self, segs: list[tuple[float, dict[str, Any], dict[str, Any]]], boot_s: float) -> None:
        self.parts = []
        self.outages: list[list[tuple[float, float]]] = []  # per part, local seconds: the mains is off
        self.pulses: list[tuple[float, int]] = []
        self.unobservable: list[tuple[float, float]] = []
        for off, arrays, summary in segs:
            imp = np.asarray(arrays["e_imp_j"]) / 3.6  # J -> mWh
            exp = np.asarray(arrays["e_exp_j"]) / 3.6
            zero = np.zeros((1, imp.shape[1]))
            cum_i = np.vstack([zero, np.cumsum(imp, 0)])
            self.parts.append((off, cum_i, np.vstack([zero, np.cumsum(exp, 0)])))
            spans = np.asarray(arrays.get("outage_s", np.zeros((0, 2)))).reshape(-1, 2)
            self.outages.append([(float(a), float(b)) for a, b in spans])
            for t, inp in zip(arrays["pulse_t_s"], arrays["pulse_input"], strict=True):
                self.pulses.append((off + float(t), int(inp)))
            for t, cause in summary["boots"]:
                if cause in (2, 3):  # brownout / watchdog: nobody listened for boot_s before this boot
                    self.unobservable.append((off + t - boot_s, off + t))
        self.pulses.sort()

    @staticmethod
    def _powered(spans: list[tuple[float, float]], a: float, b: float) -> float:
        """Seconds of [a, b] with the mains on."""
        off = sum(max(0.0, min(b, s1) - max(a, s0)) for s0, s1 in spans)
        return max(0.0, (b - a) - off)

    def _cum(self, t: float, ch: int, reg: str) -> float:
        """Energy up to t; within a second it is spread evenly over the time the mains was on."""
        total = 0.0
        for (off, ci, ce), spans in zip(self.parts, self.outages, strict=True):
            c = ci if reg == "imp" else ce
            n = c.shape[0] - 1
            if n == 0:
                continue
            x = min(max(t - off, 0.0), float(n))
            k = min(int(math.floor(x)), n - 1)
            on = self._powered(spans, k, k + 1.0)
            frac = self._powered(spans, k, x) / on if on > 0 else 0.0
            total += float(c[k, ch] + (c[k + 1, ch] - c[k, ch]) * frac)
        return total

    def energy(self, a: float, b: float, ch: int, reg: str) -> float:
        """Observable truth energy (mWh) in [a, b]."""
        e = self._cum(b, ch, reg) - self._cum(a, ch, reg)
        for u0, u1 in self.unobservable:
            lo, hi = max(a, u0), min(b, u1)
            if hi > lo:
                e -= self._cum(hi, ch, reg) - self._cum(lo, ch, reg)
        return e

    def pulses_between(self, inp: int, a: float, b: float) -> int:
        return sum(1 for t, i in self.pulses if i == inp and a <= t < b
                   and not any(u0 <= t < u1 for u0, u1 in self.unobservable))


def firmware_stage(tuples: list[dict[str, Any]], truth: Truth, sensors: Sensors) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for sid, k, idx, reg in series_of(sensors):
        own = [r for r in tuples if r["k"] == k and r["i"] == idx and not r["retx"]]
        own.sort(key=lambda r: r["gt"])
        if not own:
            per[sid] = {"error": "the firmware emitted no tuple"}
            continue
        last = own[-1]
        if k == "c":
            t_total = truth.energy(0.0, last["gt"], idx, reg)
            ratio = last[reg] / t_total if t_total > 1000.0 else 1.0
            gaps = []
            for a, b in zip(own, own[1:], strict=False):
                if (a["seg"], a["boot"]) == (b["seg"], b["boot"]):
                    continue
                d_truth = truth.energy(a["gt"], b["gt"], idx, reg) * ratio
                gaps.append({"from": round(a["gt"], 3), "to": round(b["gt"], 3),
                             "d_register_wh": (b[reg] - a[reg]) / 1000.0, "d_truth_wh": d_truth / 1000.0,
                             "lost_wh": (d_truth - (b[reg] - a[reg])) / 1000.0})
            lost = sum(g["lost_wh"] for g in gaps)
            per[sid] = {"register_wh": last[reg] / 1000.0, "truth_wh": t_total / 1000.0,
                        "metrology_pct": 100.0 * (ratio - 1.0), "resets": len(gaps),
                        "lost_wh": lost,
                        "worst_reset_wh": max((abs(g["lost_wh"]) for g in gaps), default=0.0),
                        "gaps": gaps}
        else:
            t_e = last["gt"]
            lo = truth.pulses_between(idx, -1.0, t_e - PULSE_LAG_S)
            hi = truth.pulses_between(idx, -1.0, t_e)
            n = int(last["pulses"])
            lost = max(0, lo - n)
            extra = max(0, n - hi)
            per[sid] = {"register_wh": last[reg] / 1000.0, "pulses": n, "truth_pulses": [lo, hi],
                        "lost_wh": float(lost), "extra_wh": float(extra),
                        "register_matches_pulses": last[reg] == n * 1000}
    return per


def rrd_read(path: Path, t_end: float) -> dict[str, Any]:
    info = subprocess.run(["rrdtool", "info", str(path)], capture_output=True, text=True, check=True).stdout
    vals = {}
    for line in info.splitlines():
        key, _, v = line.partition(" = ")
        vals[key.strip()] = v.strip().strip('"')
    last_ds = vals.get("ds[counter].last_ds", "U")
    last_update = int(vals.get("last_update", "0"))
    return {"last_ds": None if last_ds in ("U", "") else float(last_ds), "last_update": last_update}


def rrd_integral(path: Path, start: int, end: int) -> tuple[float, int]:
    """Sum of rate x step (mWh) of `rrdtool fetch AVERAGE` over [start, end], finest RRA covering it."""
    span = end - start
    res = 60 if span <= 86000 else 900 if span <= 6 * 86400 else 86400
    out = subprocess.run(["rrdtool", "fetch", str(path), "AVERAGE", "-r", str(res), "-s", str(start),
                          "-e", str(end)], capture_output=True, text=True, check=True).stdout
    total = 0.0
    step = res
    rows = 0
    prev = None
    for line in out.splitlines():
        ts, sep, rest = line.partition(":")
        if not sep or not ts.strip().isdigit():
            continue
        t = int(ts)
        if prev is not None:
            step = t - prev
        prev = t
        v = rest.strip()
        if v.lower() in ("nan", "-nan", ""):
            continue
        total += float(v) * step
        rows += 1
    return total, step


def _status_end(d: str, t: str) -> float:
    day = datetime.strptime(d, "%Y%m%d").replace(tzinfo=UTC)
    if t == "23:59":
        return (day + timedelta(days=1)).timestamp()
    hh, mm = t.split(":")
    return (day + timedelta(hours=int(hh), minutes=int(mm))).timestamp()


def interp_register(tuples: list[dict[str, Any]], k: str, idx: int, reg: str, t_board: float) -> float | None:
    # whole seconds, as the daemon's outputs get them (Sink.counter takes t in s; the ms are dropped);
    # host totals, which is what the outputs carry
    return series_reference(tuples, k, idx, reg).at(t_board)


def series_reference(tuples: list[dict[str, Any]], k: str, idx: int, reg: str) -> Reference:
    """The Reference of one series, with the overlaps of its board clock steps."""
    overlaps: list[tuple[float, float, int]] = []
    points = host_series(tuples, k, idx, reg, overlaps)
    return Reference(points, hold=k == "p", overlaps=overlaps)


class Reference:
    """One series' host totals (mWh) at whole board seconds, looked up by time.

    Only tuples stamped with a set clock count (an unset clock stamps 1970). `hold`: a PULSE is
    stamped with its last pulse, so its count holds after the last tuple.
    """

    def __init__(self, points: list[tuple[float, int]], hold: bool = False,
                 overlaps: list[tuple[float, float, int]] | None = None) -> None:
        own = sorted(p for p in points if p[0] > 1234567890)
        self.ts = [a for a, _ in own]
        self.vs = [b for _, b in own]
        self.hold = hold
        # (from, to, total): after a board clock step, a reading with this total was stamped `from`
        # and is placed at `to` (the newest stamp). Which of the two a stage holds depends on what
        # reached the daemon first: a reading stamped before the step that it only got as a resend
        # after the late ones (it was down) is dropped, and the late ones keep their stamps. So a
        # total up to this one is right anywhere in between.
        self.overlaps = sorted(overlaps or [])
        self.overlap_from = [a for a, _b, _v in self.overlaps]

    def overlap_hi(self, t: float) -> int | None:
        """The highest total a reading stamped in an overlap around t may carry; None: no overlap."""
        j = bisect.bisect_right(self.overlap_from, t)
        his = [v for a, b, v in self.overlaps[max(0, j - 8):j] if a <= t <= b]
        return max(his) if his else None

    def at(self, t: float) -> float | None:
        """The total at t, linear between the tuples around it; None outside the tuples."""
        j = bisect.bisect_right(self.ts, t)
        if j == 0:
            return None
        if j >= len(self.ts):
            return float(self.vs[-1]) if self.ts[-1] == t or self.hold else None
        ta, va, tb, vb = self.ts[j - 1], self.vs[j - 1], self.ts[j], self.vs[j]
        if ta == t or tb == ta:
            return float(va)
        return va + (vb - va) * (t - ta) / (tb - ta)

    def bracket(self, t: float) -> tuple[int, int] | None:
        """The totals of the last tuple at or before t and the first at or after it (a held series
        keeps its last total after its last tuple, as `at` does)."""
        j = bisect.bisect_right(self.ts, t)
        if j == 0 or (j >= len(self.ts) and self.ts[-1] != t and not self.hold):
            return None
        if self.ts[j - 1] == t:
            # Readings that share this second (the spool keeps the highest; an uploader may have
            # sent an earlier one; the tap keeps only some of them): any total from the first of
            # them up to the next stamped reading.
            lo, hi = self.vs[bisect.bisect_left(self.ts, t)], self.vs[j] if j < len(self.ts) else self.vs[-1]
        else:
            lo = self.vs[j - 1]
            hi = lo if j >= len(self.ts) else self.vs[j]
        over = self.overlap_hi(t)
        return lo, hi if over is None else max(hi, over)

    def counting(self, a: float, b: float) -> bool:
        """The board reported this series on both sides of [a, b]: it was counting through it."""
        return bool(self.ts) and self.ts[0] <= a and self.ts[-1] >= b


# The time series, not just the totals (issue 13, finding 6). A total that ends right can hide a
# history with holes (an RRD with NaN rows where an orphaned rrdcached dropped its cache) or a
# status averaged over more than its label says (PVOutput after a restart).
ROW_S = 60             # the RRD archive the series are checked on: 1 min x 1 day
# A row's energy against the register deltas is reported, not failed: when the daemon was down the
# board's ring (128 tuples) thins what it holds to the first and last tuple per bucket, so the RRD
# interpolates across what was thinned (energy exact, the row shape not).
ROW_TOL_WH = 1.0
POWER_TOL_W = 3.0      # a status's power against its interval's energy: whole W, plus interpolation
POWER_TOL_PCT = 2.0


def rrd_rows_check(rows: dict[int, float | None], ref: Reference, row_s: int = ROW_S,
                   tol_wh: float = ROW_TOL_WH) -> dict[str, Any]:
    """Every RRD row (end instant -> rate in mWh/s, None for NaN) against the register deltas.

    A row inside the span the board reported (its first to its last tuple) must hold a value:
    the archive is DERIVE with a 100-day heartbeat, so a gap in the updates is filled with the
    flat average and a NaN row there means updates written and lost. A row's energy is compared
    with the register's advance over the row (both interpolate the same whole-second stamps);
    beyond `tol_wh` it is counted in rows_wrong.
    """
    missing: list[int] = []
    wrong: list[tuple[int, float, float]] = []
    checked = 0
    for t in sorted(rows):
        if not ref.counting(t - row_s, t):
            continue
        checked += 1
        rate = rows[t]
        if rate is None:
            missing.append(t)
            continue
        a, b = ref.at(t - row_s), ref.at(t)
        assert a is not None and b is not None
        got, want = rate * row_s / 1000.0, (b - a) / 1000.0
        if abs(got - want) > tol_wh:
            wrong.append((t, round(got, 4), round(want, 4)))
    return {"rows_checked": checked, "rows_missing": len(missing), "rows_wrong": len(wrong),
            "holes": _spans(missing, row_s)[:20], "wrong_examples": wrong[:10]}


def _spans(ts: list[int], step: int) -> list[tuple[int, int]]:
    """Consecutive row instants merged into (first row start, last row end) spans."""
    out: list[tuple[int, int]] = []
    for t in ts:
        if out and out[-1][1] == t - step:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t - step, t))
    return out


def pvoutput_check(statuses: dict[tuple[str, str], dict[str, str]], energy: dict[str, Reference],
                   power: tuple[str, Reference] | None, interval_s: int, tol_wh: float = PVO_TOL_WH,
                   quiet: Sequence[tuple[float, float]] = ()) -> dict[str, Any]:
    """Every PVOutput status against the registers: its interval, its power and its energies.

    `energy`: field -> the series whose lifetime energy it carries (Wh); `power`: the field that
    carries a series' power (W) over the status's interval. An interval end the board counted
    through with no status is missing: its energy went into a later status (or nowhere). A status
    whose power is not its labelled interval's energy over the interval's length averages over
    something else. The first status of the run opens the grid wherever the first sample fell.
    `quiet`: spans in which the board sent no tuple; an interval that touches one (or follows
    one) is not held to its power nor counted missing: no uploader can know its power in time.
    """

    def hushed(end: float) -> bool:
        return any(a < end and b > end - 2 * interval_s for a, b in quiet)

    ends = {_status_end(d, t): (d, t) for d, t in statuses}
    order = sorted(ends)
    missing: list[int] = []
    mislabelled: list[dict[str, Any]] = []
    energy_wrong: list[dict[str, Any]] = []
    for n, end in enumerate(order):
        st = statuses[ends[end]]
        for fld, ref in energy.items():
            want = ref.at(end)
            if fld in st and want is not None and abs(float(st[fld]) - want / 1000.0) > tol_wh:
                over = ref.overlap_hi(end)   # a board clock step: any total up to the late one's
                if over is None or not want / 1000.0 - tol_wh <= float(st[fld]) <= over / 1000.0 + tol_wh:
                    energy_wrong.append({"end": end, "field": fld, "got": float(st[fld]),
                                         "want": want / 1000.0})
        if n == 0 or power is None or power[0] not in st or hushed(end):
            continue
        a, b = power[1].at(end - interval_s), power[1].at(end)
        if a is None or b is None:
            continue
        want_w = (b - a) / 1000.0 * 3600.0 / interval_s
        got_w = float(st[power[0]])
        if abs(got_w - want_w) > max(POWER_TOL_W, POWER_TOL_PCT / 100.0 * abs(want_w)):
            mislabelled.append({"end": end, "got_w": got_w, "interval_w": round(want_w, 1)})
    if order:
        refs = [*energy.values(), *([power[1]] if power else [])]
        for end in range(int(order[0]), int(order[-1]) + 1, interval_s):
            if end not in ends and not hushed(end) and any(r.counting(end - interval_s, end) for r in refs):
                missing.append(end)
    return {"statuses_checked": len(order), "intervals_missing": len(missing),
            "intervals_mislabelled": len(mislabelled), "energy_wrong": len(energy_wrong),
            "missing_spans": _spans(missing, interval_s)[:20], "mislabelled_examples": mislabelled[:10],
            "energy_wrong_examples": energy_wrong[:10]}


def flukso_check(points: list[tuple[int, int]], ref: Reference, tol_wh: float = TOL_WH) -> dict[str, Any]:
    """Every point the Flukso server accepted: stamps that only go forward, a counter that never
    falls, and each counter (whole Wh, rounded down) between the host totals of the tuples
    around its stamp (the tap keeps only the tuples around each minute, so that is the check
    that needs no guess between them)."""
    wrong: list[tuple[int, int, str]] = []
    prev: tuple[int, int] | None = None
    for ts, wh in points:
        if prev is not None and (ts <= prev[0] or wh < prev[1]):
            wrong.append((ts, wh, f"after ({prev[0]}, {prev[1]}): goes back"))
        br = ref.bracket(ts)
        if br is None:
            wrong.append((ts, wh, "no board tuple around this stamp"))
        elif not br[0] / 1000.0 - 1.0 - tol_wh <= wh <= br[1] / 1000.0 + tol_wh:
            wrong.append((ts, wh, f"outside the registers {br[0] / 1000.0:.3f}..{br[1] / 1000.0:.3f} Wh"))
        prev = (ts, wh)
    return {"points": len(points), "points_wrong": len(wrong), "wrong_examples": wrong[:10]}


def load_rrd_rows(path: Path) -> dict[str, dict[int, float | None]]:
    """The 60 s rows the harness read from each RRD during and after a run (`rrd_rows.json`)."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {sid: {int(t): v for t, v in rows.items()} for sid, rows in raw.items()}


def load_flukso_trimmed(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Points the harness took off the Flukso server to bound its memory (`flukso_trimmed.jsonl`)."""
    out: dict[str, list[tuple[int, int]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            sid, pts = json.loads(line)
            out.setdefault(sid, []).extend((int(a), int(b)) for a, b in pts)
    return out


def rrd_rows(path: Path, since: int = 0, daemon: Path | None = None) -> dict[int, float | None]:
    """The final 60 s rows of one RRD from `since` (at most the archive's day) to its last update.

    With `daemon` (an rrdcached socket) the file is flushed first. A row is final once the file's
    last update reached its end; later ones are NaN only because they are not written yet.
    {} when the file cannot be read (a harvest that fails is retried, not counted)."""
    if daemon is not None:
        subprocess.run(["rrdtool", "flushcached", "--daemon", f"unix:{daemon}", str(path)],
                       capture_output=True, timeout=60)
    try:
        last = int(rrd_read(path, 0)["last_update"])
    except (subprocess.CalledProcessError, ValueError):
        return {}
    start = max(since, last - 1440 * ROW_S + 2 * ROW_S)
    got = subprocess.run(["rrdtool", "fetch", str(path), "AVERAGE", "-r", str(ROW_S), "-s", str(start),
                          "-e", str(last)], capture_output=True, text=True, timeout=60)
    vals = parse_fetch(got.stdout) if got.returncode == 0 else []
    if len(vals) < 2 or vals[1][0] - vals[0][0] != ROW_S:
        return {}  # older than the 1-minute archive: rrdtool answered from a coarser one
    return {t: v for t, v in vals if start < t <= last}


def series_failures(per: dict[str, dict[str, Any]], pv: dict[str, Any]) -> list[str]:
    """One line per stage whose time series is wrong somewhere (the totals may still be right)."""
    out = []
    for sid, row in per.items():
        rr, fs = row["rrd_rows"], row["flukso_series"]
        if rr["rows_missing"]:
            out.append(f"{row['name']} ({sid}) rrd rows: {rr['rows_missing']} NaN where the board "
                       f"counted {rr['holes'][:3]}")
        if fs["points_wrong"]:
            out.append(f"{row['name']} ({sid}) flukso points: {fs['points_wrong']} wrong "
                       f"{fs['wrong_examples'][:2]}")
    if pv["intervals_missing"] or pv["intervals_mislabelled"] or pv["energy_wrong"]:
        out.append(f"pvoutput statuses: {pv['intervals_missing']} intervals missing "
                   f"{pv['missing_spans'][:3]}, {pv['intervals_mislabelled']} averaging other than "
                   f"their interval {pv['mislabelled_examples'][:2]}, {pv['energy_wrong']} energies off "
                   f"{pv['energy_wrong_examples'][:2]}")
    return out


def compare(work: Path, sensors: Sensors, pvo_fields: dict[str, str], stages: dict[str, Any],
            segments: list[dict[str, Any]], t0: float, power_field: tuple[str, str] | None = None,
            pvo_interval_s: int = 300) -> dict[str, Any]:
    offsets = [float(s["t_from"]) for s in segments]
    tuples = load_tuples([work / f"seg{n + 1}" / "tuples.jsonl" for n in range(len(segments))], offsets)
    segs = []
    boot_s = 0.3
    sums = []
    for n, off in enumerate(offsets):
        d = work / f"seg{n + 1}"
        meta, arrays = load_record(d / "record.npz")
        summary = json.loads((d / "summary.json").read_text())
        boot_s = float(meta["board"]["sim"]["boot_s"])
        segs.append((off, arrays, summary))
        sums.append(summary)
    truth = Truth(segs, boot_s)
    finals = host_reference(tuples, sensors)
    registers = firmware_finals(tuples, sensors)
    fw = firmware_stage(tuples, truth, sensors)
    names = {}
    for name, _kind, _idx, sid, exp in sensors:
        names[sid] = name
        if exp:
            names[exp] = f"{name}.export"
    kinds = {sid: (k, idx, reg) for sid, k, idx, reg in series_of(sensors)}

    # the daemon's own totals
    host: dict[str, int] = {}
    db = work / "state" / "counters.sqlite"
    if db.exists():
        con = sqlite3.connect(str(db))
        host = {s: int(t) for s, t in con.execute("SELECT sensor, total FROM series")}
        con.close()

    refs = {sid: series_reference(tuples, k, idx, reg) for sid, k, idx, reg in series_of(sensors)}
    rows = load_rrd_rows(work / "rrd_rows.json")
    trimmed = load_flukso_trimmed(work / "flukso_trimmed.jsonl")
    per: dict[str, dict[str, Any]] = {}
    for sid, want in finals.items():
        k, idx, reg = kinds[sid]
        row: dict[str, Any] = {"name": names[sid], "firmware_register_wh": registers[sid] / 1000.0,
                               "reference_wh": want / 1000.0, "firmware": fw.get(sid, {})}
        row["daemon_total_wh"] = host.get(sid, 0) / 1000.0
        rp = work / "rrd" / f"{sid}.rrd"
        if rp.exists():
            r = rrd_read(rp, 0)
            row["rrd_last_ds_wh"] = None if r["last_ds"] is None else r["last_ds"] / 1000.0
            first = min((x["t"] for x in tuples if x["k"] == k and x["i"] == idx and x["t"] > 1234567890),
                        default=r["last_update"])
            integral, res = rrd_integral(rp, int(first), int(r["last_update"]))
            row["rrd_archive_wh"] = integral / 1000.0
            row["rrd_archive_res_s"] = res
        else:
            row["rrd_last_ds_wh"] = None
        row["rrd_rows"] = rrd_rows_check(rows.get(sid, {}), refs[sid])
        mq = stages["mqtt"].get(sid)
        row["mqtt_wh"] = None if mq is None else float(mq[1])
        fl = stages["flukso"].get(sid) or []
        row["flukso_wh"] = fl[-1][1] if fl else None
        row["flukso_points"] = len(fl)
        row["flukso_series"] = flukso_check(trimmed.get(sid, []) + [tuple(p) for p in fl], refs[sid])
        fld = pvo_fields.get(names[sid])
        st = stages["pvoutput"]
        having = [dt for dt in st if st[dt].get(fld) is not None] if fld else []
        if having:  # the last status that carries this series (an interval without a sample has no value)
            last_key = max(having, key=lambda dt: _status_end(*dt))
            end = _status_end(*last_key)
            v = st[last_key].get(fld)
            row["pvoutput_wh"] = None if v is None else float(v)
            exp_at = interp_register(tuples, k, idx, reg, end)
            row["pvoutput_expected_wh"] = None if exp_at is None else exp_at / 1000.0
            row["pvoutput_last_status_t"] = end
        per[sid] = row

    def loss(got: float | None, want_wh: float, floor: bool = False) -> float:
        if got is None:
            return want_wh  # nothing arrived: all of it is missing
        return (math.floor(want_wh + 1e-9) if floor else want_wh) - got

    by_stage = {"firmware": 0.0, "rrd": 0.0, "mqtt": 0.0, "flukso": 0.0, "pvoutput": 0.0}
    fails: list[str] = []
    for sid, row in per.items():
        w = row["reference_wh"]
        f = row["firmware"]
        losses = {
            "firmware": float(f.get("lost_wh", 0.0)) + float(f.get("extra_wh", 0.0)),
            "rrd": loss(row.get("rrd_last_ds_wh"), w),
            "mqtt": loss(row["mqtt_wh"], w),
            "flukso": loss(row["flukso_wh"], w, floor=True),
        }
        if "pvoutput_wh" in row:
            pe = row.get("pvoutput_expected_wh")
            if pe is None:  # the tap has no tuples around that instant: say so, do not guess
                row["pvoutput_not_comparable"] = True
                fails.append(f"{row['name']} ({sid}) pvoutput: no firmware tuples around its last status")
            else:
                losses["pvoutput"] = loss(row["pvoutput_wh"], pe)
        row["lost_wh"] = losses
        for stage, v in losses.items():
            # within the documented rounding a difference is not loss; beyond it, count all of it
            counted = abs(v) if abs(v) > TOL_WH else 0.0
            by_stage[stage] += counted
            if counted:
                fails.append(f"{row['name']} ({sid}) {stage}: {v:+.3f} Wh")
    pvo = stages["pvoutput"]
    by_name = {row["name"]: sid for sid, row in per.items()}
    energy_fields = {fld: refs[by_name[name]] for name, fld in pvo_fields.items() if name in by_name}
    power = None
    if power_field and power_field[1] in by_name:
        power = (power_field[0], refs[by_name[power_field[1]]])
    pv_series = pvoutput_check(pvo, energy_fields, power, pvo_interval_s)
    fails += series_failures(per, pv_series)
    rows_missing = sum(r["rrd_rows"]["rows_missing"] for r in per.values())
    rows_wrong = sum(r["rrd_rows"]["rows_wrong"] for r in per.values())
    fl_wrong = sum(r["flukso_series"]["points_wrong"] for r in per.values())
    pv_req = stages.get("pvoutput_requests", [])
    too_old = sum(1 for e, code, body, _at in pv_req if code == 400 and "older than" in body)
    sim_s = sum(float(s["sim_s"]) for s in sums)
    return {
        "ok": not fails,
        "failures": fails,
        "sim_days": sim_s / 86400.0,
        "wh_lost_by_stage": {k: round(v, 3) for k, v in by_stage.items()},
        "wh_lost_total": round(sum(by_stage.values()), 3),
        "rrd_rows_checked": sum(r["rrd_rows"]["rows_checked"] for r in per.values()),
        "rrd_rows_missing": rows_missing,
        "rrd_rows_wrong": rows_wrong,
        "pvoutput_intervals_missing": pv_series["intervals_missing"],
        "pvoutput_intervals_mislabelled": pv_series["intervals_mislabelled"],
        "pvoutput_series": pv_series,
        "flukso_points_checked": sum(r["flukso_series"]["points"] for r in per.values()),
        "flukso_points_wrong": fl_wrong,
        "late_stamped_tuples": late_stamped(tuples),
        "per_series": per,
        "pvoutput": {"statuses": len(pvo), "requests": len(pv_req),
                     "refused_older_than_limit": too_old},
        "board": [{"boots": len(s["boots"]), "brownouts": len(s["brownout_flags_s"]),
                   "brownouts_in_eeprom_write": s["brownouts_in_eeprom_write"], "torn_pages": s["torn_pages"],
                   "ee_writes": s["ee_writes"], "uart": s["uart"], "sim_s": s["sim_s"], "wall_s": s["wall_s"]}
                  for s in sums],
    }
