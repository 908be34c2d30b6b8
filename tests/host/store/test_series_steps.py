"""What a graph and the REST API's per-second series are made of (issue #15, items 3 and 4).

The board sends a reading a little more than once a second, stamped in ms: the RRD rows must still
hold exactly their step's energy, and the per-second series must have no unknown second, also for an
S0 meter between its pulses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from gridtap.store.live import Gauge, LiveStore
from gridtap.store.rrd import STEP, RrdSink, create_args, rrdtool_exe, stored_rates, window_energy

T0 = 1_796_550_000  # a step boundary
CT, PULSE = "a" * 32, "b" * 32
RATE = 1105  # mWh/s, about 4 kW


class Store:
    """The RRD store's update() as the sink sees it: what is written, in order."""

    def __init__(self) -> None:
        self.updates: dict[str, list[tuple[int, int]]] = {}
        self.errors = 0

    def update(self, sensor: str, t: int, value: int) -> bool:
        rows = self.updates.setdefault(sensor, [])
        if rows and t <= rows[-1][0]:
            return False
        rows.append((t, value))
        return True


def ct_readings(seconds: int, cadence_ms: int = 1050) -> list[tuple[int, int]]:
    """(Unix ms, counter mWh) of a CT at a steady RATE, one reading per cadence_ms."""
    out = []
    t = T0 * 1000 + 370
    while t < (T0 + seconds) * 1000:
        out.append((t, RATE * (t - T0 * 1000) // 1000))
        t += cadence_ms
    return out


def test_rows_hold_their_steps_energy_at_an_uneven_cadence() -> None:
    """Written at the reading's whole second, now and then a row got 9 s of energy (995 against
    1,105 mWh/s: the comb of notches in the demo's PV and grid curves)."""
    store = Store()
    sink = RrdSink(store)  # type: ignore[arg-type]
    for t_ms, total in ct_readings(300):
        sink.counter_ms(CT, "import", t_ms, total)
    rates = row_rates(store.updates[CT])[1:]  # the first stands for its whole minute
    assert len(rates) >= 22
    assert all(abs(r - RATE) <= 0.2 for r in rates), rates


def row_rates(updates: list[tuple[int, int]]) -> list[float]:
    """The rate of every complete 10 s row as rrdtool makes it: the counter interpolated linearly
    between updates at each step boundary."""
    at: list[float] = []
    for (t1, v1), (t2, v2) in zip(updates, updates[1:], strict=False):
        at += [v1 + (v2 - v1) * (b - t1) / (t2 - t1) for b in range(t1 - t1 % STEP + STEP, t2 + 1, STEP)
               if t1 < b]
    return [(b - a) / STEP for a, b in zip(at, at[1:], strict=False)]


def test_an_unchanged_counter_is_written_every_step() -> None:
    """An S0 meter pulsing every 100 s gets a value at every step boundary (its rows are its
    average, not "unknown" until the next pulse); a pulse's energy is not moved."""
    store = Store()
    sink = RrdSink(store)  # type: ignore[arg-type]
    pulses = {T0 * 1000 + 5_000 + k * 100_000: 1000 * (k + 1) for k in range(3)}
    for t_ms, total in ct_readings(300):
        for p_ms in [p for p in pulses if p <= t_ms]:
            sink.counter_ms(PULSE, "pulse", p_ms, pulses.pop(p_ms))
        sink.counter_ms(CT, "import", t_ms, total)
    steps = [t for t, _v in store.updates[PULSE] if t % STEP == 0]
    assert steps == list(range(T0, T0 + 300 - 3, STEP))  # the first at its minute
    values = dict(store.updates[PULSE])
    assert values[T0 + 100] == 1000 and values[T0 + 110] == 2000  # the pulse at +105 s in its row
    sink.flush_held()
    assert store.updates[PULSE][-1] == (T0 + 300, 3000)  # the last partial step is stored at stop
    assert store.updates[CT][-1][0] == T0 + 300


def test_an_outage_is_not_filled_with_a_standing_counter() -> None:
    """After a gap the board's resent readings are spread over it (DERIVE), not piled into a row."""
    store = Store()
    sink = RrdSink(store)  # type: ignore[arg-type]
    sink.counter_ms(CT, "import", T0 * 1000, 0)
    sink.counter_ms(PULSE, "pulse", T0 * 1000, 0)
    sink.counter_ms(CT, "import", (T0 + 600) * 1000, 600 * RATE)
    sink.counter_ms(PULSE, "pulse", (T0 + 599) * 1000, 5000)
    sink.counter_ms(PULSE, "pulse", (T0 + 601) * 1000, 6000)
    assert store.updates[PULSE] == [(T0, 0), (T0 + 599, 5000), (T0 + 601, 6000)]


def test_gauges_at_an_uneven_cadence_leave_no_unknown_second() -> None:
    """A gauge every 1.05 s stamped with its whole second skipped a second every 21 s: "nan" in
    the REST API's minute series."""
    live = LiveStore()
    t_ms = T0 * 1000 + 10
    while t_ms < (T0 + 120) * 1000:
        live.put_gauge(CT, PULSE, Gauge(t_ms // 1000, 3978.0, 4000.0, 230.0, 17.3, 0.99, 50.0))
        t_ms += 1050
    window = live.window(CT, T0 + 119)
    assert all(v is not None for _t, v in window), [t for t, v in window if v is None]
    assert {round(v or 0.0, 3) for _t, v in window} == {round(3978.0 / 3.6, 3)}
    assert {v for _t, v in live.window(PULSE, T0 + 119)} == {0.0}


def test_a_slow_s0_meter_has_a_rate_between_its_pulses() -> None:
    """One pulse (1 Wh) every 300 s is 12 W: between pulses the per-second series says so (it said
    "nan"), and it falls once the next pulse is overdue; none after the board's present."""
    live = LiveStore()
    for k in range(3):
        live.put_pulse(PULSE, float((T0 + 300 * k) * 1000), 1000 * k)
    for s in range(T0 + 600, T0 + 1000):  # the board's present, carried by the CT gauges
        live.put(CT, s, 1.0)
    rates = dict(live.window(PULSE, T0 + 720, seconds=120))
    assert all(abs(v - 1000 / 300) < 1e-9 for v in rates.values() if v is not None)
    assert None not in rates.values()
    late = dict(live.window(PULSE, T0 + 1000, seconds=2))
    v999 = late[T0 + 999]
    assert v999 is not None and abs(v999 - 1000 / 399) < 1e-9
    assert live.window(PULSE, T0 + 1001, seconds=1) == [(T0 + 1001, None)]


def test_stored_rates_give_the_counters_delta_over_any_window(tmp_path: Path) -> None:
    """Two hours of a varying counter in a real RRD: the 10 s rows hold only the last hour, the
    1 min rows the rest, the step in progress neither. The energy over a window is the counter's
    delta between its ends, to the mWh; the graph's consolidated mean times the span was not."""
    path = tmp_path / "s.rrd"
    subprocess.run(create_args(path, T0 + 50), check=True)  # the first value at a minute (RrdSink)
    counter, points = 0, []
    for k in range(6, 721):
        counter += (k * 7919) % 5000  # 0..500 mWh/s, changing every step
        points.append((T0 + 10 * k, counter))
    points.append((T0 + 7207, counter + 3456))  # the step in progress at the end
    subprocess.run([rrdtool_exe(), "update", str(path), *(f"{t}:{c}" for t, c in points)], check=True)
    dump = subprocess.run([rrdtool_exe(), "dump", str(path)], check=True, capture_output=True, text=True)
    pieces = stored_rates(dump.stdout)
    at = dict(points)
    for start, end in [(T0 + 60, T0 + 7207), (T0 + 60, T0 + 3600), (T0 + 1200, T0 + 7200),
                       (T0 + 3660, T0 + 7000), (T0, T0 + 86400)]:
        want = at.get(end, at[T0 + 7207]) - at[max(start, T0 + 60)]
        assert abs(window_energy(pieces, start, end) - want) < 0.01, (start - T0, end - T0)
