"""What the daemon believes of the board: limits from its board.json and the config, rate-limited logs.

A CRC only proves that a frame was not damaged on the wire, not that its
content is true (a firmware bug, a flipped bit before the CRC was taken, a
hostile device on the port). So the board session checks every tuple against
what the hardware can physically do before anything is stored:

* **Channels.** HELLO's `n_ct`/`n_pulse` are bounded by the channels
  board.json describes: a HELLO claiming 255 CTs is not 2,550 CONFIG_GETs.
* **Energy per interval.** A CT register cannot grow faster than the largest
  power the channel can report: the ADC's full-scale voltage times its
  full-scale current (`midscale × v_per_count` × `midscale × a_per_count`,
  62.6 kW on the reference board, where a sine at full scale is half that),
  times the channel's gain when it is above 1. A pulse register cannot grow
  faster than one pulse per debounce time (`debounce_ms`, at least 1 ms) at
  the meter constant's size of a pulse. `SLACK_S` covers the stamps' rounding.

* **Reactive power** (protocol 2 GAUGE, #17): a var beyond the channel's full
  scale is dropped, a Q+/Q- register step beyond what the channel can deliver
  too (`Reactive`, below, which also keeps the registers' host totals).

`RateLog` keeps any of this (and the board's EVENT text) from flooding the
log: a burst per key, then one line per interval saying how many were held back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gridtap.config import Config, SensorConfig
from gridtap.errors import UserError

SLACK_S = 2.0  # added to every interval: stamps are the ADC commit's, rounded to ms, up to 1 s apart
FUTURE_TOLERANCE_S = 60  # a tuple stamped further ahead of the host clock than this is refused


@dataclass(frozen=True)
class BoardLimits:
    """What board.json says the board has: its CT channels' full-scale power and its pulse inputs."""

    ct_max_w: tuple[float, ...]
    n_pulse: int
    baud: int | None = None  # the UART rate the firmware opens the link at (uart.baud)

    @property
    def n_ct(self) -> int:
        return len(self.ct_max_w)


def reference_board() -> Path | None:
    """hardware/board.json of the checkout this package runs from, if there is one."""
    for parent in Path(__file__).resolve().parents:
        p = parent / "hardware" / "board.json"
        if p.is_file():
            return p
    return None


def _positive(data: dict[str, Any], key: str, where: str) -> float:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v != v or v == float("inf"):
        raise UserError(f"{where}: {key} must be a positive number, got {v!r}")
    return float(v)


