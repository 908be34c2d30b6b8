"""The LuxPower client against the simulated datalogger: heartbeats, pushes, faults, reconnects."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from gridtap.control.luxpower import registers as r
from gridtap.control.luxpower.client import InverterRefused, LinkError, LuxClient, SerialMismatch
from gridtap_sim.luxpower import Datalogger, Inverter
from tests.host.control.conftest import DL, FAST


def until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


def test_answers_heartbeats_and_gets_soc_with_its_age(lux: tuple[Inverter, Datalogger],
                                                      client: LuxClient) -> None:
    inv, _ = lux
    inv.battery.soc_pct = 63.0
    until(lambda: client.stats["pushes"] >= 2)
    assert client.stats["heartbeats"] >= 1
    soc, age = client.soc()
    assert soc == 63.0 and age is not None and 0 <= age < 1.0
    assert client.battery_w() == 0.0


def test_no_pushes_for_a_client_that_does_not_answer_heartbeats(lux: tuple[Inverter, Datalogger]) -> None:
    _, dl = lux
    c = LuxClient("127.0.0.1", dl.port, DL, lux[0].serial, FAST)
    c._handle = lambda raw: True  # type: ignore[method-assign]  # a client that ignores everything
    c.start()
    try:
        assert c.wait_connected(5)
        time.sleep(0.6)
        assert c.stats["pushes"] == 0
    finally:
        c.close()


def test_read_modify_write_of_register_21(lux: tuple[Inverter, Datalogger],
                                          client: LuxClient) -> None:
    inv, _ = lux
    before = client.read_hold(r.REG_FUNCTION)[0]
    client.write_single(r.REG_FUNCTION, before | r.BIT_AC_CHARGE)
    assert inv.hold[r.REG_FUNCTION] == before | r.BIT_AC_CHARGE == 62420
    client.write_multi(r.REG_AC_CHARGE_WINDOWS, r.windows_values([((1, 30), (4, 0))]))
    assert client.read_hold(r.REG_AC_CHARGE_WINDOWS, 2) == (r.pack_time(1, 30), r.pack_time(4, 0))


def test_reconnects_after_a_dropped_connection(lux: tuple[Inverter, Datalogger],
                                               client: LuxClient) -> None:
    _, dl = lux
    dl.drop()
    until(lambda: client.stats["reconnects"] >= 1 and client.connected.is_set())
    assert client.read_hold(r.REG_FUNCTION) == (62292,)


def test_stall_times_out_then_the_link_is_dropped_and_reconnected(lux: tuple[Inverter, Datalogger],
                                                                  client: LuxClient) -> None:
    _, dl = lux
    dl.stall(0.8)
    for _ in range(FAST.max_timeouts):
        with pytest.raises(LinkError, match="no reply"):
            client.read_hold(r.REG_FUNCTION)
    until(lambda: client.stats["reconnects"] >= 1 and client.connected.is_set())
    until(lambda: time.monotonic() > dl.stall_until)
    assert client.read_hold(r.REG_FUNCTION) == (62292,)


def test_watchdog_reconnects_a_silent_link(lux: tuple[Inverter, Datalogger]) -> None:
    _, dl = lux
    c = LuxClient("127.0.0.1", dl.port, DL, lux[0].serial, replace(FAST, silent_s=0.4)).start()
    try:
        until(lambda: c.stats["heartbeats"])
        dl.stall(1.0)  # connected, nothing sent: no heartbeat either
        until(lambda: c.stats["watchdog"] >= 1)
        until(lambda: c.stats["reconnects"] >= 1)
    finally:
        c.close()


def test_garbled_and_refused_replies(lux: tuple[Inverter, Datalogger],
                                     client: LuxClient) -> None:
    _, dl = lux
    dl.garble(1)
    with pytest.raises(LinkError):
        client.read_hold(r.REG_FUNCTION)
    assert client.stats["bad_frames"] >= 1
    dl.reject(r.REG_FUNCTION)
    with pytest.raises(InverterRefused, match="register 21: exception 3 .illegal data value"):
        client.write_single(r.REG_FUNCTION, 62420)


def test_wrong_inverter_serial_is_named(lux: tuple[Inverter, Datalogger]) -> None:
    inv, dl = lux
    c = LuxClient("127.0.0.1", dl.port, DL, "9999999999", FAST).start()
    try:
        assert c.wait_connected(5)
        until(lambda: c.wrong_serial is not None)  # the pushes name the real inverter
        with pytest.raises(SerialMismatch, match=f"has serial {inv.serial}.*inverter_serial is 9999999999"):
            c.read_hold(r.REG_FUNCTION)
    finally:
        c.close()


def test_reconnect_backoff_while_the_datalogger_is_away() -> None:
    inv = Inverter()
    dl = Datalogger(inv, DL)
    port = dl.port
    dl.sock.close()  # nothing listens there now
    c = LuxClient("127.0.0.1", port, DL, inv.serial, FAST).start()
    try:
        time.sleep(0.5)
        assert not c.connected.is_set()
        with pytest.raises(LinkError, match="not connected"):
            c.read_hold(r.REG_FUNCTION)
    finally:
        c.close()
