"""`gridtap flash`: .mpy deployment to a virtual board's filesystem and, through mpremote, to a real one."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridtap.commands import flash
from gridtap.errors import UserError
from gridtap_fw import wire
from gridtap_sim import flash as sim_flash
from tests.support.hil.rig import IDEAL, VirtualRig

RP2_MPY = 4 << 10 | 3 << 8 | 6      # armv6m, .mpy v6.3 (MicroPython 1.2x on a Pico)


def main(argv: list[str]) -> int:
    """`gridtap ARGV` as gridtap.cli.main runs it (UserError -> exit 2, message on stderr)."""
    parser = argparse.ArgumentParser(prog="gridtap")
    flash.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"gridtap: error: {exc}", file=sys.stderr)
        return 2


def test_virtual_flash_boots_from_the_mpy_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fs = tmp_path / "board-fs"
    (fs / "gridtap_fw").mkdir(parents=True)
    (fs / "gridtap_fw" / "stale.py").write_text("raise RuntimeError('an old source file')\n")
    assert main(["flash", "--virtual", str(fs)]) == 0
    out = capsys.readouterr().out
    assert "compiling 12 modules" in out and f"HELLO: firmware 0.1.0, protocol {wire.PROTO_VERSION}" in out
    names = sorted(p.name for p in (fs / "gridtap_fw").iterdir())
    assert "stale.py" not in names and "hal_rp2.mpy" not in names
    assert all(n.endswith(".mpy") for n in names) and "app.mpy" in names and "hal_virtual.mpy" in names
    assert (fs / "board.json").read_bytes() == flash.DEFAULT_BOARD.read_bytes()
    # the board's filesystem is all it has: without app.mpy it cannot boot (no fallback to sources)
    (fs / "gridtap_fw" / "app.mpy").unlink()
    with pytest.raises(UserError, match="virtual board"):
        sim_flash.boot_virtual(fs, 10.0, progress=lambda s: None)
    assert "app" in (fs / "firmware.log").read_text()


def test_target_parsing_and_refusals() -> None:
    t = flash.parse_target("MicroPython\n('rp2', (1, 29, 0), %d)\n" % RP2_MPY)
    assert (t.platform, t.arch, t.mpy_version) == ("rp2", "armv6m", (6, 3))
    flash.check_target(t, "rp2", (6, 3))
    with pytest.raises(UserError, match="'esp32' port"):
        flash.check_target(flash.Target("esp32", (1, 29, 0), 10 << 10 | 3 << 8 | 6), "rp2", (6, 3))
    with pytest.raises(UserError, match=r"loads \.mpy v5\.0"):
        flash.check_target(flash.Target("rp2", (1, 18, 0), 4 << 10 | 5), "rp2", (6, 3))
    with pytest.raises(UserError, match="native code emitter"):
        flash.check_target(flash.Target("rp2", (1, 29, 0), 3 << 8 | 6), "rp2", (6, 3))
    with pytest.raises(UserError, match="not understood"):
        flash.parse_target("Traceback (most recent call last):\n")


class FakeBoard:
    """Plays mpremote against a board's filesystem (a directory) and records the commands."""

    def __init__(self, root: Path, platform: str = "rp2", mpy: int = RP2_MPY) -> None:
        self.root = root
        self.platform = platform
        self.mpy = mpy
        self.log: list[str] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert argv[1:5] == ["-m", "mpremote", "connect", "/dev/ttyACM9"]
        cmd = argv[5:]
        out = ""
        if cmd[0] == "exec" and "sys.implementation" in cmd[1]:
            self.log.append("query")
            out = repr((self.platform, (1, 29, 0), self.mpy)) + "\n"
        elif cmd[0] == "exec":
            self.log.append("prepare")
            (self.root / "gridtap_fw").mkdir(parents=True, exist_ok=True)
            for p in (self.root / "gridtap_fw").iterdir():
                p.unlink()
        elif cmd[:2] == ["fs", "cp"]:
            self.log.append("cp " + cmd[3])
            shutil.copyfile(cmd[2], self.root / cmd[3].lstrip(":"))
        elif cmd == ["reset"]:
            self.log.append("reset")
        else:
            return subprocess.CompletedProcess(argv, 1, "", f"unknown command {cmd}")
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_real_flash_sends_armv6m_mpy_then_resets_and_waits_for_hello(tmp_path: Path) -> None:
    fake = FakeBoard(tmp_path / "pico")
    (tmp_path / "pico").mkdir()
    rig = VirtualRig(tmp_path, "steady", 1, sim=IDEAL, speed=20.0)   # plays the board's UART0 link
    rig.start(3600.0)
    lines: list[str] = []
    try:
        hello = flash.flash_board("/dev/ttyACM9", rig.port, flash.DEFAULT_BOARD, 115200, 10.0,
                                  flash.Mpremote("/dev/ttyACM9", fake), lines.append)
    finally:
        rig.stop()
        rig.close()
    assert hello["proto"] == wire.PROTO_VERSION and hello["n_ct"] == 3
    assert fake.log[:2] == ["query", "prepare"] and fake.log[-1] == "reset"
    sent = [c[3:] for c in fake.log if c.startswith("cp ")]
    assert sent[-2:] == [":main.py", ":board.json"]
    assert ":gridtap_fw/hal_rp2.mpy" in sent and ":gridtap_fw/hal_virtual.mpy" not in sent
    kernel = (tmp_path / "pico" / "gridtap_fw" / "kernel.mpy").read_bytes()
    assert kernel[0:2] == b"M\x06" and kernel[2] >> 2 == 4        # .mpy v6 with armv6m machine code
    assert (tmp_path / "pico" / "main.py").read_text().count("hal_rp2") >= 1
    assert any(line.startswith(f"[{len(sent)}/{len(sent)}]") for line in lines)


@pytest.mark.parametrize("platform, mpy, word", [("esp32", 10 << 10 | 3 << 8 | 6, "port"),
                                                  ("rp2", 4 << 10 | 2 << 8 | 6, "mpy")])
def test_real_flash_refuses_a_mismatched_board_before_writing(tmp_path: Path, platform: str, mpy: int,
                                                              word: str) -> None:
    fake = FakeBoard(tmp_path, platform, mpy)
    with pytest.raises(UserError, match=word):
        flash.flash_board("/dev/ttyACM9", "/dev/null", flash.DEFAULT_BOARD, 115200, 1.0,
                          flash.Mpremote("/dev/ttyACM9", fake), lambda s: None)
    assert fake.log == ["query"]


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flash", "--port", "/dev/ttyACM9"]) == 2
    assert "--link is required" in capsys.readouterr().err
    bad = tmp_path / "board.json"
    bad.write_text("{")
    assert main(["flash", "--virtual", str(tmp_path / "fs"), "--board", str(bad)]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert main(["flash", "--virtual", str(tmp_path / "fs"), "--link", "/dev/ttyUSB0"]) == 2
    assert "--link is for real boards" in capsys.readouterr().err
    failing = flash.Mpremote("/dev/ttyACM9", lambda argv: subprocess.CompletedProcess(
        argv, 1, "", "mpremote: failed to access /dev/ttyACM9 (it may be in use by another program)"))
    with pytest.raises(UserError, match="in use by another program"):
        failing.exec("print(1)")
