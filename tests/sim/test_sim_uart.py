"""UART fault injection rates and the raw-mode pseudo-terminal."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import serial

from gridtap_sim.uart import FaultInjector, Pty


def test_bit_error_rate_is_what_was_asked() -> None:
    inj = FaultInjector(np.random.default_rng(1), ber=1e-3)
    data = bytes(range(256)) * 800                      # 204,800 bytes, 1,638,400 bits
    out = inj.corrupt(data)
    flips = sum(bin(a ^ b).count("1") for a, b in zip(data, out, strict=True))
    expected = 8 * len(data) * 1e-3                     # 1638; sigma about 40
    assert abs(flips - expected) < 5 * np.sqrt(expected)
    assert flips == inj.stats.bits_flipped


def test_drops_and_clean_line() -> None:
    inj = FaultInjector(np.random.default_rng(2), drop=0.01)
    out = inj.corrupt(b"\x55" * 100000)
    assert abs((100000 - len(out)) - 1000) < 5 * np.sqrt(1000)
    assert set(out) == {0x55}
    clean = FaultInjector(np.random.default_rng(3))
    assert clean.corrupt(bytes(range(256))) == bytes(range(256))


def test_stalls_hold_bytes_back() -> None:
    inj = FaultInjector(np.random.default_rng(4), stall_per_min=60.0)
    delays = [inj.release_time(t) - t for t in np.arange(0.0, 600.0, 0.01)]
    stalled = sum(1 for d in delays if d > 0)
    # a stall starts on average 1 s after the last one ended and lasts 1.05 s: about half the time
    assert 0.35 < stalled / len(delays) < 0.65
    assert max(delays) <= 2.0


def test_bad_fault_settings_are_refused() -> None:
    for kw in ({"ber": -1.0}, {"ber": 0.6}, {"drop": 1.0}, {"stall_per_min": -1.0}):
        with pytest.raises(ValueError):
            FaultInjector(np.random.default_rng(0), **kw)  # type: ignore[arg-type]


def test_pty_is_raw_both_ways_with_pyserial() -> None:
    pty = Pty()
    try:
        ser = serial.Serial(pty.path, 115200, timeout=1.0)
        every = bytes(range(256)) * 4                     # includes \n, \r, ^C, ^S, ^Q, ^D, 0x00
        pty.write(every)
        got = ser.read(len(every))
        assert got == every
        ser.write(every)
        ser.flush()
        back = b""
        deadline = time.monotonic() + 2.0
        while len(back) < len(every) and time.monotonic() < deadline:
            back += pty.read()
        assert back == every
        ser.close()
    finally:
        pty.close()
    with pytest.raises(OSError):
        os.fstat(pty.master)
