"""Reactive power and energy from protocol-2 GAUGEs: checked, kept per boot, passed to the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridtap.board.plausible import BoardLimits, reactive_ids
from gridtap.board.session import Session
from gridtap.config import BoardConfig, SensorConfig
from gridtap.store.epochs import CounterStore
from gridtap.store.live import LiveStore
from gridtap_fw import wire

T = 1_790_000_000
SID = "e" * 32
QPOS, QNEG = reactive_ids(SID)
FULL_SCALE_W = 23_000.0


class Sink:
    """Keeps the reactive gauges and register totals it is given."""

    def __init__(self) -> None:
        self.vars: list[tuple[int, float]] = []
        self.totals: list[tuple[str, int, int]] = []

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        pass

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit == "var":
            assert sensor == SID
            self.vars.append((t, value))

    def reactive_counter(self, series: str, t_ms: int, total: int) -> None:
        self.totals.append((series, t_ms, total))


def session(tmp_path: Path, sink: Sink) -> Session:
    s = Session(BoardConfig(), (SensorConfig("grid", SID, "ct", 0),), CounterStore(tmp_path / "c.sqlite"),
                LiveStore(), lambda frame: True, sinks=[sink], clock=lambda: T + 100.0,
                limits=BoardLimits((FULL_SCALE_W,), 0, None))
    return s


def feed(s: Session, mtype: int, seq: int, values: tuple[Any, ...]) -> None:
    for m in wire.Decoder().feed(wire.encode(mtype, seq, values)):
        s.handle(m)


def hello(s: Session, boot: int) -> None:
    feed(s, wire.HELLO, 0, (b"\x05" * 8, 0, 1, 0, wire.PROTO_VERSION, boot, 1, 0, 1, 0))


def gauge(s: Session, seq: int, t: int, q_mvar: int, qpos_mvarh: int, qneg_mvarh: int) -> None:
    feed(s, wire.GAUGE, seq, (0, t, 0, 1_000_000, 1_200_000, 230_000, 5_000, 8333, 50_000, q_mvar,
                              qpos_mvarh // 1000, qpos_mvarh % 1000, qneg_mvarh // 1000, qneg_mvarh % 1000))


def test_reactive_power_and_registers_reach_the_outputs_and_survive_a_reboot(tmp_path: Path) -> None:
    sink = Sink()
    s = session(tmp_path, sink)
    hello(s, 7)
    gauge(s, 1, T, 663_325, 1_000, 0)
    gauge(s, 2, T + 1, 663_000, 1_184, 5)
    assert sink.vars == [(T, 663.325), (T + 1, 663.0)]
    assert (QPOS, (T + 1) * 1000, 1_184) in sink.totals and (QNEG, (T + 1) * 1000, 5) in sink.totals
    assert s.live.reactive[SID] == (T + 1, 663.0)
    # A reboot of a board that lost its records: its registers start again at 0; the host totals
    # continue flat from there.
    hello(s, 8)
    gauge(s, 1, T + 5, -10_000, 3, 2)
    gauge(s, 2, T + 6, -10_000, 3, 4)
    last = {series: total for series, _t, total in sink.totals}
    assert last == {QPOS: 1_184, QNEG: 5 + 2}
    assert s.stats.rejected_reactive == 0


def test_registers_restored_from_eeprom_continue_across_a_reboot(tmp_path: Path) -> None:
    """The board saves Q+/Q- with its real registers (record layout 2): after a brownout it
    resumes from the save, which holds what it measured after its last GAUGE; that is counted,
    nothing twice, and the series goes on without a step back or a restart."""
    sink = Sink()
    s = session(tmp_path, sink)
    hello(s, 7)
    gauge(s, 1, T, 663_325, 1_000, 40)
    gauge(s, 2, T + 1, 663_000, 1_184, 40)
    hello(s, 8)  # the brownout save came 0.5 s after that GAUGE: 92 mvarh more on Q+
    gauge(s, 1, T + 9, 663_000, 1_276, 40)
    gauge(s, 2, T + 10, 663_000, 1_460, 40)
    q_pos = [tot for series, _t, tot in sink.totals if series == QPOS]
    assert q_pos == [1_000, 1_184, 1_276, 1_460]
    assert [tot for series, _t, tot in sink.totals if series == QNEG] == [40] * 4
    assert s.stats.rejected_reactive == 0


def test_a_restored_register_beyond_what_the_channel_could_deliver_is_refused(tmp_path: Path) -> None:
    sink = Sink()
    s = session(tmp_path, sink)
    hello(s, 7)
    gauge(s, 1, T, 1_000, 100, 0)
    hello(s, 8)
    # 2 s later the new boot claims 1000 varh more: 23 kvar for 2 s (+ slack) is 19 varh at most
    gauge(s, 1, T + 2, 1_000, 1_000_100, 0)
    assert [tot for series, _t, tot in sink.totals if series == QPOS] == [100]
    assert s.stats.rejected_reactive == 1
    gauge(s, 2, T + 3, 1_000, 105, 0)  # the board's next reading: the new epoch goes on from it
    assert [tot for series, _t, tot in sink.totals if series == QPOS] == [100, 105]


def test_implausible_reactive_values_are_dropped_and_counted(tmp_path: Path) -> None:
    sink = Sink()
    s = session(tmp_path, sink)
    hello(s, 7)
    gauge(s, 1, T, 1_000, 100, 0)
    gauge(s, 2, T + 1, int(FULL_SCALE_W * 1000) + 1, 101, 0)  # beyond the channel's full scale
    assert sink.vars == [(T, 1.0)]
    # Q+ grows by 1000 varh in one second: the channel can deliver 23 kvar * 3 s = 19 varh at most.
    gauge(s, 3, T + 2, 1_000, 1_000_100, 0)
    assert [tot for series, _t, tot in sink.totals if series == QPOS] == [100, 101]
    assert s.stats.rejected_reactive == 2
    gauge(s, 4, T + 3, 1_000, 102, 0)  # the next good reading carries on
    assert [tot for series, _t, tot in sink.totals if series == QPOS][-1] == 102


def test_reactive_ids_are_fixed_and_distinct() -> None:
    assert reactive_ids(SID) == (QPOS, QNEG) and QPOS != QNEG
    assert all(len(x) == 32 and int(x, 16) >= 0 for x in (QPOS, QNEG))
    assert reactive_ids("f" * 32) != (QPOS, QNEG)
