"""The daemon as on a stock OpenWrt router: batched RRDs (no rrdcached), and the C code on big-endian MIPS.

`router.cpu_s_per_sim_hour` is host.cpu_s_per_sim_hour's set-up (bench_host.virtual_board_hour:
the virtual board with the real firmware, household-pv, at 60x; the daemon's default settings)
with `rrd_mode = "batched"`: the daemon holds the RRD updates and runs `rrdtool update` itself,
so the figure is the daemon plus the `rrdtool` processes it ran (there is no rrdcached). The
flush interval is played in simulated time (1800 simulated s = 30 wall s at 60x), so the hour
holds its two writes per file.

`router.write_bytes_per_hour` and `router.rss_mb` come from host.write_bytes_per_hour's lockstep
set-up (bench_host.feed: the fake board, 8 series at 1 Hz, sync(2) after every simulated second)
in batched mode; the flush interval is played by FLUSHALL on the daemon's flush socket at 1800
and 3600 simulated s, and /proc/<pid>/io of the daemon counts the `rrdtool` runs it reaped.

`router.mips_be_tests_*`: native/mips/harness.py (the C codec and kernel cross-built for
big-endian MIPS, run under qemu-mips-static against the protocol vectors and the kernel
reference).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_host import (  # noqa: E402
    SIM_S,
    VB_SPEED,
    WARMUP_S,
    config,
    feed,
    proc_hwm_mb,
    proc_io,
    start_daemon,
    stop_daemon,
    virtual_board_hour,
)
from tests.support.fakeboard import FakeBoard  # noqa: E402

FLUSH_SIM_S = 1800  # rrdcached_flush_s's default, in simulated seconds

ANCHORS = {
    "router.write_bytes_per_hour": "goal <= 2,000,000 (host.write_bytes_per_hour is the rrdcached figure)",
    "router.cpu_s_per_sim_hour": "goal <= 1 CPU s per simulated hour on this machine; "
                                 "host.cpu_s_per_sim_hour is the rrdcached figure",
    "router.rss_mb": "goal <= 20 MB on a 64 MB router",
    "router.mips_be_tests_passed": "= router.mips_be_tests_total",
}
HOW = {
    "router.write_bytes_per_hour": "/proc/<pid>/io write_bytes of the daemon in batched RRD mode (its "
                                   "reaped rrdtool runs included) over one lockstep hour, 8 series at 1 Hz, "
                                   "sync(2) after every simulated second, FLUSHALL on its flush socket at "
                                   "1800 and 3600 simulated s",
    "router.cpu_s_per_sim_hour": "host.cpu_s_per_sim_hour's hour (virtual board, real firmware, 60x, "
                                 "defaults) with rrd_mode = \"batched\" and rrdcached_flush_s = 30 wall s "
                                 "(1800 simulated s): daemon + the rrdtool processes it ran",
    "router.rss_mb": "VmHWM (peak RSS) of the batched-mode daemon after the lockstep hour",
    "router.mips_be_tests_passed": "cases of native/mips/harness.py that passed under qemu-mips-static "
                                   "(every protocol.md vector and reject, the CRC check value, 60 kernel "
                                   "calls against the reference)",
    "router.mips_be_tests_total": "cases run",
}


def flush_socket_all(sock: Path) -> None:
    """The flush interval's end: FLUSHALL on the daemon's flush socket (answered once written)."""
    from gridtap.store.rrd import CacheClient

    client = CacheClient(sock)
    try:
        status, message, _ = client.command("FLUSHALL")
    finally:
        client.close()
    if status < 0:
        raise RuntimeError(f"FLUSHALL: {message}")
    os.sync()


def lockstep_hour(work: Path) -> tuple[int, float]:
    """(write bytes, peak RSS MB) of the batched-mode daemon over one lockstep hour."""
    board = FakeBoard(work, n_ct=4, n_pulse=2, retx_s=5.0)
    board.appear()
    state = work / "state"
    cfg = work / "gridtap.toml"
    cfg.write_text(config(board.path, state).replace("[daemon]\n", '[daemon]\nrrd_mode = "batched"\n', 1))
    sock = state / "rrdflush.sock"
    daemon = start_daemon(board, cfg, sock)
    try:
        t0 = int(time.time()) - SIM_S - WARMUP_S - 5
        feed(board, t0, WARMUP_S, sock, {WARMUP_S}, flush_socket_all)
        io0 = proc_io(daemon.pid)
        feed(board, t0 + WARMUP_S, SIM_S, sock, {FLUSH_SIM_S, SIM_S}, flush_socket_all)
        written = proc_io(daemon.pid) - io0
        rss = proc_hwm_mb(daemon.pid)
    finally:
        stop_daemon(daemon)
        board.close()
    return written, rss


def mips_be() -> tuple[int, int]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mips_harness", ROOT / "native" / "mips" / "harness.py")
    assert spec and spec.loader
    h = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = h
    spec.loader.exec_module(h)
    todo = h.cases()
    if h.tools_missing():
        return 0, len(todo)
    with tempfile.TemporaryDirectory(prefix="gtmips") as d:
        passed, _failures = h.run(h.build(Path(d)), todo)
    return passed, len(todo)


def run() -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="gtr"))
    try:
        written, rss = lockstep_hour(work)
        flush_wall_s = round(FLUSH_SIM_S / VB_SPEED)
        cpu, _wakeups = virtual_board_hour(work / "vb", daemon_extra=(
            'rrd_mode = "batched"', f"rrdcached_flush_s = {flush_wall_s}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed, total = mips_be()
    return {
        "router.write_bytes_per_hour": written,
        "router.cpu_s_per_sim_hour": round(cpu, 2),
        "router.rss_mb": round(rss, 1),
        "router.mips_be_tests_passed": passed,
        "router.mips_be_tests_total": total,
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k} = {v}")
