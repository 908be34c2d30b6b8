"""Fuzzing the APDU reader and the station: only FrameError comes out, nothing hangs, memory stays bounded."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridtap.outputs.iec104 import codec
from gridtap.outputs.iec104.netflex import ModelConfig, NetflexStation, StateFile
from tests.support.iec104 import command, setpoint

SEEDS = [codec.encode_u(codec.STARTDT_ACT), codec.encode_s(3),
         codec.encode_i(0, 0, command(codec.C_IC_NA_1, 0, bytes([20]))),
         codec.encode_i(1, 0, setpoint(1101, 40.0)),
         codec.encode_i(2, 0, command(codec.C_SC_NA_1, 1001, b"\x01")),
         codec.encode_i(3, 0, command(codec.C_CS_NA_1, 0, codec.encode_cp56(1.7e9)))]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Valid frames with bytes flipped, cut, spliced, plus plain noise."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            b = bytearray(draw(st.sampled_from(SEEDS)))
            for _ in range(draw(st.integers(0, 3))):
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
            parts.append(bytes(b[:draw(st.integers(0, len(b)))] if draw(st.booleans()) else b))
        else:
            parts.append(draw(st.binary(max_size=300)))
    return b"".join(parts)


def check(data: bytes, station: NetflexStation, chunk: int) -> None:
    reader = codec.FrameReader()
    try:
        for i in range(0, len(data), chunk):
            for f in reader.feed(data[i:i + chunk]):
                if isinstance(f, codec.IFrame):
                    station.handle(f.asdu, "fuzz")
            assert len(reader._buf) <= codec.MAX_APDU + 2
    except codec.FrameError:
        pass


FUZZ_STATE = Path(tempfile.mkdtemp(prefix="gridtap-iec104-fuzz-"))
STATION = NetflexStation(ModelConfig(), StateFile(FUZZ_STATE / "s.json"), lambda lim: None,
                         lambda c: (0.0, 0.0, True))


@settings(max_examples=400, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(1, 64))
def test_reader_and_station_survive_anything(data: bytes, chunk: int) -> None:
    check(data, STATION, chunk)


@settings(max_examples=300, deadline=200)
@given(st.binary(min_size=6, max_size=253))
def test_asdu_decoder_raises_only_frame_error(asdu: bytes) -> None:
    try:
        a = codec.decode_asdu(asdu)
    except codec.FrameError:
        return
    if a.objects and a.type_id in (codec.C_SC_NA_1, codec.C_DC_NA_1, codec.C_SE_NC_1):
        codec.decode_command(a.type_id, *a.objects[0])
