"""The unmodified firmware on the virtual board (`gridtap sim`), read through its pty
like a host would: phase correction against an independent model, and counters
across real brownouts (the process is killed mid-hold-up and rebooted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import serial

from gridtap_fw import wire
from tests.support.mpy import ROOT


def run_sim(scenario: str, seconds: int, speed: int, setup: list[bytes], tmp: Path,
            record: Path | None = None) -> list[wire.Message]:
    extra = ["--record", str(record)] if record else []
    proc = subprocess.Popen([sys.executable, "-m", "gridtap.cli", "sim", "--scenario", scenario,
                             "--speed", str(speed), "--duration", str(seconds), "--seed", "3",
                             "--fw-log", str(tmp / "fw.log"), *extra],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("pty: "), first
    port = serial.Serial(first.split()[1], 115200, timeout=0.02)
    dec = wire.Decoder()
    msgs: list[wire.Message] = []
    for frame in setup:
        port.write(frame)
    try:
        while proc.poll() is None:
            try:
                data = port.read(4096)
            except serial.SerialException:
                break
            new = dec.feed(data) if data else []
            msgs += new
            rel = tuple(m.seq for m in new if m.mtype in (wire.COUNTER, wire.PULSE, wire.EVENT))
            try:
                for i in range(0, len(rel), 64):
                    port.write(wire.encode(wire.ACK, 0, (rel[i:i + 64],)))
            except (serial.SerialException, OSError):
                break  # the run ended between the read and the ACK: the pty is gone
    finally:
        port.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, (tmp / "fw.log").read_text()[-2000:]
    assert dec.counts[wire.C_OK] == len(msgs) and sum(dec.counts) == len(msgs)  # a clean link
    return msgs


def test_phase_correction_and_signs_against_the_model(tmp_path: Path) -> None:
    board = json.loads((ROOT / "hardware" / "board.json").read_text())
    phase = round((board["sim"]["vt_lead_deg"] - board["sim"]["ct_lead_deg"]) * 1000)
    setup = [wire.encode(wire.CONFIG_SET, 1 + k, (wire.TARGET_CT, k, ((wire.P_PHASE_MDEG, phase),)))
             for k in range(3)]
    msgs = run_sim("steady", 8, 8, setup, tmp_path)
    acks = [m.values[0][0] for m in msgs if m.mtype == wire.ACK]
    assert acks == [1, 2, 3]
    gauges = [m.values for m in msgs if m.mtype == wire.GAUGE][9:]  # after the config landed
    assert len(gauges) >= 12
    pf = {k: sum(g[7] for g in gauges if g[0] == k) / sum(1 for g in gauges if g[0] == k) / 1e4
          for k in range(3)}
    # CT1 heater (PF 1, import), CT2 motor at PF 0.5 lagging, CT3 generator exporting:
    # the power factor is independent of the (uncalibrated) gains, not of the phase.
    assert pf[0] > 0.998 and pf[2] < -0.998
    assert abs(pf[1] - 0.5) < 0.003, pf
    counters = {m.values[0]: m.values for m in msgs if m.mtype == wire.COUNTER}
    assert counters[0][5:] == (0, 0) and counters[2][3:5] == (0, 0)  # import only / export only


def test_counters_survive_real_brownouts_and_never_decrease(tmp_path: Path) -> None:
    msgs = run_sim("brownouts", 60, 30, [], tmp_path)
    hellos = [m.values for m in msgs if m.mtype == wire.HELLO]
    assert len(hellos) >= 2
    assert [h[5] for h in hellos] == list(range(1, len(hellos) + 1))  # boot count
    assert [h[7] for h in hellos] == list(range(len(hellos)))  # brownout count
    assert all(h[6] == wire.RESET_BROWNOUT for h in hellos[1:])
    saves = [m for m in msgs if m.mtype == wire.EVENT and m.values[3] == wire.EV_BROWNOUT_SAVE]
    assert saves and all(m.values[4] == b"brownout save ok" for m in saves)
    last: dict[int, tuple[int, int]] = {}
    for m in msgs:
        if m.mtype == wire.COUNTER and not m.flags & wire.FLAG_RETX:
            v = m.values
            now = (v[3] * 1000 + v[4], v[5] * 1000 + v[6])
            before = last.get(v[0], (0, 0))
            assert now[0] >= before[0] and now[1] >= before[1], (before, now)
            last[v[0]] = now
    assert last[0][0] > 0


def test_calibrated_power_matches_the_model_within_0_2_percent(tmp_path: Path) -> None:
    import numpy as np

    # First run: what a calibration would find (the model's per-channel ADC gains for
    # this seed); second run: the same board with those gains and the phase pushed.
    run_sim("steady", 2, 20, [], tmp_path, tmp_path / "dry.npz")
    meta = json.loads(str(np.load(tmp_path / "dry.npz", allow_pickle=True)["meta"]))
    gain = meta["adc_gain"]
    board = meta["board"]["sim"]
    phase = round((board["vt_lead_deg"] - board["ct_lead_deg"]) * 1000)
    v_gain = round(1e6 / gain[0])
    setup = [wire.encode(wire.CONFIG_SET, 1, (wire.TARGET_VOLTAGE, 0, ((wire.P_GAIN_E6, v_gain),)))]
    setup += [wire.encode(wire.CONFIG_SET, 2 + k, (wire.TARGET_CT, k, (
        (wire.P_GAIN_E6, round(1e6 / gain[k + 1])), (wire.P_PHASE_MDEG, phase)))) for k in range(3)]
    msgs = run_sim("steady", 10, 10, setup, tmp_path, tmp_path / "run.npz")
    assert [m.values[0][0] for m in msgs if m.mtype == wire.ACK] == [1, 2, 3, 4]
    rec = np.load(tmp_path / "run.npz", allow_pickle=True)
    truth = rec["e_net_j"][3:].mean(axis=0)  # W: joules per second, steady loads
    gauges = [m.values for m in msgs if m.mtype == wire.GAUGE][9:]
    for k in range(3):
        got = np.mean([g[3] / 1000 for g in gauges if g[0] == k])
        assert abs(got - truth[k]) <= 0.002 * abs(truth[k]), (k, got, truth[k])


def test_bouncing_s0_meters_count_every_pulse_once(tmp_path: Path) -> None:
    import numpy as np

    msgs = run_sim("pulse-meters", 40, 20, [], tmp_path, tmp_path / "p.npz")
    rec = np.load(tmp_path / "p.npz", allow_pickle=True)
    last = {}
    for m in msgs:
        if m.mtype == wire.PULSE and not m.flags & wire.FLAG_RETX:
            last[m.values[0]] = m.values
    for inp in (0, 1):
        _i, t, ms, _count, _milli, pulses = last[inp]
        stamp = t + ms / 1000  # board time (no TIME_SET: seconds since boot = simulated time)
        truth = rec["pulse_t_s"][rec["pulse_input"] == inp]
        assert pulses >= (10 if inp == 0 else 1)  # P1 1000 imp/kWh, P2 a water meter (bursty)
        # every real pulse up to the last one the board reported, each exactly once
        assert pulses == int(np.sum(truth <= stamp + 0.002)), (inp, pulses, stamp, truth[-5:])
        assert abs(truth[pulses - 1] - stamp) < 0.002  # and its stamp is that pulse's start
