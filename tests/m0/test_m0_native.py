"""The C kernel and codec as Cortex-M0 code: native/m0plus/m0_check.c under QEMU (semihosting).

The same checks as their host runs (tests/native/test_kernel.py against the
reference kernel, tests/native/test_native_codec.py against docs/protocol.md
and zlib), on arm-none-eabi-gcc -mcpu=cortex-m0plus code executed by an
emulated Cortex-M0 (QEMU -M microbit). All cases go in one file and one QEMU run.
"""

from __future__ import annotations

import math
import random
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from gridtap_fw import wire
from gridtap_sim import qemu_m0
from tests.support import kernel_ref as kr
from tests.support.vectors import rejects, vectors

OUT_WORDS = 26
N_COUNTERS = 9


def _u32(data: bytes, pos: int) -> tuple[int, int]:
    return struct.unpack_from("<I", data, pos)[0], pos + 4


def kernel_cases(rng: random.Random, n: int) -> list[tuple[list[int], int, int, int, list[int]]]:
    """(samples, start, nsets, nch, state): realistic, full-scale, out-of-range and random states."""
    cases = []
    for c in range(n):
        nch = rng.randint(2, 5)
        sets = rng.randint(0, 300 // nch)
        kind = c % 4
        if kind == 0:      # a mains-like V and currents around mid-scale
            per = rng.uniform(20, 120)
            samples = []
            for s in range(sets):
                v = int(2048 + 1800 * math.sin(2 * math.pi * s / per) + rng.randint(-3, 3))
                samples += [v] + [int(2048 + rng.randint(-1500, 1500) * math.sin(2 * math.pi * s / per + k))
                                  for k in range(nch - 1)]
        elif kind == 1:    # the extremes
            samples = [rng.choice((0, 4095)) for _ in range(sets * nch)]
        else:              # anything a u16 can hold
            samples = [rng.randrange(1 << 16) for _ in range(sets * nch)]
        start = rng.randint(0, sets)
        nsets = rng.randint(start, sets) if kind != 3 else rng.randint(0, sets)
        if kind == 3:      # arbitrary int32 in every state word
            state = [rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(kr.STATE_LEN)]
        else:
            state = kr.new_state(hyst=rng.randint(-5, 60), pol=rng.randint(0, 1),
                                 delays=tuple(rng.randint(0, 127) for _ in range(nch - 1)),
                                 fill=rng.choice((128, 200, 300, 384, 17)))
        cases.append((samples, start, nsets, nch, state))
    return cases


def run_check(tmp: Path, records: bytes) -> bytes:
    src, dst = tmp / "cases.bin", tmp / "results.bin"
    src.write_bytes(records + b"E")
    argv = qemu_m0.program_argv(qemu_m0.CHECK_ELF, ["check", str(src), str(dst)])
    proc = subprocess.run(argv, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc
    return dst.read_bytes()


@pytest.fixture(scope="module")
def check_elf() -> Path:
    assert qemu_m0.CHECK_ELF.exists(), f"{qemu_m0.CHECK_ELF} is missing: run `make m0`"
    return qemu_m0.CHECK_ELF


def test_kernel_on_the_m0_matches_the_reference(tmp_path: Path, check_elf: Path) -> None:
    cases = kernel_cases(random.Random(2026), 240)
    rec = bytearray()
    for samples, start, nsets, nch, state in cases:
        rec += b"K" + struct.pack("<IIII", nch, start, nsets, len(samples))
        rec += struct.pack(f"<{len(samples)}H", *samples)
        rec += struct.pack(f"<{kr.STATE_LEN}i", *state) + bytes(4 * OUT_WORDS)
    got = run_check(tmp_path, bytes(rec))
    pos = 0
    for samples, start, nsets, nch, state in cases:
        st = list(state)
        out = [0] * OUT_WORDS
        ret = kr.ref_block(samples, start, nsets, nch, st, out)
        m0_ret, pos = _u32(got, pos)
        m0_state = list(struct.unpack_from(f"<{kr.STATE_LEN}i", got, pos))
        pos += 4 * kr.STATE_LEN
        m0_out = list(struct.unpack_from(f"<{OUT_WORDS}i", got, pos))
        pos += 4 * OUT_WORDS
        what = (nch, start, nsets, len(samples) // nch)
        assert m0_ret == ret, what
        assert m0_state == [kr.wrap32(x) for x in st], what
        assert m0_out == out, what
    assert pos == len(got)


def _decode_record(data: bytes) -> bytes:
    return b"D" + struct.pack("<I", len(data)) + data


def _read_decoded(got: bytes, pos: int) -> tuple[list[bytes], dict[str, int], int]:
    frames = []
    while True:
        n, pos = _u32(got, pos)
        if n == 0xFFFFFFFF:
            break
        frames.append(got[pos:pos + n])
        pos += n
    counts = struct.unpack_from(f"<{N_COUNTERS}I", got, pos)
    return frames, dict(zip(wire.COUNTER_NAMES, counts, strict=True)), pos + 4 * N_COUNTERS


def test_codec_on_the_m0_matches_the_protocol_doc_and_zlib(tmp_path: Path, check_elf: Path) -> None:
    vecs, rejs = vectors(), rejects()
    rng = random.Random(7)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 600))) for _ in range(40)]
    blobs += [b"", b"123456789", bytes(254), bytes(range(256)) * 3]
    rec = b"".join(_decode_record(v.wire) for v in vecs) + b"".join(_decode_record(r.wire) for r in rejs)
    rec += _decode_record(b"".join(v.wire for v in vecs))   # one stream of every frame
    rec += b"".join(b"C" + struct.pack("<I", len(b)) + b for b in blobs)
    rec += b"".join(b"B" + struct.pack("<I", len(b)) + b for b in blobs)
    got = run_check(tmp_path, rec)
    pos = 0
    zero = dict.fromkeys(wire.COUNTER_NAMES, 0)
    for v in vecs:   # decoded and encoded again on the M0: the documented bytes
        frames, counts, pos = _read_decoded(got, pos)
        assert frames == [v.wire], wire.TYPE_NAMES[v.mtype]
        assert counts == zero | {"frames_ok": 1}
    for r in rejs:
        frames, counts, pos = _read_decoded(got, pos)
        assert frames == [] and counts == zero | {r.counter: 1}, r.counter
    frames, counts, pos = _read_decoded(got, pos)
    assert frames == [v.wire for v in vecs] and counts["frames_ok"] == len(vecs)
    for b in blobs:
        crc, pos = _u32(got, pos)
        assert crc == zlib.crc32(b), len(b)
    for b in blobs:
        n, pos = _u32(got, pos)
        assert got[pos:pos + n] == wire.cobs_encode(b), len(b)
        pos += n
    assert pos == len(got)
