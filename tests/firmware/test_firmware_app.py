"""End to end through App under MicroPython: bouncing S0 pulses become PULSE tuples
with exact totals and Unix stamps from the board clock."""

from __future__ import annotations

import json

from tests.support.mpy import ROOT, run_micropython

FWTEST = ROOT / "tests" / "support" / "fwtest"
BOARD = str(ROOT / "hardware" / "board.json")


def test_pulse_tuples_carry_exact_totals_and_stamps() -> None:
    script = """
import json
from fwhal import FwHal
from gridtap_fw import app, wire
hal = FwHal(%r, 96, start_us=0x3FFFFFFF - 1500000)  # ticks wrap during the run
a = app.App(hal)
hal.send(wire.CONFIG_SET, 1, (wire.TARGET_PULSE, 1, ((wire.P_METER_CONST_MILLI, 800000),)))  # 800 imp/kWh
hal.send(wire.TIME_SET, 2, (1700000000, 0))
a.step()
t_set = hal.now_us()  # board time when TIME_SET was handled (end of that block)
starts = []
for j in range(25):
    t = 300000 + j * 120000
    starts.append(t)
    hal.add_pulse(1, t, 45000, 5000, 4)  # 5 ms of bounce at press and release
    if j < 7:
        hal.add_pulse(0, t + 7000, 60000, 5000, 4)
for _ in range(250):  # 5 s: the last pulse ends at 3.2 s, a changing register is sent at most once a second
    a.step()
pulses = [list(m.values) for m in hal.frames() if m.mtype == wire.PULSE and not m.flags & wire.FLAG_RETX]
print(json.dumps({"pulses": pulses, "starts": starts, "t_set": t_set}))
""" % BOARD
    res = json.loads(run_micropython(script, extra_path=[FWTEST]).strip().splitlines()[-1])
    last = {}
    for values in res["pulses"]:
        last[values[0]] = values
    inp, t, ms, count, milli, pulses = last[1]
    assert pulses == 25
    assert (count, milli) == (31, 250)  # 25 x 1.25 Wh, exactly
    stamp_ms = t * 1000 + ms
    expect_ms = 1_700_000_000_000 + (res["starts"][-1] - res["t_set"]) // 1000
    assert abs(stamp_ms - expect_ms) <= 1
    assert last[0][5] == 7 and (last[0][3], last[0][4]) == (7, 0)  # default 1000 imp/kWh
    counts = [v[5] for v in res["pulses"] if v[0] == 1]
    assert counts == sorted(counts)  # never backwards
