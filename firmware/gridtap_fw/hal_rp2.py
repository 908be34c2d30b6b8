# The HAL for the real board: RP2040 + MicroPython rp2 port (RPI_PICO image).
#
# docs/architecture.md has the contract. This module is the only firmware
# code that touches machine and rp2; it cannot run in CI (no RP2040), but it
# compiles with mpy-cross -march=armv6m and type-checks against the rp2 port
# stubs (tests/firmware/test_firmware_typecheck.py).
#
# * ADC: free-running round robin over V, CT1..CTn (AINSEL 0 first), paced by
#   the ADC's own divider at sets_per_s * nch conversions/s, into the FIFO;
#   two DMA channels chained to each other fill two buffers in turn (ping
#   pong). A hard IRQ on each completion re-arms that channel's write address
#   at once, so the chain never writes outside its buffer however late the
#   core is; a late core loses whole blocks (counted in adc_overruns), never
#   the channel order.
# * Pulse inputs: pin IRQs on both edges (hard) stamp time.ticks_us() and the
#   level into a preallocated ring; pulse_edges() drains it with IRQs off.
# * Supply monitor: a hard IRQ latches the brownout flag; it is released when
#   the pin has been inactive for RECOVER_MS (a dip that did not reset us).
# * EEPROM (24LC256-style): 16-bit memory addresses, page writes, then ACK
#   polling until the write cycle is over.
# * Watchdog: started by the first adc_block call (after the boot-time EEPROM
#   scan) and fed by every one, so a core stuck anywhere resets the board
#   within WDT_MS; HELLO then reports reset cause 3 and the counters come
#   back from the newest record. (Stop it with a power cycle, not Ctrl-C.)

import json
import time
from array import array

import machine
import rp2
import uctypes

ADC_BASE = 0x4004C000
ADC_CS = ADC_BASE + 0x00
ADC_FCS = ADC_BASE + 0x08
ADC_FIFO = ADC_BASE + 0x0C
ADC_DIV = ADC_BASE + 0x10
CS_EN = 1 << 0
CS_START_MANY = 1 << 3
FCS_EN = 1 << 0
FCS_DREQ_EN = 1 << 3
FCS_UNDER = 1 << 10
FCS_OVER = 1 << 11
DREQ_ADC = 36
DMA_BASE = 0x50000000
DMA_CH_STRIDE = 0x40
DMA_WRITE_ADDR = 0x04  # non-triggering alias
WATCHDOG_SCRATCH0 = 0x40058000 + 0x0C
CHIP_RESET = 0x40064000 + 0x08
HAD_RUN = 1 << 16
SOFT_MAGIC = 0x2A7A
BLOCK_SETS = 48  # 10 ms at 4800 sets/s: bounds the brownout reaction time
EDGE_RING = 64
NO_EDGES: tuple = ()  # pulse_edges() when the ring is empty
RECOVER_MS = 2000
WDT_MS = 4000


