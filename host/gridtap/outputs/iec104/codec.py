"""IEC 60870-5-104 frames: the APCI (I, S and U formats) and the ASDUs Netflex uses.

Pure functions over bytes; nothing here does I/O. Everything from the network is
checked and a bad frame raises `FrameError` naming what is wrong, so the server
can close the link (the standard's answer to a malformed APDU) without crashing.
Byte-level vectors are in docs/iec104.md and checked by tests.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

START = 0x68
MAX_APDU = 253  # the length octet counts the 4 control octets and the ASDU
SEQ_MOD = 1 << 15
FLOAT32_MAX = 3.4028234663852886e38

# U-frame functions (control octet 1)
STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
STOPDT_ACT, STOPDT_CON = 0x13, 0x23
TESTFR_ACT, TESTFR_CON = 0x43, 0x83
U_FUNCTIONS = {STARTDT_ACT, STARTDT_CON, STOPDT_ACT, STOPDT_CON, TESTFR_ACT, TESTFR_CON}

# type identifications
M_SP_NA_1, M_DP_NA_1, M_ME_NC_1 = 1, 3, 13
M_SP_TB_1, M_DP_TB_1, M_ME_TF_1 = 30, 31, 36
C_SC_NA_1, C_DC_NA_1, C_SE_NC_1 = 45, 46, 50
M_EI_NA_1, C_IC_NA_1, C_CS_NA_1 = 70, 100, 103

# causes of transmission
COT_PERIODIC, COT_SPONTANEOUS, COT_INITIALISED = 1, 3, 4
COT_ACT, COT_ACT_CON, COT_DEACT, COT_DEACT_CON, COT_ACT_TERM = 6, 7, 8, 9, 10
COT_INTERROGATED = 20
COT_UNKNOWN_TYPE, COT_UNKNOWN_CAUSE, COT_UNKNOWN_CA, COT_UNKNOWN_IOA = 44, 45, 46, 47

BROADCAST_CA = 0xFFFF
QOI_STATION = 20

# information element sizes (without the 3-octet IOA) per type we decode or encode
_ELEMENT = {M_SP_NA_1: 1, M_DP_NA_1: 1, M_ME_NC_1: 5, M_SP_TB_1: 8, M_DP_TB_1: 8, M_ME_TF_1: 12,
            C_SC_NA_1: 1, C_DC_NA_1: 1, C_SE_NC_1: 5, M_EI_NA_1: 1, C_IC_NA_1: 1, C_CS_NA_1: 7}


class FrameError(ValueError):
    """A malformed APDU: the link is closed (and the count kept), never the daemon."""


@dataclass(frozen=True)
class IFrame:
    ns: int
    nr: int
    asdu: bytes


@dataclass(frozen=True)
class SFrame:
    nr: int


@dataclass(frozen=True)
class UFrame:
    function: int


Frame = IFrame | SFrame | UFrame


def encode_i(ns: int, nr: int, asdu: bytes) -> bytes:
    if not 6 <= len(asdu) <= MAX_APDU - 4:
        raise ValueError(f"ASDU of {len(asdu)} octets does not fit an APDU")
    return bytes([START, 4 + len(asdu)]) + struct.pack("<HH", (ns % SEQ_MOD) << 1, (nr % SEQ_MOD) << 1) + asdu


def encode_s(nr: int) -> bytes:
    return bytes([START, 4, 0x01, 0x00]) + struct.pack("<H", (nr % SEQ_MOD) << 1)


def encode_u(function: int) -> bytes:
    if function not in U_FUNCTIONS:
        raise ValueError(f"not a U-frame function: {function:#04x}")
    return bytes([START, 4, function, 0, 0, 0])


def decode_apdu(apdu: bytes) -> Frame:
    """One whole APDU (start octet included) -> its frame."""
    if len(apdu) < 6 or apdu[0] != START:
        raise FrameError("an APDU starts with 0x68 and has at least 6 octets")
    if apdu[1] != len(apdu) - 2 or apdu[1] > MAX_APDU:
        raise FrameError(f"length octet {apdu[1]} does not match the {len(apdu) - 2} octets that follow")
    c1, c2, c3, c4 = apdu[2:6]
    if c1 & 1 == 0:
        if len(apdu) < 12:
            raise FrameError("an I-frame carries an ASDU of at least 6 octets")
        if c3 & 1:
            raise FrameError("I-frame receive sequence number has its low bit set")
        return IFrame((c1 | c2 << 8) >> 1, (c3 | c4 << 8) >> 1, bytes(apdu[6:]))
    if len(apdu) != 6:
        raise FrameError("S- and U-frames have no ASDU")
    if c1 & 3 == 1:
        if c1 != 1 or c2 != 0 or c3 & 1:
            raise FrameError("malformed S-frame control octets")
        return SFrame((c3 | c4 << 8) >> 1)
    if c1 not in U_FUNCTIONS or c2 or c3 or c4:
        raise FrameError(f"unknown U-frame control octets {bytes(apdu[2:6]).hex()}")
    return UFrame(c1)


class FrameReader:
    """Splits a TCP byte stream into APDUs; holds at most one APDU's worth of bytes."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= 2:
            if self._buf[0] != START:
                raise FrameError(f"expected start octet 0x68, got {self._buf[0]:#04x}")
            n = self._buf[1]
            if n < 4 or n > MAX_APDU:
                raise FrameError(f"APDU length {n} outside 4..{MAX_APDU}")
            if len(self._buf) < n + 2:
                break
            apdu = bytes(self._buf[:n + 2])
            del self._buf[:n + 2]
            out.append(decode_apdu(apdu))
        return out


