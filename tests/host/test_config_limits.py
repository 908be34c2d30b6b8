"""Finding 13.7: the host's config check and the board accept the same values (one table: wire.PARAMS).

Each case is a value in gridtap.toml, the board parameter the daemon sends for it,
and whether the board would take it; the config check must say the same.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridtap.config import parse_config
from gridtap.errors import UserError
from gridtap_fw import config as fwconfig
from gridtap_fw import wire

BOARD = '[board]\nport = "/dev/ttyUSB0"\n'
CT = '[[sensor]]\nname = "ct"\nid = "0123456789abcdef0123456789abcdef"\nkind = "ct"\nchannel = 0\n'
PULSE = ('[[sensor]]\nname = "p"\nid = "1123456789abcdef0123456789abcdef"\nkind = "pulse"\ninput = 0\n'
         "meter_constant = 1000\n")


def host_accepts(text: str) -> bool:
    try:
        parse_config(text)
    except UserError:
        return False
    return True


def board_accepts(target: int, pid: int, value: int) -> bool:
    return fwconfig.Config(3, 2).check(target, 0, ((pid, value),)) == 0


@given(st.floats(0.0001, 5000, allow_nan=False))
def test_gain(gain: float) -> None:
    host = host_accepts(BOARD + CT + f"gain = {gain!r}\n")
    if host:  # whatever the check lets through, the board takes
        assert board_accepts(wire.TARGET_CT, wire.P_GAIN_E6, round(gain * 1e6))
    assert host == (0.1 <= gain <= 10)


@given(st.floats(0.0001, 5_000_000, allow_nan=False))
def test_meter_constant(const: float) -> None:
    host = host_accepts(BOARD + PULSE.replace("meter_constant = 1000", f"meter_constant = {const!r}"))
    board = board_accepts(wire.TARGET_PULSE, wire.P_METER_CONST_MILLI, round(const * 1000))
    if host:
        assert board
    assert host == (1 <= const <= 100_000)


@given(st.integers(0, 70_000))
def test_debounce(ms: int) -> None:
    host = host_accepts(BOARD + PULSE + f"debounce_ms = {ms}\n")
    assert host == board_accepts(wire.TARGET_PULSE, wire.P_DEBOUNCE_MS, ms)


@pytest.mark.parametrize("key, value", [("gain", "0.05"), ("gain", "4000"), ("gain", "0.001")])
def test_gains_the_board_refuses_are_config_errors(key: str, value: str) -> None:
    with pytest.raises(UserError, match=r"'gain': must be 0\.1\.\.10\.0"):
        parse_config(BOARD + CT + f"{key} = {value}\n")


@pytest.mark.parametrize("extra, words", [
    ("debounce_ms = 0\n", r"'debounce_ms': must be 1\.\.10000"),
    ("debounce_ms = 65535\n", r"'debounce_ms': must be 1\.\.10000"),
])
def test_debounce_the_board_refuses_is_a_config_error(extra: str, words: str) -> None:
    with pytest.raises(UserError, match=words):
        parse_config(BOARD + PULSE + extra)


@pytest.mark.parametrize("const", ["0.001", "0.5", "4000000"])
def test_meter_constants_the_board_refuses_are_config_errors(const: str) -> None:
    with pytest.raises(UserError, match=r"'meter_constant': must be 1\.0\.\.100000\.0"):
        parse_config(BOARD + PULSE.replace("meter_constant = 1000", f"meter_constant = {const}"))


@pytest.mark.parametrize("baud", [9600, 19200, 921600])
def test_a_baud_rate_the_link_is_not_specified_for_is_refused(baud: int) -> None:
    with pytest.raises(UserError, match="'baud': must be one of 115200, 460800"):
        parse_config(BOARD + f"baud = {baud}\n" + CT)
