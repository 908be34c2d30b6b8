"""The unmodified firmware on an emulated Cortex-M0 (QEMU -M microbit), against the virtual board.

The board is the simulator's, only the firmware process differs: gridtap's
MicroPython port (firmware/ports/qemu_m0, `make m0`) running the armv6m .mpy
of gridtap_fw with hal_qemu. The host talks to it over the simulator's pty,
as to the unix-port board (hardware/qemu-m0.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gridtap.board.client import BoardClient
from gridtap_sim import qemu_m0
from tests.support.hil.campaigns import BIG_LOAD_W, accuracy, brownouts
from tests.support.hil.rig import same_registers

SECONDS = 60.0   # as tests/hil/test_hil_accuracy.py: its 0.2 % bound needs a minute of energy


def test_boots_and_answers_hello(tmp_path: Path) -> None:
    """`gridtap sim --core qemu-m0`: a host opens its pty and the board on the M0 says HELLO."""
    log = tmp_path / "fw.log"
    gridtap = Path(sys.executable).parent / "gridtap"
    proc = subprocess.Popen([str(gridtap), "sim", "--core", "qemu-m0", "--scenario", "steady",
                             "--speed", "20", "--duration", "600", "--fw-log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith("pty: "), (line, proc.stderr.read() if proc.poll() is not None else "")
        cl = BoardClient.open(line.split(": ", 1)[1].strip())
        try:
            hello = cl.hello()
            # the budget line of the first second: the firmware really runs on the emulated core
            deadline = time.monotonic() + 20.0
            while "M0STAT 0 " not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            cl.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert hello["n_ct"] == 3 and hello["n_pulse"] == 2
    assert hello["boot_count"] >= 1 and hello["reset_cause"] == 1
    assert "M0STAT 0 " in log.read_text(), log.read_text()[-2000:]


def test_registers_equal_the_unix_port_and_the_truth(tmp_path: Path) -> None:
    """Same seed, same board: every register bit for bit as the unix port's (double floats as there),
    with the viper kernel and with the C kernel as the native module gtkernel.mpy."""
    unix = accuracy(tmp_path / "unix", "household-pv", SECONDS)
    m0 = accuracy(tmp_path / "m0", "household-pv", SECONDS, command=qemu_m0.command("double"))
    m0c = accuracy(tmp_path / "m0c", "household-pv", SECONDS, command=qemu_m0.command("double", kernel="c"))
    for run in (m0, m0c):
        assert [(r.ct, r.kind, r.firmware_wh) for r in run.registers] == \
            [(r.ct, r.kind, r.firmware_wh) for r in unix.registers]
        assert unix.capture is not None and run.capture is not None
        assert same_registers(unix.capture.msgs, run.capture.msgs)
    moving = [r for r in m0.registers if r.mean_w >= BIG_LOAD_W]
    assert moving, [(r.ct, r.kind, r.mean_w) for r in m0.registers]
    for r in moving:   # the HIL campaigns' bound (tests/hil/test_hil_accuracy.py)
        assert r.error_pct <= 0.2, (r.ct, r.kind, r.firmware_wh, r.truth_wh)


def test_single_precision_registers_match_the_truth(tmp_path: Path) -> None:
    """The RP2040's float32 build: the registers the Pico would keep, against the truth."""
    res = accuracy(tmp_path, "household-pv", SECONDS, command=qemu_m0.command("single"))
    moving = [r for r in res.registers if r.mean_w >= BIG_LOAD_W]
    assert moving
    for r in moving:
        assert r.error_pct <= 0.2, (r.ct, r.kind, r.firmware_wh, r.truth_wh)


def test_brownout_during_an_eeprom_write_restores_the_counters(tmp_path: Path) -> None:
    """A 6 ms hold-up (the save needs 15 ms) and a save every Wh, as tests/hil does on the unix port."""
    res = brownouts(tmp_path, 3, seed=2, holdup_ms=6.0, save_wh=1, command=qemu_m0.command())
    assert res.torn_pages >= 1
    assert res.boots == res.outages + 1
    # a torn newest record falls back to an older intact one: never above the truth, never zero
    assert res.over_truth == 0 and res.fresh_starts == 0, res.problems
    assert res.wh_lost_per_outage_max <= 1.0 + res.second_wh_max * 1.05 + 0.002
    # the reactive pair comes back from the same record (layout 2), never from 0
    assert res.q_max_varh > 0.1 and res.q_restarts == 0, res.problems
    assert res.varh_lost_per_outage_max <= 1.0 + res.second_varh_max * 1.05 + 0.002
