"""LuxPower datalogger frames (TCP port 8000), pure Python: encode, decode, split a byte stream.

Layout (little-endian; docs/luxpower.md has the byte-level vectors the tests check):

    A1 1A | u16 protocol | u16 frame length - 6 | 01 | tcp function | datalogger serial (10 ASCII)
    heartbeat (193): one 00 byte
    translated data (194): u16 length of the rest | address (0 request, 1 reply) | device function
        | inverter serial (10) | u16 register | function-specific part | CRC-16/MODBUS (LE)
        over everything after the length field, before the CRC.

Function-specific parts: a read request (3, 4) has a u16 count; a read reply a byte count and the
values; a single write (6) the u16 value (request and echo); a multi-write (16) request count, byte
count and values, its reply the count; an exception reply (function | 0x80) one exception code.

Every decoder raises `FrameError` (a ValueError naming the problem) for anything malformed and
nothing else, whatever the bytes: the datalogger and the network are not trusted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"\xa1\x1a"
HEADER_LEN = 18  # magic, protocol, length, 01, tcp function, datalogger serial
MAX_FRAME = 1024  # a 127-register push is 18 + 2 + 15 + 254 + 2 bytes; anything far beyond is garbage
SERIAL_LEN = 10

TCP_HEARTBEAT = 193
TCP_TRANSLATED = 194
TCP_READ_PARAM = 195
TCP_WRITE_PARAM = 196
TCP_FUNCTIONS = (TCP_HEARTBEAT, TCP_TRANSLATED, TCP_READ_PARAM, TCP_WRITE_PARAM)

READ_HOLD = 3
READ_INPUT = 4
WRITE_SINGLE = 6
WRITE_MULTI = 16
DEVICE_FUNCTIONS = (READ_HOLD, READ_INPUT, WRITE_SINGLE, WRITE_MULTI)
EXCEPTION_BIT = 0x80
MAX_REGISTERS = 127  # the largest block a datalogger pushes or a read may ask for

# Modbus exception codes, for messages
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
              4: "device failure", 6: "device busy"}


class FrameError(ValueError):
    """A frame that is not a well-formed LuxPower frame; the message names what is wrong."""


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0xA001 (reflected 0x8005), initial 0xFFFF, no final xor."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _serial(s: str, what: str) -> bytes:
    raw = s.encode("ascii", "replace")
    if len(raw) != SERIAL_LEN or not s.isascii() or not s.isprintable():
        raise ValueError(f"{what} must be {SERIAL_LEN} printable ASCII characters, got {s!r}")
    return raw


def _unserial(raw: bytes, what: str) -> str:
    if not all(0x20 <= b < 0x7F for b in raw):
        raise FrameError(f"{what} is not printable ASCII: {raw.hex()}")
    return raw.decode("ascii")


@dataclass(frozen=True)
class Heartbeat:
    """The datalogger's keepalive; its body is one 00 byte (kept as sent: the reply echoes it)."""

    datalogger: str
    protocol: int = 2
    body: bytes = b"\x00"


@dataclass(frozen=True)
class Translated:
    """A function-194 frame: a Modbus-like request to, or reply from, the inverter.

    `values` holds the registers read (read reply), written (single or multi write request and
    the single write's echo); `count` the registers asked for (read request) or written (multi
    reply); `exception` the code of an exception reply (then `function` has no 0x80 bit).
    """

    datalogger: str
    inverter: str
    function: int
    register: int
    reply: bool = False
    count: int = 0
    values: tuple[int, ...] = ()
    exception: int | None = None
    protocol: int = 1


@dataclass(frozen=True)
class Param:
    """A function-195/196 frame (the datalogger's own parameters, e.g. 0 = push interval): kept
    opaque, gridtap neither asks for nor changes them, but they must not break the stream."""

    datalogger: str
    tcp_function: int
    body: bytes
    protocol: int = 2


Frame = Heartbeat | Translated | Param


