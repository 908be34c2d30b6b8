# gridtap wire protocol, version 2: framing, CRC, message layouts.
#
# This one module is the reference codec. It runs unmodified on the board
# (MicroPython) and on the host (CPython); native/gt_wire.c implements the same
# spec in C. docs/protocol.md is the human-readable contract and its test
# vectors are checked against both codecs.
#
# A frame on the wire is   0x00 COBS(header | payload | crc32) 0x00
#   header  = version u8, type u8, flags u8, seq u16   (little-endian)
#   crc32   = CRC-32/ISO-HDLC (zlib's) over header|payload, little-endian
# The leading 0x00 lets a receiver that has just seen garbage start clean on
# the very next frame; empty frames between delimiters are ignored.
#
# No allocation-heavy constructs, no dataclasses, no typing imports: the
# MicroPython unix and rp2 ports must import this file as it is.

import struct

try:
    from binascii import crc32
except ImportError:  # a port built without binascii.crc32
    crc32 = None  # type: ignore[assignment]

try:
    import micropython
except ImportError:  # CPython (the host): @micropython.native below changes nothing there

    class micropython:  # type: ignore[no-redef]
        native = staticmethod(lambda f: f)

PROTO_VERSION = 2  # 2: GAUGE carries reactive power and the reactive registers (#17)
HEADER_LEN = 5
CRC_LEN = 4
MAX_PAYLOAD = 240
MAX_RAW = HEADER_LEN + MAX_PAYLOAD + CRC_LEN  # 249
MAX_ENCODED = MAX_RAW + 1  # COBS adds one byte per 254 bytes: 250
MIN_RAW = HEADER_LEN + CRC_LEN

FLAG_RETX = 0x01  # this tuple was sent before; same seq as the original

# Message types.
HELLO = 0x01
HELLO_REQ = 0x02
TIME_SET = 0x03
TIME = 0x04
COUNTER = 0x05
PULSE = 0x06
GAUGE = 0x07
ACK = 0x08
NAK = 0x09
CONFIG_GET = 0x0A
CONFIG_SET = 0x0B
CONFIG = 0x0C
COMMIT = 0x0D
EVENT = 0x0E

TYPE_NAMES = {
    HELLO: "HELLO",
    HELLO_REQ: "HELLO_REQ",
    TIME_SET: "TIME_SET",
    TIME: "TIME",
    COUNTER: "COUNTER",
    PULSE: "PULSE",
    GAUGE: "GAUGE",
    ACK: "ACK",
    NAK: "NAK",
    CONFIG_GET: "CONFIG_GET",
    CONFIG_SET: "CONFIG_SET",
    CONFIG: "CONFIG",
    COMMIT: "COMMIT",
    EVENT: "EVENT",
}

# Fixed-layout messages: struct format and field names.
LAYOUTS = {
    HELLO: ("<8sBBBBIBIBB", ("board_id", "fw_major", "fw_minor", "fw_patch", "proto",
                              "boot_count", "reset_cause", "brownout_count", "n_ct", "n_pulse")),
    HELLO_REQ: ("<", ()),
    TIME_SET: ("<IH", ("unix_s", "ms")),
    TIME: ("<IHIB", ("unix_s", "ms", "uptime_ms", "synced")),
    COUNTER: ("<BIHIHIH", ("sensor", "unix_s", "ms", "imp_wh", "imp_milli", "exp_wh", "exp_milli")),
    PULSE: ("<BIHIHI", ("input", "unix_s", "ms", "count", "milli", "pulses")),
    GAUGE: ("<BIHiIIIhHiIHIH", ("channel", "unix_s", "ms", "power_mw", "va_mva", "vrms_mv",
                                "irms_ma", "pf_e4", "freq_mhz", "q_mvar", "qpos_varh", "qpos_milli",
                                "qneg_varh", "qneg_milli")),
    NAK: ("<HBB", ("ref_seq", "ref_type", "reason")),
    COMMIT: ("<B", ("what",)),
}
EVENT_HEAD = "<IHBH"
EVENT_FIELDS = ("unix_s", "ms", "level", "code", "text")
EVENT_MAX_TEXT = 200
ACK_MAX = 64
CONFIG_GET_MAX = 32

