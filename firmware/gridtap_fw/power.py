# Continuous V/I sampling: mains periods, signed real power, per-second gauges.
#
# Every ADC block goes through the kernel (gridtap_fw.kernel, or the C user
# module gtkernel when the board image has it); its integer sums are folded
# into int32 period accumulators after every call (kernel.accumulate; a
# period of at most NOAC sets keeps every sum within int32, docs/kernel.md),
# so no sample is ever skipped. A period ends at a rising zero crossing of V (one mains cycle). With
# no AC (no crossing for NOAC_S seconds) periods are a fixed NOAC_S long and
# report 0 W with the measured Irms and Vrms: without a voltage there is no
# signed power, and guessing one from a nominal voltage is not measuring.
#
# Per period and CT (N sets, sums from the kernel, x = raw - 2048), the CT
# referred to V delayed by its whole-set delay D (the kernel's V history),
# with the means m = sum(x)/N:
#   rms  = sqrt(sum(x^2)/N - m_x^2)
#   C1   = sum(i*v_D) - sum(v_D)*m_i         (offset-free partial power sums, / N)
#   C2   = sum(i*v_Q) - sum(v_Q)*m_i         (V a quarter period later: reactive)
#   P    = (pa*C1 + pb*C2) / N,  Q = (qa*C1 + qb*C2) / N
# (the coefficients are kept pre-scaled by v_per_count * a_per_count * gains, see _tune)
# D and the coefficients put V at the instant, and on the line, of the CT's current. CT k
# (0-based) is sampled (k+1)*slot_us after V, and phase_mdeg (VT lead minus
# CT lead, -180..+180 degrees) shifts it further: +120 for a CT on L2 and -120
# (= +240) for L3 when the VT is on L1 (a one-VT three-phase board: each
# line's voltage is taken to be L1's a third of a cycle later). The wanted V
# delay in sets is delta = phase/360*P - (k+1)*slot*sets_per_s, P the
# measured mains period in sets (the mean of the last second's cycles, each
# timed between crossings interpolated inside a set), taken into [-2, P-2); the
# reactive delay is delta + P/4 taken the same way. Each is rounded to whole
# sets, D and Q (0..127), leaving residues e1 = (D - delta)*alpha and
# e2 = (Q - delta - P/4)*alpha (alpha = 2*pi/P, one set in radians; at most
# half a set, or two sets where a delay in [-2, 0) is an advance, as the
# multiplexing delay and a CT leading its VT need; see MAX_ADVANCE). For the
# fundamental C1 = P*cos(e1) + Q*sin(e1) and C2 = Q*cos(e2) - P*sin(e2), so
#   P = (cos(e2)*C1 - sin(e1)*C2) / cos(e1 - e2)
#   Q = (sin(e2)*C1 + cos(e1)*C2) / cos(e1 - e2)
# exactly: two products per sample give both powers (before reactive power the
# second product was i*v_(D+1), interpolated with sin weights). Q > 0 is
# current lagging voltage (inductive import, IEC 62053-23 quadrants I and IV
# by the sign of P). The period P is re-measured every second (valid cycles'
# sets / cycles), so the delays and residues follow the mains frequency; they
# change only between periods. invert negates P and Q (180 deg).
# The float maths runs once per period per CT (single precision on the
# RP2040). It divides by N first instead of reducing N*sum - sum*sum exactly
# in integers: on a 32-bit MicroPython those products pass 2**30 and become
# heap-allocated long ints, which on the emulated Cortex-M0 cost more than
# everything else per period and fed the garbage collector (hardware/qemu-m0.md).
# The difference is float rounding (float32: 6e-8 of a period's power).
import math
from array import array

import micropython

from gridtap_fw.kernel import accumulate

try:
    from gtkernel import block  # C user module on a board image built with it
except ImportError:
    from gridtap_fw.kernel import block

