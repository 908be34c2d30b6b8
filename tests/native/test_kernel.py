"""The per-sample kernel: C (cffi), viper (real MicroPython) and the M0+ build agree bit for bit.

Three implementations of docs/kernel.md are compared with a plain-Python
reference (tests/support/kernel_ref.py) on random and adversarial blocks: full scale,
DC, clipping at 0 and 4095, u16 values above 4095, crossings at block starts
and ends, nch 2..5, hysteresis values from negative to beyond full scale, and
chained calls that carry state across blocks the way the firmware core does.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.kernel_ref import (
    FILL,
    HIST_LEN,
    NATIVE,
    STATE_LEN,
    KernelFn,
    build_cffi_kernel,
    c_kernel,
    hist_get,
    hist_put,
    installed_native,
    new_state,
    out_len,
    ref_block,
)
from tests.support.mpy import run_micropython

I32 = st.integers(-(2**31), 2**31 - 1)


@pytest.fixture(scope="session")
def ckernel(tmp_path_factory: pytest.TempPathFactory) -> KernelFn:
    return c_kernel(build_cffi_kernel(tmp_path_factory.mktemp("gt_kernel_ffi")))


# ---------------------------------------------------------------------------
# Cases. A case is a buffer of raw samples plus either one call or a "drive":
# consume the buffer from `start` in successive calls as the firmware does.

def sine_block(nsets: int, nch: int, amp: float, phase: float, per_cycle: float, offset: float,
               rng: random.Random) -> list[int]:
    out = []
    for s in range(nsets):
        t = 2 * math.pi * s / per_cycle + phase
        for c in range(nch):
            x = 2048 + offset + amp * math.sin(t - 0.3 * c) + rng.uniform(-3, 3)
            out.append(min(4095, max(0, int(round(x)))))
    return out


@st.composite
def samples_st(draw: Any, nch: int, nsets: int) -> list[int]:
    kind = draw(st.sampled_from(["random", "sine", "dc", "clip", "extreme", "garbage", "near_zero"]))
    n = nsets * nch
    if kind == "random":
        return draw(st.lists(st.integers(0, 4095), min_size=n, max_size=n))
    if kind == "garbage":  # not 12-bit counts: sums modulo 2**32, identical everywhere
        return draw(st.lists(st.integers(0, 65535), min_size=n, max_size=n))
    if kind == "dc":
        return [draw(st.integers(0, 4095))] * n
    if kind == "extreme":
        return draw(st.lists(st.sampled_from([0, 4095, 2048, 2047]), min_size=n, max_size=n))
    if kind == "near_zero":  # dithering around mid-scale: exercises the hysteresis band
        return draw(st.lists(st.integers(2030, 2066), min_size=n, max_size=n))
    rng = random.Random(draw(st.integers(0, 2**32)))
    amp = 2600.0 if kind == "clip" else draw(st.floats(20, 2047))
    per_cycle = draw(st.floats(8, 200))
    return sine_block(nsets, nch, amp, draw(st.floats(0, 2 * math.pi)), per_cycle,
                      draw(st.floats(-40, 40)), rng)


@st.composite
def case_st(draw: Any, max_sets: int = 300) -> dict[str, Any]:
    nch = draw(st.integers(2, 5))
    nsets = draw(st.integers(0, max_sets))
    samples = draw(samples_st(nch, nsets))
    hist_kind = draw(st.sampled_from(["mid", "value", "random"]))
    state = new_state(v_raw=draw(st.integers(0, 4095)) if hist_kind == "value" else 2048)
    if hist_kind == "random":
        hist_put(state, draw(st.lists(st.integers(0, 65535), min_size=HIST_LEN, max_size=HIST_LEN)))
    state[:FILL + 5] = [
        draw(st.one_of(st.integers(-2048, 2047), I32)),
        draw(st.sampled_from([0, 1, 1, 0, 7])),
        draw(st.one_of(st.sampled_from([0, 1, 4, 16, 100, 2047, 2048, 5000, -1]), I32)),
        draw(st.sampled_from([0, 1])),
        draw(st.one_of(st.integers(128, 384), st.sampled_from([0, 127, 385, 383, 129]), I32)),
        *[draw(st.one_of(st.integers(0, 0x7FFF), st.sampled_from([0, 32, 96, 24 << 8 | 32, 127 << 8]), I32))
          for _ in range(4)],
    ]
    out = draw(st.lists(I32, min_size=out_len(nch) + 1, max_size=out_len(nch) + 1))
    start = draw(st.integers(0, nsets + 2))
    stop = draw(st.integers(0, nsets))
    drive = draw(st.booleans())
    return {"nch": nch, "samples": samples, "state": state, "out": out, "start": start,
            "nsets": stop, "drive": drive}


def run_case(kernel: KernelFn, case: dict[str, Any]) -> list[list[Any]]:
    """Run one case; return [ret, state, out] per call."""
    nch, samples = case["nch"], case["samples"]
    state, out = list(case["state"]), list(case["out"])
    if not case["drive"]:
        ret = kernel(samples, case["start"], case["nsets"], nch, state, out)
        return [[ret, state, out]]
    calls: list[list[Any]] = []
    total = len(samples) // nch
    pos = min(case["start"], total)
    while pos < total:
        ret = kernel(samples, pos, total, nch, state, out)
        calls.append([ret, list(state), list(out)])
        assert ret > 0 or state[3] == 1, "a call that consumed nothing must have stopped at a crossing"
        assert len(calls) < 4 * total + 4
        pos += ret
    return calls


# ---------------------------------------------------------------------------
# Reference semantics, checked directly (so the reference itself is pinned down).

def test_extremes_fit_int32_and_match_closed_forms(ckernel: KernelFn) -> None:
    n, nch = 256, 5
    for raw_v, raw_i, pol in ((0, 0, 0), (4095, 4095, 1), (0, 4095, 0), (4095, 0, 1)):
        v, i = raw_v - 2048, raw_i - 2048
        samples = ([raw_v] + [raw_i] * (nch - 1)) * (n + 10)
        for kernel in (ref_block, ckernel):
            state, out = new_state(0, pol, (0, 127, 64, 1), raw_v), [0] * out_len(nch)
            assert kernel(samples, 3, 3 + 1000, nch, state, out) == n  # capped at 256 sets
            assert state[:FILL + 1] == [v, pol, 0, 0, 128 + n]
            assert hist_get(state) == [raw_v] * HIST_LEN
            assert out[:2] == [n * v, n * v * v]
            for k in range(nch - 1):
                assert out[2 + 6 * k:8 + 6 * k] == [n * i, n * i * i, n * i * v, n * i * v, n * v, n * v]
    # The largest magnitudes the bound allows: 256 * 2048^2 = 2^30.
    state, out = new_state(0, 0, (100,), 0), [0] * out_len(2)
    assert ckernel([0, 0] * 256, 0, 256, 2, state, out) == 256
    assert out == [-(2**19), 2**30, -(2**19), 2**30, 2**30, 2**30, -(2**19), -(2**19)]


def test_rising_crossing_stops_before_the_crossing_set(ckernel: KernelFn) -> None:
    hyst = 10
    v_raw = [2048 - 50, 2048 - 5, 2048 + 10, 2048 + 11, 2048 + 40, 2048 - 11, 2048 + 30]
    samples = [x for v in v_raw for x in (v, 2100)]
    for kernel in (ref_block, ckernel):
        state, out = new_state(hyst, 0, (1 << 8,), 2048 - 60), [0] * out_len(2)  # D = 0, Q = 1
        # +10 is not above the hysteresis; +11 is: sets 0..2 are consumed.
        assert kernel(samples, 0, 7, 2, state, out) == 3
        assert state[:FILL + 1] == [10, 1, hyst, 1, 131]
        assert out[0] == -50 - 5 + 10
        assert out[5] == 52 * (-60 - 50 - 5)  # i*v_Q starts from the history
        assert out[6:8] == [-50 - 5 + 10, -60 - 50 - 5]
        # The next call starts at the crossing set with polarity 1 and accumulates it;
        # -11 is below -hysteresis (polarity 0), then +30 is the next rising crossing.
        assert kernel(samples, 3, 7, 2, state, out) == 3
        assert state[:FILL + 1] == [-11, 1, hyst, 1, 134]
        assert out[0] == 11 + 40 - 11
        assert out[5] == 52 * (10 + 11 + 40)
        assert kernel(samples, 6, 7, 2, state, out) == 1
        assert state[:FILL + 1] == [30, 1, hyst, 0, 135]
        # A crossing right at the first set: nothing consumed, state[0] kept, out zeroed.
        state, out = new_state(hyst, 0), [5] * out_len(2)
        state[0] = -11
        assert kernel(samples, 6, 7, 2, state, out) == 0
        assert state[:FILL + 1] == [-11, 1, hyst, 1, 128] and out == [0] * 8


def test_empty_and_invalid_calls(ckernel: KernelFn) -> None:
    for kernel in (ref_block, ckernel):
        state, out = new_state(3, 1, fill=200), [9] * out_len(3)
        state[0], state[3] = 5, 1
        assert kernel([2048] * 30, 7, 4, 3, state, out) == 0  # nsets before start
        assert state[:FILL + 1] == [5, 1, 3, 0, 200] and out == [0] * out_len(3)
        state, out = new_state(3, 1, fill=7), [9] * 32
        state[0], state[3] = 5, 1
        assert kernel([2048] * 30, 0, 5, 6, state, out) == 0  # nch out of range
        assert state[:FILL + 1] == [5, 1, 3, 0, 7] and out == [9] * 32


def band_edge_cases(hysts: tuple[int, ...], length: int) -> list[dict[str, Any]]:
    """Every V sequence over {-h-1, -h, 0, h, h+1} of the given length, both polarities."""
    cases = []
    for h in hysts:
        alphabet = sorted({max(-2048, min(2047, x)) for x in (-h - 1, -h, 0, h, h + 1)})
        for idx in range(len(alphabet) ** length):
            seq = [alphabet[(idx // len(alphabet) ** j) % len(alphabet)] for j in range(length)]
            samples = [x for v in seq for x in (v + 2048, (2048 + 3 * v // 2 + 1) & 0xFFFF)]
            for pol in (0, 1):
                cases.append({"nch": 2, "samples": samples, "state": new_state(h, pol, (1,), 2047),
                              "out": [0] * 8,
                              "start": 0, "nsets": length, "drive": True})
    return cases


def test_hysteresis_band_edges_exhaustive(ckernel: KernelFn) -> None:
    cases = band_edge_cases((0, 1, 9, 2046, 2047), 5)
    assert len(cases) > 10000
    for case in cases:
        assert run_case(ckernel, case) == run_case(ref_block, case)


def test_delay_line_refers_each_ct_to_v_d_sets_earlier_across_calls(ckernel: KernelFn) -> None:
    """Summed over many calls of random length (history moves included), CT k's
    sums are exactly those of its current with the V of D_k and Q_k sets
    before, written out directly from the sample stream."""
    rng = random.Random(5)
    nch, total = 4, 2000
    delays = (0, 32, 127)
    qdelays = (24, 127, 0)  # Q is read from bits 8..14, above D
    v0 = 2048 + 300  # what the history holds before the first set
    samples = [rng.randint(0, 4095) for _ in range(total * nch)]
    vraw = [v0] * 128 + [samples[s * nch] for s in range(total)]
    for kernel in (ref_block, ckernel):
        # the other bits are ignored
        words = tuple(d | q << 8 | 0x7F8080 for d, q in zip(delays, qdelays, strict=True))
        state, out = new_state(5000, 0, words, v0), [0] * out_len(nch)  # no crossings
        sums = [0] * out_len(nch)
        pos = 0
        while pos < total:
            n = kernel(samples, pos, min(total, pos + rng.randint(1, 256)), nch, state, out)
            assert n > 0
            sums = [a + b for a, b in zip(sums, out, strict=True)]
            pos += n
        for k, (d, q) in enumerate(zip(delays, qdelays, strict=True)):
            i = [samples[s * nch + 1 + k] - 2048 for s in range(total)]
            vd = [vraw[128 + s - d] - 2048 for s in range(total)]
            vd1 = [vraw[128 + s - q] - 2048 for s in range(total)]
            assert sums[4 + 6 * k:8 + 6 * k] == [sum(a * b for a, b in zip(i, vd, strict=True)),
                                                 sum(a * b for a, b in zip(i, vd1, strict=True)),
                                                 sum(vd), sum(vd1)]
        assert hist_get(state)[state[FILL] - 128:state[FILL]] == vraw[-128:]


# ---------------------------------------------------------------------------
# Differential tests.

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case_st())
def test_c_kernel_matches_reference(ckernel: KernelFn, case: dict[str, Any]) -> None:
    assert run_case(ckernel, case) == run_case(ref_block, case)


MPY_SCRIPT = """
import sys, json, array, binascii
from gridtap_fw import kernel
res = []
for line in sys.stdin:
    c = json.loads(line)
    nch = c['nch']
    buf = bytearray(binascii.unhexlify(c['buf']))
    st = array.array('i', binascii.unhexlify(c['state']))
    out = array.array('i', c['out'])
    calls = []
    if not c['drive']:
        r = kernel.block(buf, c['start'], c['nsets'], nch, st, out)
        calls.append([r, binascii.hexlify(bytes(st)), list(out)])
    else:
        total = len(buf) // (2 * nch)
        pos = min(c['start'], total)
        while pos < total:
            r = kernel.block(buf, pos, total, nch, st, out)
            calls.append([r, binascii.hexlify(bytes(st)), list(out)])
            pos += r
    print(json.dumps(calls))