def load_board_limits(path: Path | None) -> BoardLimits:
    """The limits of the board described by path (None: the reference board of this installation)."""
    p = path or reference_board()
    if p is None:
        raise UserError("no board description: set [board] board_file to the board.json that "
                        "`gridtap flash` copied to the board (hardware/board.json in the gridtap sources)")
    try:
        raw = json.loads(p.read_text())
    except OSError as exc:
        raise UserError(f"board file {p}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"board file {p}: not JSON ({exc})") from exc
    adc = raw.get("adc") if isinstance(raw, dict) else None
    channels = adc.get("channels") if isinstance(adc, dict) else None
    if not isinstance(channels, list) or not channels or not all(isinstance(c, dict) for c in channels):
        raise UserError(f"board file {p}: no adc.channels list (is it a gridtap board.json?)")
    assert isinstance(adc, dict)
    mid = _positive(adc, "midscale", f"board file {p}: adc")
    volts = [c for c in channels if c.get("kind") == "voltage"]
    if len(volts) != 1:
        raise UserError(f"board file {p}: adc.channels must hold one voltage channel, found {len(volts)}")
    v_fs = mid * _positive(volts[0], "v_per_count", f"board file {p}: voltage channel")
    cts = [c for c in channels if c.get("kind") == "ct"]
    ct_max = tuple(v_fs * mid * _positive(c, "a_per_count", f"board file {p}: CT {c.get('name', i)}")
                   for i, c in enumerate(cts))
    pulses = raw.get("pulse_inputs", [])
    if not isinstance(pulses, list):
        raise UserError(f"board file {p}: pulse_inputs must be a list")
    uart = raw.get("uart")
    baud = uart.get("baud") if isinstance(uart, dict) else None
    if isinstance(baud, bool) or not isinstance(baud, int):
        baud = None
    return BoardLimits(ct_max, len(pulses), baud)


def check_fits(limits: BoardLimits, cfg: Config, board_file: str) -> None:
    """UserError if the config names a channel or input the board does not have, or another link rate."""
    for s in cfg.sensors:
        count, what = (limits.n_ct, "CT channel") if s.kind == "ct" else (limits.n_pulse, "pulse input")
        if s.index >= count:
            have = f"{what}s 0..{count - 1}" if count else f"no {what}s"
            raise UserError(f"{cfg.path.name}: sensor {s.name!r} is on {what} {s.index}, but the board "
                            f"({board_file}) has {have}")
    if limits.baud is not None and cfg.board.baud != limits.baud:
        raise UserError(f"{cfg.path.name}: [board] baud = {cfg.board.baud}, but the board ({board_file}) "
                        f"opens its link at {limits.baud}")


def max_rates(limits: BoardLimits, sensors: Iterable[SensorConfig]) -> dict[str, float]:
    """Per series (sensor id) the fastest its register can grow, in thousandths (mWh, mL) per second."""
    out: dict[str, float] = {}
    for s in sensors:
        if s.kind == "ct":
            if s.index >= limits.n_ct:
                continue  # a channel the board does not have: its tuples are unmapped anyway
            w = limits.ct_max_w[s.index] * max(1.0, s.gain)
            for sid, _role in s.series:
                out[sid] = w / 3.6  # W -> mWh per second
        else:
            per_pulse = 1e6 / s.meter_constant  # mWh (or mL) per pulse: constant per kWh (or m3)
            out[s.id] = per_pulse * 1000.0 / max(1, s.debounce_ms)
    return out


def printable(text: bytes, limit: int = 200) -> str:
    """Board text for a log line: control characters (newlines, ANSI escapes) shown as escapes."""
    s = text[:limit].decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in s)


