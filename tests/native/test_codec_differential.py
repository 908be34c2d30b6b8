"""Differential tests: the C codec and the reference Python codec agree byte for byte.

Both decoders must accept and reject exactly the same streams, deliver equal
Message objects and end with equal counters, whatever the input and however it
is split into feed() calls; the C encoder must produce the Python encoder's
frames and refuse the values it refuses.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtap_fw import wire
from tests.support.native import load_native

native = load_native()

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
ms = st.integers(0, 999)
flag01 = st.integers(0, 1)


def _param_item(pid: int) -> st.SearchStrategy:
    fmt = wire.PARAMS[pid][1]
    values: st.SearchStrategy
    if fmt == "<16s":
        values = st.binary(min_size=16, max_size=16)
    elif wire.PARAMS[pid][2] is not None:
        values = st.integers(0, wire.PARAMS[pid][2])
    else:
        values = {"<H": u16, "<I": u32, "<i": i32}[fmt]
    return values.map(lambda v: (pid, v))


config_item = st.sampled_from(sorted(wire.PARAMS)).flatmap(_param_item)
# 13 items of at most 18 bytes stay within the 240-byte payload.
config_items = st.lists(config_item, max_size=13).map(tuple)

VALUES: dict[int, st.SearchStrategy] = {
    wire.HELLO: st.tuples(st.binary(min_size=8, max_size=8), u8, u8, u8, u8, u32, u8, u32, u8, u8),
    wire.HELLO_REQ: st.just(()),
    wire.TIME_SET: st.tuples(u32, ms),
    wire.TIME: st.tuples(u32, ms, u32, flag01),
    wire.COUNTER: st.tuples(u8, u32, ms, u32, ms, u32, ms),
    wire.PULSE: st.tuples(u8, u32, ms, u32, ms, u32),
    wire.GAUGE: st.tuples(u8, u32, ms, i32, u32, u32, u32, st.integers(-10000, 10000), u16,
                          i32, u32, ms, u32, ms),
    wire.ACK: st.tuples(st.lists(u16, min_size=1, max_size=64).map(tuple)),
    wire.NAK: st.tuples(u16, u8, u8),
    wire.CONFIG_GET: st.tuples(st.integers(0, 3), u8,
                               st.lists(st.sampled_from(sorted(wire.PARAMS)), max_size=32).map(tuple)),
    wire.CONFIG_SET: st.tuples(st.integers(0, 3), u8, config_items.filter(bool)),
    wire.CONFIG: st.tuples(st.integers(0, 3), u8, config_items),
    wire.COMMIT: st.tuples(st.integers(1, 3)),
    wire.EVENT: st.tuples(u32, ms, st.integers(0, 4), u16, st.binary(max_size=200)),
}

messages = st.sampled_from(sorted(VALUES)).flatmap(
    lambda t: st.tuples(st.just(t), u16, u8, VALUES[t]))
frames = messages.map(lambda m: wire.encode(m[0], m[1], m[3], m[2]))


def _raw_frame(raw: bytes) -> bytes:
    """A delimited frame around any raw bytes, with a correct CRC appended."""
    raw = raw + struct.pack("<I", wire.crc(raw))
    return b"\x00" + wire.cobs_encode(raw) + b"\x00"


@st.composite
def mutated_with_good_crc(draw: Any) -> bytes:
    """A valid frame with its header/payload changed and the CRC fixed up, so
    the version, type, length and value checks all get exercised."""
    mtype, seq, flags, values = draw(messages)
    raw = bytearray(struct.pack("<BBBH", wire.PROTO_VERSION, mtype, flags, seq)
                    + wire.encode_payload(mtype, values))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == 0 and raw:
            raw[at] = draw(u8)
        elif op == 1:
            raw.insert(at, draw(u8))
        elif op == 2 and len(raw) > 1:
            del raw[at]
        else:
            raw += draw(st.binary(max_size=8))
    return _raw_frame(bytes(raw[:wire.MAX_RAW - 4]))


@st.composite
def damaged(draw: Any) -> bytes:
    frame = draw(frames)
    how = draw(st.integers(0, 3))
    if how == 0:  # truncated
        return frame[:draw(st.integers(0, len(frame) - 1))]
    if how == 1:  # bit flips
        out = bytearray(frame)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if how == 2:  # duplicated
        return frame * draw(st.integers(2, 3))
    out = bytearray(frame)  # one byte replaced by anything
    out[draw(st.integers(0, len(out) - 1))] = draw(u8)
    return bytes(out)


pieces = st.one_of(
    frames,
    damaged(),
    mutated_with_good_crc(),
    st.binary(max_size=40).map(lambda b: _raw_frame(b)),  # any header, any payload, good CRC
    st.binary(max_size=80),  # garbage
    st.binary(min_size=1, max_size=12).map(lambda b: b"\x00" + b.replace(b"\x00", b"\x01") + b"\x00"),
    st.integers(245, 600).map(lambda n: b"\x01" * n),  # around the oversize limit
    st.integers(0, 3).map(lambda n: b"\x00" * n),
)
streams = st.lists(pieces, max_size=12).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def _run(dec: Any, chunks: list[bytes]) -> list[wire.Message]:
    return [m for c in chunks for m in dec.feed(c)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(0, 4000), max_size=8), st.lists(st.integers(0, 4000), max_size=8))
def test_decoders_agree_on_any_stream(data: bytes, cuts_py: list[int], cuts_c: list[int]) -> None:
    py = wire.Decoder()
    want = _run(py, _split(data, cuts_py))
    c = native.NativeDecoder()
    assert _run(c, _split(data, cuts_c)) == want
    assert c.counters() == py.counters()
    # The one-slot output array forces a C call per message: same result.
    c1 = native.NativeDecoder(chunk=1)
    assert c1.feed(data) == want
    assert c1.counts == py.counts
    # Both keep the same partial frame for the next feed().
    assert c._dec.len == len(py._buf) and bool(c._dec.overflow) == py._overflow


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=20))
def test_valid_messages_round_trip_identically(msgs: list) -> None:
    stream = b"".join(native.encode(t, s, v, f) for t, s, f, v in msgs)
    assert stream == b"".join(wire.encode(t, s, v, f) for t, s, f, v in msgs)
    got = native.NativeDecoder().feed(stream)
    assert got == wire.Decoder().feed(stream)
    assert got == [wire.Message(t, s, f, v) for t, s, f, v in msgs]


@settings(max_examples=300, deadline=None)
@given(messages)
def test_c_encoder_equals_python_encoder(msg: tuple) -> None:
    mtype, seq, flags, values = msg
    assert native.encode(mtype, seq, values, flags) == wire.encode(mtype, seq, values, flags)


BAD_INTS = st.sampled_from([-1, 2, 5, 999, 1000, 10001, -10001, 256, 65535, 65536,
                            2**31, -(2**31) - 1, 2**32 - 1, 2**32])


@st.composite
def maybe_bad_messages(draw: Any) -> tuple:
    """A valid message with one integer field replaced by an edge value."""
    mtype, seq, flags, values = draw(messages)
    ints = [i for i, v in enumerate(values) if isinstance(v, int)]
    if ints:
        values = list(values)
        values[draw(st.sampled_from(ints))] = draw(BAD_INTS)
        values = tuple(values)
    return mtype, seq, flags, values


def _outcome(encode: Any, msg: tuple) -> bytes | None:
    mtype, seq, flags, values = msg
    try:
        return encode(mtype, seq, values, flags)
    except (wire.WireError, struct.error):  # wire.encode lets struct.error through for ints
        return None


@settings(max_examples=400, deadline=None)
@given(maybe_bad_messages())
def test_encoders_refuse_the_same_values(msg: tuple) -> None:
    assert _outcome(native.encode, msg) == _outcome(wire.encode, msg)


# ------------------------------------------------- exhaustive, deterministic

EDGE_INTS = (-(2**31) - 1, -(2**31), -10001, -10000, -1, 0, 1, 2, 3, 4, 5, 64, 65, 999, 1000,
             10000, 10001, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32)


def _int_slots(values: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every int inside a (nested) values tuple."""
    out: list[tuple] = []
    for i, v in enumerate(values):
        if isinstance(v, int):
            out.append(path + (i,))
        elif isinstance(v, tuple):
            out += _int_slots(v, path + (i,))
    return out