# Field names of the variable-layout messages, for hosts that want dicts.
FIELDS = {t: LAYOUTS[t][1] for t in LAYOUTS}
FIELDS[ACK] = ("seqs",)
FIELDS[CONFIG_GET] = ("target", "index", "params")
FIELDS[CONFIG_SET] = ("target", "index", "items")
FIELDS[CONFIG] = ("target", "index", "items")
FIELDS[EVENT] = EVENT_FIELDS

# Reset causes (HELLO.reset_cause).
RESET_UNKNOWN = 0
RESET_POWER_ON = 1
RESET_BROWNOUT = 2
RESET_WATCHDOG = 3
RESET_SOFT = 4
RESET_PIN = 5

# NAK reasons.
NAK_UNKNOWN_TYPE = 1
NAK_BAD_LENGTH = 2
NAK_BAD_PARAM = 3
NAK_BAD_VALUE = 4
NAK_BUSY = 5
NAK_STORAGE = 6
NAK_NOT_SYNCED = 7
NAK_VERSION = 8
NAK_READ_ONLY = 9

# EVENT codes (the level the board sends them at, in brackets)
EV_RESTORED = 0x0101  # counters restored from EEPROM (1 info)
EV_BROWNOUT_SAVE = 0x0102  # brownout: counters saved (3 warning)
EV_FRESH = 0x0103  # no intact counter record: starting from zero (3)
EV_CONFIG_DEFAULT = 0x0104  # no intact config image: defaults in use (2 notice)
EV_STORAGE = 0x0105  # EEPROM read or write failed (4 critical)
EV_SUPPLY_BACK = 0x0106  # supply monitor released after a brownout save (2)
EV_AC_LOST = 0x0201  # no mains voltage: power reads 0 W (2)
EV_AC_BACK = 0x0202  # mains voltage back (1)
EV_ADC_OVERRUN = 0x0203  # the HAL lost ADC blocks: a gap in sampling (4)

# COMMIT bits.
COMMIT_CONFIG = 0x01
COMMIT_COUNTERS = 0x02

# CONFIG targets.
TARGET_BOARD = 0
TARGET_VOLTAGE = 1
TARGET_CT = 2
TARGET_PULSE = 3
MAX_TARGET = 3

# The UART rates the link is specified for (docs/protocol.md; board.json uart.baud is one of them).
LINK_BAUDS = (115200, 460800)

# CONFIG parameters: id -> (name, struct format, wire max or None, min, max).
# The wire max is what the decoder refuses as malformed (a flag that is not 0/1),
# as native/gt_wire.c does. min..max is the one table of accepted values: the
# board NAKs "bad value" outside it (gridtap_fw.config) and the host's config
# check derives its limits from it (gridtap.config), so the two cannot disagree.
P_ENABLED = 0x01
P_SENSOR_ID = 0x02
P_SENSOR_ID_EXPORT = 0x03
P_GAIN_E6 = 0x04
P_PHASE_MDEG = 0x05
P_INVERT = 0x06
P_METER_CONST_MILLI = 0x07
P_DEBOUNCE_MS = 0x08
P_TRIGGER = 0x09
P_UNIT = 0x0A
P_SAVE_WH = 0x0B
P_SAVE_MIN = 0x0C

PARAMS = {
    P_ENABLED: ("enabled", "<B", 1, 0, 1),
    P_SENSOR_ID: ("sensor_id", "<16s", None, None, None),
    P_SENSOR_ID_EXPORT: ("sensor_id_export", "<16s", None, None, None),
    P_GAIN_E6: ("gain_e6", "<I", None, 100000, 10000000),  # 0.1 .. 10
    # +-180 degrees: a calibration correction plus the line's lag (L2 +120, L3 -120)
    P_PHASE_MDEG: ("phase_mdeg", "<i", None, -180000, 180000),
    P_INVERT: ("invert", "<B", 1, 0, 1),
    P_METER_CONST_MILLI: ("meter_const_milli", "<I", None, 1000, 100000000),  # 1 .. 100,000 imp/kWh (m3)
    P_DEBOUNCE_MS: ("debounce_ms", "<H", None, 1, 10000),
    P_TRIGGER: ("trigger", "<B", 1, 0, 1),
    P_UNIT: ("unit", "<B", 1, 0, 1),
    P_SAVE_WH: ("save_wh", "<H", None, 1, 65535),
    P_SAVE_MIN: ("save_min", "<H", None, 1, 65535),
}
PARAM_IDS = {PARAMS[p][0]: p for p in PARAMS}
TRIGGER_EDGE = 0
TRIGGER_LEVEL = 1
UNIT_WH = 0
UNIT_LITRE = 1

