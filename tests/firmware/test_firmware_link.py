"""The board side of the link under real MicroPython: ACKs, resends with RETX,
Flukso-style aging of the tuple ring, and the command handlers."""

from __future__ import annotations

import json
from typing import Any

from tests.support.mpy import ROOT, run_micropython

FWTEST = ROOT / "tests" / "support" / "fwtest"
BOARD = str(ROOT / "hardware" / "board.json")


def run(body: str) -> Any:
    prelude = ("import json\nfrom fwhal import FwHal\nfrom gridtap_fw import app, link, wire\n"
               "BOARD = %r\n" % BOARD)
    return json.loads(run_micropython(prelude + body, extra_path=[FWTEST]).strip().splitlines()[-1])


def test_unacked_tuples_are_resent_with_retx_and_acked_ones_are_not() -> None:
    res = run("""
hal = FwHal(BOARD, 240)
hal.vrms = 230.0
hal.set_ct(0, 10.0)
a = app.App(hal)
first = []
for _ in range(10):  # 0.5 s
    a.step()
    first += [[m.mtype, m.seq, m.flags] for m in hal.frames() if m.mtype in (wire.COUNTER, wire.PULSE)]
acked = [s for t, s, f in first if t == wire.COUNTER]
hal.send(wire.ACK, 1, (tuple(acked),))
later = []
for _ in range(60):  # 3 s more, past the 2 s resend timeout
    a.step()
    later += [[m.mtype, m.seq, m.flags] for m in hal.frames()
              if m.mtype in (wire.COUNTER, wire.PULSE, wire.EVENT)]
print(json.dumps({"first": first, "acked": acked, "later": later}))
""")
    first, acked, later = res["first"], res["acked"], res["later"]
    assert len(acked) == 3 and len(first) == 5  # one COUNTER per CT, one PULSE per input
    retx = [(t, s) for t, s, f in later if f & 1]
    pulse_seqs = {s for t, s, f in first if t == 6}
    assert pulse_seqs and pulse_seqs <= {s for t, s in retx}  # unacked PULSEs came back, same seq
    assert not {s for t, s in retx} & set(acked)  # ACKed COUNTERs never did
    new = [s for t, s, f in later if not f & 1]
    assert len(new) == len(set(new))


def test_full_ring_is_aged_keeping_first_and_last_per_bucket_and_the_newest() -> None:
    res = run("""
class Uart:
    board = None
    def __init__(self):
        self.rx = b""
    def uart_write(self, data):
        pass
    def uart_read(self):
        d = self.rx
        self.rx = b""
        return d
u = Uart()
lk = link.Link(u, 32)
sent = {0: [], 1: []}
for t in range(600):  # 10 minutes of 1 s tuples for two sensors, host away
    for k in (0, 1):
        v = (k, t, 0, t * 3 + k, 0, 0, 0)
        seq = lk.send_reliable(wire.COUNTER, v, k, t * 1000)
        sent[k].append([seq, t])
    lk.service(t * 1000)
ring = [[e[0], e[3], e[4], e[2][3]] for e in lk.ring]
u.rx = wire.encode(wire.ACK, 0, ([e[0] for e in lk.ring[:10]],))
lk.poll(700000)
left = len(lk.ring)
u.rx = wire.encode(wire.ACK, 1, ([e[0] for e in lk.ring],))
lk.poll(700001)
print(json.dumps({"ring": ring, "sent": sent, "aged": lk.aged, "left": left, "end": len(lk.ring),
                  "resent": lk.resent}))
""")
    ring = res["ring"]
    assert len(ring) <= 32 and res["aged"] == 1200 - len(ring)
    for k in (0, 1):
        mine = [r for r in ring if r[1] == k]
        sent = res["sent"][str(k)]
        assert mine[0][0] == sent[0][0]  # the very first tuple is kept
        assert mine[-1][0] == sent[-1][0]  # the newest is never dropped
        times = [r[2] for r in mine]
        assert times == sorted(times)
        assert [r[3] for r in mine] == [t // 1000 * 3 + k for t in times]  # cumulative values intact
    assert res["resent"] > 0  # the backlog was retried while the host was away (with backoff)
    assert res["left"] == len(ring) - 10
    assert res["end"] == 0


def test_commands_hello_time_config_and_naks() -> None:
    res = run("""
hal = FwHal(BOARD, 96)
a = app.App(hal)
a.step()
hal.frames()
hal.send(wire.HELLO_REQ, 1)
hal.send(wire.TIME_SET, 2, (1700000000, 500))
hal.send(wire.CONFIG_GET, 3, (wire.TARGET_CT, 0, (wire.P_METER_CONST_MILLI,)))  # not a CT parameter
hal.send(wire.CONFIG_GET, 4, (wire.TARGET_CT, 3, ()))  # CT index 3 does not exist
hal.send(wire.CONFIG_SET, 5, (wire.TARGET_CT, 0, ((wire.P_GAIN_E6, 0),)))  # gain 0
hal.send(wire.CONFIG_SET, 6, (wire.TARGET_PULSE, 1, ((wire.P_PHASE_MDEG, 10),)))
hal.send(wire.COUNTER, 7, (0, 0, 0, 0, 0, 0, 0))  # a board->host type
hal.send(wire.CONFIG_SET, 8, (wire.TARGET_CT, 0, ((wire.P_GAIN_E6, 1010000), (wire.P_PHASE_MDEG, 180001))))
a.step()
out = [[m.mtype, list(m.values) if m.mtype != wire.HELLO else m.values[5]] for m in hal.frames()
       if m.mtype in (wire.HELLO, wire.ACK, wire.NAK, wire.TIME)]
gain = a.cfg.cts[0].gain_e6
hal.brown = True
a.step()
hal.frames()
hal.send(wire.COMMIT, 9, (1,))
a.step()
busy = [list(m.values) for m in hal.frames() if m.mtype == wire.NAK]
print(json.dumps({"out": out, "gain": gain, "busy": busy}))
""")
    out = res["out"]
    assert out[0] == [1, 1]  # HELLO, boot count 1
    assert out[1] == [8, [[2]]]  # ACK of TIME_SET
    t, ms, _uptime, synced = out[2][1]
    assert out[2][0] == 4 and synced == 1 and abs((t * 1000 + ms) - 1700000000500) <= 1
    naks = [v for mtype, v in out[3:] if mtype == 9]
    assert naks == [[3, 10, 3], [4, 10, 4], [5, 11, 4], [6, 11, 3], [7, 5, 1], [8, 11, 4]]
    assert res["gain"] == 1000000  # a refused CONFIG_SET changes nothing, not even its good items
    assert res["busy"] == [[9, 13, 5]]  # no EEPROM writes after the brownout save


def test_lost_adc_blocks_are_reported() -> None:
    res = run("""
hal = FwHal(BOARD, 96)
a = app.App(hal)
for _ in range(20):
    a.step()
hal.frames()
hal.adc_overruns = 3
for _ in range(20):
    a.step()
print(json.dumps([[m.values[2], m.values[3], m.values[4].decode()] for m in hal.frames()
                  if m.mtype == wire.EVENT and not m.flags]))
""")
    assert res == [[4, 0x0203, "ADC blocks lost: 3 in all"]]
