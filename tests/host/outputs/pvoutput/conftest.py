from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gridtap.outputs.pvoutput import PVOutputSettings, PVOutputUploader, parse_settings
from tests.support.pvoutput_server import PVOutputServer

KEY = "c0ffee0123456789abcdef0123456789deadbeef"
SID = 4242
TZ = ZoneInfo("Europe/Brussels")


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def at(*args: int) -> float:
    return datetime(*args, tzinfo=TZ).timestamp()  # type: ignore[arg-type,misc]


@pytest.fixture
def clock() -> Clock:
    return Clock(at(2024, 6, 15, 12, 0, 1))


@pytest.fixture
def server(clock: Clock) -> Iterator[PVOutputServer]:
    with PVOutputServer(clock) as srv:
        srv.add_system(SID, KEY, tz="Europe/Brussels")
        yield srv


@pytest.fixture
def make(server: PVOutputServer, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Callable[..., PVOutputUploader]]:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", KEY)
    made: list[PVOutputUploader] = []

    def factory(db: str = "pv.sqlite", requests_per_tick: int | None = 1, **extra: Any) -> PVOutputUploader:
        section: dict[str, Any] = {"system_id": SID, "timezone": "Europe/Brussels", "base_url": server.url,
                                   "interval": 5, "v1": "solar:energy", "v2": "solar:power",
                                   "v3": "house:energy", "v4": "house:power", "v6": "grid:voltage",
                                   "settle_s": 10}
        section.update(extra)
        section = {k: v for k, v in section.items() if v is not None}
        settings: PVOutputSettings = parse_settings(section)
        up = PVOutputUploader(settings, tmp_path / db, clock=clock, rng=random.Random(1),
                              requests_per_tick=requests_per_tick or 1)
        made.append(up)
        return up

    yield factory
    for up in made:
        up.close()


def run(up: PVOutputUploader, clock: Clock, seconds: float, step: float = 10.0,
        solar_w: float | Callable[[float], float] = 0.0, house_w: float | Callable[[float], float] = 500.0,
        volts: float = 231.0, counters: dict[str, float] | None = None) -> dict[str, float]:
    """Feed counters/gauges every `step` s for `seconds`, ticking as the daemon would."""
    c = counters if counters is not None else {"solar": 0.0, "house": 0.0}
    end = clock.t + seconds
    while clock.t < end:
        clock.t += step
        for name, p in (("solar", solar_w), ("house", house_w)):
            w = p(clock.t) if callable(p) else p
            c[name] += w * step / 3600.0
            up.observe_counter(name, clock.t, c[name])
        up.observe_gauge("grid", clock.t, volts, "V")
        up.tick()
    return c
