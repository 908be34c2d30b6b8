# S0 pulse inputs: debounce raw edges, count pulses, derive the total.
#
# S0 outputs are open collectors: the input idles high (pull-up) and a pulse
# pulls it low, so the active edge is the falling one. The HAL hands us every
# raw edge, bounce included, stamped in microseconds; the debouncer below is
# a pure function of that edge stream, so it behaves the same however the
# edges are batched.
#
# Both modes keep the time of the last raw edge and a debounced level; a
# level is "stable" once no edge has arrived for debounce_ms.
#
# * edge mode (trigger 0): a falling edge counts at once (its stamp is the
#   pulse time) if the line had been stably high before it. After that no
#   edge counts until the line has again been high, with no edge at all, for
#   debounce_ms: bounce at the press AND at the release is ignored.
# * level mode (trigger 1): a pulse counts when the line has been low, with
#   no edge, for debounce_ms; it re-arms after debounce_ms of stable high.
#   Glitches shorter than debounce_ms are never counted.
#
# Bounce shorter than debounce_ms therefore never double counts in either
# mode (tests: 5 ms bounce, 10+ ms debounce, thousands of pulses).
#
# Total: meter_const_milli = impulses per kWh (or m3) x 1000, so one pulse is
# 10**9 / meter_const_milli thousandths of a Wh (or of a litre), and
#     total_milli = base_milli + ((pulses - base_pulses) mod 2**32) * 10**9 // meter_const_milli
# computed from the integer pulse count every time, so it never drifts. The
# base moves only when the meter constant changes (the total so far is kept).
# pulses is reported modulo 2**32 (u32 on the wire).

from gridtap_fw import wire

MILLI_PER_KUNIT = 10 ** 9  # thousandths of a Wh per kWh, x1000 for meter_const_milli


class PulseInput:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.pulses = 0  # raw count since the counter epoch began (Python int)
        self.base_pulses = 0
        self.base_milli = 0
        self.last_unix_ms = 0  # Unix ms of the last counted pulse (0: none yet)
        self.last_us: int | None = None  # uptime us of the last counted pulse
        # debouncer
        self.level = 1  # last raw level seen
        self.edge_us: int | None = None  # uptime us of the last raw edge (None: none yet)
        self.stable = 1  # debounced level
        self.armed = True  # edge mode: a falling edge may count

    def _settle(self, now_us: int) -> None:
        """Advance the debounced level to now_us, counting in level mode."""
        deb = self.cfg.debounce_ms * 1000
        if self.edge_us is not None and now_us - self.edge_us < deb:
            return
        if self.level == self.stable:
            if self.level == 1:
                self.armed = True
            return
        self.stable = self.level
        if self.stable == 1:
            self.armed = True
        elif self.cfg.trigger == wire.TRIGGER_LEVEL:
            # stamp: the edge that started this stable low
            self._count(self.edge_us if self.edge_us is not None else now_us)

    def _count(self, t_us: int) -> None:
        self.pulses += 1
        self.last_us = t_us

    def edge(self, t_us: int, level: int) -> bool:
        """One raw edge at uptime t_us to level (0/1). True if it counted a pulse."""
        level = 1 if level else 0
        self._settle(t_us)
        counted = False
        if (level == 0 and self.cfg.trigger == wire.TRIGGER_EDGE and self.armed
                and self.level == 1 and self.stable == 1):
            self._count(t_us)
            self.armed = False
            counted = True
        if level == 0:
            self.armed = False
        self.level = level
        self.edge_us = t_us
        return counted

    def poll(self, now_us: int) -> None:
        """Let the debounced level catch up with time (level mode counts here)."""
        self._settle(now_us)

    def total_milli(self) -> int:
        """Cumulative total in thousandths of the unit (Wh or litre), exact."""
        since = (self.pulses - self.base_pulses) & 0xFFFFFFFF  # 32-bit safe after a restore
        return self.base_milli + since * MILLI_PER_KUNIT // self.cfg.meter_const_milli

    def set_meter_const(self, meter_const_milli: int) -> None:
        """Change the constant without moving the total reached so far."""
        if meter_const_milli == self.cfg.meter_const_milli:
            return
        self.base_milli = self.total_milli()
        self.base_pulses = self.pulses
        self.cfg.meter_const_milli = meter_const_milli

    def tuple_values(self, index: int):
        """PULSE payload values (input, t, ms, count, milli, pulses)."""
        total = self.total_milli()
        return (index, (self.last_unix_ms // 1000) & 0xFFFFFFFF, self.last_unix_ms % 1000,
                (total // 1000) & 0xFFFFFFFF, total % 1000, self.pulses & 0xFFFFFFFF)
