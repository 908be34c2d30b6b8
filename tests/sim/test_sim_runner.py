"""The process runner and hal_virtual, under the real MicroPython unix port."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from gridtap_sim.board import load_board
from gridtap_sim.engine import Simulation, load_record
from gridtap_sim.runner import (
    FIRMWARE_DIR,
    RESET_BROWNOUT,
    RESET_POWER_ON,
    RESET_WATCHDOG,
    SimError,
    VirtualBoard,
)

ECHO_FW = Path(__file__).resolve().parents[1] / "support" / "simfw" / "echo_fw.py"


def run_echo(tmp_path: Path, scenario: str, seconds: float, seed: int = 1, **kw: object
             ) -> tuple[VirtualBoard, str]:
    sim = Simulation(load_board(), scenario, seed)
    log = tmp_path / f"fw-{scenario}-{seed}.log"
    vb = VirtualBoard(sim, firmware=ECHO_FW, fw_log=log, use_pty=False, **kw)  # type: ignore[arg-type]
    try:
        vb.run(seconds)
    finally:
        vb.close()
    return vb, log.read_text()


def test_round_trip_blocks_ticks_eeprom(tmp_path: Path) -> None:
    vb, log = run_echo(tmp_path, "steady", 3.0)
    assert "boot 1 cause 1" in log and "Traceback" not in log
    assert vb.stats.boots == [(0.0, RESET_POWER_ON)]
    assert vb.stats.deaths == []
    assert abs(vb.stats.sets_served - 3 * 4800) <= 96
    assert vb.eeprom.read(0, 4) == (1).to_bytes(4, "little")
    # stat lines: blocks, ticks_us, edges, V min, V max, bad tick steps
    stats = [line.split() for line in log.splitlines() if line.startswith("stat")]
    assert stats and all(s[6] == "0" for s in stats)
    # the boot-time EEPROM write (5 ms) overlaps the first 20 ms block: time is the sample clock
    assert all(int(s[2]) == int(s[1]) * 20000 for s in stats)
    vmin, vmax = int(stats[-1][4]), int(stats[-1][5])
    swing = 230 * 2 ** 0.5 / 0.2038                     # 1596 counts of 230 V peak
    assert abs((vmax - vmin) / 2 - swing) < 0.02 * swing
    assert int(stats[-1][3]) > 0                        # pulse edges of the S0 meter arrived


def test_runs_are_deterministic_for_a_seed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, a = run_echo(tmp_path / "a", "household", 5.0, 3)
    _, b = run_echo(tmp_path / "b", "household", 5.0, 3)
    # what the firmware printed after its last block races with the end of the run: leave it out
    def upto_4s(log: str) -> list[str]:
        return [line for line in log.splitlines() if not line.startswith("stat 250")]
    assert upto_4s(a) == upto_4s(b) and len(upto_4s(a)) >= 5
    s1 = Simulation(load_board(), "household-pv", 11)
    s2 = Simulation(load_board(), "household-pv", 11)
    s3 = Simulation(load_board(), "household-pv", 12)
    x1, x2, x3 = (s.samples(0, 9600) for s in (s1, s2, s3))
    assert np.array_equal(x1, x2) and not np.array_equal(x1, x3)
    np.testing.assert_array_equal(s1.truth_arrays()["e_net_j"], s2.truth_arrays()["e_net_j"])


def test_brownout_tears_the_page_being_written_and_reboots(tmp_path: Path) -> None:
    vb, log = run_echo(tmp_path, "brownouts", 50.0, seed=2)
    fail = vb.sim.scn.outages.spans[0][0]
    assert vb.stats.brownout_flags == [fail]
    (t_dead, why), = vb.stats.deaths[:1]
    assert abs(t_dead - (fail + vb.board.holdup_s)) < 1e-9
    assert "torn" in why                                   # echo_fw writes pages until it dies
    assert len(vb.eeprom.torn) == 1
    saved = [line.split() for line in log.splitlines() if line.startswith("saved")]
    # saves are 5 ms apart; the last one completed before the supply died, the next was torn
    ticks = [int(s[2]) for s in saved]
    assert all(b - a == 5000 for a, b in zip(ticks, ticks[1:], strict=False))
    assert ticks[-1] <= t_dead * 1e6 < ticks[-1] + 5000
    assert vb.stats.boots[1][1] == RESET_BROWNOUT
    assert vb.stats.boots[1][0] > vb.sim.scn.outages.spans[0][1]
    assert vb.eeprom.read(0, 4) == (2).to_bytes(4, "little")    # EEPROM survived the outage
    assert "boot 2 cause 2" in log


def test_pty_carries_uart_bytes_through_the_firmware(tmp_path: Path) -> None:
    sim = Simulation(load_board(), "steady", 1)
    vb = VirtualBoard(sim, firmware=ECHO_FW, fw_log=tmp_path / "fw.log", speed=4.0)
    assert vb.pty_path is not None
    ser = serial.Serial(vb.pty_path, 115200, timeout=0.1)
    th = threading.Thread(target=vb.run, args=(3.0,))
    th.start()
    try:
        payload = bytes(range(256))
        time.sleep(0.2)
        ser.write(payload)
        got = b""
        deadline = time.monotonic() + 5.0
        while len(got) < len(payload) and time.monotonic() < deadline:
            got += ser.read(512)
        assert got == payload
    finally:
        th.join()
        ser.close()
        vb.close()
    assert vb.stats.uart_to_board == 256 and vb.stats.uart_from_board == 256
    # wall-clock pacing: 3 simulated seconds at speed 4 take about 0.75 s
    assert 0.6 < vb.stats.wall_s < 3.0


def test_record_file_round_trip(tmp_path: Path) -> None:
    sim = Simulation(load_board(), "pulse-meters", 5)
    sim.run_model(30)
    out = tmp_path / "r.npz"
    sim.write_record(out, 30, {"speed": "max"})
    meta, arr = load_record(out)
    assert meta["seed"] == 5 and meta["scenario"] == "pulse-meters" and meta["speed"] == "max"
    assert meta["board"]["name"] == "gridtap-1"
    assert arr["e_imp_j"].shape == (30, 3)
    assert arr["pulse_t_s"].size == arr["pulse_input"].size > 0
    assert np.all(arr["pulse_t_s"] < 30.0)


def _script(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "fw_bad.py"
    p.write_text("from gridtap_fw.hal_virtual import VirtualHal\nhal = VirtualHal()\n"
                 "buf = bytearray(96 * 8)\nhal.adc_block(buf)\n" + body)
    return p


def test_crashing_firmware_is_restarted_then_reported(tmp_path: Path) -> None:
    fw = _script(tmp_path, "raise RuntimeError('boom ' + str(hal.reset_cause()))\n")
    vb = VirtualBoard(Simulation(load_board(), "steady", 1), firmware=fw, use_pty=False,
                      fw_log=tmp_path / "fw.log")
    with pytest.raises(SimError, match="crashed 3 times") as err:
        vb.run(10.0)
    vb.close()
    assert "RuntimeError: boom 3" in str(err.value)        # restarted as a watchdog reset
    assert [c for _, c in vb.stats.boots] == [RESET_POWER_ON, RESET_WATCHDOG, RESET_WATCHDOG]


def test_hung_firmware_is_reset_by_the_watchdog(tmp_path: Path) -> None:
    fw = _script(tmp_path, "while True:\n    pass\n")
    vb = VirtualBoard(Simulation(load_board(), "steady", 1), firmware=fw, use_pty=False,
                      fw_log=tmp_path / "fw.log", hang_wall_s=0.3)
    with pytest.raises(SimError):
        vb.run(10.0)
    vb.close()
    assert vb.stats.deaths and all("hung" in why for _, why in vb.stats.deaths)


def test_prefetch_stopped_and_resumed_gives_the_uninterrupted_run() -> None:
    """A second made ahead on the worker is kept, not made again (noise and meters have state)."""
    a = Simulation(load_board(), "pulse-meters", 4)
    a.run_model(12)
    b = Simulation(load_board(), "pulse-meters", 4)
    for end in (3, 7, 12):
        b.start_prefetch()
        b.keep_from = b.next_k
        b.ensure_second(end - 1)
        b.stop_prefetch()
    ta, tb = a.truth_arrays(), b.truth_arrays()
    np.testing.assert_array_equal(ta["pulse_t_s"], tb["pulse_t_s"])
    np.testing.assert_array_equal(ta["e_net_j"], tb["e_net_j"])
    for s in (a, b):
        s.keep_from = 12
        s.ensure_second(12)
    assert np.array_equal(a.chunks[12].samples, b.chunks[12].samples)   # the same noise stream


class _TxLog(VirtualBoard):
    """Records every UART write and EEPROM write with the board time it was made at."""

    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.events: list[tuple[str, float, bytes]] = []

    def _on_uart_tx(self, payload: bytes) -> None:
        self.events.append(("tx", self.now, payload))
        super()._on_uart_tx(payload)

    def _on_ee_write(self, payload: bytes) -> bool:
        self.events.append(("ee", self.now, payload))
        return super()._on_ee_write(payload)


@pytest.mark.skipif(not (FIRMWARE_DIR / "gridtap_fw" / "app.py").exists(), reason="no firmware core")
def test_batches_of_any_length_show_the_firmware_the_same_board(tmp_path: Path) -> None:
    """One request per block or per simulated second: the same writes at the same instants."""
    runs = []
    for span in (0.01, 0.37, 1.0):
        sim = Simulation(load_board(), "brownouts", 3)
        vb = _TxLog(sim, use_pty=False, fw_log=tmp_path / f"fw-{span}.log", batch_max_s=span)
        try:
            vb.run(24.0)
        finally:
            vb.close()
        runs.append(vb)
    per_block, *others = runs
    assert per_block.stats.batches == per_block.stats.adc_blocks      # really one block per request
    assert per_block.stats.deaths and per_block.stats.brownout_flags  # the outage at ~20 s is in
    ee = [e for e in per_block.events if e[0] == "ee"]
    assert len(ee) >= 4                                                  # boot saves and the brownout save
    for vb in others:
        assert vb.stats.batches < per_block.stats.batches / 10
        n = min(len(vb.events), len(per_block.events))
        # the last batch ends the run at a different instant: compare what both runs saw
        end = min(vb.now, per_block.now) - 1.0
        assert [e for e in vb.events[:n] if e[1] < end] == [e for e in per_block.events[:n] if e[1] < end]
        assert vb.stats.boots == per_block.stats.boots and vb.stats.deaths == per_block.stats.deaths
        assert vb.stats.brownout_flags == per_block.stats.brownout_flags
        assert bytes(vb.eeprom.data) == bytes(per_block.eeprom.data)


def test_uart_writes_need_no_big_heap_block(tmp_path: Path) -> None:
    """60 kB/s of UART writes with 16 KB of heap to spare: no MemoryError, no reset.

    hal_virtual once gathered a batch's writes and joined them (~64 KB here): MemoryError.
    """
    fw = Path(__file__).resolve().parents[1] / "support" / "simfw" / "uart_flood_fw.py"
    vb = VirtualBoard(Simulation(load_board(), "steady", 1), firmware=fw, use_pty=False,
                      fw_log=tmp_path / "fw.log")
    try:
        vb.run(5.0)
    finally:
        vb.close()
    log = (tmp_path / "fw.log").read_text()
    assert "MemoryError" not in log, log[-1500:]
    assert vb.stats.boots == [(0.0, RESET_POWER_ON)] and "blocks 400" in log
    assert vb.from_board.stats.bytes_in >= 400 * 3 * 200


def test_a_soft_reset_mid_batch_loses_no_edge_after_the_reboot(tmp_path: Path) -> None:
    """Edges of blocks the firmware never reached before RESET are seen by the next boot."""
    fw = Path(__file__).resolve().parents[1] / "support" / "simfw" / "reset_fw.py"
    rng = np.random.default_rng(5)
    starts = np.sort(rng.uniform(0.1, 3.9, 40))
    sim = Simulation(load_board(), "steady", 1)
    meter = sim.scn.meters[0]
    meter.step = lambda k, _w: [e for t in starts[(starts >= k) & (starts < k + 1)]  # type: ignore[method-assign]
                                for e in ((float(t), 0, 0), (float(t) + 0.02, 0, 1))]
    vb = VirtualBoard(sim, firmware=fw, use_pty=False, fw_log=tmp_path / "fw.log")
    try:
        vb.run(4.0)
    finally:
        vb.close()
    assert [c for _, c in vb.stats.boots] == [RESET_POWER_ON, 4]
    reset_t, boot2 = vb.stats.deaths[0][0], vb.stats.boots[1][0]
    assert 1.5 <= reset_t < 1.6 and boot2 == pytest.approx(reset_t + 0.3)
    log = (tmp_path / "fw.log").read_text().split("--- boot 2")
    seen2 = len([line for line in log[1].splitlines() if line.startswith("edge")])
    due2 = int(((starts >= boot2) & (starts + 0.02 < vb.now - 0.01)).sum()) * 2
    assert seen2 >= due2 > 0
