"""A new output is one module plus one registry line: config.py and daemon.py need no edit.

The throwaway output below appends every counter to a CSV file named in its
own [csvlog] section. Registered for the test only, it is parsed with line
numbers, started, fed and stopped by the real daemon against the fake board.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridtap import outputs
from gridtap.config import REQUIRED, Section, in_range, parse_config
from gridtap.errors import UserError
from tests.support.daemon import config_text, running_daemon
from tests.support.fakeboard import FakeBoard

EVENTS: list[str] = []


class CsvLog:
    section = "csvlog"
    live = False
    spooled = False

    @classmethod
    def parse(cls, sec: Section) -> tuple[Path, int]:
        sec.keys({"file", "every"})
        return sec.file(sec.get("file", str, REQUIRED)), sec.get("every", int, 1, in_range(1, 60))

    def __init__(self, settings: tuple[Path, int], ctx: outputs.OutputContext) -> None:
        self.path, self.every = settings
        self.names = {sid: s.name for s in ctx.cfg.sensors for sid, _role in s.series}

    def start(self) -> None:
        EVENTS.append("start")

    def stop(self) -> None:
        EVENTS.append("stop")

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        if t % self.every == 0:
            with self.path.open("a") as f:
                f.write(f"{t},{self.names[sensor]},{role},{total_milli}\n")

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        pass


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(outputs.REGISTRY, "csvlog", f"{__name__}:CsvLog")
    EVENTS.clear()


def test_a_registered_output_gets_the_counters(registered: None, short_tmp: Path) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    log = short_tmp / "counters.csv"
    text = config_text(board.path, short_tmp / "state") + f'\n[csvlog]\nfile = "{log}"\n'
    with running_daemon(board, text, short_tmp) as r:
        assert EVENTS == ["start"]
        now = int(time.time())
        for i in range(3):
            board.step(now - 3 + i, power_w=[3600.0])
        assert board.wait_acked()
        r.wait(lambda: log.exists() and len(log.read_text().splitlines()) >= 3)
    assert EVENTS == ["start", "stop"]
    rows = [line.split(",") for line in log.read_text().splitlines()]
    imports = [(int(t), name, int(total)) for t, name, role, total in rows if role == "import"]
    assert imports[-1] == (now - 1, "mains", 3000)  # 3 s at 3600 W: 3 Wh, in mWh


def test_its_section_is_checked_with_lines(registered: None, short_tmp: Path) -> None:
    base = config_text(short_tmp / "tty", short_tmp / "state")
    cfg = parse_config(base + '\n[csvlog]\nfile = "log.csv"\nevery = 10\n', short_tmp / "gridtap.toml")
    assert cfg.outputs["csvlog"] == (short_tmp / "log.csv", 10)
    cases = (('file = "x"\nevery = 0', "every = 0", "[csvlog] key 'every': must be 1..60"),
             ('fiel = "x"', "fiel", "[csvlog] key 'fiel': unknown key"),
             ("", "[csvlog]", "[csvlog] key 'file': is required"))
    for body, where, needle in cases:
        text = base + f"\n[csvlog]\n{body}\n"
        with pytest.raises(UserError) as info:
            parse_config(text, short_tmp / "gridtap.toml")
        line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith(where))
        assert f"gridtap.toml line {line}: {needle}" in str(info.value)


def test_an_unregistered_section_is_refused(short_tmp: Path) -> None:
    with pytest.raises(UserError, match="unknown key"):
        parse_config(config_text(short_tmp / "tty", short_tmp / "state") + "\n[csvlog]\nfile = 'x'\n")