def _header(protocol: int, tcp_function: int, datalogger: str, body_len: int) -> bytes:
    return MAGIC + struct.pack("<HHBB", protocol, HEADER_LEN + body_len - 6, 1, tcp_function) + _serial(
        datalogger, "datalogger serial")


def encode(frame: Frame) -> bytes:
    if isinstance(frame, Heartbeat):
        return _header(frame.protocol, TCP_HEARTBEAT, frame.datalogger, len(frame.body)) + frame.body
    if isinstance(frame, Param):
        return _header(frame.protocol, frame.tcp_function, frame.datalogger, len(frame.body)) + frame.body
    data = _translated_data(frame)
    body = struct.pack("<H", len(data) + 2) + data + struct.pack("<H", crc16_modbus(data))
    return _header(frame.protocol, TCP_TRANSLATED, frame.datalogger, len(body)) + body


def _check_values(values: tuple[int, ...]) -> None:
    if not 1 <= len(values) <= MAX_REGISTERS or any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError(f"1..{MAX_REGISTERS} register values of 0..65535 expected, got {values!r}")


def _translated_data(f: Translated) -> bytes:
    if f.function not in DEVICE_FUNCTIONS or not 0 <= f.register <= 0xFFFF:
        raise ValueError(f"device function {f.function} register {f.register} cannot be encoded")
    fn = f.function | (EXCEPTION_BIT if f.exception is not None else 0)
    head = struct.pack("<BB", 1 if f.reply else 0, fn) + _serial(f.inverter, "inverter serial") + struct.pack(
        "<H", f.register)
    if f.exception is not None:
        return head + bytes([f.exception & 0xFF])
    values = b"".join(struct.pack("<H", v) for v in f.values)
    if f.function in (READ_HOLD, READ_INPUT):
        if f.reply:
            _check_values(f.values)
            return head + bytes([len(values)]) + values
        if not 1 <= f.count <= MAX_REGISTERS:
            raise ValueError(f"read count {f.count} out of 1..{MAX_REGISTERS}")
        return head + struct.pack("<H", f.count)
    if f.function == WRITE_SINGLE:
        if len(f.values) != 1:
            raise ValueError("a single write carries exactly one value")
        _check_values(f.values)
        return head + values
    if f.reply:  # multi-write reply: how many were written
        return head + struct.pack("<H", f.count)
    _check_values(f.values)
    return head + struct.pack("<HB", len(f.values), len(values)) + values


def frame_length(buf: bytes | bytearray) -> int | None:
    """The length of the frame at the start of buf, None if more bytes are needed.

    Raises FrameError if buf does not start with a plausible header (the caller resynchronises).
    """
    if len(buf) < 2:
        if buf and buf[0] != MAGIC[0]:
            raise FrameError("no A1 1A frame start")
        return None
    if bytes(buf[:2]) != MAGIC:
        raise FrameError("no A1 1A frame start")
    if len(buf) < 6:
        return None
    total = struct.unpack_from("<H", buf, 4)[0] + 6
    if not HEADER_LEN + 1 <= total <= MAX_FRAME:
        raise FrameError(f"implausible frame length {total}")
    return total


def decode(raw: bytes) -> Frame:
    """One whole frame (as split by `Splitter`) -> Heartbeat, Translated or Param."""
    if len(raw) < HEADER_LEN + 1:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than a header")
    if raw[:2] != MAGIC:
        raise FrameError("no A1 1A frame start")
    protocol, length, one, tcp_fn = struct.unpack_from("<HHBB", raw, 2)
    if length + 6 != len(raw):
        raise FrameError(f"length field says {length + 6} bytes, frame has {len(raw)}")
    if one != 1:
        raise FrameError(f"byte 6 is {one}, not 1")
    if tcp_fn not in TCP_FUNCTIONS:
        raise FrameError(f"unknown TCP function {tcp_fn}")
    logger = _unserial(raw[8:18], "datalogger serial")
    body = raw[HEADER_LEN:]
    if tcp_fn == TCP_HEARTBEAT:
        return Heartbeat(logger, protocol, bytes(body))
    if tcp_fn != TCP_TRANSLATED:
        return Param(logger, tcp_fn, bytes(body), protocol)
    return _decode_translated(logger, protocol, body)


