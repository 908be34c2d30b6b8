"""The simulated I2C EEPROM: page semantics, wear counts, torn pages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap_sim.eeprom import Eeprom, EepromError


def make() -> Eeprom:
    return Eeprom(32768, 64, 0.005, np.random.default_rng(3))


def test_blank_reads_ff_and_writes_read_back() -> None:
    e = make()
    assert e.read(100, 4) == b"\xff" * 4
    e.write(128, b"abc")
    assert e.read(127, 5) == b"\xffabc\xff"
    assert e.writes[128:131].tolist() == [1, 1, 1] and e.writes.sum() == 3


def test_write_past_page_end_wraps_within_the_page() -> None:
    e = make()
    e.write(60, b"ABCDEFGH")          # 4 bytes fit, 4 wrap to 0..3 of the same page
    assert e.read(60, 4) == b"ABCD"
    assert e.read(0, 4) == b"EFGH"
    assert e.read(64, 4) == b"\xff" * 4
    assert e.page_wraps == 1


def test_bad_requests_are_refused() -> None:
    e = make()
    for addr, data in ((32768, b"x"), (-1, b"x"), (0, b""), (0, b"x" * 65)):
        with pytest.raises(EepromError):
            e.write(addr, data)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 511), st.binary(min_size=1, max_size=64)), max_size=40))
def test_contents_and_wear_match_a_reference(ops: list[tuple[int, bytes]]) -> None:
    e = make()
    ref = bytearray(b"\xff" * 32768)
    wear = np.zeros(32768, dtype=np.int64)
    for page, data in ops:
        base = page * 64
        for i, b in enumerate(data):
            ref[base + i] = b
            wear[base + i] += 1
        e.write(base, data)
    assert bytes(e.data) == bytes(ref)
    assert np.array_equal(e.writes.astype(np.int64), wear)


def test_torn_page_mixes_new_and_garbage_and_counts_wear() -> None:
    e = make()
    old = bytes(range(64))
    new = bytes([0xA5]) * 64
    e.write(0, old)
    e.tear(0, new, 0.5)
    got = e.read(0, 64)
    same_as_new = sum(1 for b in got if b == 0xA5)
    assert 16 <= same_as_new <= 48          # about half the bytes made it
    assert got != new and got != old
    assert e.writes[:64].tolist() == [2] * 64
    assert e.torn == [(0, 64, 0.5)]
    e.tear(64, new, 0.0)                   # dead at the very start: nothing new written
    assert e.read(64, 64).count(0xA5) <= 3
