"""Link-level HIL tests that run on the virtual board or, with --port, on a real one.

They touch the board only through its UART: HELLO, configuration round trips,
garbage on the line, the counters over a few seconds, and (with a reference
meter, or on the virtual steady bench) the gauges against the reference.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from gridtap.board.client import BoardClient
from gridtap.commands.calibrate import average_gauges
from gridtap.errors import UserError
from gridtap_fw import wire


def test_hello_describes_the_board(board: BoardClient) -> None:
    hello = board.hello()
    assert hello["proto"] == wire.PROTO_VERSION
    assert 1 <= hello["n_ct"] <= 8 and 0 <= hello["n_pulse"] <= 8
    assert hello["boot_count"] >= 1
    assert hello["reset_cause"] in range(6)


def test_config_round_trip_in_ram(board: BoardClient) -> None:
    before = board.config_get(wire.TARGET_BOARD, 0, (wire.P_SAVE_MIN,))[wire.P_SAVE_MIN]
    try:
        board.config_set(wire.TARGET_BOARD, 0, ((wire.P_SAVE_MIN, before + 7),))
        assert board.config_get(wire.TARGET_BOARD, 0, (wire.P_SAVE_MIN,)) == {wire.P_SAVE_MIN: before + 7}
    finally:
        board.config_set(wire.TARGET_BOARD, 0, ((wire.P_SAVE_MIN, before),))
    with pytest.raises(UserError, match="parameter not valid"):
        board.config_set(wire.TARGET_BOARD, 0, ((wire.P_INVERT, 1),))


def test_garbage_on_the_line_costs_no_good_frame(board: BoardClient) -> None:
    """Random bytes (some of them 0x00) then one HELLO_REQ: the board answers that very frame."""
    board.hello()
    for n in (1, 7, 100, 251, 600):
        board.port.write(os.urandom(n))
        board.send(wire.HELLO_REQ)     # sent once: no retries
        got = board.wait_for(lambda m: m.mtype == wire.HELLO, 2.0)
        assert got is not None, f"no HELLO after {n} garbage bytes"


def test_counters_never_decrease(board: BoardClient) -> None:
    n_ct = board.hello()["n_ct"]
    seen: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + 5.0
    counters = 0
    while time.monotonic() < deadline:
        for m in board.poll():
            if m.mtype != wire.COUNTER or m.flags & wire.FLAG_RETX:
                continue
            d = m.as_dict()
            now = (d["imp_wh"] * 1000 + d["imp_milli"], d["exp_wh"] * 1000 + d["exp_milli"])
            old = seen.get(d["sensor"], (0, 0))
            assert now[0] >= old[0] and now[1] >= old[1], (d, old)
            seen[d["sensor"]] = now
            counters += 1
    assert counters >= 1 and set(seen) <= set(range(n_ct))


def test_gauges_agree_with_the_reference(board: BoardClient, real_port: str | None,
                                         ref_meter: dict[str, Any] | None) -> None:
    """A steady load against a reference meter (--ref-meter), or the virtual steady bench's 10 A heater."""
    if real_port is not None and ref_meter is None:
        pytest.skip("needs --ref-meter FILE with the reference meter's readings of a steady load")
    ref = ref_meter or {"channel": 0, "volts": 230.0, "amps": 10.0, "watts": 2300.0}
    board.hello()
    got = average_gauges(board.gauges(int(ref["channel"]), 4.0)[1:])
    assert got.volts == pytest.approx(ref["volts"], rel=0.01)
    assert got.amps == pytest.approx(ref["amps"], rel=0.01)
    assert got.watts == pytest.approx(ref["watts"], rel=0.01)