def _decode_translated(logger: str, protocol: int, body: bytes) -> Translated:
    if len(body) < 2 + 14 + 2:
        raise FrameError(f"translated-data body of {len(body)} bytes is too short")
    dlen = struct.unpack_from("<H", body, 0)[0]
    if dlen != len(body) - 2:
        raise FrameError(f"data length field says {dlen}, {len(body) - 2} bytes follow")
    data, crc = body[2:-2], struct.unpack_from("<H", body, len(body) - 2)[0]
    if crc16_modbus(data) != crc:
        raise FrameError(f"CRC {crc:04x} does not match the data ({crc16_modbus(data):04x})")
    address, fn = data[0], data[1]
    if address not in (0, 1):
        raise FrameError(f"address byte {address} is neither 0 (request) nor 1 (reply)")
    reply = address == 1
    inverter = _unserial(data[2:12], "inverter serial")
    register = struct.unpack_from("<H", data, 12)[0]
    rest = data[14:]
    base = fn & ~EXCEPTION_BIT
    if base not in DEVICE_FUNCTIONS:
        raise FrameError(f"unknown device function {fn}")
    f = Translated(logger, inverter, base, register, reply=reply, protocol=protocol)
    if fn & EXCEPTION_BIT:
        if len(rest) != 1:
            raise FrameError(f"exception reply with {len(rest)} bytes after the register, not 1")
        return _with(f, exception=rest[0])
    if base in (READ_HOLD, READ_INPUT):
        if reply:
            return _with(f, values=_values(rest[1:], rest[0] if rest else -1))
        return _with(f, count=_count(rest))
    if base == WRITE_SINGLE:
        return _with(f, values=_values(rest, 2))
    if reply:
        return _with(f, count=_count(rest))
    if len(rest) < 3:
        raise FrameError("multi-write without count and byte count")
    n, nbytes = struct.unpack_from("<HB", rest, 0)
    values = _values(rest[3:], nbytes)
    if len(values) != n:
        raise FrameError(f"multi-write count {n} but {len(values)} values")
    return _with(f, values=values)


def _with(f: Translated, **kw: object) -> Translated:
    return Translated(**{**f.__dict__, **kw})  # type: ignore[arg-type]


def _count(rest: bytes) -> int:
    if len(rest) != 2:
        raise FrameError(f"{len(rest)} bytes where a u16 count belongs")
    n: int = struct.unpack("<H", rest)[0]
    if not 1 <= n <= MAX_REGISTERS:
        raise FrameError(f"register count {n} out of 1..{MAX_REGISTERS}")
    return n


def _values(raw: bytes, nbytes: int) -> tuple[int, ...]:
    if nbytes != len(raw) or nbytes < 2 or nbytes % 2 or nbytes > 2 * MAX_REGISTERS:
        raise FrameError(f"{len(raw)} value bytes where {nbytes} (an even 2..{2 * MAX_REGISTERS}) "
                         "were announced")
    return struct.unpack(f"<{nbytes // 2}H", raw)


class Splitter:
    """Cuts a TCP byte stream into frames; skips garbage up to the next A1 1A (counted)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.skipped = 0  # bytes thrown away while resynchronising

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while self.buf:
            try:
                n = frame_length(self.buf)
            except FrameError:
                self._resync()
                continue
            if n is None or len(self.buf) < n:
                break
            out.append(bytes(self.buf[:n]))
            del self.buf[:n]
        if len(self.buf) > MAX_FRAME:  # cannot happen with a valid length; bound it anyway
            self.skipped += len(self.buf)
            self.buf.clear()
        return out

    def _resync(self) -> None:
        at = self.buf.find(MAGIC, 1)
        if at < 0:  # keep a trailing A1 that may start the next frame
            at = len(self.buf) - 1 if self.buf[-1] == MAGIC[0] else len(self.buf)
            at = max(at, 1)
        self.skipped += at
        del self.buf[:at]
