"""The daemon's rrdcached dies with it and never loses its cache (issue 13, finding 4).

Real processes: the daemon as `gridtap daemon` in its own process, killed
with SIGKILL; rrdcached and rrdtool; the fake board on a pty.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtap.cli import main
from gridtap.store.rrd import CacheClient, RrdCached, create_args, parse_fetch, pid_gone, rrdtool_exe
from tests.support.daemon import IMP, config_text, running_daemon
from tests.support.fakeboard import FakeBoard

W = 2000.0
RATE = W / 3.6  # mWh per second at 2 kW


def fetch_file(path: Path, start: int, end: int) -> list[tuple[int, float | None]]:
    """What the RRD file itself holds (no rrdcached asked): (end of step, rate)."""
    res = subprocess.run([rrdtool_exe(), "fetch", str(path), "AVERAGE", "-r", "10", "-s", str(start),
                          "-e", str(end)], capture_output=True, text=True, check=True)
    return [(t, v) for t, v in parse_fetch(res.stdout) if start < t <= end]


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stderr:
        proc.stderr.close()


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_kill_9_takes_rrdcached_along_and_its_cache_reaches_the_files(short_tmp: Path) -> None:
    state = short_tmp / "state"
    board = FakeBoard(short_tmp)
    board.appear()
    cfg = short_tmp / "gridtap.toml"
    cfg.write_text(config_text(board.path, state))  # rrdcached_flush_s = 3600: all of it stays cached
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import sys; from gridtap.cli import main; sys.exit(main(sys.argv[1:]))",
         "daemon", "-c", str(cfg), "--log-level", "warning"],
        stderr=subprocess.PIPE,
    )
    rrdcached = None
    try:
        t0 = (int(time.time()) - 3600) // 10 * 10
        for i in range(1, 31):
            board.step(t0 + 10 * i, power_w=[W], seconds=10, gauges=False)
        assert board.wait_acked(30), "the daemon did not take the tuples"
        pidfile = state / "rrdcached.pid"
        rrdcached = int(pidfile.read_text().split()[0])
        time.sleep(1.0)  # rrdcached has read the last pipelined updates
        assert all(v is None for _t, v in fetch_file(state / "rrd" / f"{IMP}.rrd", t0, t0 + 300))

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert wait_gone(rrdcached, 20), "rrdcached outlived its daemon (kill -9)"
        # it wrote its cache on the way out (-F) and removed its socket and pidfile
        rows = fetch_file(state / "rrd" / f"{IMP}.rrd", t0 + 10, t0 + 300)
        have = [v for _t, v in rows if v is not None]
        assert len(have) >= 25, rows
        assert all(abs(v - RATE) < 0.01 * RATE for v in have), rows
        assert not (state / "rrdcached.sock").exists() and not pidfile.exists()

        # a new daemon on the same directory starts cleanly and keeps that history
        with running_daemon(board, config_text(board.path, state), short_tmp) as rig:
            board.step(t0 + 310, power_w=[W], seconds=10, gauges=False)
            rig.wait_rrd(IMP, t0 + 310)
    finally:
        reap(daemon)
        if rrdcached is not None and not pid_gone(rrdcached):
            os.kill(rrdcached, signal.SIGKILL)
        board.close()
    rows = fetch_file(state / "rrd" / f"{IMP}.rrd", t0 + 10, t0 + 310)
    assert sum(v is not None for _t, v in rows) >= 25


def test_an_rrdcached_left_behind_is_flushed_and_stopped_before_a_new_one_starts(short_tmp: Path) -> None:
    state = short_tmp / "state"
    rrd_dir = state / "rrd"
    rrd_dir.mkdir(parents=True)
    t0 = (int(time.time()) - 3600) // 10 * 10
    path = rrd_dir / f"{IMP}.rrd"
    subprocess.run(create_args(path, t0 - 10), check=True, capture_output=True)
    # An rrdcached of an earlier daemon (of a version without PR_SET_PDEATHSIG) still runs, its cache full.
    old = RrdCached(rrd_dir, state / "rrdcached.sock", 3600)
    old.start()
    leftover = old.proc
    assert leftover is not None
    old.proc = None
    try:
        client = CacheClient(state / "rrdcached.sock")
        for i in range(31):
            status, message, _ = client.command(f"UPDATE {path} {t0 + 10 * i}:{round(RATE * 10 * i)}")
            assert status >= 0, message
        client.close()
        assert all(v is None for _t, v in fetch_file(path, t0, t0 + 300))

        board = FakeBoard(short_tmp)
        board.appear()
        with running_daemon(board, config_text(board.path, state), short_tmp) as rig:
            assert leftover.poll() is not None, "a second rrdcached was started beside the first"
            have = [v for _t, v in fetch_file(path, t0 + 10, t0 + 300) if v is not None]
            assert len(have) >= 29 and all(abs(v - RATE) < 0.01 * RATE for v in have)
            assert rig.daemon.cached is not None and rig.daemon.cached.pid != leftover.pid
            board.step(t0 + 310, power_w=[W], seconds=10, gauges=False)
            rig.wait_rrd(IMP, t0 + 310)
    finally:
        reap(leftover)
    assert not (state / "rrdcached.sock").exists(), "the socket outlived the daemon's stop"


def test_graph_without_a_daemon_ignores_a_stale_socket_and_a_failure_writes_no_png(
    short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = short_tmp / "state"
    rrd_dir = state / "rrd"
    rrd_dir.mkdir(parents=True)
    cfg = short_tmp / "gridtap.toml"
    cfg.write_text(config_text(short_tmp / "tty", state))
    end = int(time.time()) // 60 * 60
    path = rrd_dir / f"{IMP}.rrd"
    subprocess.run(create_args(path, end - 3610), check=True, capture_output=True)
    subprocess.run([rrdtool_exe(), "update", str(path),
                    *(f"{t}:{round(RATE * (t - end + 3600))}" for t in range(end - 3600, end + 1, 10))],
                   check=True, capture_output=True)
    # the socket of a daemon that is gone (make demo stopped, or a crash)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(state / "rrdcached.sock"))
    out = short_tmp / "power.png"
    argv = ["graph", "mains", "-c", str(cfg), "--interval", "hour", "-o", str(out), "--end", str(end)]
    assert main(argv) == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out.unlink()
    path.write_bytes(b"garbled" * 1000)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not an RRD file" in err  # named by the legend's read (rrdtool dump) or by rrdtool graph
    assert not out.exists(), "a failed graph left a PNG"
    assert not list(short_tmp.glob(".power.png*")), "a failed graph left its temporary file"


def test_a_replayed_update_rrdcached_holds_is_stored_not_refused(short_tmp: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """After a restart the daemon may send again a value rrdcached already held (it asked for the
    file's last update before rrdcached had taken the old daemon's last batch): that was logged as
    "rrd update refused: ... (minimum one second step)" and counted as an error (issue #15, item 10).
    An older or equal time is stored already; a real refusal still counts."""
    from gridtap.store.rrd import RrdStore

    rrd_dir, sock = short_tmp / "rrd", short_tmp / "rrdcached.sock"
    cached = RrdCached(rrd_dir, sock, 3600)
    cached.start()
    try:
        t0 = int(time.time()) // 60 * 60 - 600
        old = RrdStore(rrd_dir, sock)
        assert old.update(IMP, t0, 0) and old.update(IMP, t0 + 10, 1000)
        old.send()
        old.check_refused(wait=True)
        new = RrdStore(rrd_dir, sock)  # the restarted daemon, which read the last update as t0
        new.ensure(IMP, t0)
        new.last[IMP] = t0
        assert new.update(IMP, t0 + 10, 1000)
        new.send()
        new.check_refused(wait=True)
        assert new.errors == 0 and new.replayed == 1
        assert "refused" not in caplog.text
        new.queued.append(f"UPDATE {rrd_dir / 'gone.rrd'} {t0 + 20}:500")  # a real refusal
        new.send()
        new.check_refused(wait=True)
        assert new.errors == 1 and "rrd update refused" in caplog.text
        old.close()
        new.close()
    finally:
        cached.stop(flushed=False)
