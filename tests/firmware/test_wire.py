"""The reference codec: framing, CRC, COBS, bounds, and never raising on input."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap_fw import wire
from tests.support.vectors import vectors


def test_crc_is_zlib_crc32() -> None:
    assert wire.crc(b"123456789") == 0xCBF43926
    assert wire.crc(b"gridtap") == zlib.crc32(b"gridtap")


def test_crc_table_fallback_matches(monkeypatch) -> None:
    monkeypatch.setattr(wire, "crc32", None)
    for data in (b"", b"123456789", bytes(range(256))):
        assert wire.crc(data) == zlib.crc32(data)


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zeros(raw: bytes) -> None:
    enc = wire.cobs_encode(raw)
    assert 0 not in enc
    assert len(enc) <= len(raw) + len(raw) // 254 + 1
    assert wire.cobs_decode(enc) == raw


@given(st.binary(max_size=2000))
@settings(max_examples=400)
def test_decoder_never_raises_and_stays_bounded(data: bytes) -> None:
    dec = wire.Decoder()
    dec.feed(data)
    assert len(dec._buf) <= wire.MAX_ENCODED


def test_resync_loses_no_frame_after_garbage() -> None:
    frames = [v.wire for v in vectors()]
    noise = bytes([0x55, 0x01, 0xFF, 0x13, 0x37] * 20)
    stream = b"".join(noise + f for f in frames)
    dec = wire.Decoder()
    got = dec.feed(stream)
    assert len(got) == len(frames)
    assert dec.counters()["frames_ok"] == len(frames)


def test_oversize_is_dropped_and_counted_once() -> None:
    dec = wire.Decoder()
    good = vectors()[0].wire
    got = dec.feed(b"\x00" + b"\x01" * 5000 + good)
    assert len(got) == 1
    assert dec.counters()["oversize"] == 1


def test_byte_at_a_time_equals_bulk() -> None:
    stream = b"".join(v.wire for v in vectors())
    bulk = wire.Decoder().feed(stream)
    dec = wire.Decoder()
    trickled = [m for i in range(len(stream)) for m in dec.feed(stream[i:i + 1])]
    assert trickled == bulk


def test_encoder_refuses_out_of_range_values() -> None:
    import pytest

    with pytest.raises(wire.WireError):
        wire.encode(wire.COUNTER, 1, (1, 2, 1000, 0, 0, 0, 0))
    with pytest.raises(wire.WireError):
        wire.encode(wire.ACK, 1, ((),))
    with pytest.raises(wire.WireError):
        wire.encode(wire.CONFIG_SET, 1, (2, 0, ((0x7F, 1),)))
    with pytest.raises(wire.WireError):
        wire.encode(wire.TIME_SET, 70000, (1, 2))


def test_encoder_names_bad_numbers_and_oversize_config() -> None:
    import pytest

    with pytest.raises(wire.WireError, match="COUNTER"):
        wire.encode(wire.COUNTER, 1, (256, 1, 0, 0, 0, 0, 0))
    with pytest.raises(wire.WireError, match="HELLO"):
        wire.encode(wire.HELLO, 1, (b"short", 1, 0, 0, 1, 0, 0, 0, 3, 2))
    items = tuple((wire.P_SENSOR_ID, bytes([i]) * 16) for i in range(14))
    with pytest.raises(wire.WireError, match="exceeds 240"):
        wire.encode(wire.CONFIG_SET, 1, (wire.TARGET_CT, 0, items))