# Decoder counters, in the order native/gt_wire.h keeps them.
COUNTER_NAMES = ("frames_ok", "bad_crc", "oversize", "bad_cobs", "runt",
                 "bad_version", "bad_type", "bad_length", "bad_value")
C_OK = 0
C_CRC = 1
C_OVERSIZE = 2
C_COBS = 3
C_RUNT = 4
C_VERSION = 5
C_TYPE = 6
C_LENGTH = 7
C_VALUE = 8


class WireError(ValueError):
    """Raised by the encoder for values that cannot be put on the wire."""


# CPython raises struct.error for out-of-range numbers; MicroPython has no such name.
_PACK_ERRORS = (OverflowError, ValueError, TypeError, IndexError, KeyError,
                getattr(struct, "error", ValueError))


def _crc32_table() -> list:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = None


def crc(data) -> int:
    """CRC-32/ISO-HDLC, the zlib CRC: check value 0xCBF43926 for b"123456789"."""
    if crc32 is not None:
        return crc32(data) & 0xFFFFFFFF
    global _TABLE
    if _TABLE is None:
        _TABLE = _crc32_table()
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# Native code on the board: the same loop, without the bytecode dispatch that cost about
# 1,100 instructions a byte on a Cortex-M0+, 50,000 a GAUGE frame (hardware/qemu-m0.md).
@micropython.native
def cobs_encode(raw) -> bytes:
    out = bytearray(len(raw) + len(raw) // 254 + 2)
    code_at = 0
    code = 1
    o = 1
    for b in raw:
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at = o
                o += 1
                code = 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode(enc):
    """Return the decoded bytes, or None if enc is not valid COBS."""
    out = bytearray()
    i = 0
    n = len(enc)
    while i < n:
        code = enc[i]
        if code == 0:
            return None
        j = i + code
        if j > n:
            return None
        out += enc[i + 1:j]
        i = j
        if code != 0xFF and i < n:
            out.append(0)
    return out


# ---------------------------------------------------------------- payloads


def _pack_params(items) -> bytes:
    out = bytearray()
    for item in items:
        pid, value = item[0], item[1]
        spec = PARAMS.get(pid)
        if spec is None:
            raise WireError("unknown config parameter %r" % (pid,))
        fmt = spec[1]
        if fmt == "<16s":
            if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
                raise WireError("%s needs 16 bytes" % spec[0])
            val = bytes(value)
        else:
            if spec[2] is not None and not 0 <= value <= spec[2]:
                raise WireError("%s must be 0..%d" % (spec[0], spec[2]))
            val = struct.pack(fmt, value)
        out.append(pid)
        out.append(len(val))
        out += val
    return bytes(out)


def encode_payload(mtype: int, values) -> bytes:
    """Pack one message's values (a tuple in FIELDS order) into its payload."""
    name = TYPE_NAMES.get(mtype, mtype)
    try:
        payload = _pack_payload(mtype, values)
    except _PACK_ERRORS as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError("%s: %s" % (name, exc))
    if len(payload) > MAX_PAYLOAD:
        raise WireError("%s: payload of %d bytes exceeds %d" % (name, len(payload), MAX_PAYLOAD))
    msg = parse_payload(mtype, payload)
    # MicroPython's struct may truncate an out-of-range number instead of
    # raising, so a fixed layout must read back exactly what was given.
    if not isinstance(msg, tuple) or (mtype in LAYOUTS and msg != tuple(values)):
        raise WireError("%s: value out of range for the wire" % name)
    return payload


def _pack_payload(mtype: int, values) -> bytes:
    layout = LAYOUTS.get(mtype)
    if layout is not None:
        payload = struct.pack(layout[0], *values)
    elif mtype == ACK:
        seqs = values[0]
        if not 1 <= len(seqs) <= ACK_MAX:
            raise WireError("ACK carries 1..%d sequence numbers" % ACK_MAX)
        payload = struct.pack("<B", len(seqs)) + b"".join(struct.pack("<H", s) for s in seqs)
    elif mtype == CONFIG_GET:
        params = values[2]
        if len(params) > CONFIG_GET_MAX:
            raise WireError("CONFIG_GET asks for at most %d parameters" % CONFIG_GET_MAX)
        for p in params:
            if p not in PARAMS:
                raise WireError("unknown config parameter %r" % (p,))
        payload = struct.pack("<BB", values[0], values[1]) + bytes(params)
    elif mtype == CONFIG_SET or mtype == CONFIG:
        payload = struct.pack("<BB", values[0], values[1]) + _pack_params(values[2])
    elif mtype == EVENT:
        text = values[4]
        if isinstance(text, str):
            text = text.encode()
        payload = struct.pack(EVENT_HEAD, values[0], values[1], values[2], values[3]) + bytes(text)
    else:
        raise WireError("unknown message type %r" % (mtype,))
    return payload


def encode(mtype: int, seq: int, values=(), flags: int = 0) -> bytes:
    """Return one complete frame, delimiters included, ready for the UART."""
    if not 0 <= seq <= 0xFFFF or not 0 <= flags <= 0xFF:
        raise WireError("seq must be 0..65535 and flags 0..255")
    raw = struct.pack("<BBBH", PROTO_VERSION, mtype, flags, seq) + encode_payload(mtype, values)
    raw += struct.pack("<I", crc(raw))
    return b"\x00" + cobs_encode(raw) + b"\x00"


def _parse_tlvs(p, at: int):
    items = []
    n = len(p)
    while at < n:
        if at + 2 > n:
            return C_LENGTH
        pid = p[at]
        ln = p[at + 1]
        spec = PARAMS.get(pid)
        if spec is None:
            return C_VALUE
        want = 16 if spec[1] == "<16s" else struct.calcsize(spec[1])
        if ln != want or at + 2 + ln > n:
            return C_LENGTH
        if spec[1] == "<16s":
            value = bytes(p[at + 2:at + 18])
        else:
            value = struct.unpack_from(spec[1], p, at + 2)[0]
            if spec[2] is not None and value > spec[2]:
                return C_VALUE
        items.append((pid, value))
        at += 2 + ln
    return tuple(items)


def parse_payload(mtype: int, p):
    """Decode a payload into a values tuple, or return a C_* counter index
    naming why it is not acceptable. Never raises on any bytes."""
    layout = LAYOUTS.get(mtype)
    n = len(p)
    if layout is not None:
        if n != struct.calcsize(layout[0]):
            return C_LENGTH
        v = struct.unpack(layout[0], p)
        if mtype == TIME_SET or mtype == TIME or mtype == COUNTER or mtype == PULSE or mtype == GAUGE:
            ms_at = 0 if mtype == TIME_SET or mtype == TIME else 1
            if v[ms_at + 1] > 999:
                return C_VALUE
            if mtype == COUNTER and (v[4] > 999 or v[6] > 999):
                return C_VALUE
            if mtype == PULSE and v[4] > 999:
                return C_VALUE
            if mtype == TIME and v[3] > 1:
                return C_VALUE
            if mtype == GAUGE and (not -10000 <= v[7] <= 10000 or v[11] > 999 or v[13] > 999):
                return C_VALUE
        elif mtype == COMMIT and not 1 <= v[0] <= 3:
            return C_VALUE
        return v
    if mtype == ACK:
        if n < 3 or n % 2 != 1 or p[0] != (n - 1) // 2 or p[0] > ACK_MAX:
            return C_LENGTH
        return (tuple(struct.unpack_from("<H", p, 1 + 2 * i)[0] for i in range(p[0])),)
    if mtype == CONFIG_GET or mtype == CONFIG_SET or mtype == CONFIG:
        if n < 2:
            return C_LENGTH
        if p[0] > MAX_TARGET:
            return C_VALUE
        if mtype == CONFIG_GET:
            if n - 2 > CONFIG_GET_MAX:
                return C_LENGTH
            for i in range(2, n):
                if p[i] not in PARAMS:
                    return C_VALUE
            return (p[0], p[1], tuple(p[2:]))
        items = _parse_tlvs(p, 2)
        if not isinstance(items, tuple):
            return items
        if mtype == CONFIG_SET and not items:
            return C_LENGTH
        return (p[0], p[1], items)
    if mtype == EVENT:
        if n < 9 or n - 9 > EVENT_MAX_TEXT:
            return C_LENGTH
        v = struct.unpack_from(EVENT_HEAD, p, 0)
        if v[1] > 999 or v[2] > 4:
            return C_VALUE
        return (v[0], v[1], v[2], v[3], bytes(p[9:]))
    return C_TYPE


# ---------------------------------------------------------------- decoder


class Message:
    """One decoded frame. values is a tuple in FIELDS[mtype] order."""

    __slots__ = ("mtype", "seq", "flags", "values")

    def __init__(self, mtype: int, seq: int, flags: int, values: tuple) -> None:
        self.mtype = mtype
        self.seq = seq
        self.flags = flags
        self.values = values

    def as_dict(self) -> dict:
        return dict(zip(FIELDS[self.mtype], self.values))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Message) and self.mtype == other.mtype and self.seq == other.seq
                and self.flags == other.flags and self.values == other.values)

    def __repr__(self) -> str:
        return "Message(%s, seq=%d, flags=%d, %r)" % (
            TYPE_NAMES.get(self.mtype, self.mtype), self.seq, self.flags, self.values)


