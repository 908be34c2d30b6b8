"""A scripted HAL for running the firmware core under the MicroPython unix port.

MicroPython code (it also imports under CPython, for ruff and mypy): it
synthesises ADC blocks from an analytic mains model, raw S0 edges with
contact bounce, an in-memory EEPROM with page semantics and torn-write
injection, a supply-monitor flag and a byte-queue UART. Simulated time is the
sample clock: every adc_block call advances it by the block's sets.

Signal model (what the tests compare against):
  v(t)  = sqrt(2)*vrms*sin(w*t + vt_lead)                 + v_offset + noise
  i_k(t)= sign*sqrt(2)*irms*sin(w*(t + (k+1)*slot) - angle + ct_lead) + offset + noise
so CT k is sampled (k+1)*slot after V (round-robin ADC) and the true power of
CT k is vrms*irms*cos(angle) (angle = current lag; 0..360 covers all four
quadrants), times sign for a clamp fitted backwards.
"""

import json
import math
import struct

from gridtap_fw import wire


class PowerLoss(Exception):
    """The supply died during an EEPROM write (the page is torn)."""


class FwHal:
    def __init__(self, board_path: str, block_sets: int = 96, start_us: int = 0) -> None:
        with open(board_path) as f:
            self.board = json.load(f)
        adc = self.board["adc"]
        chans = adc["channels"]
        self.sps = int(adc["sets_per_s"])
        self.slot = float(adc["slot_us"]) * 1e-6
        self.nch = len(chans)
        self.vpc = float(chans[0]["v_per_count"])
        self.apc = [float(c["a_per_count"]) for c in chans[1:]]
        self.block_sets = block_sets
        self.set_no = 0
        self.start_us = start_us  # ticks offset, to exercise the 2**30 wrap
        # mains model
        self.vrms = 0.0
        self.freq = 50.0
        self.vt_lead = 0.0  # degrees
        self.v_offset = 0.0  # counts
        self.noise = 0.0  # peak counts, uniform
        # per CT: irms, angle, lead, offset, sign
        self.cts: list = [[0.0, 0.0, 0.0, 0.0, 1] for _ in range(self.nch - 1)]
        self.seed = 12345
        # EEPROM
        e = self.board["i2c_eeprom"]
        self.page = int(e["page_bytes"])
        self.ee = bytearray(b"\xff" * int(e["size_bytes"]))
        self.page_writes = [0] * (int(e["size_bytes"]) // self.page)
        self.writes = 0
        self.tear_at = -1  # the write number that the supply cuts short
        self.write_ms = 0  # time spent in EEPROM write cycles
        self.read_fail = False  # every EEPROM read raises OSError (a dead I2C bus)
        self.adc_overruns = 0  # what hal_rp2 counts when the core loses ADC blocks
        # the rest
        self.uart_in = bytearray()
        self.uart_out = bytearray()
        self.edges: list = []  # pending (input, t_us unwrapped, level), sorted
        self.brown = False
        self.cause = wire.RESET_POWER_ON
        self.uid = b"\xe6\x61\x38\x93\x5b\x2c\x4a\x21"
        self.dec = wire.Decoder()

    # ------------------------------------------------------------ model control

    def set_ct(self, k: int, irms: float, angle: float = 0.0, lead: float = 0.0, offset: float = 0.0,
               sign: int = 1) -> None:
        self.cts[k] = [irms, angle, lead, offset, sign]

    def now_us(self) -> int:
        return self.set_no * 1000000 // self.sps

    def _rand(self) -> float:
        self.seed = (self.seed * 1103515245 + 12345) & 0x7FFFFFFF
        return self.seed / 2147483648.0 - 0.5

    def _raw(self, x: float) -> int:
        if self.noise:
            x += 2.0 * self.noise * self._rand()
        r = int(math.floor(2048.5 + x))
        return 0 if r < 0 else 4095 if r > 4095 else r

    # ------------------------------------------------------------ HAL contract

    def ticks_us(self) -> int:
        return (self.start_us + self.now_us()) & 0x3FFFFFFF

    def adc_block(self, buf) -> int:
        n = self.block_sets
        nch = self.nch
        w = 2.0 * math.pi * self.freq
        vp = math.sqrt(2.0) * self.vrms / self.vpc
        vl = math.radians(self.vt_lead)
        cts: list = []
        for k in range(nch - 1):
            c = self.cts[k]
            cts.append((c[4] * math.sqrt(2.0) * c[0] / self.apc[k], math.radians(c[2] - c[1]), c[3],
                        (k + 1) * self.slot))
        at = 0
        for s in range(n):
            t = (self.set_no + s) / self.sps
            struct.pack_into("<H", buf, at, self._raw(vp * math.sin(w * t + vl) + self.v_offset))
            at += 2
            for c in cts:
                struct.pack_into("<H", buf, at, self._raw(c[0] * math.sin(w * (t + c[3]) + c[1]) + c[2]))
                at += 2
        self.set_no += n
        return n

    def pulse_edges(self) -> list:
        now = self.now_us()
        out = []
        j = 0
        edges = self.edges
        while j < len(edges) and edges[j][1] <= now:
            e = edges[j]
            out.append((e[0], (self.start_us + e[1]) & 0x3FFFFFFF, e[2]))
            j += 1
        self.edges = edges[j:]
        return out

    def uart_write(self, data) -> None:
        self.uart_out += data

    def uart_read(self) -> bytes:
        data = bytes(self.uart_in)
        self.uart_in = bytearray()
        return data

    def eeprom_read(self, addr: int, n: int) -> bytes:
        if self.read_fail:
            raise OSError("i2c: no ACK from the EEPROM")
        if addr < 0 or addr + n > len(self.ee):
            raise OSError("eeprom read out of range")
        return bytes(self.ee[addr:addr + n])

    def eeprom_write(self, addr: int, data) -> None:
        if addr % self.page or len(data) > self.page or addr + len(data) > len(self.ee):
            raise ValueError("eeprom write not within one page: %d+%d" % (addr, len(data)))
        self.writes += 1
        self.write_ms += 5
        self.page_writes[addr // self.page] += 1
        if self.writes == self.tear_at:
            half = len(data) // 2
            self.ee[addr:addr + half] = data[:half]
            for j in range(addr + half, addr + len(data)):
                self.ee[j] = int((self._rand() + 0.5) * 256) & 0xFF
            raise PowerLoss()
        self.ee[addr:addr + len(data)] = data

    def brownout(self) -> bool:
        return self.brown

    def reset_cause(self) -> int:
        return self.cause

    def unique_id(self) -> bytes:
        return self.uid

    def reset(self) -> None:
        raise PowerLoss()

    # ------------------------------------------------------------ test helpers

    def reboot(self, cause: int = wire.RESET_POWER_ON) -> None:
        """Power comes back: RAM state of the 'board' is gone, EEPROM stays."""
        self.brown = False
        self.cause = cause
        self.uart_in = bytearray()
        self.uart_out = bytearray()
        self.edges = []
        self.dec = wire.Decoder()

    def add_pulse(self, inp: int, t_us: int, width_us: int, bounce_us: int = 0, nbounce: int = 0) -> None:
        """One S0 pulse (active low) starting at t_us, with nbounce extra edge pairs
        spread over bounce_us at the press and again at the release."""
        ev = [(inp, t_us, 0)]
        for j in range(nbounce):
            a = t_us + (2 * j + 1) * bounce_us // (2 * nbounce + 1)
            b = t_us + (2 * j + 2) * bounce_us // (2 * nbounce + 1)
            ev.append((inp, a, 1))
            ev.append((inp, b, 0))
        r = t_us + width_us
        ev.append((inp, r, 1))
        for j in range(nbounce):
            a = r + (2 * j + 1) * bounce_us // (2 * nbounce + 1)
            b = r + (2 * j + 2) * bounce_us // (2 * nbounce + 1)
            ev.append((inp, a, 0))
            ev.append((inp, b, 1))
        self.edges.extend(ev)
        self.edges.sort(key=lambda e: e[1])

    def frames(self) -> list:
        """Decode and consume what the board sent."""
        out = self.dec.feed(bytes(self.uart_out))
        self.uart_out = bytearray()
        return out

    def send(self, mtype: int, seq: int, values=(), flags: int = 0) -> None:
        self.uart_in += wire.encode(mtype, seq, values, flags)
