"""The board session: what the daemon does with every frame, and what it sends back.

* HELLO starts (or resumes) a counter epoch, sets the board clock and brings
  the board's sensor configuration in line with the config file: CONFIG_GET
  per channel, CONFIG_SET only where a value differs, then one COMMIT (none
  when nothing changed, so reconnects and resets cost the board no EEPROM
  write).
* COUNTER and PULSE become host totals through the epoch store and go to the
  outputs (RRDs, the live view, MQTT) and to the durable spool.
* Reliable frames are ACKed in batches: at once when there is no spool, and
  only after the spool commit that holds them when there is one (the board
  keeps and resends whatever was not ACKed).
* Commands that get no answer within 500 ms are sent again, up to 5 times.
* TIME drifting by 1 s or more gets a TIME_SET.

Tuples that arrive before the first HELLO of a connection are not ACKed: the
board sends them again once the session knows which epoch they belong to.
Nor are tuples that arrive while a store is failing (`gridtap.store.faults`):
they go to the counters and the live outputs, but not into the spool, and the
board keeps them until a resend finds the stores working again.

**Refused tuples** (docs/architecture.md, "Plausibility and clock steps"): a
tuple stamped before the board clock was set, more than FUTURE_TOLERANCE_S
ahead of the host clock, whose register fell within one boot, or whose step
is more than the channel can deliver in the interval (gridtap.board.plausible) moves
no stored state and reaches no output; it is counted, logged (rate-limited,
with its numbers) and ACKed: resending cannot change its content, and the
registers are cumulative, so the next accepted tuple carries its energy.
When the host clock steps back (marks from the future), every store is
rewound to the present so that nothing stays frozen. When the *board* clock
is set back, a reading stamped before its series' newest (within a minute)
with a register at least that one's is placed right after the newest
(`_late`), so every series' stamps and counters only grow.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridtap.board.plausible import (
    FUTURE_TOLERANCE_S,
    SLACK_S,
    BoardLimits,
    RateLog,
    Reactive,
    fan_out,
    max_rates,
    printable,
)
from gridtap.config import MAX_CT, MAX_PULSE, BoardConfig, SensorConfig
from gridtap.store.epochs import CounterStore, SeriesState
from gridtap.store.faults import StorageHealth
from gridtap.store.live import Gauge, LiveStore
from gridtap_fw import wire

log = logging.getLogger("gridtap.board.session")

_ACK_HEAD = struct.Struct("<BBBHB")


def ack_frame(seq: int, seqs: list[int]) -> bytes:
    """The ACK frame for seqs (1..ACK_MAX sorted seq numbers), byte for byte wire.encode(ACK, ...).

    One ACK goes out per burst; this builds it with two struct calls and a
    zlib CRC instead of the generic encoder's pack-and-parse-back check. The
    raw frame is under 254 bytes, so COBS is one length byte per zero-free run.
    """
    raw = _ACK_HEAD.pack(wire.PROTO_VERSION, wire.ACK, 0, seq, len(seqs)) + struct.pack(
        "<%dH" % len(seqs), *seqs)
    raw += struct.pack("<I", zlib.crc32(raw))
    return b"\x00" + b"".join(bytes((len(run) + 1,)) + run for run in raw.split(b"\x00")) + b"\x00"


RETRY_S = 0.5
# ACKs may wait this long to be batched (the board resends after 2 s, firmware RETX_MS).
# 0: one ACK frame per burst the link reads, which is already one per second at 1 Hz.
ACK_DELAY_S = 0.0
IDLE_WAIT_S = 2.0  # nothing pending: sleep until the board speaks (or 2 s)
MAX_TRIES = 5
TIME_SYNC_S = 1.0
REFUSED_KEEP = 256  # refused tuples remembered, so that their resends are not counted and logged again
LATE_MARKS = 8  # board clock set-backs remembered per series (`_late`): resends can outlive several
MIN_VALID_T = 1234567890  # Flukso's "the clock is set" threshold
NAK_REASONS = {
    1: "unknown type",
    2: "bad length",
    3: "bad parameter for that target",
    4: "bad value",
    5: "busy",
    6: "storage failure",
    7: "clock not set",
    8: "version",
    9: "read-only",
}
# The board's EVENT levels are syslog's lower half (docs/protocol.md): 0 debug, 1 info, 2 notice,
# 3 warning, 4 critical. Python has no notice: it is logged as info (a supply coming back is news,
# not a problem), and a brownout save is a warning, not an error.
EVENT_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.INFO, 3: logging.WARNING, 4: logging.CRITICAL}


class Sink(Protocol):
    """An output: cumulative totals (thousandths) and live values (unit "W", "L/day" or "V")."""

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None: ...

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None: ...


class Spool(Protocol):
    def add(self, sensor_id: str, ts: int, counter: int | float, token: Any = None) -> None: ...

    def maybe_commit(self) -> list[Any]: ...

    def commit_deadline(self) -> float | None: ...

    def rewind(self, to_ts: int) -> int: ...

    def newest(self, sensor_id: str, n: int = 2) -> list[tuple[int, int | float]]: ...


@dataclass
class Pending:
    mtype: int
    values: tuple[Any, ...]
    sent: float
    tries: int = 1
    what: str = ""
    on_ok: Callable[[], None] | None = None


@dataclass
class Stats:
    tuples: int = 0
    duplicates: int = 0
    unmapped: int = 0
    unsynced: int = 0
    before_hello: int = 0
    held: int = 0  # tuples not ACKed because a store was failing
    acks_sent: int = 0
    gauges: int = 0
    events: int = 0
    time_sets: int = 0
    config_pushes: int = 0
    naks: int = 0
    gave_up: int = 0
    # refused (counted, logged, ACKed; nothing stored): see the module's docstring
    rejected_future: int = 0      # stamped more than FUTURE_TOLERANCE_S ahead of the host clock
    rejected_backwards: int = 0   # register and stamp out of order within one boot (lower and later,
                                  # or higher and earlier)
    rejected_step: int = 0        # more energy than the channel can deliver in the interval
    rejected_reactive: int = 0    # reactive power or register steps beyond the channel (board/plausible.py)
    gauges_future: int = 0        # gauges stamped ahead of the host clock (dropped)
    clock_steps_back: int = 0     # the host clock stepped back behind stored marks: stores rewound
    late_stamped: int = 0         # readings at or above the newest register, stamped before it (the
                                  # board clock was set back): placed right after the newest (_late)
    hello_channels_clamped: int = 0  # HELLOs claiming more channels than board.json has
    events_not_logged: int = 0    # board EVENTs held back by the log's rate limit
    # the board's EEPROM as the host sees it: writes it asked for and what the board reported
    commits: int = 0              # COMMITs of the sensor config this daemon sent (one write each)
    brownout_saves: int = 0       # EVENT "brownout: counters saved" since the daemon started
    eeprom_faults: int = 0        # EVENT "EEPROM read or write failed"
    epochs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counters (not the epoch list) by name, for the REST API and the bench."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class Session:
    def __init__(
        self,
        board: BoardConfig,
        sensors: tuple[SensorConfig, ...],
        store: CounterStore,
        live: LiveStore,
        send: Callable[[bytes], bool],
        sinks: list[Sink] | None = None,
        spool: Spool | None = None,
        clock: Callable[[], float] = time.time,
        storage: StorageHealth | None = None,
        mono: Callable[[], float] = time.monotonic,
        limits: BoardLimits | None = None,
    ) -> None:
        self.board = board
        self.ct = {s.index: s for s in sensors if s.kind == "ct" and s.enabled}
        self.pulse = {s.index: s for s in sensors if s.kind == "pulse" and s.enabled}
        self.sensors = sensors
        self.store = store
        self.live = live
        self._send = send
        self.sinks = sinks or []
        # Only outputs that use live values get them (RRDs store energy only).
        self.gauge_sinks = [k for k in self.sinks if getattr(k, "wants_gauges", True)]
        self.spool = spool
        self.storage = storage
        self.clock = clock
        self.mono = mono
        self.seq = 0
        self.pending: dict[int, Pending] = {}
        self.to_ack: list[int] = []
        self.ack_due = 0.0
        self.epoch: int | None = None
        self.hello: dict[str, Any] | None = None
        self.hello_t: float | None = None  # host time of the last HELLO
        self.config_wait: set[int] = set()  # CONFIG_GET and CONFIG_SET seqs still unanswered
        self.config_get: dict[tuple[int, int], tuple[int, tuple[tuple[int, Any], ...], str]] = {}
        self.config_sets = 0
        self.config_failed = False
        self.stats = Stats()
        self.last_time_set = -1e9
        self.last_uptime = 0  # the board's uptime in its last TIME: going back means a reboot
        self.newest_out: dict[str, int] = {}  # per series: ms stamp of the newest reading passed to outputs
        # per series: the register of its newest-stamped reading, and (epoch, stamp, register) of
        # that reading each time the board clock was set back behind it (`_late`; the last
        # LATE_MARKS: a resend can come after the clock was set back again)
        self.newest_raw: dict[str, int] = {}
        self.set_back: dict[str, list[tuple[int, float, int]]] = {}
        self.routes = self._routes_of()
        self.limits = limits
        # per series the fastest its register can grow (thousandths per second); none: unbounded
        self.max_rate = max_rates(limits, sensors) if limits is not None else {}
        full_scale_w = {s.id: self.max_rate[s.id] * 3.6 for s in sensors
                        if s.kind == "ct" and s.id in self.max_rate}
        self.reactive = Reactive(store, full_scale_w, RateLog(log, mono=mono))
        if spool is not None:
            self._take_up(spool)
        # a restart after the host clock stepped back finds the stores' marks in the future
        self.newest_t = int(max((st.t for st in store.state.values()), default=0))  # newest accepted
        self.warn = RateLog(log, mono=mono)
        self.refused: dict[tuple[int, int], None] = {}  # (epoch, seq) of refused tuples, newest last
        self.events_seen: dict[tuple[int, int], None] = {}  # (epoch, seq) of EVENTs taken, newest last
        self.event_log = RateLog(log, every_s=10.0, burst=20, mono=mono)

    # ------------------------------------------------------------ sending

    def _frame(self, mtype: int, values: tuple[Any, ...], seq: int, flags: int = 0) -> bool:
        return self._send(wire.encode(mtype, seq, values, flags))

    def command(
        self,
        mtype: int,
        values: tuple[Any, ...] = (),
        what: str = "",
        on_ok: Callable[[], None] | None = None,
    ) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFF
        self.pending[seq] = Pending(
            mtype, values, self.mono(), what=what or wire.TYPE_NAMES[mtype], on_ok=on_ok
        )
        self._frame(mtype, values, seq)
        return seq

    def connected(self) -> None:
        """A (re)opened port: forget the epoch until the board says HELLO again."""
        self.epoch = None
        self.pending.clear()
        self.to_ack.clear()
        self.config_wait.clear()
        self.config_get.clear()
        self.command(wire.HELLO_REQ)

    def tick(self) -> None:
        """Retries, spool-driven ACKs and the ACK flush; call after every read."""
        now = self.mono()
        for seq, p in list(self.pending.items()):
            if now - p.sent < RETRY_S:
                continue
            if p.tries >= MAX_TRIES:
                del self.pending[seq]
                self.stats.gave_up += 1
                if p.mtype in (wire.CONFIG_GET, wire.CONFIG_SET, wire.COMMIT):
                    self.config_failed = True
                    self.config_wait.discard(seq)
                log.error("board did not answer %s after %d tries", p.what, p.tries)
                if p.mtype == wire.HELLO_REQ:
                    self.command(wire.HELLO_REQ)  # keep asking: without HELLO nothing is ACKed
                continue
            p.tries += 1
            p.sent = now
            self._frame(p.mtype, p.values, seq, wire.FLAG_RETX)
        if self.spool is not None:
            for token in self.spool.maybe_commit():
                epoch, seq = token
                if epoch == self.epoch:
                    self._ack_later(seq)
        if self.to_ack and self.mono() >= self.ack_due:
            self.flush_acks()

    def _ack_later(self, seq: int) -> None:
        if not self.to_ack:
            self.ack_due = self.mono() + ACK_DELAY_S
        self.to_ack.append(seq)
        if len(self.to_ack) >= wire.ACK_MAX:
            self.flush_acks()

    def wait_hint(self, longest: float = IDLE_WAIT_S) -> float:
        """How long the link may wait for bytes before tick() has something to do (at most longest).

        The earliest of: a command's retry, the ACK flush, the spool commit
        that will ACK what it holds. With none of them the daemon sleeps until
        the board speaks (or longest).
        """
        due = None
        if self.pending:
            due = min(p.sent for p in self.pending.values()) + RETRY_S
        if self.to_ack and (due is None or self.ack_due < due):
            due = self.ack_due
        if self.spool is not None:
            commit_at = self.spool.commit_deadline()
            if commit_at is not None and (due is None or commit_at < due):
                due = commit_at
        if due is None:
            return longest
        return min(longest, max(0.0, due - self.mono()))

    def flush_acks(self) -> None:
        while self.to_ack:
            batch = sorted(set(self.to_ack[: wire.ACK_MAX]))
            del self.to_ack[: wire.ACK_MAX]
            self._send(ack_frame(self.seq, batch))
            self.seq = (self.seq + 1) & 0xFFFF
            self.stats.acks_sent += 1

    # ------------------------------------------------------------ receiving

    def handle(self, msg: wire.Message) -> None:
        t = msg.mtype
        if t == wire.COUNTER or t == wire.PULSE:
            self._tuple(msg)
        elif t == wire.GAUGE:
            self._gauge(msg)
        elif t == wire.HELLO:
            self._hello(msg)
        elif t == wire.TIME:
            self._time(msg)
        elif t == wire.ACK:
            for seq in msg.values[0]:
                p = self.pending.pop(seq, None)
                if p is not None:
                    self._done(seq, p)
        elif t == wire.NAK:
            self._nak(msg)
        elif t == wire.EVENT:
            self._event(msg)
        elif t == wire.CONFIG:
            self._config_reply(msg)
        else:
            log.debug("ignoring %s from the board", wire.TYPE_NAMES.get(t, t))

    def _done(self, seq: int, p: Pending) -> None:
        if seq in self.config_wait:
            self.config_wait.discard(seq)
            self._config_progress()
        if p.on_ok is not None:
            p.on_ok()

    def _config_reply(self, msg: wire.Message) -> None:
        """The board's current values for one target: set only what differs from the config."""
        target, index, have_items = msg.values
        entry = self.config_get.pop((target, index), None)
        if entry is None:
            return
        seq, items, what = entry
        self.pending.pop(seq, None)
        self.config_wait.discard(seq)
        have = dict(have_items)
        if any(have.get(pid) != value for pid, value in items):
            self._config_set(target, index, items, what)
        self._config_progress()

    def _config_set(self, target: int, index: int, items: tuple[tuple[int, Any], ...], what: str) -> None:
        seq = self.command(wire.CONFIG_SET, (target, index, items), what=f"CONFIG_SET for {what}")
        self.config_wait.add(seq)
        self.config_sets += 1

    def _config_progress(self) -> None:
        if self.config_wait or self.config_failed:
            return
        if self.config_sets == 0:
            log.info("board config already matches the config file: nothing to write")
            return
        self.config_sets = 0
        self.stats.commits += 1
        self.command(wire.COMMIT, (wire.COMMIT_CONFIG,), what="COMMIT of the sensor config",
                     on_ok=lambda: log.info("board config committed"))

    def _nak(self, msg: wire.Message) -> None:
        ref_seq, ref_type, reason = msg.values
        p = self.pending.pop(ref_seq, None)
        self.stats.naks += 1
        what = p.what if p is not None else wire.TYPE_NAMES.get(ref_type, str(ref_type))
        log.error("board refused %s: %s", what, NAK_REASONS.get(reason, f"reason {reason}"))
        if ref_seq in self.config_wait:
            self.config_wait.discard(ref_seq)
            for key, (seq, items, what) in list(self.config_get.items()):
                if seq == ref_seq:  # the board cannot report these: write them instead
                    del self.config_get[key]
                    self._config_set(key[0], key[1], items, what)
                    return
            self.config_failed = True

    def _hello(self, msg: wire.Message) -> None:
        h = msg.as_dict()
        for seq, p in list(self.pending.items()):
            if p.mtype == wire.HELLO_REQ:
                del self.pending[seq]
        first = (
            self.hello is None
            or self.hello["boot_count"] != h["boot_count"]
            or self.hello["board_id"] != h["board_id"]
            or self.epoch is None
        )
        self.hello = h
        self.hello_t = self.clock()
        epoch = self.store.begin_epoch(h["board_id"], h["boot_count"], h["reset_cause"])
        if epoch != self.epoch:
            log.info(
                "board %s boot %d (reset cause %d, fw %d.%d.%d): counter epoch %d",
                h["board_id"].hex(),
                h["boot_count"],
                h["reset_cause"],
                h["fw_major"],
                h["fw_minor"],
                h["fw_patch"],
                epoch,
            )
            self.stats.epochs.append(epoch)
        self.epoch = epoch
        self.last_uptime = 0
        self.to_ack.clear()
        if first:
            # Commands to an earlier boot died with its RAM (a flicker reboots the board during
            # the config check): left pending they would time out as false failures and keep a
            # stale TIME_SET from being sent afresh. This boot gets its own clock set and check.
            self.pending.clear()
        self.set_time()
        if first:
            self.push_config(*self._channels(h["n_ct"], h["n_pulse"]))

    def _channels(self, n_ct: int, n_pulse: int) -> tuple[int, int]:
        """HELLO's channel counts, bounded by board.json (or the most any board has)."""
        max_ct, max_pulse = (MAX_CT, MAX_PULSE) if self.limits is None else (
            self.limits.n_ct, self.limits.n_pulse)
        if n_ct <= max_ct and n_pulse <= max_pulse:
            return n_ct, n_pulse
        self.stats.hello_channels_clamped += 1
        self.warn.log(logging.ERROR, "hello-channels",
                      "board says it has %d CT channels and %d pulse inputs, but its board file has "
                      "%d and %d: configuring only those", n_ct, n_pulse, max_ct, max_pulse)
        return min(n_ct, max_ct), min(n_pulse, max_pulse)

    def set_time(self) -> None:
        if any(p.mtype == wire.TIME_SET for p in self.pending.values()):
            return
        now = self.clock()
        s = int(now)
        self.command(wire.TIME_SET, (s, min(999, int((now - s) * 1000))), what="TIME_SET")
        self.stats.time_sets += 1
        self.last_time_set = self.mono()

    def _time(self, msg: wire.Message) -> None:
        unix_s, ms, uptime, synced = msg.values
        if self.epoch is not None and uptime < self.last_uptime:
            # The board rebooted and its HELLO was lost on the wire: take no tuple into the old
            # epoch (they stay unACKed, so the board resends them) until HELLO names the new boot.
            log.warning("board uptime went back (%d -> %d ms) without a HELLO: asking for one",
                        self.last_uptime, uptime)
            self.epoch = None
            self.command(wire.HELLO_REQ)
        self.last_uptime = uptime
        drift = unix_s + ms / 1000.0 - self.clock()
        if not synced or abs(drift) >= TIME_SYNC_S:
            log.info("board clock %s by %.3f s: setting it", "not set" if not synced else "off", drift)
            self.set_time()

    def config_frames(
        self, n_ct: int, n_pulse: int
    ) -> list[tuple[int, int, tuple[tuple[int, Any], ...], str]]:
        out: list[tuple[int, int, tuple[tuple[int, Any], ...], str]] = []
        board_items: list[tuple[int, Any]] = []
        if self.board.save_wh is not None:
            board_items.append((wire.P_SAVE_WH, self.board.save_wh))
        if self.board.save_min is not None:
            board_items.append((wire.P_SAVE_MIN, self.board.save_min))
        if board_items:
            out.append((wire.TARGET_BOARD, 0, tuple(board_items), "board settings"))
        for i in range(n_ct):
            s = self.ct.get(i)
            if s is None:
                out.append((wire.TARGET_CT, i, ((wire.P_ENABLED, 0),), f"ct channel {i} (off)"))
                continue
            items: list[tuple[int, Any]] = [(wire.P_ENABLED, 1), (wire.P_SENSOR_ID, bytes.fromhex(s.id))]
            if s.export_id:
                items.append((wire.P_SENSOR_ID_EXPORT, bytes.fromhex(s.export_id)))
            items += [
                (wire.P_GAIN_E6, round(s.gain * 1e6)),
                (wire.P_PHASE_MDEG, s.phase_mdeg),  # calibration plus the line (L2 +120 deg)
                (wire.P_INVERT, int(s.invert)),
            ]
            out.append((wire.TARGET_CT, i, tuple(items), f"ct channel {i} ({s.name})"))
        for i in range(n_pulse):
            s = self.pulse.get(i)
            if s is None:
                out.append((wire.TARGET_PULSE, i, ((wire.P_ENABLED, 0),), f"pulse input {i} (off)"))
                continue
            items = [
                (wire.P_ENABLED, 1),
                (wire.P_SENSOR_ID, bytes.fromhex(s.id)),
                (wire.P_METER_CONST_MILLI, round(s.meter_constant * 1000)),
                (wire.P_DEBOUNCE_MS, s.debounce_ms),
                (wire.P_TRIGGER, 1 if s.trigger == "level" else 0),
                (wire.P_UNIT, 1 if s.unit == "litre" else 0),
            ]
            out.append((wire.TARGET_PULSE, i, tuple(items), f"pulse input {i} ({s.name})"))
        return out

    def push_config(self, n_ct: int, n_pulse: int) -> None:
        for s in self.sensors:
            have = n_ct if s.kind == "ct" else n_pulse
            if s.enabled and s.index >= have:
                what = "channel" if s.kind == "ct" else "input"
                log.error(
                    "sensor %s: %s %s %d, but the board has only %d", s.name, s.kind, what, s.index, have
                )
        self.config_failed = False
        self.config_wait.clear()
        self.config_get.clear()
        self.config_sets = 0
        self.stats.config_pushes += 1
        # Ask first and write only what differs: every COMMIT costs the board an EEPROM write,
        # and HELLO comes after every reconnect and every board reset.
        for target, index, items, what in self.config_frames(n_ct, n_pulse):
            params = tuple(pid for pid, _value in items)
            seq = self.command(wire.CONFIG_GET, (target, index, params), what=f"CONFIG_GET for {what}")
            self.config_wait.add(seq)
            self.config_get[(target, index)] = (seq, items, what)

    def _routes_of(self) -> dict[tuple[int, int], tuple[tuple[str, str, int, int, bool], ...]]:
        """(COUNTER or PULSE, channel) -> per series (sensor id, role, index of the whole units in the
        values, index of the thousandths, litre?): worked out once instead of for every tuple."""
        out: dict[tuple[int, int], tuple[tuple[str, str, int, int, bool], ...]] = {}
        for ch, s in self.ct.items():
            series = [(s.id, "import", 3, 4, False)]
            if s.export_id:
                series.append((s.export_id, "export", 5, 6, False))
            out[(wire.COUNTER, ch)] = tuple(series)
        for i, p in self.pulse.items():
            out[(wire.PULSE, i)] = ((p.id, "pulse", 3, 4, p.unit == "litre"),)
        return out

    def _tuple(self, msg: wire.Message) -> None:
        epoch = self.epoch
        if epoch is None:
            self.stats.before_hello += 1
            if not any(p.mtype == wire.HELLO_REQ for p in self.pending.values()):
                self.command(wire.HELLO_REQ)
            return
        stats = self.stats
        stats.tuples += 1
        v = msg.values
        routes = self.routes.get((msg.mtype, v[0]))
        if not routes:
            stats.unmapped += 1
            self._ack_later(msg.seq)
            return
        t = v[1]
        ms = v[2]
        if t <= MIN_VALID_T:
            # Stamped before the board clock was set: its time is unknown and the board never
            # restamps it, so it moves no stored state (an unset-clock register once raised the
            # high-water mark, and a later reboot turned that into a phantom jump). ACKed: the next
            # tuple with a set clock carries the cumulative register.
            stats.unsynced += 1
            self._ack_later(msg.seq)
            return
        refused = (epoch, msg.seq)
        if msg.flags & wire.FLAG_RETX and refused in self.refused:
            self._ack_later(msg.seq)  # a resend of one refused before (its ACK crossed it): once is enough
            return
        if not self._plausible(msg, routes, epoch, t, ms):
            self.refused[refused] = None
            if len(self.refused) > REFUSED_KEEP:
                del self.refused[next(iter(self.refused))]
            self._ack_later(msg.seq)  # resending cannot change it; the next good tuple carries its energy
            return
        if t > self.newest_t:
            self.newest_t = t
        held = self.storage is not None and self.storage.degraded
        spool = None if held else self.spool
        spooled = False
        for sensor, role, hi, lo, litre in routes:
            spooled |= self.deliver(sensor, role, epoch, v[hi] * 1000 + v[lo], t, ms, spool,
                                    (epoch, msg.seq), litre)
        if held:
            stats.held += 1
        elif not spooled:  # no spool commit will carry its token (no spool, or no point made of it)
            self._ack_later(msg.seq)

    def deliver(self, sensor: str, role: str, epoch: int, raw: int, t: int, ms: int, spool: Spool | None,
                token: Any = None, litre: bool = False) -> bool:
        """One accepted register of one series, board or virtual (gridtap.inputs.virtual), into the
        counter store (epochs), the spool, the live view and the sinks; True if the spool took it."""
        tf = t + ms / 1000.0
        newest = self._late(sensor, self.store.state.get(sensor), epoch, raw, tf)
        total, advanced = self.store.update(sensor, epoch, raw, tf)
        if not advanced:
            self.stats.duplicates += 1
        if total is None:
            return False  # an older reading whose total is not known: a point of it would be made up
        if self.store.state[sensor].t == tf:
            self.newest_raw[sensor] = raw
        pt, pt_ms = t, t * 1000 + ms
        if newest is not None:
            # The board clock was set back (a drift correction): this register is at least the
            # newest-stamped reading's, stamped before it. At its own stamp it would be a total
            # above points already stored (or uploaded) after that stamp; it was read after the
            # newest reading, so its point goes right after that one (docs/architecture.md,
            # "Board clock steps").
            self.stats.late_stamped += 1
            if not advanced:
                return False  # a resend: a point after the newest holds this total or more already
            pt_ms = max(round(newest * 1000), self.newest_out.get(sensor, -1) + 1)
            pt = pt_ms // 1000
        spooled = False
        if spool is not None:
            spool.add(sensor, pt, total / 1000.0, token=token)
            spooled = True
        # Outputs that keep only the latest value (RRD, MQTT's retained counter) get a series'
        # readings in time order only: a resent (RETX) tuple older than one already passed on
        # is for the spool (above), never a step back for them.
        if pt_ms <= self.newest_out.get(sensor, -1):
            return spooled
        self.newest_out[sensor] = pt_ms
        # a pulse rate needs the reading's own interval: none for a reading placed after the newest
        pulse = role == "pulse" and newest is None
        rate = self.live.put_pulse(sensor, float(pt_ms), total) if pulse else None
        for sink in self.sinks:
            # an output that places a reading within its second (the RRDs) takes its stamp in ms
            counter_ms = getattr(sink, "counter_ms", None)
            if counter_ms is not None:
                counter_ms(sensor, role, pt_ms, total)
            else:
                sink.counter(sensor, role, pt, total)
        if rate is not None:
            for sink in self.gauge_sinks:
                sink.gauge(sensor, role, t, rate * (86.4 if litre else 3.6), "L/day" if litre else "W")
        return spooled

    # ------------------------------------------------------------ plausibility and clock steps

    def _plausible(self, msg: wire.Message, routes: tuple[tuple[str, str, int, int, bool], ...],
                   epoch: int, t: int, ms: int) -> bool:
        """False (counted and logged) for a tuple from the future, a register that fell within one
        boot (or rose at a stamp before the boot's newest reading), or a step larger than the
        channel can deliver since the last reading."""
        now = self.clock()
        # A host clock that is not set (a router before NTP) cannot judge stamps: neither refuse
        # them as from the future nor rewind the stores to 1970.
        host_set = now > MIN_VALID_T
        if host_set and t > now + FUTURE_TOLERANCE_S:
            self.stats.rejected_future += 1
            self.warn.log(logging.WARNING, ("future", msg.mtype, msg.values[0]),
                          "refused %s of %s %d stamped %d, %.0f s ahead of the host clock (%d): "
                          "setting the board clock", wire.TYPE_NAMES[msg.mtype], _what(msg.mtype),
                          msg.values[0], t, t - now, int(now))
            self.set_time()
            return False
        if host_set and self.newest_t > now + FUTURE_TOLERANCE_S:
            self.rewind(now)
        tf = t + ms / 1000.0
        v = msg.values
        for sensor, _role, hi, lo, _litre in routes:
            st = self.store.state.get(sensor)
            if st is None:
                continue
            raw = v[hi] * 1000 + v[lo]
            if raw < st.raw:
                if st.epoch == epoch and tf > st.t:
                    if msg.flags & wire.FLAG_RETX:
                        # A resend of a tuple sent before a later (higher) one, stamped by a board
                        # clock that TIME_SET has moved back since: its energy is in the later one.
                        self.stats.duplicates += 1
                        return False
                    return self._out_of_order(msg, sensor, raw, tf, st, "at %.3f is below")
                continue  # a resent older reading, or a new boot that lost its registers (epochs.py)
            if raw > st.raw and st.epoch == epoch and tf < st.t:
                # A higher register stamped before the newest reading of the same boot: the board's
                # registers only grow, so stamp and register disagree. Taken, it would move the total
                # forwards at a time before readings already stored, and reach the spool as an
                # uploader's oldest point above the ones after it. The next reading carries its energy.
                if st.t - tf > FUTURE_TOLERANCE_S:
                    return self._out_of_order(msg, sensor, raw, tf, st, "stamped %.3f, before")
                # Within a minute: a board clock TIME_SET has just moved back (a drift correction).
                # The reading is taken as before (the stores keep their newest marks; the e2e day
                # checks every stage against it); only a stamp far in the past is refused.
            rate = self.max_rate.get(sensor)
            if rate is None:
                continue
            dt = max(0.0, tf - st.t)
            limit = rate * (dt + SLACK_S)
            if raw - st.raw > limit:
                self.stats.rejected_step += 1
                self.warn.log(logging.WARNING, ("step", sensor),
                              "refused %s of series %s: +%.3f in %.1f s (register %.3f -> %.3f) is more "
                              "than the channel can deliver (at most %.3f)", wire.TYPE_NAMES[msg.mtype],
                              sensor, (raw - st.raw) / 1000, dt, st.raw / 1000, raw / 1000, limit / 1000)
                return False
        return True

    def _late(self, sensor: str, st: SeriesState | None, epoch: int, raw: int, tf: float) -> float | None:
        """The stamp to place this reading after, when the board clock was set back behind it
        (docs/architecture.md, "Board clock steps"); None: its own stamp is right.

        A reading of the series' current boot stamped before its newest-stamped one with a register
        at least that one's (the highest register stands in for it after a restart) was read after
        it; so was one stamped at the newest's very millisecond with a higher register (a set-back
        of exactly one interval: the RRDs take one update per millisecond). So was a resend of such
        a reading, whose register may be below the highest by then: stamped before a newest
        reading that the clock was set back behind, at or above that one's register. A lower
        register stamped earlier is an older reading's resend."""
        if st is None or st.epoch != epoch:
            return None
        top = self.newest_raw.get(sensor, st.raw)
        marks = [m for m in self.set_back.get(sensor, ()) if m[0] == epoch]
        if (tf < st.t and raw >= top) or (tf == st.t and raw > top):
            if not marks or marks[-1][1] != st.t:
                self.set_back[sensor] = (marks + [(epoch, st.t, top)])[-LATE_MARKS:]
            return st.t
        for _epoch, t_back, raw_back in reversed(marks):
            # at the register the newest had when the clock went back behind it, or above: read
            # after it (a reading from before with that register stood still since: its total is
            # the newest's, so no point of it is lost either)
            if tf < t_back and raw >= raw_back:
                return t_back
        return None

    def _take_up(self, spool: Spool) -> None:
        """At start: each series' newest reading and the late rule's mark (`_late`) from the spool,
        where the daemon that stopped left them. The counter store on disk is its last flush (every
        state_flush_s); the spool holds every reading the board was ACKed for, and the board resends
        the rest. So after a kill -9 (or a clean stop, whose last commit is never ACKed) within a
        minute of the board clock set back, its resends and readings still stamped before the newest
        go right after the newest, as they would have without the restart."""
        for sensor in list(self.store.state):
            newest = spool.newest(sensor)
            if not newest:
                continue
            ts, counter = newest[0]
            self.store.catch_up(sensor, round(counter * 1000), float(ts))
            st = self.store.state[sensor]
            if len(newest) > 1 and st.epoch != 0 and int(st.t) == ts:
                # Which register the newest reading had before readings were placed after it is lost
                # (the spool keeps a second's highest): the point before stands in for it. A reading
                # of this boot stamped before the newest and above that point was read after it, or
                # is a resend of one whose point the spool holds already; either way no point of it
                # belongs before the newest.
                self.set_back[sensor] = [(st.epoch, st.t, round(newest[1][1] * 1000) - st.offset)]

    def _out_of_order(self, msg: wire.Message, sensor: str, raw: int, tf: float, st: SeriesState,
                      how: str) -> bool:
        """Refuse a reading whose register and stamp disagree with the series' newest of the same
        boot (`how` says which way): counted, warned (rate-limited per way and series); False."""
        self.stats.rejected_backwards += 1
        self.warn.log(logging.WARNING, (how, sensor),
                      f"refused %s of series %s: register %.3f {how} %.3f at %.3f of the same boot",
                      wire.TYPE_NAMES[msg.mtype], sensor, raw / 1000, tf, st.raw / 1000, st.t)
        return False

    def rewind(self, now: float) -> None:
        """The host clock is behind the marks the stores hold (it stepped back, e.g. NTP correcting a
        clock that ran ahead): bring every mark back to now, so that readings stamped from now on
        are stored instead of being discarded as older than those marks until that time passes."""
        to_ts = int(now) - 1
        self.stats.clock_steps_back += 1
        log.warning("host clock %d is %d s behind the newest stored reading (%d): the clock stepped "
                    "back; rewinding stored marks to %d", int(now), self.newest_t - int(now),
                    self.newest_t, to_ts)
        self.newest_t = to_ts
        for sensor, mark in self.newest_out.items():
            self.newest_out[sensor] = min(mark, to_ts * 1000)
        self.store.rewind(to_ts)
        self.live.rewind(to_ts)
        if self.spool is not None:
            self.spool.rewind(to_ts)
        for sink in self.sinks:
            rewind = getattr(sink, "rewind", None)
            if rewind is not None:
                rewind(to_ts)

    def _gauge(self, msg: wire.Message) -> None:
        self.stats.gauges += 1
        ch, t, ms, p_mw, va_mva, v_mv, i_ma, pf, f_mhz, q_mvar, qp_wh, qp_milli, qn_wh, qn_milli = msg.values
        s = self.ct.get(ch)
        if s is None or t <= MIN_VALID_T:
            return
        now = self.clock()
        if now > MIN_VALID_T and t > now + FUTURE_TOLERANCE_S:  # would hold the live view and MQTT ahead
            self.stats.gauges_future += 1
            return
        g = Gauge(
            t, p_mw / 1000.0, va_mva / 1000.0, v_mv / 1000.0, i_ma / 1000.0, pf / 10000.0, f_mhz / 1000.0
        )
        self.deliver_gauge(s.id, s.export_id, g, volts=True)
        self._reactive(s.id, t, ms, q_mvar, (qp_wh * 1000 + qp_milli, qn_wh * 1000 + qn_milli))

    def deliver_gauge(self, imp: str, exp: str | None, g: Gauge, volts: bool = False) -> None:
        """One accepted power gauge of a sensor, board or virtual, to the live view and the sinks:
        import positive on its import series, export on its export series (and Vrms if measured)."""
        self.live.put_gauge(imp, exp, g)
        for sink in self.gauge_sinks:
            sink.gauge(imp, "import", g.t, max(0.0, g.power_w), "W")
            if exp:
                sink.gauge(exp, "export", g.t, max(0.0, -g.power_w), "W")
            if volts:
                sink.gauge(imp, "import", g.t, g.vrms, "V")

    def _reactive(self, sensor: str, t: int, ms: int, q_mvar: int, raws: tuple[int, int]) -> None:
        """A CT gauge's reactive power and registers (protocol 2): checked, stored, passed on."""
        r = self.reactive
        q = r.power(sensor, q_mvar)
        totals = []
        held = self.storage is not None and self.storage.degraded
        if self.epoch is not None and not held:
            totals = r.energy(sensor, self.epoch, t + ms / 1000.0, raws)
        self.stats.rejected_reactive = r.rejected
        self.live.put_reactive(sensor, t, q)
        if q is not None:  # the minute window of the Q+ and Q- series, in mvarh per second
            qpos, qneg = r.ids(sensor)
            self.live.put(qpos, t, max(q, 0.0) / 3.6)
            self.live.put(qneg, t, max(-q, 0.0) / 3.6)
        fan_out(self.sinks, sensor, t, t * 1000 + ms, q, totals)

    def _event(self, msg: wire.Message) -> None:
        seen = (-1 if self.epoch is None else self.epoch, msg.seq)
        if msg.flags & wire.FLAG_RETX and seen in self.events_seen:
            self._ack_later(msg.seq)  # a resend whose ACK crossed it: counted and logged once already
            return
        if self.epoch is not None:
            self.events_seen[seen] = None
            if len(self.events_seen) > REFUSED_KEEP:
                del self.events_seen[next(iter(self.events_seen))]
        self.stats.events += 1
        _t, _ms, level, code, text = msg.values
        if code == wire.EV_BROWNOUT_SAVE:
            self.stats.brownout_saves += 1
        elif code == wire.EV_STORAGE:
            self.stats.eeprom_faults += 1
        # The text is the board's: escaped (a newline or an ANSI escape cannot forge a log line) and
        # rate-limited per code (2,000 events a second must not fill a router's log).
        if not self.event_log.log(EVENT_LEVELS.get(level, logging.INFO), ("event", code),
                                  "board event %d: %s", code, printable(bytes(text))):
            self.stats.events_not_logged += 1
        if self.epoch is not None:
            self._ack_later(msg.seq)


RESET_CAUSES = {0: "unknown", 1: "power-on", 2: "brownout", 3: "watchdog", 4: "soft (host request)",
                5: "reset pin"}


def board_health(session: Session | None) -> dict[str, Any] | None:
    """The board as its last HELLO described it, for /status and the web page; None before one."""
    h = None if session is None else session.hello
    if session is None or h is None:
        return None
    cause = int(h["reset_cause"])
    return {"board_id": bytes(h["board_id"]).hex(),
            "firmware": f"{h['fw_major']}.{h['fw_minor']}.{h['fw_patch']}",
            "boot_count": h["boot_count"], "reset_cause": RESET_CAUSES.get(cause, f"code {cause}"),
            "brownout_count": h["brownout_count"], "last_hello": session.hello_t}


def _what(mtype: int) -> str:
    return "channel" if mtype in (wire.COUNTER, wire.GAUGE) else "input"