"""

BATCH = 300  # cases per MicroPython process (its heap holds the batch's results)


def run_viper(cases: list[dict[str, Any]]) -> list[list[list[Any]]]:
    """All cases in a few MicroPython processes; states travel as hex (201 words each)."""
    got: list[list[list[Any]]] = []
    for b0 in range(0, len(cases), BATCH):
        lines = [json.dumps(dict(c, buf=b"".join(x.to_bytes(2, "little") for x in c["samples"]).hex(),
                                 samples=None, state=struct.pack(f"<{len(c['state'])}i", *c["state"]).hex()))
                 for c in cases[b0:b0 + BATCH]]
        text = run_micropython(MPY_SCRIPT, stdin=("\n".join(lines) + "\n").encode())
        for row in text.strip().split("\n"):
            calls = json.loads(row)
            for call in calls:
                raw = bytes.fromhex(call[1])
                call[1] = list(struct.unpack(f"<{len(raw) // 4}i", raw))
            got.append(calls)
    assert len(got) == len(cases)
    return got


def fixed_cases() -> list[dict[str, Any]]:
    """Adversarial cases plus seeded random ones, independent of hypothesis."""
    rng = random.Random(20261121)
    cases: list[dict[str, Any]] = []
    for nch in range(2, 6):
        for raw in (0, 4095, 2048, 2047, 0xF000 | 4095, 0x8000):
            for pol in (0, 1):
                cases.append({"nch": nch, "samples": [raw] * (260 * nch),
                              "state": new_state(0, pol, (0, 127, 64, 32), 0),
                              "out": [1] * (out_len(nch) + 1), "start": 2, "nsets": 260, "drive": False})
        for hyst in (-7, 0, 3, 40, 2047, 2048, 2**31 - 1, -(2**31)):
            for per_cycle in (7.0, 96.0, 150.0):
                samples = sine_block(300, nch, 2040, rng.uniform(0, 6.3), per_cycle,
                                     rng.uniform(-30, 30), rng)
                delays = tuple(rng.randint(0, 127) | rng.randint(0, 127) << 8 for _ in range(4))
                state = new_state(hyst, 0, delays, rng.randint(0, 4095), rng.randint(128, 384))
                cases.append({"nch": nch, "samples": samples, "state": state,
                              "out": [0] * (out_len(nch) + 1), "start": rng.randint(0, 5), "nsets": 300,
                              "drive": True})
        # Clipped square-ish wave: crossings land exactly at block starts and ends.
        samples = sine_block(64, nch, 5000, 0.0, 16, 0, rng)
        for start in range(0, 17):
            cases.append({"nch": nch, "samples": samples,
                          "state": new_state(1, start % 2, (start, 2 * start)),
                          "out": [0] * out_len(nch), "start": start, "nsets": start + 8 + (start % 3),
                          "drive": False})
        for _ in range(12):  # random raw, arbitrary int32 state
            n = rng.randint(0, 300)
            garbage = [rng.randint(-(2**31), 2**31 - 1) for _ in range(STATE_LEN)]
            garbage[1:4] = [rng.randint(0, 1), rng.randint(-5, 300), 1]
            cases.append({"nch": nch, "samples": [rng.randint(0, 65535) for _ in range(n * nch)],
                          "state": garbage,
                          "out": [rng.randint(-(2**31), 2**31 - 1) for _ in range(out_len(nch))],
                          "start": rng.randint(0, n + 1), "nsets": rng.randint(0, n + 1),
                          "drive": rng.random() < 0.5})
    return cases + band_edge_cases((0, 1, 9, 2047), 4)


def test_viper_c_and_reference_agree_on_fixed_cases(ckernel: KernelFn) -> None:
    cases = fixed_cases()
    viper = run_viper(cases)
    for case, got in zip(cases, viper, strict=True):
        want = run_case(ref_block, case)
        assert run_case(ckernel, case) == want, case
        assert got == want, {k: case[k] for k in ("nch", "state", "start", "nsets", "drive")}


# One MicroPython process per example; no shrinking (each step would be another
# process): the fixed cases above pin a failure down.
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(case_st(max_sets=120), min_size=10, max_size=25))
def test_viper_matches_reference_on_hypothesis_batches(cases: list[dict[str, Any]]) -> None:
    for case, got in zip(cases, run_viper(cases), strict=True):
        assert got == run_case(ref_block, case)


def test_viper_rejects_bad_arguments_with_clear_errors() -> None:
    script = """
