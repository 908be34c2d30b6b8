"""A simulated LuxPower inverter + datalogger on 127.0.0.1 and a client connected to it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gridtap.control.luxpower.client import LinkSettings, LuxClient
from gridtap_sim.luxpower import Datalogger, Inverter

DL, INV = "2222222222", "5555555555"
FAST = LinkSettings(reply_timeout_s=0.3, silent_s=30.0, backoff_min_s=0.02, backoff_max_s=0.2, keepalive_s=5)


@pytest.fixture
def lux() -> Iterator[tuple[Inverter, Datalogger]]:
    inv = Inverter(INV)
    dl = Datalogger(inv, DL, heartbeat_s=0.1, push_s=0.15).start()
    yield inv, dl
    dl.close()


@pytest.fixture
def client(lux: tuple[Inverter, Datalogger]) -> Iterator[LuxClient]:
    c = LuxClient("127.0.0.1", lux[1].port, DL, INV, FAST).start()
    assert c.wait_connected(5)
    end = time.monotonic() + 5
    while not c.stats["heartbeats"]:  # the datalogger has accepted the connection and speaks
        assert time.monotonic() < end
        time.sleep(0.01)
    yield c
    c.close()
