"""The shared simulated clock: `gridtap sim --clock-file/--t0` writes it, `gridtap daemon --clock-file`
reads it (gridtap.simclock)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.cli import build_parser, main
from gridtap.errors import UserError
from gridtap.simclock import SIZE, ClockReader, ClockWriter
from gridtap_sim import cli as simcli

T0 = 1780315200.0  # 2026-06-01 12:00 UTC


def value(path: Path) -> float:
    return float(struct.unpack("<d", path.read_bytes()[:8])[0])


def test_writer_format_and_reader(tmp_path: Path) -> None:
    p = tmp_path / "clock.bin"
    w = ClockWriter(p, T0)
    assert p.stat().st_size == SIZE and value(p) == T0
    r = ClockReader(p)
    w.publish(12.5)
    assert value(p) == T0 + 12.5 and r.now() == T0 + 12.5
    w.publish(3.0)            # the clock never goes back
    assert r.now() == T0 + 12.5 and w.now == T0 + 12.5
    r.close()
    w.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1e7, allow_nan=False), min_size=1, max_size=30))
def test_published_clock_is_the_running_maximum(tmp_path_factory: pytest.TempPathFactory,
                                                 steps: list[float]) -> None:
    p = tmp_path_factory.mktemp("clk") / "clock.bin"
    w = ClockWriter(p, T0)
    r = ClockReader(p)
    for i, s in enumerate(steps):
        w.publish(s)
        assert r.now() == T0 + max([0.0, *steps[:i + 1]])
    r.close()
    w.close()


def test_existing_file_is_reused_in_place(tmp_path: Path) -> None:
    """A reader that mapped the file keeps seeing the new writer's time (no truncation, no new inode)."""
    p = tmp_path / "clock.bin"
    ClockWriter(p, T0).close()
    ino = p.stat().st_ino
    r = ClockReader(p)
    w = ClockWriter(p, T0 + 86400.0)
    w.publish(1.0)
    assert p.stat().st_ino == ino and r.now() == T0 + 86401.0
    r.close()
    w.close()


def test_reader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        ClockReader(tmp_path / "missing.bin")
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 8)
    with pytest.raises(UserError, match="not a clock file"):
        ClockReader(short)
    zero = tmp_path / "zero.bin"
    zero.write_bytes(bytes(SIZE))
    with pytest.raises(UserError, match="holds no simulated time"):
        ClockReader(zero)
    with pytest.raises(UserError, match="after 2000"):
        ClockWriter(tmp_path / "c.bin", 12.0)


def test_the_daemon_takes_the_simulated_clock_as_an_object(tmp_path: Path) -> None:
    """`gridtap daemon --clock-file` hands a ClockReader to the daemon, which gives its parts its
    `now` (session, spool, PVOutput, REST API, counter store); time.time stays the host's."""
    import time

    from gridtap.config import load_config
    from gridtap.daemon import Daemon

    p = tmp_path / "clock.bin"
    w = ClockWriter(p, T0)
    w.publish(42.0)
    reader = ClockReader(p)
    host_time = time.time
    d = Daemon(load_config(_config(tmp_path)), start_rrdcached=False, clock=reader)
    try:
        d.start()
        assert d.session is not None and d.store is not None
        assert d.session.clock() == d.store.clock() == d.clock.now() == T0 + 42.0
        w.publish(100.0)
        assert d.session.clock() == T0 + 100.0
        assert time.time is host_time  # nothing patched process-wide
    finally:
        d.close()
        reader.close()
        w.close()


