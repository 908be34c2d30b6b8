"""Run the firmware App against FwHal for a scripted scenario (MicroPython).

run(spec) -> dict. spec keys: seconds, vrms, freq, vt_lead, v_offset, noise,
cts: list of {irms, angle, lead, offset, sign, scale}, cfg: list of per-CT
{phase_mdeg, invert, gain_e6}, block. The result holds the exact energy
registers (mWh with the carried residue), the sets over which energy was
integrated and the last GAUGE per channel.
"""

from fwhal import FwHal

from gridtap_fw import app, wire

BOARD = "hardware/board.json"


def make(spec: dict):
    hal = FwHal(spec.get("board", BOARD), spec.get("block", 240), spec.get("start_us", 0x3FFFFFFF - 2000000))
    hal.vrms = spec.get("vrms", 230.0)
    hal.freq = spec.get("freq", 50.0)
    hal.vt_lead = spec.get("vt_lead", 0.0)
    hal.v_offset = spec.get("v_offset", 0.0)
    hal.noise = spec.get("noise", 0.0)
    for k, c in enumerate(spec.get("cts", [])):
        hal.set_ct(k, c.get("irms", 0.0), c.get("angle", 0.0), c.get("lead", 0.0), c.get("offset", 0.0),
                   c.get("sign", 1))
        hal.apc[k] *= c.get("scale", 1.0)
    a = app.App(hal)
    for k, c in enumerate(spec.get("cfg", [])):
        ct = a.cfg.cts[k]
        ct.phase_mdeg = c.get("phase_mdeg", 0)
        ct.invert = c.get("invert", 0)
        ct.gain_e6 = c.get("gain_e6", 1000000)
    a.power.config_changed()
    return hal, a


def run(spec: dict) -> dict:
    hal, a = make(spec)
    steps = int(spec.get("seconds", 5) * hal.sps) // hal.block_sets
    gauges: list = [None] * (hal.nch - 1)
    for _ in range(steps):
        a.step()
        for m in hal.frames():
            if m.mtype == wire.GAUGE:
                gauges[m.values[0]] = list(m.values)
    regs = []
    qregs = []
    for e in a.energies:
        regs.append([e.imp.mwh + e.imp.res / e.imp.unit, e.exp.mwh + e.exp.res / e.exp.unit])
        qregs.append([e.qpos.mwh + e.qpos.res / e.qpos.unit, e.qneg.mwh + e.qneg.res / e.qneg.unit])
    return {"regs": regs, "qregs": qregs, "ac_sets": a.power.ac_sets, "sps": hal.sps, "gauges": gauges,
            "periods": a.power.periods, "last_q_mvar": list(a.power.last_q_mvar)}