def _replace(values: Any, path: tuple, new: int) -> tuple:
    items = list(values)
    items[path[0]] = new if len(path) == 1 else _replace(items[path[0]], path[1:], new)
    return tuple(items)


def test_encoders_agree_on_every_edge_value_of_every_field() -> None:
    from tests.support.vectors import vectors

    checked = 0
    for vec in vectors():
        for path in _int_slots(vec.values):
            for edge in EDGE_INTS:
                msg = (vec.mtype, vec.seq, vec.flags, _replace(vec.values, path, edge))
                assert _outcome(native.encode, msg) == _outcome(wire.encode, msg), msg
                checked += 1
    assert checked > 1000


def _single_byte_mutants(raw: bytes) -> bytes:
    """Every one-byte substitution, insertion and deletion of header|payload, CRC fixed."""
    out = []
    for at in range(len(raw)):
        for b in range(256):
            out.append(_raw_frame(raw[:at] + bytes([b]) + raw[at + 1:]))
        out.append(_raw_frame(raw[:at] + raw[at + 1:]))
    for at in range(len(raw) + 1):
        for b in (0, 1, 2, 4, 5, 0x7F, 0xFF):
            out.append(_raw_frame(raw[:at] + bytes([b]) + raw[at:]))
    return b"".join(out)


def test_decoders_agree_on_every_single_byte_mutation_of_the_doc_vectors() -> None:
    from tests.support.vectors import vectors

    for vec in vectors():
        raw = bytes(wire.cobs_decode(vec.wire[1:-1]) or b"")[:-4]
        stream = _single_byte_mutants(raw)
        py = wire.Decoder()
        want = py.feed(stream)
        c = native.NativeDecoder()
        assert c.feed(stream) == want, wire.TYPE_NAMES[vec.mtype]
        assert c.counters() == py.counters()
        assert py.counters()["frames_ok"] > 0