# -- time tags ----------------------------------------------------------------------------------

def encode_cp56(t: float) -> bytes:
    """CP56Time2a in UTC (Netflex synchronises the clock from the operator's side)."""
    d = datetime.fromtimestamp(t, UTC)
    ms = d.second * 1000 + d.microsecond // 1000
    return struct.pack("<H", ms) + bytes([d.minute, d.hour, d.day | (d.isoweekday() << 5),
                                          d.month, d.year % 100])


def decode_cp56(b: bytes) -> float:
    """CP56Time2a (UTC, years 2000..2099) -> Unix seconds; FrameError for an impossible date."""
    if len(b) != 7:
        raise FrameError("CP56Time2a has 7 octets")
    ms = b[0] | b[1] << 8
    if ms > 59999 or b[2] & 0x80:
        raise FrameError("CP56Time2a milliseconds out of range or time marked invalid")
    try:
        d = datetime(2000 + (b[6] & 0x7F), b[5] & 0x0F, b[4] & 0x1F, b[3] & 0x1F, b[2] & 0x3F,
                     ms // 1000, (ms % 1000) * 1000, UTC)
    except ValueError as exc:
        raise FrameError(f"CP56Time2a is not a date: {exc}") from None
    return d.timestamp()


# -- ASDUs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Asdu:
    type_id: int
    cot: int
    ca: int
    objects: tuple[tuple[int, bytes], ...]  # (IOA, information element octets)
    negative: bool = False
    test: bool = False
    originator: int = 0
    sequence: bool = False


def decode_asdu(b: bytes) -> Asdu:
    if len(b) < 6:
        raise FrameError("an ASDU has at least 6 octets")
    type_id, vsq, cot, orig = b[0], b[1], b[2], b[3]
    ca = b[4] | b[5] << 8
    n, sq = vsq & 0x7F, bool(vsq & 0x80)
    def asdu(objects: tuple[tuple[int, bytes], ...]) -> Asdu:
        return Asdu(type_id, cot & 0x3F, ca, objects, bool(cot & 0x40), bool(cot & 0x80), orig, sq)

    size = _ELEMENT.get(type_id)
    if size is None:  # unknown type: keep the first IOA (if any) so the reply can mirror it
        return asdu(((b[6] | b[7] << 8 | b[8] << 16, bytes(b[9:])),) if len(b) >= 9 else ())
    if n == 0:
        raise FrameError("ASDU with zero information objects")
    want = 6 + (3 + n * size if sq else n * (3 + size))
    if len(b) != want:
        raise FrameError(f"type {type_id} with {n} objects needs {want} octets, got {len(b)}")
    objs: list[tuple[int, bytes]] = []
    if sq:
        base = b[6] | b[7] << 8 | b[8] << 16
        for i in range(n):
            objs.append((base + i, bytes(b[9 + i * size:9 + (i + 1) * size])))
    else:
        for i in range(n):
            p = 6 + i * (3 + size)
            objs.append((b[p] | b[p + 1] << 8 | b[p + 2] << 16, bytes(b[p + 3:p + 3 + size])))
    return asdu(tuple(objs))


def encode_asdu(a: Asdu) -> bytes:
    if not a.objects or len(a.objects) > 127:
        raise ValueError("an ASDU carries 1..127 objects")
    cot = a.cot | (0x40 if a.negative else 0) | (0x80 if a.test else 0)
    out = bytearray([a.type_id, len(a.objects), cot, a.originator]) + struct.pack("<H", a.ca)
    for ioa, elem in a.objects:
        out += struct.pack("<I", ioa)[:3] + elem
    return bytes(out)


def mirror(a: Asdu, cot: int, negative: bool = False) -> Asdu:
    """The confirmation of a received ASDU: same type, CA and objects, new cause."""
    return Asdu(a.type_id, cot, a.ca, a.objects, negative, a.test, a.originator, a.sequence)


@dataclass(frozen=True)
class Command:
    """A decoded single/double command or short-float setpoint."""

    type_id: int
    ioa: int
    value: float  # 0/1 for single, 1 (off) / 2 (on) for double, the float for setpoints
    select: bool
    qualifier: int
    extra: dict[str, int] = field(default_factory=dict)


def decode_command(type_id: int, ioa: int, elem: bytes) -> Command:
    if type_id == C_SC_NA_1:
        return Command(type_id, ioa, float(elem[0] & 1), bool(elem[0] & 0x80), (elem[0] >> 2) & 0x1F)
    if type_id == C_DC_NA_1:
        return Command(type_id, ioa, float(elem[0] & 3), bool(elem[0] & 0x80), (elem[0] >> 2) & 0x1F)
    if type_id == C_SE_NC_1:
        (v,) = struct.unpack("<f", elem[:4])
        return Command(type_id, ioa, v, bool(elem[4] & 0x80), elem[4] & 0x7F)
    raise ValueError(f"type {type_id} is not a command")


# monitoring information elements

def siq(on: bool, invalid: bool = False) -> bytes:
    return bytes([(1 if on else 0) | (0x80 if invalid else 0)])


def diq(state: int, invalid: bool = False) -> bytes:
    return bytes([(state & 3) | (0x80 if invalid else 0)])


def short_float(v: float, invalid: bool = False) -> bytes:
    if not math.isfinite(v) or abs(v) > FLOAT32_MAX:  # a value IEEE single cannot carry is sent as invalid
        v, invalid = 0.0, True
    return struct.pack("<f", v) + bytes([0x80 if invalid else 0])
