"""The C codec (native/gt_wire.c via gridtap.board.native) against the doc vectors and the reference codec."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.board.link import implementation, make_decoder
from gridtap_fw import wire
from tests.support.native import load_native
from tests.support.vectors import rejects, vectors

native = load_native()
ffi, lib = native.ffi, native.lib
ROOT = Path(__file__).resolve().parents[2]
GT_WIRE_C = ROOT / "native" / "gt_wire.c"


def _vec_id(v) -> str:
    return f"{wire.TYPE_NAMES[v.mtype]}-{v.seq}-{v.flags}"


@pytest.mark.parametrize("vec", vectors(), ids=_vec_id)
def test_c_encoder_matches_doc(vec) -> None:
    assert native.encode(vec.mtype, vec.seq, vec.values, vec.flags) == vec.wire


@pytest.mark.parametrize("vec", vectors(), ids=_vec_id)
def test_c_decoder_matches_doc(vec) -> None:
    dec = native.NativeDecoder()
    assert dec.feed(vec.wire) == [wire.Message(vec.mtype, vec.seq, vec.flags, vec.values)]
    assert dec.counters() == dict.fromkeys(wire.COUNTER_NAMES, 0) | {"frames_ok": 1}


@pytest.mark.parametrize("rej", rejects(), ids=lambda r: r.counter)
def test_c_decoder_rejects_doc_vectors(rej) -> None:
    dec = native.NativeDecoder()
    assert dec.feed(rej.wire) == []
    counts = dec.counters()
    assert counts[rej.counter] == 1
    assert sum(counts.values()) == 1


def test_c_constants_match_reference() -> None:
    assert lib.GT_PROTO_VERSION == wire.PROTO_VERSION
    assert lib.GT_MAX_PAYLOAD == wire.MAX_PAYLOAD
    assert lib.GT_MAX_ENCODED == wire.MAX_ENCODED
    assert lib.GT_N_COUNTERS == len(wire.COUNTER_NAMES)
    for mtype, name in wire.TYPE_NAMES.items():
        assert getattr(lib, "GT_" + name) == mtype
    for pid, (_name, fmt, _max, _lo, _hi) in wire.PARAMS.items():
        assert lib.gt_param_len(pid) == (16 if fmt == "<16s" else wire.struct.calcsize(fmt))
    assert lib.gt_param_kind(0) == lib.GT_K_NONE
    assert lib.gt_param_kind(0x0D) == lib.GT_K_NONE


def test_crc_check_value() -> None:
    assert lib.gt_crc32(b"123456789", 9) == 0xCBF43926
    assert lib.gt_crc32(ffi.NULL, 0) == 0


@settings(deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_crc_is_zlib_crc32_and_streams(data: bytes, cut: int) -> None:
    buf = ffi.from_buffer("uint8_t[]", data)
    assert lib.gt_crc32(buf, len(data)) == zlib.crc32(data)
    cut = min(cut, len(data))
    head = lib.gt_crc32(buf, cut)
    assert lib.gt_crc32_update(head, buf + cut, len(data) - cut) == zlib.crc32(data)


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_cobs_encode_matches_reference(raw: bytes) -> None:
    out = ffi.new("uint8_t[]", len(raw) + len(raw) // 254 + 1)
    n = lib.gt_cobs_encode(ffi.from_buffer("uint8_t[]", raw), len(raw), out)
    assert bytes(ffi.buffer(out, n)) == wire.cobs_encode(raw)


@settings(deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=300).map(wire.cobs_encode),
                 st.lists(st.integers(1, 8), max_size=40).map(bytes)))
def test_cobs_decode_matches_reference(enc: bytes) -> None:
    out = ffi.new("uint8_t[]", max(len(enc), 1))
    n = ffi.new("size_t *")
    rc = lib.gt_cobs_decode(ffi.from_buffer("uint8_t[]", enc), len(enc), out, n)
    ref = wire.cobs_decode(enc)
    if ref is None:
        assert rc == -1
    else:
        assert rc == 0
        assert bytes(ffi.buffer(out, n[0])) == bytes(ref)


def test_cobs_decode_in_place() -> None:
    raw = bytes([0, 1, 0, 0, 7, 255, 0] * 30)
    enc = bytearray(wire.cobs_encode(raw))
    buf = ffi.from_buffer("uint8_t[]", enc)
    n = ffi.new("size_t *")
    assert lib.gt_cobs_decode(buf, len(enc), buf, n) == 0
    assert bytes(enc[:n[0]]) == raw


def test_the_link_picks_the_c_decoder() -> None:
    dec = make_decoder()
    assert isinstance(dec, native.NativeDecoder)
    assert implementation(dec) == "c"
    assert implementation(make_decoder(prefer_native=False)) == "python"


def test_oversize_is_dropped_and_counted_once() -> None:
    dec = native.NativeDecoder()
    good = vectors()[0].wire
    got = dec.feed(b"\x00" + b"\x01" * 5000 + good)
    assert got == wire.Decoder().feed(good)
    assert dec.counters()["oversize"] == 1
    assert dec._dec.len == 0 and dec._dec.overflow == 0


def test_oversize_across_feeds_counts_at_the_delimiter() -> None:
    dec = native.NativeDecoder()
    for _ in range(10):
        dec.feed(b"\x07" * 100)
    assert dec.counters()["oversize"] == 0
    assert dec._dec.len <= wire.MAX_ENCODED
    dec.feed(b"\x00")
    assert dec.counters()["oversize"] == 1


def test_longest_legal_frame_is_not_oversize() -> None:
    frame = native.encode(wire.EVENT, 5, (1, 2, 3, 4, bytes(range(1, 201))))
    tlvs = tuple((wire.P_SENSOR_ID, bytes([i + 1] * 16)) for i in range(13))
    frame2 = native.encode(wire.CONFIG, 6, (2, 1, tlvs))
    for f in (frame, frame2):
        assert len(f) <= lib.GT_MAX_FRAME
        dec = native.NativeDecoder()
        assert len(dec.feed(f)) == 1
        assert dec.counters()["frames_ok"] == 1


def test_byte_at_a_time_and_tiny_chunks_equal_bulk() -> None:
    stream = b"".join(v.wire for v in vectors()) * 3
    bulk = native.NativeDecoder().feed(stream)
    assert bulk == wire.Decoder().feed(stream)
    dec = native.NativeDecoder()
    trickled = [m for i in range(len(stream)) for m in dec.feed(stream[i:i + 1])]
    assert trickled == bulk
    small = native.NativeDecoder(chunk=1)
    assert small.feed(stream) == bulk
    assert small.counters() == dec.counters()


def test_feed_accepts_bytearray_and_memoryview() -> None:
    stream = b"".join(v.wire for v in vectors())
    want = wire.Decoder().feed(stream)
    assert native.NativeDecoder().feed(bytearray(stream)) == want
    assert native.NativeDecoder().feed(memoryview(stream)) == want
    assert native.NativeDecoder().feed(b"") == []


def test_feed_with_no_room_takes_nothing() -> None:
    dec = ffi.new("gt_decoder *")
    lib.gt_decoder_init(dec)
    used = ffi.new("size_t *", 99)
    frame = vectors()[0].wire
    assert lib.gt_decoder_feed(dec, frame, len(frame), ffi.NULL, 0, used) == 0
    assert used[0] == 0
    assert list(dec.counts) == [0] * 9


def test_feed_stops_when_out_is_full() -> None:
    frames = b"".join(v.wire for v in vectors()[:5])
    dec = ffi.new("gt_decoder *")
    lib.gt_decoder_init(dec)
    out = ffi.new("gt_msg[]", 2)
    used = ffi.new("size_t *")
    assert lib.gt_decoder_feed(dec, frames, len(frames), out, 2, used) == 2
    first_two = len(vectors()[0].wire) + len(vectors()[1].wire)
    assert used[0] == first_two  # up to and including the closing 0x00 of frame two
    assert out[0].type == wire.HELLO and out[1].type == wire.HELLO_REQ


def test_counts_property_reads_and_writes_the_c_state() -> None:
    dec = native.NativeDecoder()
    dec.feed(rejects()[0].wire)
    assert dec.counts == [0, 1, 0, 0, 0, 0, 0, 0, 0]
    dec.counts = [0] * 9
    assert dec.counters()["bad_crc"] == 0
    with pytest.raises(ValueError):
        dec.counts = [1, 2]
    with pytest.raises(ValueError):
        native.NativeDecoder(chunk=0)


def test_encoder_refuses_out_of_range_values() -> None:
    bad = [
        (wire.COUNTER, 1, (1, 2, 1000, 0, 0, 0, 0)),
        (wire.COUNTER, 1, (256, 2, 1, 0, 0, 0, 0)),
        (wire.COUNTER, 1, (1, 2, 1)),
        (wire.ACK, 1, ((),)),
        (wire.ACK, 1, (tuple(range(65)),)),
        (wire.ACK, 1, ((70000,),)),
        (wire.CONFIG_SET, 1, (2, 0, ((0x7F, 1),))),
        (wire.CONFIG_SET, 1, (2, 0, ())),
        (wire.CONFIG_SET, 1, (4, 0, ((1, 1),))),
        (wire.CONFIG_SET, 1, (2, 0, ((wire.P_ENABLED, 2),))),
        (wire.CONFIG_SET, 1, (2, 0, ((wire.P_SENSOR_ID, b"short"),))),
        (wire.CONFIG_GET, 1, (2, 0, (0x7F,))),
        (wire.CONFIG_GET, 1, (2, 0, (1,) * 33)),
        (wire.GAUGE, 1, (1, 2, 3, 4, 5, 6, 7, 10001, 9, 0, 0, 0, 0, 0)),
        (wire.GAUGE, 1, (1, 2, 3, 4, 5, 6, 7, 1, 9, -5, 0, 1000, 0, 0)),
        (wire.GAUGE, 1, (1, 2, 3, 4, 5, 6, 7, 1, 9, -5, 0, 0, 0, 1000)),
        (wire.TIME, 1, (1, 2, 3, 2)),
        (wire.COMMIT, 1, (0,)),
        (wire.EVENT, 1, (1, 2, 5, 4, b"")),
        (wire.EVENT, 1, (1, 2, 3, 4, b"x" * 201)),
        (wire.TIME_SET, 1, (1.5, 2)),
        (0x7F, 1, ()),
        (wire.HELLO_REQ, 1, (1,)),
    ]
    for mtype, seq, values in bad:
        with pytest.raises(wire.WireError):
            native.encode(mtype, seq, values)
    with pytest.raises(wire.WireError):
        native.encode(wire.TIME_SET, 70000, (1, 2))
    with pytest.raises(wire.WireError):
        native.encode(wire.TIME_SET, 1, (1, 2), flags=256)


def test_encoder_refuses_config_past_the_payload_limit() -> None:
    # 14 sensor ids are 2 + 14 * 18 = 254 payload bytes: more than one frame holds.
    items = tuple((wire.P_SENSOR_ID, bytes([i + 1] * 16)) for i in range(14))
    with pytest.raises(wire.WireError, match="payload"):
        native.encode(wire.CONFIG, 1, (2, 0, items))


def test_event_text_str_is_utf8() -> None:
    vals = (1, 2, 3, 4, "café")
    assert native.encode(wire.EVENT, 3, vals) == wire.encode(wire.EVENT, 3, vals)


def test_board_id_must_be_8_bytes_in_both_encoders() -> None:
    good = (bytes(range(1, 9)), 1, 0, 0, 1, 42, 2, 7, 3, 2)
    assert native.encode(wire.HELLO, 0, good) == wire.encode(wire.HELLO, 0, good)
    for bid in (b"", b"abc", bytes(range(1, 12))):
        vals = (bid,) + good[1:]
        with pytest.raises(wire.WireError):
            native.encode(wire.HELLO, 0, vals)
        with pytest.raises(wire.WireError):
            wire.encode(wire.HELLO, 0, vals)


def test_encode_rejects_too_small_buffer() -> None:
    m = ffi.new("gt_msg *")
    m.type = wire.HELLO_REQ
    out = ffi.new("uint8_t[]", 16)
    assert lib.gt_encode(m, out, 11) == 0
    assert lib.gt_encode(m, out, 12) == 12


def _compile(cc: list[str], out: Path) -> None:
    proc = subprocess.run(cc + ["-std=c99", "-Wall", "-Wextra", "-Werror", "-c", str(GT_WIRE_C),
                                "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed (make setup installs it)")
def test_builds_for_cortex_m0plus_freestanding(tmp_path: Path) -> None:
    obj = tmp_path / "gt_wire.o"
    _compile(["clang", "--target=thumbv6m-none-eabi", "-mcpu=cortex-m0plus", "-Os", "-ffreestanding"], obj)
    nm = shutil.which("llvm-nm")
    if nm is not None:
        undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout
        assert undefined.split() == [], "the board build must not need libc: " + undefined


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_builds_pedantic_c99_on_the_host(cc: str, tmp_path: Path) -> None:
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed")
    _compile([cc, "-O2", "-pedantic"], tmp_path / "gt_wire.o")


@pytest.mark.parametrize("n", [253, 254, 255, 300, 508, 509])
def test_cobs_long_runs_match_reference(n: int) -> None:
    for raw in (b"\x01" * n, b"\x01" * n + b"\x00", b"\x00" + b"\x02" * n):
        enc = wire.cobs_encode(raw)
        out = ffi.new("uint8_t[]", len(enc) + 1)
        k = lib.gt_cobs_encode(raw, len(raw), out)
        assert bytes(ffi.buffer(out, k)) == enc
        got = ffi.new("size_t *")
        for cand in (enc, enc[:-1], enc + b"\x01"):
            rc = lib.gt_cobs_decode(cand, len(cand), out, got)
            ref = wire.cobs_decode(cand)
            assert (rc == 0) == (ref is not None)
            if ref is not None:
                assert bytes(ffi.buffer(out, got[0])) == bytes(ref)


def test_m0plus_build_decodes_and_encodes_like_the_host() -> None:
    """The board build (thumbv6m, -Os) run in unicorn's Cortex-M0 must decode 100
    COUNTER frames to the host's messages and encode one back to wire.encode's
    bytes; bench_codec's m0_counts raises if not."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_codec", ROOT / "bench" / "bench_codec.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    missing = bench.m0_tools_missing()
    if missing:
        pytest.skip("M0+ toolchain missing: " + ", ".join(missing))
    counts = bench.m0_counts()
    assert 0 < counts["codec.c.m0plus_instructions_per_counter_decode"] < 5000
    assert 0 < counts["codec.c.m0plus_instructions_per_counter_encode"] < 5000
    assert counts["codec.c.m0plus_code_bytes"] > 1024  # the CRC table alone is 1 KiB
