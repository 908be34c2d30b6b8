# The firmware's CPU budget on the emulated Cortex-M0, counted in instructions.
#
# m0.icount() is the guest's instruction count (QEMU -icount shift=0), modulo
# 2**30. Every instruction is charged to one part: "hal" (the emulation's
# transport: semihosting pipes to the simulator, which a Pico replaces by DMA,
# its UART FIFO and I2C) or the firmware (app glue, and, when profiled, the
# kernel, periods, pulses, link, persistence). Charging is exclusive: a wrapped
# call switches the current part and switches back when it returns, so the
# kernel inside PowerMeter.feed counts as kernel, the rest of feed as periods.
#
# Once per second of board time one line goes to stdout (the simulator's
# firmware log), read by tests/m0 and bench/bench_m0.py:
#   M0STAT <second> <instructions per part x7> <blocks> <longest gap: firmware
#   instructions> <its EEPROM busy us> <GC: collections, instructions, longest,
#   largest live heap after one, heap size, longest in this second>
# A gap is the firmware's work between two adc_block calls; EEPROM writes in it
# block for their I2C transfer and write cycle (hal_rp2 polls for the ACK).
import m0

MASK = 0x3FFFFFFF
PARTS = ("app", "hal", "kernel", "periods", "pulses", "link", "persist")
APP = 0
HAL = 1
KERNEL = 2
PERIODS = 3
PULSES = 4
LINK = 5
PERSIST = 6
# Ranking gaps needs a time: 1.5 cycles per instruction at 125 MHz = 12 ns each
# (hardware/qemu-m0.md; the host recomputes ms from the two components).
NS_PER_INSTR = 12
I2C_BIT_US = 2.5  # 400 kHz
EE_CYCLE_US = 5000


class Budget:
    def __init__(self) -> None:
        self.cur = APP
        self.mark = m0.icount()
        self.acc = [0] * len(PARTS)
        self.gap = 0
        self.gap_ee_us = 0
        self.blocks = 0
        self.sec_blocks = 0
        self.max_cost_us = 0
        self.max_gap = 0
        self.max_gap_ee_us = 0

    def enter(self, part: int) -> int:
        """Charge the instructions since the last switch to the current part; make `part` current."""
        t = m0.icount()
        d = (t - self.mark) & MASK
        c = self.cur
        self.acc[c] += d
        if c != HAL:
            self.gap += d
        self.mark = t
        self.cur = part
        return c

    def eeprom(self, nbytes: int, write: bool) -> None:
        # device address, two address bytes, the data: 9 bits each on the bus
        us = int((3 + nbytes + (0 if write else 1)) * 9 * I2C_BIT_US)
        self.gap_ee_us += us + (EE_CYCLE_US if write else 0)

    def block(self) -> None:
        """At each adc_block call (charged to hal): close the gap since the last one."""
        if self.blocks:   # the first gap is the boot, not a block period
            g = self.gap
            cost = g * NS_PER_INSTR // 1000 + self.gap_ee_us
            if cost > self.max_cost_us:
                self.max_cost_us = cost
                self.max_gap = g
                self.max_gap_ee_us = self.gap_ee_us
        self.gap = 0
        self.gap_ee_us = 0
        self.blocks += 1
        self.sec_blocks += 1

    def second(self, sec: int) -> None:
        """Report the second that ended, then start the next."""
        gc = m0.gc_stats()
        print("M0STAT", sec, *self.acc, self.sec_blocks, self.max_gap, self.max_gap_ee_us, *gc)
        for i in range(len(self.acc)):
            self.acc[i] = 0
        self.sec_blocks = 0
        self.max_cost_us = 0
        self.max_gap = 0
        self.max_gap_ee_us = 0


def _wrap(b: Budget, part: int, f, nargs: int):
    # fixed arities: a *args wrapper would allocate a tuple per call
    enter = b.enter
    if nargs == 1:
        def w1(a):
            p = enter(part)
            r = f(a)
            enter(p)
            return r
        return w1
    if nargs == 2:
        def w2(a, c):
            p = enter(part)
            r = f(a, c)
            enter(p)
            return r
        return w2
    if nargs == 3:
        def w3(a, c, d):
            p = enter(part)
            r = f(a, c, d)
            enter(p)
            return r
        return w3
    if nargs == 5:
        def w5(a, c, d, e, g):
            p = enter(part)
            r = f(a, c, d, e, g)
            enter(p)
            return r
        return w5
    if nargs == 6:
        def w6(a, c, d, e, g, h):
            p = enter(part)
            r = f(a, c, d, e, g, h)
            enter(p)
            return r
        return w6
    raise ValueError("no wrapper for %d arguments" % nargs)


def profile(b: Budget) -> None:
    """Charge the firmware's parts separately (before App is built; costs a call's worth each)."""
    from gridtap_fw import link, persist, power, pulses, savepolicy

    pm, pi, lk = power.PowerMeter, pulses.PulseInput, link.Link
    st, sp = persist.Store, savepolicy.SavePolicy
    for owner, name, part, nargs in (
            (power, "block", KERNEL, 6), (pm, "feed", PERIODS, 3), (pm, "flush", PERIODS, 1),
            (pm, "gauges", PERIODS, 1), (pi, "edge", PULSES, 3), (pi, "poll", PULSES, 2),
            (lk, "poll", LINK, 2), (lk, "service", LINK, 2), (lk, "send", LINK, 3),
            (lk, "send_reliable", LINK, 5), (st, "save_counters", PERSIST, 3), (st, "service", PERSIST, 1),
            (st, "brownout_save", PERSIST, 2), (st, "save_config", PERSIST, 2), (sp, "due", PERSIST, 3),
            (sp, "saved", PERSIST, 3)):
        setattr(owner, name, _wrap(b, part, getattr(owner, name), nargs))
