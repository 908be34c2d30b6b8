# gridtap board configuration: the values the host sets with CONFIG_SET,
# their checks, and their byte image for the EEPROM config area.
#
# Numbering on the wire (docs/protocol.md): CT channels and pulse inputs count
# from 0 in board.json order (CT1 = channel 0, P1 = input 0) in CONFIG index,
# COUNTER.sensor, GAUGE.channel and PULSE.input. The voltage channel and the
# board target use index 0.
#
# Runs under MicroPython and CPython: no typing imports, no dataclasses.

import struct

from gridtap_fw import wire

NO_ID = b"\x00" * 16

# The values the board accepts (NAK 4 "bad value" outside them) are wire.PARAMS' min..max.

DEFAULT_SAVE_WH = 50
DEFAULT_SAVE_MIN = 30


class CtConfig:
    def __init__(self) -> None:
        self.enabled = 1
        self.sensor_id = NO_ID
        self.sensor_id_export = NO_ID
        self.gain_e6 = 1000000
        self.phase_mdeg = 0
        self.invert = 0


class PulseConfig:
    def __init__(self) -> None:
        self.enabled = 1
        self.sensor_id = NO_ID
        self.meter_const_milli = 1000000  # 1000 imp/kWh: 1 Wh per pulse
        self.debounce_ms = 20
        self.trigger = wire.TRIGGER_EDGE
        self.unit = wire.UNIT_WH


# Which parameters each target accepts, in the order CONFIG lists them.
TARGET_PARAMS = {
    wire.TARGET_BOARD: (wire.P_SAVE_WH, wire.P_SAVE_MIN),
    wire.TARGET_VOLTAGE: (wire.P_ENABLED, wire.P_GAIN_E6),
    wire.TARGET_CT: (wire.P_ENABLED, wire.P_SENSOR_ID, wire.P_SENSOR_ID_EXPORT, wire.P_GAIN_E6,
                     wire.P_PHASE_MDEG, wire.P_INVERT),
    wire.TARGET_PULSE: (wire.P_ENABLED, wire.P_SENSOR_ID, wire.P_METER_CONST_MILLI,
                        wire.P_DEBOUNCE_MS, wire.P_TRIGGER, wire.P_UNIT),
}

# Attribute name per parameter (the wire names, which are also ours).
ATTR = {}
for _pid in wire.PARAMS:
    ATTR[_pid] = wire.PARAMS[_pid][0]

# Byte image: header, board, voltage, CTs, pulses, crc32.
HEAD_FMT = "<HBBBI"  # magic, layout, n_ct, n_pulse, seq
HEAD_LEN = struct.calcsize(HEAD_FMT)
MAGIC = 0x4347  # "GC"
LAYOUT = 1
BOARD_FMT = "<HHBI"  # save_wh, save_min, v_enabled, v_gain_e6
CT_FMT = "<BBIi16s16s"  # enabled, invert, gain_e6, phase_mdeg, sensor_id, sensor_id_export
PULSE_FMT = "<BBBHI16s"  # enabled, trigger, unit, debounce_ms, meter_const_milli, sensor_id


def _value_ok(pid, value) -> bool:
    spec = wire.PARAMS[pid]
    if spec[3] is None:  # the sensor ids
        return isinstance(value, (bytes, bytearray)) and len(value) == 16
    return spec[3] <= value <= spec[4]


