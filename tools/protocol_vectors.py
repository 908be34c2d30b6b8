"""Print the test-vector blocks for docs/protocol.md from the reference codec.

Run it when a message type is added, paste the output into the document, and
tests/firmware/test_protocol_doc.py keeps the two in step from then on:

    .venv/bin/python tools/protocol_vectors.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))

from gridtap_fw import wire as w  # noqa: E402

SID = bytes.fromhex("1994ad6054785f2db8f726086c486ca9")

GOOD = [
    ("HELLO", 0, 0, (bytes.fromhex("e66138935b2c4a21"), 1, 0, 0, w.PROTO_VERSION, 42, w.RESET_BROWNOUT,
                     7, 3, 2)),
    ("HELLO_REQ", 1, 0, ()),
    ("TIME_SET", 2, 0, (1700000000, 500)),
    ("TIME", 3, 0, (1700000000, 501, 123456, 1)),
    ("COUNTER", 7, 0, (1, 1700000000, 250, 12345, 678, 42, 5)),
    ("COUNTER", 7, w.FLAG_RETX, (1, 1700000000, 250, 12345, 678, 42, 5)),
    ("PULSE", 8, 0, (3, 1700000001, 40, 5000, 500, 10001, )),
    ("GAUGE", 9, 0, (2, 1700000002, 0, -1500250, 1530000, 230125, 6648, -9805, 49987, 302517, 1234, 567,
                     89, 999)),
    ("ACK", 10, 0, ((7, 8, 65535),)),
    ("NAK", 11, 0, (42, w.CONFIG_SET, w.NAK_BAD_PARAM)),
    ("CONFIG_GET", 12, 0, (w.TARGET_CT, 0, (w.P_GAIN_E6, w.P_PHASE_MDEG))),
    ("CONFIG_SET", 13, 0, (w.TARGET_CT, 1, ((w.P_GAIN_E6, 1002500), (w.P_PHASE_MDEG, -4200),
                                            (w.P_INVERT, 1), (w.P_SENSOR_ID, SID)))),
    ("CONFIG", 14, 0, (w.TARGET_PULSE, 0, ((w.P_METER_CONST_MILLI, 800000), (w.P_DEBOUNCE_MS, 20),
                                           (w.P_TRIGGER, w.TRIGGER_EDGE), (w.P_UNIT, w.UNIT_WH)))),
    ("COMMIT", 15, 0, (w.COMMIT_CONFIG | w.COMMIT_COUNTERS,)),
    ("EVENT", 16, 0, (1700000003, 0, 3, 0x0102, b"brownout save ok")),
]


def jsonable(v: object) -> object:
    if isinstance(v, bytes):
        return "hex:" + v.hex()
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    return v


def raw_frame(mtype: int, seq: int, payload: bytes, version: int = w.PROTO_VERSION) -> bytes:
    import struct

    raw = struct.pack("<BBBH", version, mtype, 0, seq) + payload
    return raw + struct.pack("<I", w.crc(raw))


def bad_vectors() -> list[tuple[str, str, bytes]]:
    good = w.encode(w.COUNTER, 7, (1, 1700000000, 250, 12345, 678, 42, 5))
    flipped = bytearray(good)
    flipped[10] ^= 0x04
    return [
        ("bad_crc", "one bit flipped in a COUNTER frame", bytes(flipped)),
        ("bad_version", "version byte 1 (a board from before protocol 2)",
         b"\x00" + w.cobs_encode(raw_frame(w.HELLO_REQ, 1, b"", 1)) + b"\x00"),
        ("bad_type", "type 0x7f", b"\x00" + w.cobs_encode(raw_frame(0x7F, 1, b"")) + b"\x00"),
        ("bad_length", "TIME_SET with a 5-byte payload",
         b"\x00" + w.cobs_encode(raw_frame(w.TIME_SET, 1, b"\x00\xf1\x53\x65\x00")) + b"\x00"),
        ("bad_value", "TIME_SET with ms = 1000",
         b"\x00" + w.cobs_encode(raw_frame(w.TIME_SET, 1, b"\x00\xf1\x53\x65\xe8\x03")) + b"\x00"),
        ("runt", "8 bytes after COBS decoding", b"\x00" + w.cobs_encode(b"\x01" * 8) + b"\x00"),
        ("bad_cobs", "a code byte pointing past the delimiter", b"\x00\x05\x01\x02\x00"),
    ]


def main() -> None:
    for name, seq, flags, values in GOOD:
        mtype = getattr(w, name)
        frame = w.encode(mtype, seq, values, flags)
        print("```vector")
        print(f"type: {name}")
        print(f"seq: {seq}")
        print(f"flags: {flags}")
        print(f"values: {json.dumps(jsonable(values))}")
        print(f"wire: {frame.hex(' ')}")
        print("```")
        print()
    for counter, why, frame in bad_vectors():
        print("```reject")
        print(f"counter: {counter}")
        print(f"why: {why}")
        print(f"wire: {frame.hex(' ')}")
        print("```")
        print()


if __name__ == "__main__":
    main()
