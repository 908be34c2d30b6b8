"""The LuxPower registers gridtap uses (docs/luxpower.md, "Register map")."""

from __future__ import annotations

# Holding registers
REG_CLOCK = 12  # 12..14: the inverter's clock
REG_FUNCTION = 21  # bitfield, always read-modify-write
BIT_AC_CHARGE = 1 << 7
BIT_FORCED_DISCHARGE = 1 << 10
BIT_CHARGE_PRIORITY = 1 << 11
REG_CHARGE_PCT = 64  # PV/battery charge power, % of maximum
REG_DISCHARGE_PCT = 65  # discharge power, % of maximum
REG_AC_CHARGE_PCT = 66  # AC (grid) charge power, % of maximum
REG_AC_CHARGE_SOC = 67  # AC charge stops at this SOC
REG_AC_CHARGE_WINDOWS = 68  # 68..73: three windows, each start then end, low byte hour, high byte minute
REG_FORCED_DISCHARGE_PCT = 82  # forced-discharge power, % of maximum (83: its SOC limit)
REG_FORCED_DISCHARGE_WINDOWS = 84  # 84..89: three windows as above
REG_DISCHARGE_CUTOFF_SOC = 105
REG_REACTIVE_MODE = 59  # 0 unity PF, 1 fixed PF, 2 Q(P), 3 custom PF, 4 capacitive, 5 inductive, 6/7 Q(V)
REG_REACTIVE_PCT = 61  # the reactive power of modes 4 and 5, % of the rated power (0..60)
Q_UNITY, Q_CAPACITIVE, Q_INDUCTIVE = 0, 4, 5
Q_PCT_MAX = 60

# Input registers (pushed by the datalogger)
IN_STATUS = 0
IN_SOC = 5  # low byte SOC %, high byte SOH %
IN_CHARGE_W = 10
IN_DISCHARGE_W = 11

WHOLE_DAY = ((0, 0), (23, 59))  # an AC-charge window that makes bit 7 alone decide


def pack_time(hour: int, minute: int) -> int:
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"time {hour}:{minute} out of range")
    return hour | (minute << 8)


def unpack_time(value: int) -> tuple[int, int]:
    return value & 0xFF, value >> 8


def windows_values(windows: list[tuple[tuple[int, int], tuple[int, int]]]) -> tuple[int, ...]:
    """Up to three (start, end) windows -> the six register values (unused windows 00:00-00:00)."""
    if len(windows) > 3:
        raise ValueError("the inverter has three AC-charge windows")
    out: list[int] = []
    for (h1, m1), (h2, m2) in [*windows, *[((0, 0), (0, 0))] * (3 - len(windows))]:
        out += [pack_time(h1, m1), pack_time(h2, m2)]
    return tuple(out)
