"""`make soak`: the whole chain over simulated days under faults; figures to bench/e2e_soak.json.

    python tools/soak.py --days 30            # one simulated month (hours of wall time)
    python tools/soak.py --days 0.5 --seed 3  # a shorter soak

It runs `tests/support/e2e/harness.py` with `soak_plan`: a brownout every simulated day
at a random instant, >= 20 `kill -9`s of the daemon, UART bursts at BER 1e-3, a
3-day and a 20-day outage of both upload servers (scaled down when the run is
shorter than they are), one restart each of the broker and rrdcached and one
board reset from EEPROM. The result is written to `--results` (default
bench/e2e_soak.json, read by bench/bench_e2e.py) and the work directory is kept
for inspection. Exit status 0 only when no Wh was lost beyond the documented
rounding (docs/e2e.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "host"), str(ROOT / "firmware"), str(ROOT / "hardware")]

from tests.support.e2e.harness import run, soak_plan, stop_on_sigterm  # noqa: E402

KEEP = ("ok", "failures", "sim_days", "faults_injected", "kills", "wh_lost_total", "wh_lost_by_stage",
        "wall_s", "drive_wall_s", "cpu_s", "pvoutput", "board", "settle",
        # the time series (issue 13): every RRD row, PVOutput status and Flukso point
        "rrd_rows_checked", "rrd_rows_missing", "rrd_rows_wrong", "pvoutput_intervals_missing",
        "pvoutput_intervals_mislabelled", "flukso_points_checked", "flukso_points_wrong",
        "kills_own_rrdcached", "rrdcached_orphans")


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0, help="simulated days (default 30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kills", type=int, default=None,
                    help="kill -9s of the daemon (default 24; one per simulated hour in shorter runs)")
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a new one in /tmp)")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "e2e_soak.json")
    ap.add_argument("--from-run", type=Path, default=None, metavar="DIR",
                    help="do not run: summarise a kept work directory (after harness --analyse)")
    args = ap.parse_args(argv)
    if args.from_run is not None:
        res = json.loads((args.from_run / "result.json").read_text())
        return report(res, int(res.get("plan", {}).get("seed", args.seed)), args.from_run, args.results)
    if args.days <= 0:
        print("soak: --days must be positive", file=sys.stderr)
        return 2
    kills = args.kills if args.kills is not None else max(1, min(24, int(args.days * 24)))
    plan = soak_plan(args.days, args.seed, kills=kills)
    work = args.out or Path(tempfile.mkdtemp(prefix="gtsoak-"))
    print(f"soak: {args.days:g} simulated days, {plan.faults()} faults, work directory {work}", flush=True)
    res = run(plan, work, keep=True)
    return report(res, args.seed, work, args.results)


def report(res: dict[str, Any], seed: int, work: Path, results: Path) -> int:
    per = {row["name"]: {"register_wh": row["firmware_register_wh"], "lost_wh": row.get("lost_wh"),
                         "metrology_pct": row["firmware"].get("metrology_pct")}
           for row in res.get("per_series", {}).values()}
    out = {k: res[k] for k in KEEP if k in res}
    drive = max(float(res.get("drive_wall_s", 0.0)), 1e-9)
    out.update({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seed": seed,
                "per_series": per, "work": str(work),
                "speedup": round(86400.0 * float(res.get("sim_days", 0.0)) / drive, 1)})
    results.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: out.get(k) for k in ("ok", "sim_days", "faults_injected", "wh_lost_total",
                                               "wh_lost_by_stage", "rrd_rows_missing",
                                               "pvoutput_intervals_missing", "wall_s", "speedup")}, indent=1))
    for f in out.get("failures", []):
        print(f"  lost: {f}")
    print(f"soak: results in {results}; details in {work / 'result.json'}")
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
