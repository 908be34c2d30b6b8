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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from gridtap_sim.engine import load_record

Sensors = tuple[tuple[str, str, int, str, str | None], ...]
TOL_WH = 1.0        # the documented rounding per sensor and stage
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


def host_series(tuples: list[dict[str, Any]], k: str, idx: int, reg: str) -> list[tuple[float, int]]:
    """(board time in whole s, host total in mWh) per new tuple: the registers through the epoch rule.

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
    for r in own:
        v = int(r[reg])
        e = (r["seg"], r["boot"])
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
    own = sorted(p for p in host_series(tuples, k, idx, reg) if p[0] > 1234567890)
    ts = [a for a, _ in own]
    j = bisect.bisect_right(ts, t_board)
    if j == 0:
        return None
    if j >= len(own):
        # a PULSE is stamped with its last pulse: the count holds until the next one
        return float(own[-1][1]) if own[-1][0] == t_board or k == "p" else None
    (ta, va), (tb, vb) = own[j - 1], own[j]
    if ta == t_board:
        return float(va)
    return float(va) if tb == ta else va + (vb - va) * (t_board - ta) / (tb - ta)


def compare(work: Path, sensors: Sensors, pvo_fields: dict[str, str], stages: dict[str, Any],
            segments: list[dict[str, Any]], t0: float) -> dict[str, Any]:
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
        mq = stages["mqtt"].get(sid)
        row["mqtt_wh"] = None if mq is None else float(mq[1])
        fl = stages["flukso"].get(sid) or []
        row["flukso_wh"] = fl[-1][1] if fl else None
        row["flukso_points"] = len(fl)
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
    pv_req = stages.get("pvoutput_requests", [])
    too_old = sum(1 for e, code, body, _at in pv_req if code == 400 and "older than" in body)
    sim_s = sum(float(s["sim_s"]) for s in sums)
    return {
        "ok": not fails,
        "failures": fails,
        "sim_days": sim_s / 86400.0,
        "wh_lost_by_stage": {k: round(v, 3) for k, v in by_stage.items()},
        "wh_lost_total": round(sum(by_stage.values()), 3),
        "per_series": per,
        "pvoutput": {"statuses": len(pvo), "requests": len(pv_req),
                     "refused_older_than_limit": too_old},
        "board": [{"boots": len(s["boots"]), "brownouts": len(s["brownout_flags_s"]),
                   "brownouts_in_eeprom_write": s["brownouts_in_eeprom_write"], "torn_pages": s["torn_pages"],
                   "ee_writes": s["ee_writes"], "uart": s["uart"], "sim_s": s["sim_s"], "wall_s": s["wall_s"]}
                  for s in sums],
    }
