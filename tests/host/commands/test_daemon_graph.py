"""`gridtap graph` draws a real PNG from the RRDs; `gridtap daemon --check` validates a config."""

from __future__ import annotations

import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from gridtap.cli import main
from gridtap.commands.graph import flush_for_reading, graph_args
from tests.support.daemon import EXP, IMP, Rig


def test_graph_of_import_and_export(rig: Rig, short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = rig.board
    end = int(time.time()) // 60 * 60
    for t in range(end - 3600, end + 1, 10):
        p = 2000.0 if (t // 600) % 2 == 0 else -1200.0  # alternate import and export every 10 min
        b.step(t, power_w=[p], seconds=10, gauges=False)
    assert b.wait_acked(30)
    rig.wait_rrd(IMP, end - 10)
    cfg_path = short_tmp / "gridtap.toml"
    from tests.support.daemon import config_text

    cfg_path.write_text(config_text(b.path, rig.state, rrd_mode=rig.daemon.rrd_mode))
    out = short_tmp / "power.png"
    assert (
        main(["graph", "mains", "-c", str(cfg_path), "--interval", "hour", "-o", str(out), "--end", str(end)])
        == 0
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 800 and height > 250
    cfg = rig.daemon.cfg
    flush_for_reading(cfg, [rig.daemon.rrd.path(IMP), rig.daemon.rrd.path(EXP)])
    args = graph_args(cfg, cfg.sensor("mains"), "hour", out, end, 800, 250)
    joined = " ".join(args)
    assert f"{IMP}.rrd" in joined and f"{EXP}.rrd" in joined
    assert "--start" in args and args[args.index("--start") + 1] == str(end - 3600)
    title = args[args.index("--title") + 1]
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(end - 3600)) in title  # the date, and
    assert title.endswith(time.strftime(" %Z", time.localtime(end)))  # the time zone
    # the legends are the counters' delta over the window, to the Wh (the board's registers: each
    # 10 s step adds round(W * 10 / 3.6) mWh); the mean of the consolidated curve times the span was
    # 4 % off on the demo's day graph
    step_mwh = {t: round(abs(2000.0 if (t // 600) % 2 == 0 else -1200.0) * 10 / 3.6)
                for t in range(end - 3600 + 10, end + 1, 10)}
    want_imp = sum(v for t, v in step_mwh.items() if (t // 600) % 2 == 0) / 1e6
    want_exp = sum(v for t, v in step_mwh.items() if (t // 600) % 2 == 1) / 1e6
    legends = [a for a in args if a.startswith("COMMENT:")]
    got = [float(c.split(":", 1)[1].split()[0]) for c in legends]
    assert got == [round(want_imp, 3), round(want_exp, 3)], (legends, want_imp, want_exp)
    capsys.readouterr()
    if os.environ.get("GRIDTAP_KEEP_GRAPH"):
        shutil.copy(out, os.environ["GRIDTAP_KEEP_GRAPH"])


def test_graph_errors_are_clear(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.daemon import config_text

    cfg_path = short_tmp / "gridtap.toml"
    cfg_path.write_text(config_text(short_tmp / "tty", short_tmp / "state"))
    assert main(["graph", "nosuch", "-c", str(cfg_path), "-o", str(short_tmp / "x.png")]) == 2
    assert "no sensor named or with id 'nosuch'" in capsys.readouterr().err
    assert main(["graph", "mains", "-c", str(cfg_path), "-o", str(short_tmp / "x.png")]) == 2
    assert "has no RRD" in capsys.readouterr().err


def test_daemon_check(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[3]
    assert main(["daemon", "-c", str(root / "docs" / "gridtap.example.toml"), "--check"]) == 0
    assert "ok (4 sensors, 5 series" in capsys.readouterr().out
    bad = short_tmp / "bad.toml"
    bad.write_text('[board]\nport = "/dev/ttyS0"\nbaud = "fast"\n')
    assert main(["daemon", "-c", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml line 3: [board] key 'baud': expected an integer" in err and "Traceback" not in err


def test_graph_window_takes_unix_or_iso_times() -> None:
    import argparse
    import datetime

    from gridtap.commands.graph import parse_time, window_title

    assert parse_time("1796554800") == 1796554800
    assert parse_time("2026-12-06T11:00+00:00") == 1796554800
    local = datetime.datetime(2026, 12, 6, 11, 0).timestamp()
    assert parse_time("2026-12-06 11:00") == int(local)
    with pytest.raises(argparse.ArgumentTypeError, match="neither a Unix time nor an ISO time"):
        parse_time("yesterday")
    title = window_title("grid", 1796554800, 1796554800 + 7200)
    assert title.startswith("grid, ") and title.endswith(time.strftime(" %Z", time.localtime(1796554800)))
    assert time.strftime("%Y-%m-%d", time.localtime(1796554800)) in title
