"""The C wire codec (native/gt_wire.c) with the interface of gridtap_fw.wire.

`NativeDecoder` is a drop-in for `wire.Decoder` and `encode` for `wire.encode`:
same counters, same `wire.Message` values (bytes fields as bytes, ACK seqs as a
tuple, CONFIG items as ((param, value), ...)), same `wire.WireError`s for values
that cannot go on the wire. Importing this module raises ImportError when
gridtap.board._native has not been built; `gridtap.board.link.make_decoder` then
uses the Python codec.

Decoding is one C call per chunk of input into an array of typed `gt_msg`
structs; turning those into Message objects is a separate step done here with
one precompiled struct.unpack_from per fixed-layout message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from gridtap.board._native import ffi, lib
from gridtap_fw import wire

CHUNK = 1024  # gt_msg slots per C call in NativeDecoder.feed
STRIDE: int = ffi.sizeof("gt_msg")
MAX_FRAME: int = lib.GT_MAX_FRAME

# Union member of gt_msg for each fixed-layout type (field names as wire.FIELDS).
FIXED_MEMBERS = {
    wire.HELLO: ("hello", "gt_hello"),
    wire.TIME_SET: ("time_set", "gt_time_set"),
    wire.TIME: ("time", "gt_time"),
    wire.COUNTER: ("counter", "gt_counter"),
    wire.PULSE: ("pulse", "gt_pulse"),
    wire.GAUGE: ("gauge", "gt_gauge"),
    wire.NAK: ("nak", "gt_nak"),
    wire.COMMIT: ("commit", "gt_commit"),
}
_CODES = {"uint8_t": "B", "uint16_t": "H", "uint32_t": "I", "int16_t": "h", "int32_t": "i"}
# CONFIG value kinds (gt_param_kind) -> gt_config_item.v member.
_KIND_MEMBER = {lib.GT_K_U8: "u8", lib.GT_K_U16: "u16", lib.GT_K_U32: "u32", lib.GT_K_I32: "i32"}


def _layout(ctype: str, names: tuple[str, ...], base: int) -> tuple[str, int]:
    """struct format (native byte order, explicit padding) for names of ctype at base."""
    fields = dict(ffi.typeof(ctype).fields)
    placed = sorted((fields[n].offset, n) for n in names)
    fmt = ""
    pos = base
    order = []
    for off, name in placed:
        t = fields[name].type
        code = "%ds" % t.length if t.kind == "array" else _CODES[t.cname]
        fmt += "x" * (base + off - pos) + code
        pos = base + off + struct.calcsize("=" + code)
        order.append(name)
    if tuple(order) != names:
        raise ImportError("gridtap.board._native: %s fields are not in wire.FIELDS order" % ctype)
    return fmt, pos


def _header_format() -> str:
    fmt, _ = _layout("gt_msg", ("type", "flags", "seq"), 0)
    return fmt


def _build_formats() -> dict[int, struct.Struct]:
    head = _header_format()
    head_end = struct.calcsize("=" + head)
    u = ffi.offsetof("gt_msg", "u")
    out = {wire.HELLO_REQ: struct.Struct("=" + head)}
    for mtype, (_member, ctype) in FIXED_MEMBERS.items():
        body, _ = _layout(ctype, wire.FIELDS[mtype], 0)
        out[mtype] = struct.Struct("=" + head + "x" * (u - head_end) + body)
    return out


_FORMATS = _build_formats()


class NativeDecoder:
    """Streaming decoder backed by gt_decoder_feed; same behaviour as wire.Decoder."""

    def __init__(self, chunk: int = CHUNK) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self._dec = ffi.new("gt_decoder *")
        lib.gt_decoder_init(self._dec)
        self._chunk = chunk
        self._out = ffi.new("gt_msg[]", chunk)
        self._view = memoryview(ffi.buffer(self._out))
        self._used = ffi.new("size_t *")

    @property
    def counts(self) -> list[int]:
        return list(self._dec.counts)

    @counts.setter
    def counts(self, values: list[int]) -> None:
        if len(values) != len(wire.COUNTER_NAMES):
            raise ValueError("counts needs %d values" % len(wire.COUNTER_NAMES))
        for i, v in enumerate(values):
            self._dec.counts[i] = v

    def counters(self) -> dict[str, int]:
        return dict(zip(wire.COUNTER_NAMES, self._dec.counts, strict=True))

    def feed(self, data: bytes | bytearray | memoryview) -> list[wire.Message]:
        out: list[wire.Message] = []
        src = ffi.from_buffer("uint8_t[]", data)
        n = len(src)
        pos = 0
        while True:
            k = lib.gt_decoder_feed(self._dec, src + pos, n - pos, self._out, self._chunk, self._used)
            if k:
                to_messages(self._out, self._view, k, out)
            pos += self._used[0]
            if pos >= n:
                return out


def to_messages(msgs: Any, view: memoryview, k: int, out: list[wire.Message]) -> None:
    """Append Message objects for msgs[0..k) (a gt_msg array; view is its buffer)."""
    formats = _FORMATS
    message = wire.Message
    base = 0
    for i in range(k):
        fmt = formats.get(view[base])
        if fmt is not None:
            v = fmt.unpack_from(view, base)
            out.append(message(v[0], v[2], v[1], v[3:]))
        else:
            m = msgs[i]
            out.append(message(m.type, m.seq, m.flags, _VARIABLE[m.type](msgs + i)))
        base += STRIDE


def _ack_values(m: Any) -> tuple:
    a = m.u.ack
    return (tuple(ffi.unpack(a.seqs, a.n)),)


def _config_get_values(m: Any) -> tuple:
    g = m.u.config_get
    return (g.target, g.index, tuple(ffi.unpack(g.params, g.n)))


def _config_values(m: Any) -> tuple:
    c = m.u.config
    return (c.target, c.index, config_items(ffi.addressof(m.u, "config")))


def config_items(cfg: Any) -> tuple:
    """((param, value), ...) of a gt_config *, read with gt_config_next."""
    pos = ffi.new("size_t *")
    item = ffi.new("gt_config_item *")
    items = []
    while lib.gt_config_next(cfg, pos, item):
        if item.kind == lib.GT_K_ID16:
            items.append((item.param, bytes(ffi.buffer(item.v.id))))
        else:
            items.append((item.param, getattr(item.v, _KIND_MEMBER[item.kind])))
    return tuple(items)


def _event_values(m: Any) -> tuple:
    e = m.u.event
    return (e.unix_s, e.ms, e.level, e.code, bytes(ffi.buffer(e.text, e.text_len)))


_VARIABLE: dict[int, Callable[[Any], tuple]] = {
    wire.ACK: _ack_values,
    wire.CONFIG_GET: _config_get_values,
    wire.CONFIG_SET: _config_values,
    wire.CONFIG: _config_values,
    wire.EVENT: _event_values,
}


# ------------------------------------------------------------------ encoder


def encode(mtype: int, seq: int, values: Any = (), flags: int = 0) -> bytes:
    """Return one complete frame, delimiters included (gt_encode); like wire.encode."""
    if not 0 <= seq <= 0xFFFF or not 0 <= flags <= 0xFF:
        raise wire.WireError("seq must be 0..65535 and flags 0..255")
    name = wire.TYPE_NAMES.get(mtype)
    if name is None:
        raise wire.WireError("unknown message type %r" % (mtype,))
    m = ffi.new("gt_msg *")
    m.type = mtype
    m.seq = seq
    m.flags = flags
    try:
        _fill(m, mtype, values)
    except (OverflowError, ValueError, TypeError, IndexError, KeyError, struct.error) as exc:
        if isinstance(exc, wire.WireError):
            raise
        raise wire.WireError("%s: %s" % (name, exc)) from exc
    out = ffi.new("uint8_t[]", MAX_FRAME)
    n = lib.gt_encode(m, out, MAX_FRAME)
    if n == 0:
        raise wire.WireError("%s: value out of range for the wire" % name)
    return bytes(ffi.buffer(out, n))


def _fill(m: Any, mtype: int, values: Any) -> None:
    member = FIXED_MEMBERS.get(mtype)
    if member is not None:
        names = wire.FIELDS[mtype]
        if len(values) != len(names):
            raise wire.WireError("%s takes %d values, got %d"
                                 % (wire.TYPE_NAMES[mtype], len(names), len(values)))
        sub = getattr(m.u, member[0])
        for fname, value in zip(names, values, strict=True):
            if fname == "board_id":
                if not isinstance(value, (bytes, bytearray)) or len(value) != 8:
                    raise wire.WireError("HELLO: board_id needs 8 bytes")
                ffi.memmove(sub.board_id, bytes(value), 8)
            else:
                setattr(sub, fname, value)
    elif mtype == wire.HELLO_REQ:
        if len(values) != 0:
            raise wire.WireError("HELLO_REQ takes no values")
    elif mtype == wire.ACK:
        seqs = values[0]
        if not 1 <= len(seqs) <= wire.ACK_MAX:
            raise wire.WireError("ACK carries 1..%d sequence numbers" % wire.ACK_MAX)
        m.u.ack.n = len(seqs)
        for i, s in enumerate(seqs):
            m.u.ack.seqs[i] = s
    elif mtype == wire.CONFIG_GET:
        params = values[2]
        if len(params) > wire.CONFIG_GET_MAX:
            raise wire.WireError("CONFIG_GET asks for at most %d parameters" % wire.CONFIG_GET_MAX)
        g = m.u.config_get
        g.target, g.index = values[0], values[1]
        for i, p in enumerate(params):
            if p not in wire.PARAMS:
                raise wire.WireError("unknown config parameter %r" % (p,))
            g.params[i] = p
        g.n = len(params)
    elif mtype in (wire.CONFIG_SET, wire.CONFIG):
        c = m.u.config
        c.target, c.index = values[0], values[1]
        cfg = ffi.addressof(m.u, "config")
        item = ffi.new("gt_config_item *")
        for entry in values[2]:
            _config_add(cfg, item, entry[0], entry[1])
    else:  # EVENT
        text = values[4]
        if isinstance(text, str):
            text = text.encode()
        text = bytes(text)
        if len(text) > wire.EVENT_MAX_TEXT:
            raise wire.WireError("EVENT text is at most %d bytes" % wire.EVENT_MAX_TEXT)
        e = m.u.event
        e.unix_s, e.ms, e.level, e.code = values[0], values[1], values[2], values[3]
        ffi.memmove(e.text, text, len(text))
        e.text_len = len(text)


def _config_add(cfg: Any, item: Any, pid: Any, value: Any) -> None:
    spec = wire.PARAMS.get(pid)
    if spec is None:
        raise wire.WireError("unknown config parameter %r" % (pid,))
    kind = lib.gt_param_kind(pid)
    item.param = pid
    item.kind = kind
    if kind == lib.GT_K_ID16:
        if not isinstance(value, (bytes, bytearray)) or len(value) != 16:
            raise wire.WireError("%s needs 16 bytes" % spec[0])
        ffi.memmove(item.v.id, bytes(value), 16)
    else:
        if spec[2] is not None and not 0 <= value <= spec[2]:
            raise wire.WireError("%s must be 0..%d" % (spec[0], spec[2]))
        setattr(item.v, _KIND_MEMBER[kind], value)
    if lib.gt_config_add(cfg, item) != 0:
        raise wire.WireError("config items do not fit in one %d-byte payload" % wire.MAX_PAYLOAD)
