"""Wire codec throughput: the C decoder, the Python decoder and the UART's own ceiling.

All rates decode the same buffer of COUNTER frames (distinct values and seqs)
in the same run on one core; each is the best of several repetitions, and the
ratios divide rates by the link ceiling computed from the encoded COUNTER frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gridtap import native
from gridtap_fw import wire

ffi, lib = native.ffi, native.lib

N_DISTINCT = 4096
N_C = 200_000  # frames in the one-call C decode
N_PY = 40_000  # frames for the rates that build Python objects
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop

ANCHORS = {
    "codec.c.decode_frames_per_s": "goal >= 1,000,000 frames/s",
    "codec.c.ratio_vs_460800_ceiling": "goal >= 50x the link; Flukso FLM02: CRC-8 over hex text, "
                                       "667 Hz/channel sampling",
    "codec.python.ratio_vs_460800_ceiling": "goal >= 5x the link; Flukso FLM03: Fletcher-16",
    "link.frames_per_s_ceiling_460800": "docs/protocol.md: 1486.5 frames/s",
    "link.frames_per_s_ceiling_115200": "docs/protocol.md: 371.6 frames/s",
}
HOW = {
    "codec.c.decode_frames_per_s":
        "one gt_decoder_feed call (COBS, CRC-32, checks, typed gt_msg out) over %d COUNTER frames "
        "in one buffer, best of 7" % N_C,
    "codec.c.decode_to_python_frames_per_s":
        "gridtap.native.NativeDecoder.feed over %d COUNTER frames, wire.Message objects out, "
        "best of 5" % N_PY,
    "codec.python.decode_frames_per_s":
        "gridtap_fw.wire.Decoder.feed (the reference codec, CPython) over %d COUNTER frames, "
        "best of 5" % N_PY,
    "link.frames_per_s_ceiling_115200": "115200 / (encoded COUNTER frame bytes x 10 bit times)",
    "link.frames_per_s_ceiling_460800": "460800 / (encoded COUNTER frame bytes x 10 bit times)",
    "link.counter_frame_bytes": "len(wire.encode(COUNTER, ...)), both delimiters included",
    "codec.c.ratio_vs_460800_ceiling": "codec.c.decode_frames_per_s / link.frames_per_s_ceiling_460800",
    "codec.python.ratio_vs_460800_ceiling":
        "codec.python.decode_frames_per_s / link.frames_per_s_ceiling_460800",
}


def counter_frames(n: int) -> bytes:
    """n COUNTER frames with distinct values, as the board would send them."""
    distinct = []
    for i in range(N_DISTINCT):
        values = (i % 3, 1_700_000_000 + i // 3, (i * 37) % 1000, 12_345 + i * 7, (i * 11) % 1000,
                  i // 5, (i * 3) % 1000)
        distinct.append(wire.encode(wire.COUNTER, i, values))
    reps, rest = divmod(n, N_DISTINCT)
    return b"".join(distinct) * reps + b"".join(distinct[:rest])


def best_time(fn: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def c_one_call(data: bytes, n: int) -> float:
    dec = ffi.new("gt_decoder *")
    out = ffi.new("gt_msg[]", n)
    src = ffi.from_buffer("uint8_t[]", data)
    used = ffi.new("size_t *")

    def once() -> None:
        lib.gt_decoder_init(dec)
        got = lib.gt_decoder_feed(dec, src, len(data), out, n, used)
        if got != n or dec.counts[wire.C_OK] != n or used[0] != len(data):
            raise AssertionError("C decoder did not deliver every frame")

    once()  # fault the output pages in before timing
    return n / best_time(once, 7)


def decoder_rate(make: Callable[[], object], data: bytes, n: int) -> float:
    def once() -> None:
        dec = make()
        if len(dec.feed(data)) != n:  # type: ignore[attr-defined]
            raise AssertionError("decoder did not deliver every frame")

    return n / best_time(once, 5)


def run() -> dict[str, object]:
    frame_bytes = len(counter_frames(1))
    ceiling_115 = 115200 / (frame_bytes * BITS_PER_BYTE)
    ceiling_460 = 460800 / (frame_bytes * BITS_PER_BYTE)
    c_rate = c_one_call(counter_frames(N_C), N_C)
    py_data = counter_frames(N_PY)
    c_py_rate = decoder_rate(native.NativeDecoder, py_data, N_PY)
    py_rate = decoder_rate(wire.Decoder, py_data, N_PY)
    return {
        "link.counter_frame_bytes": frame_bytes,
        "link.frames_per_s_ceiling_115200": round(ceiling_115, 1),
        "link.frames_per_s_ceiling_460800": round(ceiling_460, 1),
        "codec.c.decode_frames_per_s": round(c_rate),
        "codec.c.decode_to_python_frames_per_s": round(c_py_rate),
        "codec.python.decode_frames_per_s": round(py_rate),
        "codec.c.ratio_vs_460800_ceiling": round(c_rate / ceiling_460, 1),
        "codec.python.ratio_vs_460800_ceiling": round(py_rate / ceiling_460, 1),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(key, value)
