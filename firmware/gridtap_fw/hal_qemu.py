# The HAL of the firmware on an emulated Cortex-M0 (firmware/ports/qemu_m0).
#
# The same board as hal_virtual, served by the same simulator over the same
# protocol (docs/sim.md): only the transport differs. The port has no file
# system and no os module; the simulator's three pipes are opened through ARM
# semihosting (m0.File), which QEMU maps to the host's files. The host link
# passes through the simulator exactly as for the unix-port board, so the
# simulator's pty, its fault injection and its clock are unchanged.
#
# Every call into the transport is charged to the budget's "hal" part
# (m0budget), and each adc_block call closes a gap: what a Pico's firmware
# would spend between two DMA blocks.
import m0
import m0budget

from gridtap_fw.hal_virtual import TICKS_MASK, VirtualHal

HAL = m0budget.HAL


class QemuHal(VirtualHal):
    def __init__(self, sim_dir, budget) -> None:
        self._b = budget
        self._sec = 0
        p = budget.enter(HAL)
        VirtualHal.__init__(self, streams=(m0.File(sim_dir + "/req", "wb"), m0.File(sim_dir + "/resp", "rb"),
                                           m0.File(sim_dir + "/adc", "rb")))
        self._ticks = self._now_us & TICKS_MASK
        budget.enter(p)

    def adc_block(self, buf):
        b = self._b
        p = b.enter(HAL)
        b.block()
        n = VirtualHal.adc_block(self, buf)
        self._ticks = self._now_us & TICKS_MASK
        sec = self._now_us // 1000000
        if sec != self._sec:
            b.second(self._sec)
            self._sec = sec
        b.enter(p)
        return n

    def ticks_us(self):
        # The board clock is absolute microseconds of the simulation (a long int on a 32-bit
        # port): its low 30 bits are taken in adc_block and eeprom_write, charged to the
        # transport, so reading the clock costs the firmware what time.ticks_us() does on a Pico.
        return self._ticks

    def uart_write(self, data):
        p = self._b.enter(HAL)
        VirtualHal.uart_write(self, data)
        self._b.enter(p)

    def eeprom_read(self, addr, n):
        b = self._b
        p = b.enter(HAL)
        b.eeprom(n, False)
        out = VirtualHal.eeprom_read(self, addr, n)
        b.enter(p)
        return out

    def eeprom_write(self, addr, data):
        b = self._b
        p = b.enter(HAL)
        b.eeprom(len(data), True)
        VirtualHal.eeprom_write(self, addr, data)
        self._ticks = self._now_us & TICKS_MASK
        b.enter(p)
