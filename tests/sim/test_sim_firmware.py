"""The real firmware core on the virtual board: its link output against the simulator's truth."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import serial

from gridtap_fw import wire
from gridtap_sim.board import DEFAULT_BOARD, load_board
from gridtap_sim.engine import Simulation
from gridtap_sim.runner import FIRMWARE_DIR, VirtualBoard

pytestmark = pytest.mark.skipif(not (FIRMWARE_DIR / "gridtap_fw" / "app.py").exists(),
                                reason="the firmware core is not in the tree")


def ideal_board(tmp_path: Path) -> Path:
    """board.json with ideal transducers (no gain or phase errors), so no calibration is needed."""
    raw = json.loads(DEFAULT_BOARD.read_text())
    raw.setdefault("sim", {}).update({"gain_error_sd": 0.0, "vt_lead_deg": 0.0, "ct_lead_deg": 0.0,
                                      "adc_offset_counts_sd": 8.0})
    path = tmp_path / "board.json"
    path.write_text(json.dumps(raw))
    return path


def run_with_host(sim: Simulation, seconds: float, tmp_path: Path) -> tuple[VirtualBoard, list[wire.Message]]:
    vb = VirtualBoard(sim, speed=1e9, fw_log=tmp_path / "fw.log")   # paced, but far faster than needed
    assert vb.pty_path is not None
    ser = serial.Serial(vb.pty_path, 115200, timeout=0.05)
    th = threading.Thread(target=vb.run, args=(seconds,))
    th.start()
    dec = wire.Decoder()
    msgs: list[wire.Message] = []
    reliable = (wire.COUNTER, wire.PULSE, wire.EVENT)
    try:
        while th.is_alive() or ser.in_waiting:
            new = dec.feed(ser.read(4096))
            msgs += new
            seqs = [m.seq for m in new if m.mtype in reliable]
            for i in range(0, len(seqs), wire.ACK_MAX):      # ACK like the daemon, so the ring drains
                ser.write(wire.encode(wire.ACK, 0, (tuple(seqs[i:i + wire.ACK_MAX]),)))
    finally:
        th.join()
        ser.close()
        vb.close()
    assert dec.counters()["frames_ok"] == len(msgs)
    return vb, msgs


def test_firmware_gauges_match_truth_on_the_steady_bench(tmp_path: Path) -> None:
    sim = Simulation(load_board(ideal_board(tmp_path)), "steady", 1)
    vb, msgs = run_with_host(sim, 8.0, tmp_path)
    log = (tmp_path / "fw.log").read_text()
    assert "Traceback" not in log, log[-2000:]
    assert vb.stats.boots == [(0.0, 1)]
    hello = [m for m in msgs if m.mtype == wire.HELLO]
    assert hello and hello[0].as_dict()["n_ct"] == 3
    gauges = [m.as_dict() for m in msgs if m.mtype == wire.GAUGE]
    truth = sim.truth_arrays()["e_net_j"][2:].mean(axis=0)     # W: 2300, 1150, -2300
    for ch in range(3):
        p = [g["power_mw"] / 1000.0 for g in gauges if g["channel"] == ch][2:]
        assert len(p) >= 4
        assert np.median(p) == pytest.approx(truth[ch], rel=0.01), (ch, p)
    pf = [g["pf_e4"] for g in gauges if g["channel"] == 1][2:]
    assert np.median(pf) == pytest.approx(5000, abs=100)


def test_firmware_saves_on_brownout_and_counters_survive(tmp_path: Path) -> None:
    sim = Simulation(load_board(), "brownouts", 1)
    vb, msgs = run_with_host(sim, 36.0, tmp_path)
    fail, back = sim.scn.outages.spans[0]
    assert back < 36.0 - 1.0
    assert len(vb.stats.boots) == 2 and vb.stats.boots[1][1] == 2
    assert vb.stats.brownout_flags == [fail]                     # the firmware was told in time
    assert vb.eeprom.torn == []                                   # and finished its save before dying
    events = [m.as_dict() for m in msgs if m.mtype == wire.EVENT]
    assert any(b"brownout" in e["text"] for e in events), events
    hellos = [m.as_dict() for m in msgs if m.mtype == wire.HELLO]
    assert [h["boot_count"] for h in hellos][-2:] == [1, 2]
    assert hellos[-1]["reset_cause"] == 2 and hellos[-1]["brownout_count"] == 1
    # counters never go backwards across the outage, per CT
    second_hello = max(i for i, m in enumerate(msgs) if m.mtype == wire.HELLO)
    counters = [(i, m.as_dict()) for i, m in enumerate(msgs) if m.mtype == wire.COUNTER]
    for ct in range(3):
        wh = [(i, d["imp_wh"] + d["imp_milli"] / 1000.0) for i, d in counters if d["sensor"] == ct]
        before = [x for i, x in wh if i < second_hello]
        after = [x for i, x in wh if i > second_hello]
        assert before and after and after[0] >= max(before)
    # and the reactive registers on the GAUGEs (saved with them since record layout 2)
    gauges = [(i, m.as_dict()) for i, m in enumerate(msgs) if m.mtype == wire.GAUGE]
    moved = 0.0
    for ct in range(3):
        for kind in ("qpos", "qneg"):
            q = [(i, d[kind + "_varh"] + d[kind + "_milli"] / 1000.0)
                 for i, d in gauges if d["channel"] == ct]
            before = [x for i, x in q if i < second_hello]
            after = [x for i, x in q if i > second_hello]
            assert before and after and after[0] >= max(before), (ct, kind)
            moved = max(moved, max(before))
    assert moved > 0.05  # some register had something to keep