class Rp2Hal:
    def __init__(self, board_path: str = "board.json") -> None:
        with open(board_path) as f:
            self.board = json.load(f)
        b = self.board
        self._cause = self._read_reset_cause()
        self._wdt: machine.WDT | None = None
        self._init_eeprom(b["i2c_eeprom"])
        self._init_uart(b["uart"])
        self._init_pulses(b["pulse_inputs"])
        self._init_supply(b["supply_monitor"])
        self._init_adc(b["adc"])

    # ------------------------------------------------------------ ADC + DMA

    def _init_adc(self, adc) -> None:
        chans = adc["channels"]
        self.nch = len(chans)
        self.block_sets = BLOCK_SETS
        n = BLOCK_SETS * self.nch
        self._bufs = [bytearray(2 * n), bytearray(2 * n)]
        self._addrs = [uctypes.addressof(self._bufs[0]), uctypes.addressof(self._bufs[1])]
        self._filled = array("i", [0, 0])  # blocks completed per buffer (IRQ side)
        self._taken = array("i", [0, 0])  # blocks handed to the core
        self._next = 0
        self.adc_overruns = 0
        self.fifo_errors = 0
        mask = 0
        for c in chans:
            machine.ADC(machine.Pin(int(c["gpio"])))  # analogue pad: digital input off
            mask |= 1 << (int(c["gpio"]) - 26)
        self._rrobin = mask
        div = int(adc["clock_hz"]) // (int(adc["sets_per_s"]) * self.nch) - 1
        mem = machine.mem32
        mem[ADC_CS] = CS_EN
        mem[ADC_FCS] = FCS_EN | FCS_DREQ_EN | (1 << 24) | FCS_OVER | FCS_UNDER  # THRESH 1, clear flags
        mem[ADC_DIV] = div << 8
        self._dma = [rp2.DMA(), rp2.DMA()]
        # The stubs do not declare DMA.channel; the rp2 port has it.
        chs = [getattr(self._dma[0], "channel"), getattr(self._dma[1], "channel")]
        self._wa = [DMA_BASE + DMA_CH_STRIDE * chs[0] + DMA_WRITE_ADDR,
                    DMA_BASE + DMA_CH_STRIDE * chs[1] + DMA_WRITE_ADDR]
        self._irq_a = self._done_a
        self._irq_b = self._done_b
        for j in (0, 1):
            d = self._dma[j]
            ctrl = d.pack_ctrl(size=1, inc_read=False, inc_write=True, treq_sel=DREQ_ADC,
                               chain_to=chs[1 - j], irq_quiet=False)
            d.config(read=ADC_FIFO, write=self._bufs[j], count=n, ctrl=ctrl, trigger=(j == 0))
        self._dma[0].irq(self._irq_a, hard=True)
        self._dma[1].irq(self._irq_b, hard=True)
        self._start_adc()

    def _start_adc(self) -> None:
        mem = machine.mem32
        mem[ADC_CS] = CS_EN  # stop, AINSEL 0 (V) first
        while not (mem[ADC_FCS] >> 8) & 1:  # drain the FIFO (EMPTY is bit 8)
            mem[ADC_FIFO]
        mem[ADC_FCS] = mem[ADC_FCS] | FCS_OVER | FCS_UNDER
        mem[ADC_CS] = CS_EN | CS_START_MANY | (self._rrobin << 16)

    def _done_a(self, _dma) -> None:  # hard IRQ: no allocation
        machine.mem32[self._wa[0]] = self._addrs[0]
        self._filled[0] += 1

    def _done_b(self, _dma) -> None:
        machine.mem32[self._wa[1]] = self._addrs[1]
        self._filled[1] += 1

    def adc_block(self, buf) -> int:
        wdt = self._wdt
        if wdt is None:
            wdt = machine.WDT(timeout=WDT_MS)
            self._wdt = wdt
        wdt.feed()
        j = self._next
        while self._filled[j] == self._taken[j]:
            machine.idle()
        lost = self._filled[j] - self._taken[j] - 1
        if lost > 0:
            self.adc_overruns += lost
        n = 2 * BLOCK_SETS * self.nch
        memoryview(buf)[0:n] = self._bufs[j]
        self._taken[j] = self._filled[j]
        self._next = 1 - j
        if machine.mem32[ADC_FCS] & FCS_OVER:
            # The FIFO overflowed: samples were lost and the channel order of
            # later blocks would be wrong. Restart the round robin at V.
            self.fifo_errors += 1
            self._start_adc()
        return BLOCK_SETS

    def ticks_us(self) -> int:
        # ticks as a signed int; the core only ever takes differences modulo 2**30
        return time.ticks_diff(time.ticks_us(), 0)

    # ------------------------------------------------------------ pulses

    def _init_pulses(self, inputs) -> None:
        self._ev_in = array("b", [0] * EDGE_RING)
        self._ev_t = array("i", [0] * EDGE_RING)
        self._ev_lvl = array("b", [0] * EDGE_RING)
        self._ev_w = 0
        self._ev_r = 0
        self.edges_dropped = 0
        self._pins = []
        self._handlers = []
        for i in range(len(inputs)):
            pin = machine.Pin(int(inputs[i]["gpio"]), machine.Pin.IN, machine.Pin.PULL_UP)
            h = self._edge_handler(i, pin)
            pin.irq(h, machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING, hard=True)
            self._pins.append(pin)
            self._handlers.append(h)

    def _edge_handler(self, index: int, pin):
        def edge(_p) -> None:  # hard IRQ: no allocation
            w = self._ev_w
            nw = (w + 1) % EDGE_RING
            if nw == self._ev_r:
                self.edges_dropped += 1
                return
            self._ev_in[w] = index
            self._ev_t[w] = time.ticks_diff(time.ticks_us(), 0)
            self._ev_lvl[w] = pin.value()
            self._ev_w = nw
        return edge

    def pulse_edges(self) -> list | tuple:
        if self._ev_r == self._ev_w:
            return NO_EDGES  # almost every block: no list to make and collect
        out = []
        state = machine.disable_irq()
        r = self._ev_r
        w = self._ev_w
        while r != w:
            out.append((self._ev_in[r], self._ev_t[r], self._ev_lvl[r]))
            r = (r + 1) % EDGE_RING
        self._ev_r = r
        machine.enable_irq(state)
        return out

    # ------------------------------------------------------------ UART

    def _init_uart(self, u) -> None:
        self._uart = machine.UART(int(u["id"]), baudrate=int(u["baud"]), tx=machine.Pin(int(u["tx_gpio"])),
                                  rx=machine.Pin(int(u["rx_gpio"])), rxbuf=2048, txbuf=1024)

    def uart_write(self, data) -> None:
        self._uart.write(data)

    def uart_read(self) -> bytes:
        n = self._uart.any()
        if not n:
            return b""
        data = self._uart.read(n)
        return data if data else b""

    # ------------------------------------------------------------ EEPROM

    def _init_eeprom(self, e) -> None:
        self._i2c = machine.I2C(int(e["id"]), scl=machine.Pin(int(e["scl_gpio"])),
                                sda=machine.Pin(int(e["sda_gpio"])), freq=400000)
        self._ee_addr = int(e["addr"])
        self._page = int(e["page_bytes"])
        self._size = int(e["size_bytes"])
        self._cycle_ms = int(e["write_cycle_ms"])

    def eeprom_read(self, addr: int, n: int) -> bytes:
        if addr < 0 or n < 0 or addr + n > self._size:
            raise ValueError("eeprom read outside the device")
        return self._i2c.readfrom_mem(self._ee_addr, addr, n, addrsize=16)

    def eeprom_write(self, addr: int, data) -> None:
        end = addr + len(data)
        if addr < 0 or end > self._size or addr // self._page != (end - 1) // self._page:
            raise ValueError("eeprom write must stay within one page")
        self._i2c.writeto_mem(self._ee_addr, addr, data, addrsize=16)
        # ACK polling: the chip ignores its address until the write cycle is done.
        t0 = time.ticks_ms()
        while True:
            try:
                self._i2c.readfrom(self._ee_addr, 1)
                return
            except OSError:
                if time.ticks_diff(time.ticks_ms(), t0) > 4 * self._cycle_ms:
                    raise OSError("eeprom write cycle did not end")

    # ------------------------------------------------------------ supply

    def _init_supply(self, s) -> None:
        self._supply_active = 0 if s.get("active_low", True) else 1
        self._supply = machine.Pin(int(s["gpio"]), machine.Pin.IN)
        self._brown = 0
        self._ok = False  # the pin has been inactive since _ok_since
        self._ok_since = time.ticks_ms()
        trig = machine.Pin.IRQ_FALLING if self._supply_active == 0 else machine.Pin.IRQ_RISING
        self._irq_supply = self._supply_irq
        self._supply.irq(self._irq_supply, trig, hard=True)
        if self._supply.value() == self._supply_active:
            self._brown = 1

    def _supply_irq(self, _p) -> None:
        self._brown = 1

    def brownout(self) -> bool:
        if not self._brown:
            return False
        if self._supply.value() == self._supply_active:
            self._ok = False
            return True
        now = time.ticks_ms()
        if not self._ok:
            self._ok = True
            self._ok_since = now
        elif time.ticks_diff(now, self._ok_since) >= RECOVER_MS:
            self._brown = 0
            self._ok = False
            return False
        return True

    # ------------------------------------------------------------ identity, reset

    def _read_reset_cause(self) -> int:
        mem = machine.mem32
        if mem[WATCHDOG_SCRATCH0] == SOFT_MAGIC:
            mem[WATCHDOG_SCRATCH0] = 0
            return 4  # soft: host request
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            return 3
        if mem[CHIP_RESET] & HAD_RUN:
            return 5  # RUN pin
        if cause == machine.PWRON_RESET:
            return 1
        return 0

    def reset_cause(self) -> int:
        return self._cause

    def unique_id(self) -> bytes:
        return machine.unique_id()

    def reset(self) -> None:
        machine.mem32[WATCHDOG_SCRATCH0] = SOFT_MAGIC
        machine.reset()
