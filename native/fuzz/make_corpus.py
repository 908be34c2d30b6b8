"""Write the committed libFuzzer seed corpus (native/fuzz/corpus/) from docs/protocol.md's vectors.

Each seed starts with the harness mode byte (see fuzz_wire.c): 0 stream,
1 frame (header|payload, the harness adds the CRC), 2 typed (a gt_msg image,
host ABI). `--check` exits 1 if the committed corpus differs from what this
script would write (tests/native/test_fuzz_wire.py runs that).

    .venv/bin/python native/fuzz/make_corpus.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"


def seeds() -> dict[str, bytes]:
    sys.path.insert(0, str(ROOT))
    from gridtap.board import native
    from gridtap_fw import wire
    from tests.support.vectors import rejects, vectors

    out: dict[str, bytes] = {}
    vecs = vectors()
    for v in vecs:
        name = "%s-%d-%d" % (wire.TYPE_NAMES[v.mtype].lower(), v.seq, v.flags)
        out["stream-" + name] = b"\x00\x01" + v.wire
        raw = bytes(wire.cobs_decode(v.wire[1:-1]) or b"")
        out["frame-" + name] = b"\x01" + raw[:-4]
        dec = native.NativeDecoder()
        assert dec.feed(v.wire)
        out["typed-" + name] = b"\x02" + bytes(native.ffi.buffer(dec._out, native.STRIDE))
    for r in rejects():
        out["stream-reject-" + r.counter] = b"\x00\x02" + r.wire
    # The largest message of each variable-length type, so the length limits
    # are one mutation away.
    sid = bytes(range(1, 17))
    biggest = {
        "ack-64": (wire.ACK, (tuple(range(64)),)),
        "config_get-32": (wire.CONFIG_GET, (2, 0, tuple(sorted(wire.PARAMS)) * 2 + (1,) * 8)),
        "config-240": (wire.CONFIG, (2, 0, ((wire.P_SENSOR_ID, sid),) * 13 + ((wire.P_SAVE_WH, 1),))),
        "event-200": (wire.EVENT, (1, 999, 4, 7, b"x" * 200)),
    }
    for name, (mtype, values) in biggest.items():
        frame = wire.encode(mtype, 1, values)
        out["stream-" + name] = b"\x00\x05" + frame
        out["frame-" + name] = b"\x01" + bytes(wire.cobs_decode(frame[1:-1]) or b"")[:-4]
    noise = bytes([0x55, 0x01, 0xFF, 0x13, 0x37] * 4)
    out["stream-all-with-noise"] = b"\x00\x03" + b"".join(noise + v.wire for v in vecs)
    out["stream-oversize"] = b"\x00\x04" + b"\x00" + b"\x01" * 260 + vecs[0].wire
    return out


def main(argv: list[str]) -> int:
    want = seeds()
    if "--check" in argv:
        have = {p.name: p.read_bytes() for p in CORPUS.glob("*")} if CORPUS.is_dir() else {}
        if have != want:
            stale = sorted(set(have) ^ set(want) | {k for k in want if have.get(k) != want[k]})
            print("native/fuzz/corpus is stale (run native/fuzz/make_corpus.py): " + ", ".join(stale))
            return 1
        return 0
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*"):
        old.unlink()
    for name, data in want.items():
        (CORPUS / name).write_bytes(data)
    print("wrote %d seeds to %s" % (len(want), CORPUS.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