NOAC_DIV = 10  # no-AC period: sets_per_s / 10 = 0.1 s
ACC_MAX_SETS = 480  # the longest period whose int32 sums cannot overflow (|x| <= 2048: 480 * 2**22 < 2**31)
CREEP_MW = 1000  # no-load threshold: a second whose net |P| is below 1 W registers 0
MIN_DIV = 100  # shortest period accepted: sets_per_s / 100 (above 100 Hz is noise)
HYST_V = 20.0  # crossing hysteresis in volts
NOMINAL_HZ = 50.0  # the mains period assumed until one is measured
# A V delay just short of a whole period is taken as an advance of up to this
# many sets (delay 0, the residue rotated out exactly) rather than a delay of almost a
# cycle: an error in the measured period moves V in proportion to the delay.
MAX_ADVANCE = 2.0
# Kernel state (docs/kernel.md): header words, the V history after them.
K_STATE_LEN = 201
K_FILL = 4
K_DELAY = 4  # state[K_DELAY + k] holds CT k = 1..4's delays: D | Q << K_QSHIFT
K_QSHIFT = 8
K_HIST_WORD = 9
K_HIST_KEEP = 128
K_MAX_DELAY = 127
K_MID2 = 2048 | (2048 << 16)  # two mid-scale (v = 0) history entries
SMALL = 0x20000000  # partial energy sums stay below this: plus a period's (under 2**29, 5.5 kW) a small int
# round as a module global: MicroPython looks a name up in the module's dict, then scans the
# builtins' table, about 500 instructions more a lookup on a Cortex-M0+; _close rounds six
# times a period (hardware/qemu-m0.md). For the same reason the per-block and per-period
# code below uses no other builtin (bool, min, max), and math.sqrt is bound once.
_round = round
_sqrt = math.sqrt