def test_sim_cli_validates_clock_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--t0", str(T0)]) == 2
    assert "needs --clock-file" in capsys.readouterr().err
    assert main(["sim", "--clock-file", str(tmp_path / "c.bin"), "--t0", "yesterday"]) == 2
    assert "--t0 must be a number" in capsys.readouterr().err
    assert main(["sim", "--clock-file", str(tmp_path / "c.bin"), "--t0", str(T0), "--start", "10:00"]) == 2
    assert "is not at --start" in capsys.readouterr().err
    assert main(["sim", "--clock-file", str(tmp_path / "no" / "c.bin")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sim", "--batch-max-s", "0"]) == 2
    assert "--batch-max-s 0 is out of range" in capsys.readouterr().err
    parser = build_parser()
    clk = str(tmp_path / "c.bin")
    # --t0 alone sets the model's time of day; with --start it must agree (to a millisecond)
    assert simcli.options(parser.parse_args(["sim", "--clock-file", clk, "--t0", str(T0 + 1800)]))["start"] \
        == 12.5 * 3600
    opt = simcli.options(parser.parse_args(["sim", "--clock-file", clk, "--t0", str(T0 - 1e-5), "--start",
                                            "12:00"]))
    assert opt["start"] == 12 * 3600 and opt["t0"] == T0 - 1e-5


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 86399), st.floats(1e9, 4e9))
def test_default_t0_is_the_latest_start_not_in_the_future(sod: float, now: float) -> None:
    t0 = simcli.default_t0(sod, now)
    assert t0 <= now < t0 + 86400.0
    assert abs((t0 - sod) % 86400.0) < 1e-3 or abs((t0 - sod) % 86400.0 - 86400.0) < 1e-3


@pytest.mark.parametrize("batch", [None, "0.05"])
def test_sim_publishes_its_clock(tmp_path: Path, batch: str | None) -> None:
    p = tmp_path / "clock.bin"
    out = subprocess.run(
        [sys.executable, "-m", "gridtap.cli", "sim", "--scenario", "steady", "--speed", "max",
         "--duration", "6", "--clock-file", str(p), "--t0", str(T0)]
        + ([] if batch is None else ["--batch-max-s", batch]),
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pty: /dev/")
    # the firmware's own time at its last HAL request: within the last batch of the end (1 s by
    # default, or what --batch-max-s allows)
    span = 1.0 if batch is None else float(batch)
    assert T0 + 6.0 - span - 1e-6 <= value(p) <= T0 + 6.0
    assert f"simulated t=0 is Unix {T0:.0f}" in out.stderr


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "gridtap.toml"
    cfg.write_text(textwrap.dedent(f"""
        [daemon]
        state_dir = "{tmp_path / 'state'}"
        rrd_dir = "{tmp_path / 'rrd'}"
        api = false
        [board]
        port = "{tmp_path / 'tty'}"
        [[sensor]]
        name = "mains"
        kind = "ct"
        channel = 0
        id = "6f0bc0a5d7e54d7b8c0a2f5b9e1d3c47"
    """))
    return cfg


def test_daemon_clock_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path)
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "gridtap.cli", "daemon", "-c", str(cfg), "--clock-file",
                          str(tmp_path / "missing.bin")], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "missing.bin: no such file" in out.stderr and "Traceback" not in out.stderr
    for bad, why in (("abc", "must be a number"), ("0", "more than 0"), ("nan", "more than 0")):
        assert main(["daemon", "-c", str(cfg), "--check", "--time-sync-s", bad]) == 2
        assert why in capsys.readouterr().err


def test_daemon_time_sync_option_sets_the_threshold(tmp_path: Path) -> None:
    """--check exercises the whole option path in process; the threshold lands in gridtap.board.session."""
    import gridtap.board.session

    before = gridtap.board.session.TIME_SYNC_S
    try:
        assert main(["daemon", "-c", str(_config(tmp_path)), "--check", "--time-sync-s", "7.5"]) == 0
        assert gridtap.board.session.TIME_SYNC_S == 7.5
    finally:
        gridtap.board.session.TIME_SYNC_S = before


def test_reader_never_returns_a_torn_value(tmp_path: Path) -> None:
    """A read racing the writer saw 0.0 (4 % of reads under a busy writer): the daemon took it for
    the time and refused the board's tuples as from the future. now() returns only plausible
    times, never earlier than the last."""
    import multiprocessing

    p = tmp_path / "clock.bin"
    ClockWriter(p, T0).close()
    ctx = multiprocessing.get_context("fork")
    writer = ctx.Process(target=_hammer, args=(p, 1.5))
    writer.start()
    reader = ClockReader(p)
    got = []
    try:
        while writer.is_alive():
            got.append(reader.now())
    finally:
        writer.join()
        reader.close()
    assert len(got) > 1000
    assert min(got) >= T0 and got == sorted(got)


def _hammer(p: Path, seconds: float) -> None:
    import time

    w = ClockWriter(p, T0)
    end = time.monotonic() + seconds
    s = 0.0
    while time.monotonic() < end:
        s += 0.001
        w.publish(s)
    w.close()
