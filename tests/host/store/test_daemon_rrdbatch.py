"""Batched RRD mode (no rrdcached, rrdtool 1.0): held updates, one write per file and interval,
retries, the flush socket, the mode choice, and the wrapper that stands in for rrdtool 1.0."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap.config import DaemonConfig, parse_config
from gridtap.daemon import rrd_mode
from gridtap.errors import UserError
from gridtap.store.rrd import CacheClient
from gridtap.store.rrdbatch import MAX_BATCH, BatchedRrdStore, FlushServer
from tests.support.daemon import IMP, PULSE, REAL_RRDTOOL, RRDTOOL1, config_text

T0 = 1_790_000_000


@pytest.fixture
def rrdtool1(monkeypatch: pytest.MonkeyPatch) -> None:
    """rrdtool calls go through the wrapper that refuses what rrdtool 1.0 lacks."""
    monkeypatch.setenv("PATH", f"{RRDTOOL1}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def store(short_tmp: Path, rrdtool1: None) -> Iterator[BatchedRrdStore]:
    s = BatchedRrdStore(short_tmp / "rrd", flush_s=600)
    yield s
    s.close()


def last(p: Path) -> int:
    return int(subprocess.run([REAL_RRDTOOL, "last", str(p)], capture_output=True, text=True,
                              check=True).stdout)


def test_updates_are_held_then_written_once_per_file(store: BatchedRrdStore) -> None:
    for i in range(1, 31):
        assert store.update(IMP, T0 + 10 * i, 5000 * i)  # 500 mWh/s = 1800 W
        assert store.update(PULSE, T0 + 10 * i, 100 * i)
    assert not store.update(IMP, T0 + 300, 1)  # not newer: refused
    assert store.writes == 0 and last(store.path(IMP)) == T0  # created, nothing written yet
    due = store.release_at()
    assert due is not None and 590 < due - time.monotonic() <= 600  # a flush interval after the first
    assert store.send() == 0  # not due yet
    for sensor in store.due:  # the interval has passed (each file has its own deadline)
        store.due[sensor] -= 600
    store.release()
    assert store.writes == 2  # one `rrdtool update` per file, 30 values each
    assert last(store.path(IMP)) == T0 + 300 and last(store.path(PULSE)) == T0 + 300
    assert store.release_at() is None  # nothing held: the ingest loop may sleep
    got = store.fetch(IMP, "AVERAGE", T0 + 100, T0 + 200, 10)
    assert [v for t, v in got.values if T0 + 100 < t <= T0 + 200] == [500.0] * 10


def test_a_backlog_goes_out_with_the_next_send(store: BatchedRrdStore) -> None:
    for i in range(1, MAX_BATCH + 11):
        store.update(IMP, T0 + 10 * i, i)
    assert store.send() == MAX_BATCH + 10  # due at once; in pieces of MAX_BATCH values
    assert store.writes == 2 and last(store.path(IMP)) == T0 + 10 * (MAX_BATCH + 10)


def test_a_failed_write_keeps_the_values_and_a_deleted_file_is_made_again(store: BatchedRrdStore) -> None:
    store.update(IMP, T0 + 10, 10)
    assert store.flush_all()
    p = store.path(IMP)
    p.write_bytes(b"not an rrd")  # a broken file: the write fails
    store.update(IMP, T0 + 20, 20)
    store.update(IMP, T0 + 30, 30)
    assert not store.flush_all()
    assert store.errors == 1 and len(store.held[IMP]) == 2  # kept for a retry, not lost
    retry = store.release_at()
    assert retry is not None and retry > time.monotonic()
    p.unlink()  # gone: the next write makes the file again
    assert store.flush_all()
    assert last(p) == T0 + 30 and not store.held


def test_no_rrdtool_at_write_time_keeps_the_values(store: BatchedRrdStore, short_tmp: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store.update(IMP, T0 + 10, 10)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(short_tmp))  # rrdtool gone (a package removed under the daemon)
    assert not store.flush_all()
    assert store.errors == 1 and store.held[IMP] == [(T0 + 10, 10)]
    monkeypatch.setenv("PATH", path)
    assert store.flush_all() and last(store.path(IMP)) == T0 + 10


def test_flush_socket_answers_rrdcached_flush(store: BatchedRrdStore, short_tmp: Path) -> None:
    server = FlushServer(store, short_tmp / "rrdflush.sock")
    server.start()
    client = CacheClient(server.path)
    try:
        assert oct(os.stat(server.path).st_mode & 0o777) == "0o600"
        store.update(IMP, T0 + 10, 10)
        store.update(IMP, T0 + 20, 20)
        status, _msg, _ = client.command(f"FLUSH {store.path(IMP)}")
        assert status == 0 and last(store.path(IMP)) == T0 + 20
        assert client.command("FLUSH /etc/passwd")[0] < 0
        assert client.command("STATS")[0] < 0
        store.update(PULSE, T0 + 10, 1)
        assert client.command("FLUSHALL")[0] == 0 and last(store.path(PULSE)) == T0 + 10
    finally:
        client.close()
        server.stop()
    assert not server.path.exists()


def test_without_its_socket_the_store_still_works(store: BatchedRrdStore, short_tmp: Path) -> None:
    server = FlushServer(store, short_tmp / ("x" * 120) / "rrdflush.sock")  # too long for a unix socket
    server.start()
    assert server.sock is None and server.thread is None
    server.stop()
    store.update(IMP, T0 + 10, 10)
    assert store.flush_all()


def test_mode_auto_is_rrdcached_where_installed_else_batched(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert rrd_mode(DaemonConfig(rrd_mode="batched")) == "batched"
    assert rrd_mode(DaemonConfig(rrd_mode="auto")) == "rrdcached"  # Debian: make setup installs it
    (tmp_path / "rrdtool").symlink_to(REAL_RRDTOOL)
    monkeypatch.setenv("PATH", str(tmp_path))  # a router: rrdtool, no rrdcached
    assert rrd_mode(DaemonConfig(rrd_mode="auto")) == "batched"
    assert rrd_mode(DaemonConfig(rrd_mode="auto", rrdcached_socket=tmp_path / "s")) == "rrdcached"


def test_rrd_mode_config_errors_name_the_line(short_tmp: Path) -> None:
    base = config_text(short_tmp / "tty", short_tmp / "state")
    with pytest.raises(UserError, match=r"line 5: \[daemon\] key 'rrd_mode': must be one of auto, "):
        parse_config(base.replace('rrd_mode = "rrdcached"', 'rrd_mode = "fast"'))
    with pytest.raises(UserError, match="remove rrdcached_socket"):
        parse_config(base.replace('rrd_mode = "rrdcached"', 'rrd_mode = "batched"\nrrdcached_socket = "/s"'))


@pytest.mark.parametrize("args, refused", [
    (["create", "x.rrd", "--no-overwrite", "DS:a:GAUGE:20:0:U", "RRA:AVERAGE:0.5:1:10"], "--no-overwrite"),
    (["last", "x.rrd", "--daemon", "unix:/s"], "--daemon"),
    (["lastupdate", "x.rrd"], "command lastupdate"),
    (["flushcached", "x.rrd"], "command flushcached"),
    (["graph", "-", "--slope-mode", "DEF:a=x.rrd:a:AVERAGE"], "--slope-mode"),
    (["graph", "-", "DEF:a=x.rrd:a:AVERAGE", "VDEF:t=a,TOTAL"], "graph element VDEF"),
    (["graph", "-", "DEF:a=x.rrd:a:AVERAGE", "GPRINT:a:%lf"], "GPRINT syntax"),
    (["graph", "-", "DEF:a=x.rrd:a:AVERAGE", "CDEF:b=a,ADDNAN"], "RPN operator ADDNAN"),
    (["graph", "-", "--imgformat", "SVG", "DEF:a=x.rrd:a:AVERAGE"], "image format SVG"),
    (["create", "x.rrd", "DS:a:DCOUNTER:20:0:U"], "DS definition"),
    (["update", "x.rrd", "1790000000.5:1"], "update value"),
])
def test_the_wrapper_refuses_what_rrdtool_1_0_lacks(args: list[str], refused: str, short_tmp: Path) -> None:
    res = subprocess.run([str(RRDTOOL1 / "rrdtool"), *args], capture_output=True, text=True, cwd=short_tmp)
    assert res.returncode == 1 and "not in rrdtool 1.0" in res.stderr and refused in res.stderr


def test_the_wrapper_runs_rrdtool_1_0_syntax(short_tmp: Path) -> None:
    w = str(RRDTOOL1 / "rrdtool")
    p = str(short_tmp / "x.rrd")
    subprocess.run([w, "create", p, "-b", str(T0), "-s", "10", "DS:a:DERIVE:600:0:U", "RRA:AVERAGE:0.5:1:10",
                    "RRA:MAX:0.5:6:10"], check=True)
    subprocess.run([w, "update", p, f"{T0 + 10}:0", f"{T0 + 20}:100", f"{T0 + 30}:200"], check=True)
    out = subprocess.run([w, "graph", "/dev/null", "-s", str(T0), "-e", str(T0 + 60), "-a", "PNG",
                          f"DEF:a={p}:a:AVERAGE", "CDEF:b=a,UN,0,a,IF,60,*", "PRINT:b:MAX:%.0lf",
                          "AREA:b#ff0000:energy", "GPRINT:b:AVERAGE:%6.1lf\\l"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "600"  # 10/s for a minute