def _boundary_raws() -> list[bytes]:
    """header|payload cases at every length and range limit the decoders check."""
    def raw(mtype: int, payload: bytes, version: int = wire.PROTO_VERSION) -> bytes:
        return struct.pack("<BBBH", version, mtype, 0, 9) + payload

    sid = bytes(range(1, 17))
    tlv_u16 = bytes([wire.P_SAVE_WH, 2, 1, 0])
    tlv_sid = bytes([wire.P_SENSOR_ID, 16]) + sid
    out = [raw(wire.HELLO_REQ, b"", version=v) for v in (0, 1, 2, 255)]
    out += [raw(t, b"") for t in (0, 0x0F, 0x7F, 0xFF)]
    for mtype, (fmt, _names) in wire.LAYOUTS.items():
        size = struct.calcsize(fmt)
        out += [raw(mtype, bytes([1]) * n) for n in {max(size - 1, 0), size, size + 1}]
    for n in (0, 1, 2, 63, 64, 65, 66, 255):
        seqs = bytes(range(2 * n % 256)) * 2
        body = bytes([n]) + (seqs + bytes(2 * n))[:2 * n]
        out += [raw(wire.ACK, body), raw(wire.ACK, body + b"\x01"), raw(wire.ACK, body[:-1])]
    for target in (0, 3, 4, 255):
        for mtype in (wire.CONFIG_GET, wire.CONFIG_SET, wire.CONFIG):
            out += [raw(mtype, bytes([target])), raw(mtype, bytes([target, 0]))]
            out.append(raw(mtype, bytes([target, 1]) + tlv_u16))
    for n in (31, 32, 33):
        out.append(raw(wire.CONFIG_GET, bytes([2, 0]) + bytes([1]) * n))
        out.append(raw(wire.CONFIG_GET, bytes([2, 0]) + bytes([1]) * (n - 1) + b"\x0d"))
    for mtype in (wire.CONFIG_SET, wire.CONFIG):
        head = bytes([2, 0])
        out += [
            raw(mtype, head + tlv_sid * 13 + tlv_u16),  # 240-byte payload: the longest frame
            raw(mtype, head + tlv_sid * 13 + tlv_u16 + b"\x01"),  # one byte too many
            raw(mtype, head + tlv_sid * 13 + tlv_u16[:3]),
            raw(mtype, head + bytes([wire.P_ENABLED])),  # item cut after its id
            raw(mtype, head + bytes([wire.P_ENABLED, 1])),  # cut inside the value
            raw(mtype, head + bytes([wire.P_ENABLED, 2, 1, 0])),  # wrong length
            raw(mtype, head + bytes([0x0D, 1, 1])),  # unknown parameter
            raw(mtype, head + tlv_u16 + bytes([0x00, 1, 1])),
        ]
        for pid in sorted(wire.PARAMS):
            ln = 16 if wire.PARAMS[pid][1] == "<16s" else struct.calcsize(wire.PARAMS[pid][1])
            for first in (0, 1, 2, 255):
                out.append(raw(mtype, head + bytes([pid, ln, first]) + bytes(ln - 1)))
            out.append(raw(mtype, head + bytes([pid, ln + 1]) + bytes(ln + 1)))
    event_head = struct.pack("<IHBH", 1, 999, 4, 7)
    for n in (0, 199, 200, 201):
        out.append(raw(wire.EVENT, event_head + bytes([0x41]) * n))
    for level in (4, 5, 255):
        out.append(raw(wire.EVENT, struct.pack("<IHBH", 1, 0, level, 7)))
    out += [raw(wire.EVENT, event_head[:k]) for k in range(9)]
    for ms in (999, 1000, 65535):
        out.append(raw(wire.EVENT, struct.pack("<IHBH", 1, ms, 0, 7)))
        out.append(raw(wire.TIME_SET, struct.pack("<IH", 1, ms)))
    for what in range(5):
        out.append(raw(wire.COMMIT, bytes([what])))
    return out


def test_decoders_agree_at_every_limit() -> None:
    frames_ = [_raw_frame(r) for r in _boundary_raws()]
    frames_ += [b"\x00" + b"\x01" * k + b"\x00" for k in range(245, 256)]
    frames_ += [b"\x00" + b"\x05" * k + b"\x00" for k in range(245, 256)]
    frames_ += [b"\x00" + wire.cobs_encode(bytes(range(1, k + 1))) + b"\x00" for k in range(10)]  # runts
    frames_ += [b"\x00" + bytes([k, 1, 2]) + b"\x00" for k in range(1, 6)]  # code byte past the end
    stream = b"".join(frames_)
    py = wire.Decoder()
    want = py.feed(stream)
    c = native.NativeDecoder()
    assert c.feed(stream) == want
    assert c.counters() == py.counters()
    counts = py.counters()
    assert all(counts[name] > 0 for name in wire.COUNTER_NAMES if name != "bad_crc")
    # frame by frame, too, so one frame's verdict cannot hide another's
    for f in frames_:
        py, c = wire.Decoder(), native.NativeDecoder()
        assert c.feed(f) == py.feed(f), f.hex()
        assert c.counts == py.counts, f.hex()
