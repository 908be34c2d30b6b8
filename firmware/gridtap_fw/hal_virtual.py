# The virtual board's HAL: the firmware's hardware, served by the simulator.
#
# Runs under the MicroPython unix port, started by the simulator
# (hardware/gridtap_sim/runner.py). It talks to the simulator over three named pipes
# whose directory is in the environment variable GRIDTAP_SIM_DIR: "req"
# (HAL -> simulator), "resp" (simulator -> HAL) and "adc" (simulator -> HAL,
# ADC samples only). stdout and stderr stay free for the firmware's prints.
#
# Every message on req/resp is   cmd u8 | length u32 | payload   (little-endian).
# The simulator owns time: it advances only by ADC blocks and EEPROM write
# cycles, so a run is deterministic for a seed. docs/sim.md is the contract.
#
# Speed: one ADC request fetches a batch of up to MAX_BLOCKS blocks (when the
# simulator runs as fast as it can, the rest of the simulated second). The
# samples wait in the "adc" pipe and each adc_block() reads one block straight
# into the firmware's buffer; the block's ready time, the pulse edges and the
# UART bytes came with the batch and are handed out at the block they belong
# to, so the firmware sees exactly what one request per block would show it.
# UART writes are sent at once, stamped with the board time.

import json
import struct
from array import array

CMD_HELLO = 1
CMD_ADC = 2
CMD_UART_TX = 3
CMD_EE_READ = 4
CMD_EE_WRITE = 5
CMD_RESET = 6

TICKS_MASK = 0x3FFFFFFF  # MicroPython's ticks wrap at 2**30, as on the rp2 port
MAX_BLOCKS = 128  # blocks per batch this HAL can hold (ready times: 8 bytes each)
NEVER = 0x3FFFFFFFFFFFFFFF  # "no brownout ahead" (a small int on the 64-bit unix port)
NO_EDGES = ()
EDGE_FMT = "<HBBQ"  # block index in the batch, input, level, t_us
EDGE_LEN = 12
RX_FMT = "<QH"  # arrival t_us, length; then the bytes
RX_LEN = 10
ADC_HDR = "<HQHH"  # blocks, brownout t_us, n_edges, n_rx
ADC_HDR_LEN = 14


class SimLinkError(Exception):
    pass


def open_pipes(sim_dir=None):
    """The three pipes of a boot, named by the simulator in GRIDTAP_SIM_DIR (unix port)."""
    import os  # only here: a port without os (hal_qemu) passes its own streams

    d = sim_dir or os.getenv("GRIDTAP_SIM_DIR")
    if not d:
        raise SimLinkError("GRIDTAP_SIM_DIR is not set: start the firmware with gridtap sim")
    return open(d + "/req", "wb"), open(d + "/resp", "rb"), open(d + "/adc", "rb")


