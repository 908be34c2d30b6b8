# Import/export energy registers, kept in integers so nothing drifts.
#
# Units (documented in hardware/persistence.md too):
# * a register holds milliwatt-hours (mWh) as an integer; on the wire that is
#   Wh = mwh // 1000 and milli = mwh % 1000 (COUNTER imp_wh/imp_milli ...);
# * each register also carries a residue in milliwatt-sets (mW x one ADC
#   sample-set period, 1/sets_per_s seconds): 1 mWh = 3600 * sets_per_s
#   mW-sets, 17,280,000 at 4,800 sets/s, so the residue is always below that
#   and fits a MicroPython small int on the RP2040 (< 2**30).
#
# Each mains period yields round(P_mW) * N mW-sets (N = the period's sets);
# power.py nets these over about a second and adds the net to the import
# register (> 0) or the export register (< 0). P comes out of single-precision
# float maths on the RP2040 (about 7 significant digits); the rounding to
# whole mW and everything after it is exact integer arithmetic, so months of
# periods add up without drift. Registers only ever increase.
# Reactive energy is kept the same way in millivar-hours (mvarh): Q+ gets
# the seconds whose net Q is positive (current lagging: inductive), Q- the
# others, whatever the sign of P.


class Register:
    def __init__(self, sets_per_s: int) -> None:
        self.unit = 3600 * sets_per_s  # mW-sets per mWh
        self.mwh = 0
        self.res = 0  # 0 <= res < unit

    def add(self, mw_sets: int) -> None:
        """Add a non-negative energy in mW-sets."""
        if mw_sets <= 0:
            return
        self.res += mw_sets
        if self.res >= self.unit:
            q = self.res // self.unit
            self.mwh += q
            self.res -= q * self.unit

    def restore(self, mwh: int) -> None:
        """Set from EEPROM; the sub-mWh residue was not saved and starts at 0."""
        self.mwh = mwh
        self.res = 0


class CtEnergy:
    """The import and export registers of one CT channel, and its reactive pair."""

    def __init__(self, sets_per_s: int) -> None:
        self.imp = Register(sets_per_s)
        self.exp = Register(sets_per_s)
        self.qpos = Register(sets_per_s)  # mvarh, Q > 0
        self.qneg = Register(sets_per_s)  # mvarh, Q < 0

    def add(self, mw_sets: int) -> None:
        """A signed energy in mW-sets (+ = import)."""
        if mw_sets > 0:
            self.imp.add(mw_sets)
        elif mw_sets < 0:
            self.exp.add(-mw_sets)

    def add_reactive(self, mvar_sets: int) -> None:
        """A signed reactive energy in mvar-sets (+ = lagging)."""
        if mvar_sets > 0:
            self.qpos.add(mvar_sets)
        elif mvar_sets < 0:
            self.qneg.add(-mvar_sets)

    def tuple_values(self, channel: int, unix_ms: int):
        """COUNTER payload values (sensor, t, ms, imp_wh, imp_milli, exp_wh, exp_milli)."""
        i = self.imp.mwh
        e = self.exp.mwh
        return (channel, (unix_ms // 1000) & 0xFFFFFFFF, unix_ms % 1000, (i // 1000) & 0xFFFFFFFF,
                i % 1000, (e // 1000) & 0xFFFFFFFF, e % 1000)
