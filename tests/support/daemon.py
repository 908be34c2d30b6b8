"""The daemon test kit: a fake board on a pty, a daemon running in a thread against it, and their fixtures.

`rig` runs every test in each RRD mode (`rrd_mode`): "rrdcached" (Debian) and
"batched" (the daemon writes the RRDs itself, as on OpenWrt), the latter with
tools/openwrt/rrdtool1/ first in PATH so that the daemon's rrdtool calls must
be valid for rrdtool 1.0. GRIDTAP_RRD_MODES=batched (or rrdcached) runs one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridtap.commands.graph import flush_for_reading
from gridtap.config import parse_config
from gridtap.daemon import Clock, Daemon
from tests.support.fakeboard import FakeBoard

ROOT = Path(__file__).resolve().parents[2]
RRDTOOL1 = ROOT / "tools" / "openwrt" / "rrdtool1"  # rrdtool that refuses what 1.0 lacks
REAL_RRDTOOL = shutil.which("rrdtool") or "rrdtool"  # for the tests' own reads of the files
RRD_MODES = [m for m in os.environ.get("GRIDTAP_RRD_MODES", "rrdcached,batched").split(",") if m]

IMP = "a" * 31 + "1"
EXP = "a" * 31 + "2"
IMP2 = "b" * 31 + "1"
PULSE = "c" * 31 + "1"
WATER = "d" * 31 + "1"


def config_text(port: Path, state: Path, api_port: int = 0, rrd_mode: str = "rrdcached") -> str:
    return f"""
[daemon]
state_dir = "{state}"
rrdcached_flush_s = 3600
rrd_mode = "{rrd_mode}"
bind = "127.0.0.1"
port = {api_port}
price_per_kwh = 0.25
state_flush_s = 1

[board]
port = "{port}"
baud = 115200

[[sensor]]
name = "mains"
id = "{IMP}"
export_id = "{EXP}"
kind = "ct"
channel = 0
gain = 1.0025
phase_deg = -4.2

[[sensor]]
name = "heatpump"
id = "{IMP2}"
kind = "ct"
channel = 1

[[sensor]]
name = "meter"
id = "{PULSE}"
kind = "pulse"
input = 0
meter_constant = 1000

[[sensor]]
name = "water"
id = "{WATER}"
kind = "pulse"
input = 1
meter_constant = 1000
unit = "litre"
"""


class Recorder:
    """An output sink that keeps every (t, total) counter call, for Session tests."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        self.calls.append((t, total_milli))

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        pass


@dataclass
class Rig:
    board: FakeBoard
    daemon: Daemon
    stop: threading.Event
    thread: threading.Thread
    state: Path

    def wait(self, cond: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.01)
        raise AssertionError(f"condition not met within {timeout} s")

    def wait_rrd(self, sensor: str, t: int, timeout: float = 10.0) -> None:
        """Until the writer holds sensor's updates up to t: queued, sent to rrdcached and answered
        (refusals counted), or held by the daemon itself in batched mode."""
        rrd = self.daemon.rrd
        self.wait(lambda: rrd.last.get(sensor, 0) >= t and not rrd.queued, timeout)
        rrd.check_refused(wait=True)

    def read_args(self, *sensors: str) -> list[str]:
        """Ready the sensors' RRDs for a reader outside the daemon, as `gridtap graph` does; return the
        options an rrdtool read needs (rrdcached: --daemon, which flushes; batched: none)."""
        if self.daemon.rrd_mode == "rrdcached":
            return ["--daemon", f"unix:{self.daemon.socket_path}"]
        flush_for_reading(self.daemon.cfg, [self.daemon.rrd.path(s) for s in sensors])
        return []

    def total(self, sensor: str) -> int | None:
        assert self.daemon.store is not None
        return self.daemon.store.total(sensor)

    def connected(self) -> bool:
        s = self.daemon.session
        return s is not None and s.epoch is not None and self.daemon.link.connected


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    d = Path(tempfile.mkdtemp(prefix="gtd"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextmanager
def running_daemon(board: FakeBoard, text: str, tmp: Path, clock: Clock | None = None) -> Iterator[Rig]:
    """The daemon for config `text` (on `clock`, default the host's) in a thread against `board`,
    connected; always torn down."""
    daemon = Daemon(parse_config(text, tmp / "gridtap.toml"), clock=clock)
    daemon.start()
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    r = Rig(board, daemon, stop, thread, tmp / "state")
    try:
        r.wait(r.connected)
        yield r
    finally:  # through r: a test may swap in a restarted daemon
        r.daemon.request_stop()
        r.thread.join(timeout=5)
        r.daemon.close()
        board.close()


@pytest.fixture(params=RRD_MODES)
def rrd_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The RRD mode of the daemon under test; batched runs its rrdtool through the 1.0 wrapper."""
    mode: str = request.param
    if mode == "batched":
        monkeypatch.setenv("PATH", f"{RRDTOOL1}{os.pathsep}{os.environ.get('PATH', '')}")
    return mode


@pytest.fixture
def rig(short_tmp: Path, rrd_mode: str) -> Iterator[Rig]:
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state", rrd_mode=rrd_mode)
    with running_daemon(board, text, short_tmp) as r:
        yield r


@pytest.fixture
def cached_rig(short_tmp: Path) -> Iterator[Rig]:
    """A rig in rrdcached mode only, for what only concerns rrdcached."""
    board = FakeBoard(short_tmp)
    board.appear()
    with running_daemon(board, config_text(board.path, short_tmp / "state"), short_tmp) as r:
        yield r