class VirtualHal:
    def __init__(self, sim_dir=None, streams=None):
        # streams: (req, resp, adc) objects with write / readinto, e.g. hal_qemu's semihosting files
        self._req, self._resp, self._adc = streams or open_pipes(sim_dir)
        self._hdr = bytearray(5)
        self._ahdr = bytearray(ADC_HDR_LEN)
        self._rdy = array("Q", bytes(8 * MAX_BLOCKS))  # ready t_us of each block of the batch
        self._edges = []
        self._rx = bytearray()
        self._pend_edges = []  # (block, input, t_us & mask, level) of this batch, in order
        self._pend_rx = []  # (t_us, bytes) not yet arrived
        self._pend = False
        self._now_us = 0
        self._brown_us = NEVER
        self._brownout = False
        self._buf = None  # the buffer of the current batch, its size and block count
        self._bbytes = 0
        self._n = 0
        self._pos = 0  # blocks of the batch read so far
        self._end = 0  # the firmware may read blocks _pos.._end-1 of the batch
        self._k = 0  # blocks in the batch (the rest of them wait in the adc pipe)
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

    def _read_exact(self, f, buf):
        n = len(buf)
        got = f.readinto(buf)
        if got == n:
            return
        mv = memoryview(buf)
        while got < n:
            k = f.readinto(mv[got:])
            if not k:
                raise SimLinkError("simulator closed the link")
            got += k

    def _header(self, cmd):
        self._read_exact(self._resp, self._hdr)
        rcmd, n = struct.unpack("<BI", self._hdr)
        if rcmd != cmd:
            raise SimLinkError("simulator answered command %d to %d" % (rcmd, cmd))
        return n

    def _call(self, cmd, payload):
        self._send(cmd, payload)
        n = self._header(cmd)
        out = bytearray(n)
        if n:
            self._read_exact(self._resp, out)
        return out

    def _fetch(self, buf):
        """Ask for the next batch of blocks the size of buf."""
        if isinstance(buf, (bytearray, memoryview)):
            item = 1
        else:
            item = 2
        nbytes = len(buf) * item
        n_sets = nbytes // (2 * self.n_channels)
        if n_sets <= 0 or n_sets > 65535 or n_sets * 2 * self.n_channels != nbytes:
            raise ValueError("adc_block: buffer holds %d bytes, need 1..65535 whole sets" % nbytes)
        consumed = self._pos
        if self._k > consumed:  # blocks never to be seen (another block size, or cut short): drop them
            rest = (self._k - consumed) * self._bbytes
            scratch = bytearray(min(rest, 4096))
            while rest:
                k = min(rest, len(scratch))
                self._read_exact(self._adc, memoryview(scratch)[:k])
                rest -= k
            self._pend_edges = [e for e in self._pend_edges if e[0] < consumed]
        self._send(CMD_ADC, struct.pack("<HHHBQ", n_sets, MAX_BLOCKS, consumed,
                                        1 if self._brownout else 0, self._now_us))
        self._header(CMD_ADC)
        self._read_exact(self._resp, self._ahdr)
        k, self._brown_us, n_edges, n_rx = struct.unpack(ADC_HDR, self._ahdr)
        self._read_exact(self._resp, memoryview(self._rdy)[:k])
        if n_edges:
            eb = bytearray(n_edges * EDGE_LEN)
            self._read_exact(self._resp, eb)
            pe = []
            for i in range(n_edges):
                blk, inp, level, t = struct.unpack_from(EDGE_FMT, eb, i * EDGE_LEN)
                pe.append((blk, inp, t & TICKS_MASK, level))
            self._pend_edges = pe
        for _ in range(n_rx):
            rh = bytearray(RX_LEN)
            self._read_exact(self._resp, rh)
            t, ln = struct.unpack(RX_FMT, rh)
            rb = bytearray(ln)
            self._read_exact(self._resp, rb)
            self._pend_rx.append((t, rb))
        self._pend = bool(self._pend_edges or self._pend_rx)
        self._buf = buf
        self._bbytes = nbytes
        self._n = n_sets
        self._pos = 0
        self._end = k
        self._k = k

    def _deliver(self, blk):
        pe = self._pend_edges
        i = 0
        while i < len(pe) and pe[i][0] <= blk:
            e = pe[i]
            self._edges.append((e[1], e[2], e[3]))
            i += 1
        if i:
            self._pend_edges = pe[i:]
        pr = self._pend_rx
        while pr and pr[0][0] <= self._now_us:
            rb = pr.pop(0)[1]
            room = self.rx_limit - len(self._rx)
            if room < len(rb):
                self.rx_overflow += len(rb) - max(room, 0)
                rb = rb[: max(room, 0)]
            self._rx.extend(rb)
        self._pend = bool(self._pend_edges or pr)

    # -- the HAL contract --------------------------------------------------
    def adc_block(self, buf):
        # buf: bytearray / memoryview of bytes, or array('H'); u16 LE, V then CTs per set
        i = self._pos
        if i >= self._end or buf is not self._buf:
            self._fetch(buf)
            i = 0
        if self._adc.readinto(buf) != self._bbytes:
            raise SimLinkError("simulator closed the link")
        self._pos = i + 1
        r = self._rdy[i]
        now = self._now_us
        if r > now:
            now = r
            self._now_us = r
        if now >= self._brown_us:
            self._brownout = True
        if self._pend:
            self._deliver(i)
        return self._n

    def ticks_us(self):
        return self._now_us & TICKS_MASK

    def pulse_edges(self):
        e = self._edges
        if not e:
            return NO_EDGES  # almost every block: no list to make and collect
        self._edges = []
        return e

    def uart_write(self, data):
        # sent at once, stamped with the board time (the simulator is ahead by up to a batch);
        # header and data in two writes, so nothing is copied or kept: this HAL must not need
        # heap the rp2 HAL would not (the firmware's heap is as tight as the Pico's)
        if data:
            self._req.write(struct.pack("<BIQ", CMD_UART_TX, 8 + len(data), self._now_us))
            self._req.write(data)

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
        out = self._call(CMD_EE_WRITE, struct.pack("<QHBI", self._now_us, self._pos,
                                                   1 if self._brownout else 0, addr) + bytes(data))
        if out[0] != 0:
            raise ValueError(bytes(out[1:]).decode())
        self._now_us, keep = struct.unpack_from("<QH", out, 1)
        if self._pos + keep < self._end:  # the supply dies before those blocks: never seen
            self._end = self._pos + keep

    def brownout(self):
        return self._brownout

    def reset_cause(self):
        return self._reset_cause

    def unique_id(self):
        return self._uid

    def reset(self):
        self._send(CMD_RESET, struct.pack("<Q", self._now_us))
        while True:  # the simulator kills this process and boots a new one
            self._header(CMD_RESET)
