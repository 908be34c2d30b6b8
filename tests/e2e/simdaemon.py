"""`gridtap daemon` living in simulated time: the e2e harness starts the daemon through this.

    GRIDTAP_E2E_CLOCK=clock.bin python -m tests.e2e.simdaemon -c gridtap.toml

The daemon has no clock option, and it takes Unix time from ``time.time()`` in
three places that matter when the board's world runs 60-100x faster than the
wall: the TIME_SET it sends the board (`gridtap.ingest.Session`), the PVOutput
interval grid and back-dating limits (`gridtap.pvoutput.uploader`) and the
spool's aging (`gridtap.spool`). This launcher replaces ``time.time`` with the
simulated clock that `tests/e2e/simboard.py` publishes *before* any gridtap
module is imported (their defaults bind ``time.time`` at import), then runs the
unmodified `gridtap daemon` command, with one setting scaled: the clock re-sync
threshold (1 s) becomes 5 s of simulated time, because the daemon's wall-time
latency is magnified by the speed-up. Everything timed in wall seconds
(``time.monotonic``: link retries, spool commits, the Flukso uploader's interval
and backoff) stays in wall time. docs/e2e.md lists this as a gap to close in the
daemon itself (an injectable clock).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time


def install(path: str) -> None:
    f = open(path, "rb")
    mm = mmap.mmap(f.fileno(), 16, access=mmap.ACCESS_READ)

    def sim_time() -> float:
        return float(struct.unpack_from("<d", mm, 0)[0])

    time.time = sim_time


def main() -> int:
    path = os.environ.get("GRIDTAP_E2E_CLOCK")
    if not path:
        print("simdaemon: set GRIDTAP_E2E_CLOCK to the simulated clock file", file=sys.stderr)
        return 2
    install(path)
    import gridtap.ingest

    # The daemon's own latency (a 20 ms read coalesce, its loop) is wall time: at 50x it is a
    # simulated second, so the board's TIME looks 1-2 s late and the 1 s re-sync threshold would
    # send a TIME_SET every few seconds. Scale the threshold with the speed (docs/e2e.md).
    gridtap.ingest.TIME_SYNC_S = float(os.environ.get("GRIDTAP_E2E_TIME_SYNC_S", "5"))
    from gridtap.cli import main as gridtap_main

    return gridtap_main(["daemon", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