class PowerMeter:
    def __init__(self, board, cfg, energies) -> None:
        adc = board["adc"]
        chans = adc["channels"]
        self.nch = len(chans)
        self.n_ct = self.nch - 1
        self.sets_per_s = int(adc["sets_per_s"])
        self.slot_s = float(adc["slot_us"]) * 1e-6
        self.vpc = float(chans[0]["v_per_count"])
        self.apc = [float(c["a_per_count"]) for c in chans[1:]]
        self.cfg = cfg
        self.energies = energies
        self.noac_sets = min(self.sets_per_s // NOAC_DIV, ACC_MAX_SETS)
        self.min_sets = self.sets_per_s // MIN_DIV
        hyst = int(HYST_V / self.vpc)
        self.state = array("i", [K_MID2] * K_STATE_LEN)
        for j in range(K_HIST_WORD):
            self.state[j] = 0
        self.state[2] = hyst
        self.state[K_FILL] = K_HIST_KEEP
        self.out = array("i", [0] * (2 + 6 * self.n_ct))
        self.acc = array("i", bytes(4 * (2 + 6 * self.n_ct)))
        self.acc0 = array("i", self.acc)  # zeros: a slice copy clears acc (a loop cost ~6,000 instructions)
        self.n = 0
        self.synced = False  # the current period began at a rising crossing
        self.seen = 0  # sets fed since boot, up to K_HIST_KEEP: the V history is real from then on
        self.ac = False  # the last period closed was a valid mains cycle
        self.periods = 0
        self.ac_sets = 0  # sets of valid mains periods in the seconds committed to the registers
        self.ready: list = []  # gauges of the last completed second, until taken
        self.seconds = 0  # seconds committed to the registers so far
        self.after_sets = 0  # sets of the last fed block that came after the last commit
        self.period = self.sets_per_s / NOMINAL_HZ  # mains period in sets, measured each second
        self.period_measured = False  # until the first second with mains: refined every period
        # Where V rose through +hysteresis, as a fraction of the set before the
        # crossing set: the current period's start (x_start) and the crossing
        # that is closing it (x_end, -1 when no crossing closes it).
        self.x_start = 0.0
        self.x_end = -1.0
        # (pa, pb, qa, qb) of the delays in the kernel state
        self.coef: list = [(1.0, 0.0, 0.0, 1.0)] * self.n_ct
        self.retune = False
        self.last_p_mw = [0] * self.n_ct
        self.last_q_mvar = [0] * self.n_ct
        self._reset_second()
        self._tune()

    def config_changed(self) -> None:
        # Applied at the next period boundary: a period's sums and its (a, b)
        # must come from the same delays.
        self.retune = True

    def _reset_second(self) -> None:
        self.sec_n = 0
        self.sec_ac_n = 0
        self.sec_cycles = 0
        self.sec_plen = 0.0  # the valid cycles' lengths in sets, from interpolated crossings
        self.sec_pn = 0  # how many of them
        # Scaled (V^2 s, VA s, A^2 s in sets) and, since the last _tune, raw: in counts^2,
        # scaled once a second (or when the scales change) instead of once a period.
        self.sec_v2 = 0.0
        self.sec_va = [0.0] * self.n_ct
        self.sec_i2 = [0.0] * self.n_ct
        self.raw_v2 = 0.0
        self.raw_va = [0.0] * self.n_ct
        self.raw_i2 = [0.0] * self.n_ct
        # Each CT's energy (mW x sets) and reactive energy over the second, exact, in two
        # parts: a second's sum passes 2**30 (a long int on the board, a heap object per
        # addition), so the periods add into a small int, moved into the long one (sec_eh,
        # sec_qh) only when it nears the limit (exact either way: Python ints do not overflow).
        self.sec_e = [0] * self.n_ct
        self.sec_q = [0] * self.n_ct
        self.sec_eh = [0] * self.n_ct
        self.sec_qh = [0] * self.n_ct

    def _whole(self, d: float):
        """A wanted delay in sets, taken into [-MAX_ADVANCE, period - MAX_ADVANCE):
        (whole sets 0..127, the residue whole - d in radians)."""
        per = self.period
        d %= per
        if d >= per - MAX_ADVANCE:
            d -= per
        whole = 0
        if d > 0.0:
            whole = min(K_MAX_DELAY, int(d + 0.5))
        return whole, (whole - d) * 2.0 * math.pi / per

    def delay(self, k: int):
        """(D, e1, Q, e2): CT k's real and reactive V delays in whole sets and their residues in radians."""
        per = self.period
        d = self.cfg.cts[k].phase_mdeg * 0.001 / 360.0 * per - (k + 1) * self.slot_s * self.sets_per_s
        whole, e1 = self._whole(d)
        qwhole, e2 = self._whole(d + 0.25 * per)
        return whole, e1, qwhole, e2

    def _fold(self) -> None:
        """Scale the raw gauge sums with the calibration they were measured under."""
        vg = self.vg
        self.sec_v2 += self.raw_v2 * vg * vg
        self.raw_v2 = 0.0
        for k in range(self.n_ct):
            ig = self.igs[k]
            self.sec_va[k] += self.raw_va[k] * vg * ig
            self.sec_i2[k] += self.raw_i2[k] * ig * ig
            self.raw_va[k] = 0.0
            self.raw_i2[k] = 0.0

    def _tune(self) -> None:
        """Put each CT's delays in the kernel state and its coefficients in coef."""
        if self.sec_n:
            self._fold()  # a retune inside a second: what came before keeps its scales
        coef = []
        for k in range(self.n_ct):
            whole, e1, qwhole, e2 = self.delay(k)
            self.state[K_DELAY + 1 + k] = whole | (qwhole << K_QSHIFT)
            c1 = math.cos(e1)
            s1 = math.sin(e1)
            c2 = math.cos(e2)
            s2 = math.sin(e2)
            det = c1 * c2 + s1 * s2
            coef.append((c2 / det, -s1 / det, s2 / det, c1 / det))
        self.coef = coef
        # Per CT for _close: (offset in the sums, the coefficients scaled to mW (mvar) per
        # count^2 with the sign of invert); A per count in igs, for _fold.
        # Computed here, not per period: each float operation is a heap object on the
        # board (about 600 instructions on a Cortex-M0).
        cfg = self.cfg
        self.vg = self.vpc * cfg.v_gain_e6 * 1e-6
        ks = []
        igs = []
        for k in range(self.n_ct):
            c = cfg.cts[k]
            ig = self.apc[k] * c.gain_e6 * 1e-6
            sc = self.vg * ig * 1000.0
            if c.invert:
                sc = -sc
            pa, pb, qa, qb = coef[k]
            ks.append((2 + 6 * k, pa * sc, pb * sc, qa * sc, qb * sc))
            igs.append(ig)
        self.ks = ks
        self.igs = igs
        self.retune = False

    # feed and _close run as native Thumb code (@micropython.native: the same runtime calls,
    # so the same results, without the bytecode dispatch): about 1.8 % of a Cortex-M0+
    # less, for 4.6 KiB of code on the heap where the module is not frozen (hardware/qemu-m0.md).
    @micropython.native
    def feed(self, buf, nsets: int) -> bool:
        """Run the kernel over a block; True once a second of gauges is ready."""
        st = self.state
        out = self.out
        acc = self.acc
        nacc = len(acc)
        start = 0
        seconds = self.seconds
        while start < nsets:
            end = nsets
            room = self.noac_sets - self.n
            if end - start > room:
                end = start + room
            used = block(buf, start, end, self.nch, st, out) if end > start else 0
            if used:
                accumulate(acc, out, nacc)
                self.n += used
                start += used
                if self.seen < K_HIST_KEEP:
                    self.seen += used
            if st[3]:
                st[3] = 0
                if not self.synced or self.n >= self.min_sets:
                    # v of the crossing set (not consumed: buf[start]) and of the
                    # set before it: V rose through +h between them.
                    at = 2 * self.nch * start
                    vx = (buf[at] | (buf[at + 1] << 8)) - 2048
                    vl = st[0]
                    f = 0.5
                    if vx > vl:
                        f = (st[2] - vl) / (vx - vl)  # clamped to [0, 1]
                        if f < 0.0:
                            f = 0.0
                        elif f > 1.0:
                            f = 1.0
                    self.x_end = f
                    self._close(True)
                    # A period is valid once a CT's delayed V is real V, not the
                    # mid-scale the history started from: at boot that costs a
                    # cycle or two more than the first crossing already did.
                    self.synced = self.seen >= K_HIST_KEEP
            elif self.n >= self.noac_sets:
                self._close(False)
                self.synced = False
            if self.seconds != seconds:
                # When the registers moved, to the set: the tuples that report them say so.
                seconds = self.seconds
                self.after_sets = nsets - start
        return True if self.ready else False

    @micropython.native
    def _close(self, crossing: bool) -> None:
        n = self.n
        if n == 0:
            if self.retune:
                self._tune()
            return
        acc = self.acc
        sv = acc[0]
        cfg = self.cfg
        valid = crossing and self.synced and n >= self.min_sets and cfg.v_enabled
        self.ac = True if valid else False
        # The gauges' sums stay in counts^2 here (N * the variance: sum(x^2) - sum(x) * m)
        # and are scaled in _fold; only the powers are scaled per period, since each
        # period's power is rounded to whole mW for the registers.
        inv = 1.0 / n
        xv = acc[1] - sv * (sv * inv)
        if xv > 0.0:
            self.raw_v2 += xv
        last = self.last_p_mw
        lastq = self.last_q_mvar
        sec_e = self.sec_e
        sec_q = self.sec_q
        raw_va = self.raw_va
        raw_i2 = self.raw_i2
        k = 0
        for o, pa, pb, qa, qb in self.ks:
            mi = acc[o] * inv
            xi = acc[o + 1] - acc[o] * mi
            if xi > 0.0:
                raw_i2[k] += xi
                if xv > 0.0:
                    raw_va[k] += _sqrt(xv * xi)
            if valid:
                c1 = acc[o + 2] - acc[o + 4] * mi
                c2 = acc[o + 3] - acc[o + 5] * mi
                p_mw = _round((pa * c1 + pb * c2) * inv)
                q_mvar = _round((qa * c1 + qb * c2) * inv)
                e = sec_e[k] + p_mw * n
                eq = sec_q[k] + q_mvar * n
                if -SMALL < e < SMALL and -SMALL < eq < SMALL:
                    sec_e[k] = e
                    sec_q[k] = eq
                else:
                    self.sec_eh[k] += e
                    self.sec_qh[k] += eq
                    sec_e[k] = 0
                    sec_q[k] = 0
            else:
                p_mw = 0
                q_mvar = 0
            last[k] = p_mw
            lastq[k] = q_mvar
            k += 1
        self.sec_n += n
        if valid:
            self.sec_ac_n += n
            self.sec_cycles += 1
            if self.x_end >= 0.0:
                self.sec_plen += n + self.x_end - self.x_start
                self.sec_pn += 1
                if not self.period_measured:
                    # Just booted: follow the periods so far rather than run a
                    # whole second at the nominal 50 Hz (at 50.5 Hz L3's delay
                    # would be off by two thirds of a set).
                    self.period = self.sec_plen / self.sec_pn
                    self.retune = True
        if self.x_end >= 0.0:
            self.x_start = self.x_end
            self.x_end = -1.0
        self.periods += 1
        acc[:] = self.acc0
        self.n = 0
        if self.sec_n >= self.sets_per_s:
            self._close_second()
        elif self.retune:
            self._tune()

    def flush(self) -> None:
        """Commit what has been measured so far to the registers now (before a
        brownout save): the period in progress (valid if it began at a crossing;
        the mains has gone, so no crossing will end it) and the partial second."""
        if self.n:
            self._close(True)
        if self.sec_n:
            self._close_second()
        self.after_sets = 0

    def gauges(self) -> list:
        """The gauges of the last completed second (once), see _close_second."""
        res = self.ready
        self.ready = []
        return res

    def _close_second(self) -> None:
        """Commit about a second of periods: net each CT's energy over the second,
        apply the no-load threshold, add it to the import or the export register
        (reactive energy likewise to Q+ or Q-) and keep (channel, power_mw,
        va_mva, vrms_mv, irms_ma, pf_e4, freq_mhz, q_mvar) for GAUGE, so a gauge
        times its second is exactly what the registers got.

        Netting per second (not per mains cycle) keeps ADC noise on an idle CT
        from being rectified into both registers: per cycle the noise is a few
        watts either way, over a second it averages down, and below CREEP_MW
        (like a meter's starting threshold) it counts as no load."""
        n = self.sec_n
        res = []
        self._fold()
        vrms = math.sqrt(self.sec_v2 / n)
        freq = 0
        if self.sec_ac_n:
            freq = min(65535, int(round(self.sec_cycles * self.sets_per_s * 1000.0 / self.sec_ac_n)))
        if self.sec_pn:
            self.period = self.sec_plen / self.sec_pn
            self.period_measured = True
        for k in range(self.n_ct):
            e = self.sec_e[k] + self.sec_eh[k]
            if -CREEP_MW * n < e < CREEP_MW * n:
                e = 0
            eq = self.sec_q[k] + self.sec_qh[k]
            if -CREEP_MW * n < eq < CREEP_MW * n:
                eq = 0
            if self.cfg.cts[k].enabled:
                self.energies[k].add(e)
                self.energies[k].add_reactive(eq)
            p_mw = (2 * e + n) // (2 * n)
            q_mvar = max(-0x80000000, min(0x7FFFFFFF, (2 * eq + n) // (2 * n)))
            va = self.sec_va[k] / n
            irms = math.sqrt(self.sec_i2[k] / n)
            pf = 0
            if va > 0:
                pf = int(round(p_mw * 10.0 / va))
                pf = max(-10000, min(10000, pf))
            p_mw = max(-0x80000000, min(0x7FFFFFFF, p_mw))
            res.append((k, p_mw, min(0xFFFFFFFF, int(round(va * 1000.0))),
                        min(0xFFFFFFFF, int(round(vrms * 1000.0))),
                        min(0xFFFFFFFF, int(round(irms * 1000.0))), pf, freq, q_mvar))
        self.ac_sets += self.sec_ac_n
        self.ready = res
        self.seconds += 1
        self._reset_second()
        self._tune()