def decode_raw(raw):
    """Check and decode one COBS-decoded frame. Returns a Message or a C_* index."""
    n = len(raw)
    if n < MIN_RAW:
        return C_RUNT
    if crc(memoryview(raw)[:n - CRC_LEN]) != struct.unpack_from("<I", raw, n - CRC_LEN)[0]:
        return C_CRC
    if raw[0] != PROTO_VERSION:
        return C_VERSION
    mtype = raw[1]
    if mtype not in TYPE_NAMES:
        return C_TYPE
    if n - MIN_RAW > MAX_PAYLOAD:
        return C_LENGTH
    values = parse_payload(mtype, memoryview(raw)[HEADER_LEN:n - CRC_LEN])
    if not isinstance(values, tuple):
        return values
    return Message(mtype, raw[3] | (raw[4] << 8), raw[2], values)  # seq: u16, little-endian


class Decoder:
    """Streaming decoder: feed() any bytes, get back the good messages.

    Bad frames are counted in self.counts (indexed like COUNTER_NAMES) and
    skipped. A frame longer than MAX_ENCODED is dropped without buffering it,
    so memory stays bounded whatever arrives.
    """

    def __init__(self) -> None:
        self.counts = [0] * len(COUNTER_NAMES)
        self._buf = bytearray()
        self._overflow = False

    def counters(self) -> dict:
        return dict(zip(COUNTER_NAMES, self.counts))

    def feed(self, data) -> list:
        out: list = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(b"\x00", start)
            if end < 0:
                self._take(data, start, n)
                break
            self._take(data, start, end)
            self._finish(out)
            start = end + 1
        return out

    def _take(self, data, start: int, end: int) -> None:
        if self._overflow or start == end:
            return
        if len(self._buf) + end - start > MAX_ENCODED:
            self._overflow = True
            self._buf = bytearray()
            return
        self._buf += data[start:end]

    def _finish(self, out: list) -> None:
        if self._overflow:
            self._overflow = False
            self.counts[C_OVERSIZE] += 1
            return
        enc = self._buf
        if not enc:
            return
        self._buf = bytearray()
        raw = cobs_decode(enc)
        if raw is None:
            self.counts[C_COBS] += 1
            return
        result = decode_raw(raw)
        if isinstance(result, Message):
            self.counts[C_OK] += 1
            out.append(result)
        else:
            self.counts[result] += 1