class RateLog:
    """At most `burst` lines per key at once, then one per `every_s`, each saying how many were held back.

    Keys are bounded (`max_keys`); beyond them every key shares one budget.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, burst: int = 5,
                 mono: Callable[[], float] = time.monotonic, max_keys: int = 64) -> None:
        self.logger = logger
        self.every_s = every_s
        self.burst = burst
        self.mono = mono
        self.max_keys = max_keys
        self.state: dict[Any, list[float]] = {}  # key -> [tokens, last refill, held back]
        self.held_back = 0

    def log(self, level: int, key: Any, msg: str, *args: Any) -> bool:
        """Log msg % args unless key is over its budget (then count it); True if logged."""
        now = self.mono()
        if key not in self.state and len(self.state) >= self.max_keys:
            key = "\x00other"
        st = self.state.setdefault(key, [float(self.burst), now, 0.0])
        st[0] = min(float(self.burst), st[0] + (now - st[1]) / self.every_s)
        st[1] = now
        if st[0] < 1.0:
            st[2] += 1
            self.held_back += 1
            return False
        st[0] -= 1.0
        if st[2]:
            msg += " (%d more like it not logged)"
            args = (*args, int(st[2]))
            st[2] = 0
        self.logger.log(level, msg, *args)
        return True


# -- reactive power and energy ----------------------------------------------------------------------
# Reactive power and energy from the board's GAUGEs (protocol 2, issue #17).
#
# Every GAUGE of a CT carries its reactive power (var, + lagging) and its two
# reactive energy registers, Q+ and Q- (mvarh). The registers ride on the live
# GAUGE, not on an ACKed tuple; the board saves them to EEPROM with the real
# registers (record layout 2), so after a reset they usually go on from where
# they were, and start at 0 when the board lost its records. The host keeps one
# monotonic total per register in the counter store (store/epochs.py), under a
# series id derived from the CT's sensor id (`reactive_ids`), so a board reset
# neither counts a varh twice nor makes the total fall: a restored register
# continues, a lower one continues flat, by the epoch rules of the real registers.
#
# Nothing from the board is believed unchecked: a reactive power beyond the
# channel's full scale (board.json, as for real power) is dropped and counted
# (`Stats.rejected_reactive`), as is a register step larger than the channel
# could deliver since its last reading, of this boot or the one before (a restored
# register that jumped is no more believed than a running one). A refused reading
# moves no stored state; the next one carries the cumulative register.


def reactive_ids(sensor_id: str) -> tuple[str, str]:
    """The series ids of a CT's Q+ and Q- registers: 32 hex digits derived from its sensor id,
    so they need no configuration and stay the same across restarts and machines."""
    return tuple(hashlib.sha1(f"gridtap-reactive-{sign}:{sensor_id}".encode()).hexdigest()[:32]
                 for sign in ("q+", "q-"))  # type: ignore[return-value]


class CounterStore(Protocol):
    def update(self, sensor: str, epoch: int, raw: int, t: float) -> tuple[int | None, bool]: ...


class Reactive:
    """Checks a CT's reactive values and hands them to the outputs."""

    def __init__(self, store: CounterStore, max_w: dict[str, float], warn: RateLog) -> None:
        self.store = store
        self.max_w = max_w  # per CT sensor id: its full-scale power (W); none: unbounded
        self.warn = warn
        self.last: dict[str, tuple[int, int, float]] = {}  # series -> (epoch, raw, t) of the last taken
        self.rejected = 0
        self._ids: dict[str, tuple[str, str]] = {}

    def ids(self, sensor: str) -> tuple[str, str]:
        """reactive_ids, remembered (a GAUGE a second per CT)."""
        got = self._ids.get(sensor)
        if got is None:
            got = self._ids[sensor] = reactive_ids(sensor)
        return got

    def power(self, sensor: str, q_mvar: int) -> float | None:
        """The reactive power in var, or None (counted) if the channel cannot measure that much."""
        q = q_mvar / 1000.0
        lim = self.max_w.get(sensor)
        if lim is not None and abs(q) > lim:
            self.rejected += 1
            self.warn.log(logging.WARNING, ("var", sensor), "dropped reactive power of %s: %.1f var is more "
                          "than the channel's full scale (%.1f)", sensor, q, lim)
            return None
        return q

    def energy(self, sensor: str, epoch: int, t: float, raws: tuple[int, int]) -> list[tuple[str, int]]:
        """(series id, host total in mvarh) of the Q+ and Q- registers that are plausible."""
        out = []
        lim = self.max_w.get(sensor)
        for series, raw in zip(self.ids(sensor), raws, strict=True):
            last = self.last.get(series)
            if lim is not None and last is not None:  # across a reboot too: the outage is in t - last[2]
                step = lim / 3.6 * (max(0.0, t - last[2]) + SLACK_S)  # mvarh the channel can deliver
                if raw - last[1] > step:
                    self.rejected += 1
                    self.warn.log(logging.WARNING, ("varh", series), "dropped reactive register of %s: "
                                  "+%.3f varh in %.1f s is more than the channel can deliver", sensor,
                                  (raw - last[1]) / 1000, t - last[2])
                    continue
            total, _advanced = self.store.update(series, epoch, raw, t)
            if last is None or last[0] != epoch or raw >= last[1]:
                self.last[series] = (epoch, raw, t)
            if total is not None:
                out.append((series, total))
        return out


def fan_out(sinks: Iterable[Any], sensor: str, t: int, t_ms: int, q_var: float | None,
            totals: list[tuple[str, int]]) -> None:
    """The reactive power to every gauge sink (unit "var", on the CT's own sensor id) and the
    register totals to the sinks that store them (`reactive_counter`: the RRDs, MQTT)."""
    for sink in sinks:
        if q_var is not None and math.isfinite(q_var) and getattr(sink, "wants_gauges", True):
            sink.gauge(sensor, "import", t, q_var, "var")
        put: Callable[[str, int, int], None] | None = getattr(sink, "reactive_counter", None)
        if put is not None:
            for series, total in totals:
                put(series, t_ms, total)
