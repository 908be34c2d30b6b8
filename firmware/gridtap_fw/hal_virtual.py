# The virtual board's HAL: the firmware's hardware, served by the simulator.
#
# Runs under the MicroPython unix port, started by the simulator
# (hardware/sim/gridtap_sim/runner.py). It talks to the simulator over two
# named pipes whose directory is in the environment variable GRIDTAP_SIM_DIR:
# "req" (HAL -> simulator) and "resp" (simulator -> HAL). stdout and stderr
# stay free for the firmware's own prints, which the simulator logs.
#
# Every message is   cmd u8 | length u32 | payload   (little-endian).
# The simulator owns time: it advances only by ADC blocks and EEPROM write
# cycles, so a run is deterministic for a seed. docs/sim.md is the contract.

import os
import struct

import json

CMD_HELLO = 1
CMD_ADC = 2
CMD_UART_TX = 3
CMD_EE_READ = 4
CMD_EE_WRITE = 5
CMD_RESET = 6

TICKS_MASK = 0x3FFFFFFF  # MicroPython's ticks wrap at 2**30, as on the rp2 port
EDGE_FMT = "<BBQ"
EDGE_LEN = 10
ADC_HDR = "<QHBHH"
ADC_HDR_LEN = 15


class SimLinkError(Exception):
    pass


class VirtualHal:
    def __init__(self, sim_dir=None):
        d = sim_dir or os.getenv("GRIDTAP_SIM_DIR")
        if not d:
            raise SimLinkError("GRIDTAP_SIM_DIR is not set: start the firmware with gridtap sim")
        self._req = open(d + "/req", "wb")
        self._resp = open(d + "/resp", "rb")
        self._hdr = bytearray(5)
        self._ahdr = bytearray(ADC_HDR_LEN)
        self._edges = []
        self._rx = bytearray()
        self._now_us = 0
        self._brownout = False
        payload = self._call(CMD_HELLO, b"")
        self._reset_cause = payload[0]
        self._uid = bytes(payload[1:9])
        self.rx_limit = struct.unpack_from("<I", payload, 9)[0]
        self.board = json.loads(bytes(payload[13:]).decode())
        self.n_channels = len(self.board["adc"]["channels"])
        # the DMA block of the real board (hal_rp2: 48 sets = 10 ms); the core sizes its buffer to it
        self.block_sets = int(self.board["adc"].get("block_sets", 48))
        self.rx_overflow = 0

    # -- transport ---------------------------------------------------------
    def _send(self, cmd, payload):
        # files from open() are unbuffered on the unix port: one write, one syscall
        self._req.write(struct.pack("<BI", cmd, len(payload)) + payload)

    def _read_exact(self, buf):
        mv = memoryview(buf)
        got = 0
        n = len(buf)
        while got < n:
            k = self._resp.readinto(mv[got:])
            if not k:
                raise SimLinkError("simulator closed the link")
            got += k

    def _header(self, cmd):
        self._read_exact(self._hdr)
        rcmd, n = struct.unpack("<BI", self._hdr)
        if rcmd != cmd:
            raise SimLinkError("simulator answered command %d to %d" % (rcmd, cmd))
        return n

    def _call(self, cmd, payload):
        self._send(cmd, payload)
        n = self._header(cmd)
        out = bytearray(n)
        if n:
            self._read_exact(out)
        return out

    # -- the HAL contract --------------------------------------------------
    def adc_block(self, buf):
        # buf: bytearray / memoryview of bytes, or array('H'); u16 LE, V then CTs per set
        if isinstance(buf, (bytearray, memoryview)):
            item = 1
        else:
            item = 2
        nbytes = len(buf) * item
        n_sets = nbytes // (2 * self.n_channels)
        if n_sets <= 0 or n_sets > 65535:
            raise ValueError("adc_block: buffer holds %d sets, need 1..65535" % n_sets)
        self._send(CMD_ADC, struct.pack("<H", n_sets))
        self._header(CMD_ADC)
        self._read_exact(self._ahdr)
        now, got, brown, n_edges, n_rx = struct.unpack(ADC_HDR, self._ahdr)
        sample_bytes = got * 2 * self.n_channels
        if sample_bytes == nbytes:
            self._read_exact(buf)
        else:
            mv = memoryview(buf)
            self._read_exact(mv[: sample_bytes // item])
        if n_edges:
            eb = bytearray(n_edges * EDGE_LEN)
            self._read_exact(eb)
            for i in range(n_edges):
                inp, level, t = struct.unpack_from(EDGE_FMT, eb, i * EDGE_LEN)
                self._edges.append((inp, t & TICKS_MASK, level))
        if n_rx:
            rb = bytearray(n_rx)
            self._read_exact(rb)
            room = self.rx_limit - len(self._rx)
            if room < n_rx:
                self.rx_overflow += n_rx - max(room, 0)
                rb = rb[: max(room, 0)]
            self._rx.extend(rb)
        self._now_us = now
        if brown:
            self._brownout = True
        return got

    def ticks_us(self):
        return self._now_us & TICKS_MASK

    def pulse_edges(self):
        e = self._edges
        self._edges = []
        return e

    def uart_write(self, data):
        if data:
            self._send(CMD_UART_TX, bytes(data))

    def uart_read(self):
        if not self._rx:
            return b""
        out = bytes(self._rx)
        self._rx = bytearray()
        return out

    def eeprom_read(self, addr, n):
        return bytes(self._call(CMD_EE_READ, struct.pack("<II", addr, n)))

    def eeprom_write(self, addr, data):
        # blocks for the write cycle; if the supply dies meanwhile this never returns
        out = self._call(CMD_EE_WRITE, struct.pack("<I", addr) + bytes(data))
        if out[0] != 0:
            raise ValueError(bytes(out[1:]).decode())
        self._now_us = struct.unpack_from("<Q", out, 1)[0]

    def brownout(self):
        return self._brownout

    def reset_cause(self):
        return self._reset_cause

    def unique_id(self):
        return self._uid

    def reset(self):
        self._send(CMD_RESET, b"")
        while True:  # the simulator kills this process and boots a new one
            self._header(CMD_RESET)