import array
from gridtap_fw import kernel
buf = bytearray(2 * 4 * 10)
ok_state = array.array('i', [0] * 201)
ok_out = array.array('i', [0] * 20)
for args in ((buf, 0, 10, 1, ok_state, ok_out), (buf, 0, 10, 6, ok_state, ok_out),
             (buf, -1, 10, 4, ok_state, ok_out), (buf, 0, 10, 4, array.array('i', [0] * 200), ok_out),
             (buf, 0, 10, 4, ok_state, array.array('i', [0] * 19)), (buf, 0, 11, 4, ok_state, ok_out)):
    try:
        kernel.block(*args)
        print('accepted')
    except ValueError as e:
        print(e)
print(kernel.block(buf, 0, 10, 4, ok_state, ok_out))
"""
    lines = run_micropython(script).split("\n")
    assert lines[:7] == [
        "kernel: nch must be 2..5", "kernel: nch must be 2..5", "kernel: start must be >= 0",
        "kernel: state must hold 201 int32", "kernel: out is too short for nch",
        "kernel: buf holds fewer than nsets sets", "10"]


@pytest.mark.skipif(installed_native() is None, reason="gridtap.board._native is not built (make native)")
def test_installed_native_module_is_this_kernel(ckernel: KernelFn) -> None:
    native = installed_native()
    assert native is not None
    assert hasattr(native.lib, "gt_kernel_block"), "the native module lacks gt_kernel_block: run make native"
    installed = c_kernel(native)
    for case in fixed_cases()[::7]:
        assert run_case(installed, case) == run_case(ckernel, case), "stale native module: run make native"


# ---------------------------------------------------------------------------
# The Cortex-M0+ build, run in unicorn, against the host C build.

def load_harness() -> Any:
    spec = importlib.util.spec_from_file_location("gt_m0plus_harness", NATIVE / "m0plus" / "harness.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("gcc", [False, True], ids=["clang", "gcc"])
def test_m0plus_build_matches_host_c(ckernel: KernelFn, tmp_path: Path, gcc: bool) -> None:
    """The M0+ build (its CT loop in Thumb-1 assembly) against the host's C loop, built by clang
    as the bench measures it and by arm-none-eabi-gcc as the rp2 port builds it."""
    h = load_harness()
    if (h.toolchain_missing() if not gcc else [t for t in h.GCC_TOOLS if shutil.which(t) is None]):
        pytest.skip("the Cortex-M0+ cross toolchain is not installed (make setup)")
    m0 = h.M0Kernel(h.build(tmp_path, gcc=gcc))
    rng = random.Random(7)
    blocks = [(h.mains_signal(300, nch, seed=nch), nch) for nch in (2, 3, 4, 5)]
    blocks.append(([rng.randint(0, 65535) for _ in range(4 * 260)], 4))
    blocks.append(([0, 4095, 4095, 0] * 256, 4))
    total_calls = 0
    for samples, nch in blocks:
        raw = h.pack(samples)
        garbage = [rng.randint(-(2**31), 2**31 - 1) for _ in range(STATE_LEN)]
        garbage[1:4] = [0, -4, 0]
        calls = ((0, 300, new_state(8, 0, (0 | 24 << 8, 32 | 56 << 8, 64 | 88 << 8, 96 | 24 << 8))),
                 (5, 261, new_state(0, 1, (127, 127 << 8, 1 | 126 << 8, 2 | 1 << 8), 0)),
                 (40, 97, new_state(2048, 0, (3, 3, 3, 3), 4095, 384)), (7, 3, new_state(3, 1, fill=300)),
                 (0, 300, garbage))
        for start, nsets, state in calls:
            nsets = min(nsets, len(samples) // nch)
            pos = start
            s_host, s_m0 = list(state), list(state)
            while pos < nsets:
                o_host, o_m0 = [0] * out_len(nch), [0] * out_len(nch)
                r_host = ckernel(samples, pos, nsets, nch, s_host, o_host)
                r_m0, cost = m0.call(raw, pos, nsets, nch, s_m0, o_m0)
                assert (r_m0, s_m0, o_m0) == (r_host, s_host, o_host)
                assert cost > 0
                total_calls += 1
                pos += r_host
    assert total_calls > 30
    assert m0.instructions < m0.cycles < 2 * m0.instructions


def test_m0plus_cycle_model_classifies_thumb_encodings() -> None:
    h = load_harness()
    known = {
        0x8800: (2, False),  # ldrh r0, [r0]
        0x5A08: (2, False),  # ldrh r0, [r1, r0]
        0x4800: (2, False),  # ldr r0, [pc, #0]
        0x9000: (2, False),  # str r0, [sp]
        0x4348: (1, False),  # muls r0, r1, r0 (single-cycle multiplier)
        0x1840: (1, False),  # adds r0, r0, r1
        0x4440: (1, False),  # add r0, r8
        0xB5F0: (6, False),  # push {r4-r7, lr}
        0xBDF0: (7, False),  # pop {r4-r7, pc}
        0xBCF0: (5, False),  # pop {r4-r7}
        0xC80F: (5, False),  # ldm r0!, {r0-r3}
        0xD1FE: (1, True),   # bne: +1 when taken
        0xE7FE: (2, False),  # b
        0x4770: (2, False),  # bx lr
        0x4487: (2, False),  # add pc, r0
        0xDF00: (1, False),  # svc is not a conditional branch
    }
    assert {hw: h.thumb_cycles(hw) for hw in known} == known