class Config:
    def __init__(self, n_ct: int, n_pulse: int) -> None:
        self.n_ct = n_ct
        self.n_pulse = n_pulse
        self.save_wh = DEFAULT_SAVE_WH
        self.save_min = DEFAULT_SAVE_MIN
        self.v_enabled = 1
        self.v_gain_e6 = 1000000
        self.cts = [CtConfig() for _ in range(n_ct)]
        self.pulses = [PulseConfig() for _ in range(n_pulse)]
        self.seq = 0  # of the EEPROM image this came from

    def _obj(self, target: int, index: int):
        """The object holding a target's values, or None for a bad index."""
        if target == wire.TARGET_BOARD:
            return self if index == 0 else None
        if target == wire.TARGET_VOLTAGE:
            return self if index == 0 else None
        if target == wire.TARGET_CT:
            return self.cts[index] if 0 <= index < self.n_ct else None
        if target == wire.TARGET_PULSE:
            return self.pulses[index] if 0 <= index < self.n_pulse else None
        return None

    @staticmethod
    def _attr(target: int, pid: int) -> str:
        if target == wire.TARGET_VOLTAGE:
            return "v_enabled" if pid == wire.P_ENABLED else "v_gain_e6"
        return ATTR[pid]

    def get(self, target: int, index: int, params):
        """CONFIG_GET: a list of (param, value), or a NAK reason (int)."""
        obj = self._obj(target, index)
        if obj is None:
            return wire.NAK_BAD_VALUE
        allowed = TARGET_PARAMS[target]
        if not params:
            params = allowed
        items = []
        for pid in params:
            if pid not in allowed:
                return wire.NAK_BAD_PARAM
            items.append((pid, getattr(obj, self._attr(target, pid))))
        return items

    def check(self, target: int, index: int, items) -> int:
        """0 if CONFIG_SET items are all acceptable, else the NAK reason."""
        if self._obj(target, index) is None:
            return wire.NAK_BAD_VALUE
        allowed = TARGET_PARAMS[target]
        for item in items:
            if item[0] not in allowed:
                return wire.NAK_BAD_PARAM
            if not _value_ok(item[0], item[1]):
                return wire.NAK_BAD_VALUE
        return 0

    def apply(self, target: int, index: int, items) -> int:
        """CONFIG_SET: all items or none. Returns 0 or the NAK reason."""
        reason = self.check(target, index, items)
        if reason:
            return reason
        obj = self._obj(target, index)
        for item in items:
            value = item[1]
            if isinstance(value, bytearray):
                value = bytes(value)
            setattr(obj, self._attr(target, item[0]), value)
        return 0

    # ------------------------------------------------------------ bytes

    def image_len(self) -> int:
        return (HEAD_LEN + struct.calcsize(BOARD_FMT) + self.n_ct * struct.calcsize(CT_FMT)
                + self.n_pulse * struct.calcsize(PULSE_FMT) + 4)

    def to_bytes(self, seq: int) -> bytes:
        out = bytearray(struct.pack(HEAD_FMT, MAGIC, LAYOUT, self.n_ct, self.n_pulse, seq))
        out += struct.pack(BOARD_FMT, self.save_wh, self.save_min, self.v_enabled, self.v_gain_e6)
        for c in self.cts:
            out += struct.pack(CT_FMT, c.enabled, c.invert, c.gain_e6, c.phase_mdeg, c.sensor_id,
                               c.sensor_id_export)
        for p in self.pulses:
            out += struct.pack(PULSE_FMT, p.enabled, p.trigger, p.unit, p.debounce_ms,
                               p.meter_const_milli, p.sensor_id)
        out += struct.pack("<I", wire.crc(out))
        return bytes(out)

    def from_bytes(self, data) -> bool:
        """Load an image if it is intact and for this board; False leaves self as it was."""
        n = self.image_len()
        if len(data) < n:
            return False
        data = bytes(data[:n])
        if wire.crc(data[:n - 4]) != struct.unpack_from("<I", data, n - 4)[0]:
            return False
        magic, layout, n_ct, n_pulse, seq = struct.unpack_from(HEAD_FMT, data, 0)
        if magic != MAGIC or layout != LAYOUT or n_ct != self.n_ct or n_pulse != self.n_pulse:
            return False
        fresh = Config(self.n_ct, self.n_pulse)
        at = HEAD_LEN
        fresh.save_wh, fresh.save_min, fresh.v_enabled, fresh.v_gain_e6 = struct.unpack_from(
            BOARD_FMT, data, at)
        at += struct.calcsize(BOARD_FMT)
        for c in fresh.cts:
            (c.enabled, c.invert, c.gain_e6, c.phase_mdeg, c.sensor_id,
             c.sensor_id_export) = struct.unpack_from(CT_FMT, data, at)
            at += struct.calcsize(CT_FMT)
        for p in fresh.pulses:
            (p.enabled, p.trigger, p.unit, p.debounce_ms, p.meter_const_milli,
             p.sensor_id) = struct.unpack_from(PULSE_FMT, data, at)
            at += struct.calcsize(PULSE_FMT)
        # An image that passed its CRC but holds values we would NAK is not accepted.
        if (not _value_ok(wire.P_SAVE_WH, fresh.save_wh) or not _value_ok(wire.P_SAVE_MIN, fresh.save_min)
                or not _value_ok(wire.P_GAIN_E6, fresh.v_gain_e6) or fresh.v_enabled > 1):
            return False
        for c in fresh.cts:
            if fresh.check(wire.TARGET_CT, 0, ((wire.P_GAIN_E6, c.gain_e6), (wire.P_PHASE_MDEG, c.phase_mdeg),
                                                (wire.P_ENABLED, c.enabled), (wire.P_INVERT, c.invert))):
                return False
        for p in fresh.pulses:
            if fresh.check(wire.TARGET_PULSE, 0, ((wire.P_METER_CONST_MILLI, p.meter_const_milli),
                                                   (wire.P_DEBOUNCE_MS, p.debounce_ms),
                                                   (wire.P_ENABLED, p.enabled), (wire.P_TRIGGER, p.trigger),
                                                   (wire.P_UNIT, p.unit))):
                return False
        self.save_wh = fresh.save_wh
        self.save_min = fresh.save_min
        self.v_enabled = fresh.v_enabled
        self.v_gain_e6 = fresh.v_gain_e6
        self.cts = fresh.cts
        self.pulses = fresh.pulses
        self.seq = seq
        return True
