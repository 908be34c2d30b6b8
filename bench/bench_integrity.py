"""Integrity under hostile and faulty input (issue 13): the campaign of tests/support/integrity.py.

Every case runs the real daemon (its own rrdcached, the spool, Flukso and
PVOutput uploads to the test servers) against the fake board on a pty, injects
its input and checks from outside what must hold (docs/integrity.md). A few
minutes on two cores; the disk-full case mounts a small tmpfs (root).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ANCHORS = {
    "integrity.cases": "hostile-input and fault cases run (issue 13's list)",
    "integrity.cases_passed": "goal: all cases pass",
    "integrity.rss_mb_max": "the daemon's largest RSS during the random-byte, HELLO and EVENT floods "
                            "(a router has 64-128 MB)",
}

HOW: dict[str, str] = {}


def run() -> dict[str, object]:
    for p in (ROOT, ROOT / "host", ROOT / "firmware", ROOT / "hardware"):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    from tests.support.integrity import Outcome, campaign, figures

    def show(r: Outcome) -> None:
        print(f"  {'pass' if r.passed else 'FAIL'} {r.name} ({r.wall_s:.0f} s)", flush=True)
        for p in r.problems:
            print(f"      {p}", flush=True)

    results = campaign(report=show)
    failed = [f"{r.name}: {'; '.join(r.problems[:2])}" for r in results if not r.passed]
    for key in ("integrity.cases", "integrity.cases_passed", "integrity.rss_mb_max"):
        HOW[key] = ("tests/support/integrity.py, every case (docs/integrity.md)"
                    + (f"; failed: {', '.join(n.split(':')[0] for n in failed)}" if failed else ""))
    return figures(results)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
