"""The IEC-104 link on asyncio: one controlling station at a time, windows k/w, timers t0..t3.

The server owns the APCI (sequence numbers, acknowledgements, STARTDT/STOPDT,
TESTFR) and hands every I-frame's ASDU to the station (`Station.handle`), which
answers with ASDUs. The station may also push ASDUs at any time (`send`):
feedback and periodic reports. Those wait in a bounded queue while the window
is full (k unacknowledged I-frames) or data transfer is stopped.

Timers (seconds, from [iec104]): t0 bounds the time an accepted connection may
stay without STARTDT; t1 the wait for an acknowledgement of our I-frames or
TESTFR; t2 the delay before we acknowledge received I-frames with an S-frame
(fewer than w); t3 the idle time before we send TESTFR act.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gridtap.board.plausible import RateLog
from gridtap.outputs.iec104 import codec

log = logging.getLogger("gridtap.outputs.iec104")

OUT_QUEUE = 1024  # ASDUs waiting for the window; beyond, the oldest is dropped (counted). t1 closes
# a link whose peer stops acknowledging long before, so this bounds memory rather than shapes traffic.


@dataclass(frozen=True)
class LinkParams:
    k: int = 12
    w: int = 8
    t0: float = 30.0
    t1: float = 15.0
    t2: float = 10.0
    t3: float = 20.0


class Station(Protocol):
    def handle(self, asdu: bytes, peer: str) -> list[bytes]: ...

    def started(self) -> list[bytes]: ...


class Connection:
    """One controlling station's link; `closed` is set once it is gone."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, station: Station,
                 params: LinkParams, peer: str, stats: dict[str, int]) -> None:
        self.r, self.w, self.station, self.p = reader, writer, station, params
        self.peer, self.stats = peer, stats
        self.vs = self.vr = 0
        self.acked = 0  # oldest of our I-frames not acknowledged
        self.sent_at: deque[float] = deque()  # send times of unacknowledged I-frames, oldest first
        self.unacked_rx = 0
        self.rx_first = 0.0  # when the oldest not-yet-acknowledged received I-frame arrived
        self.active = False
        self.ever_started = False  # t0 applies until the first STARTDT only
        self.opened = self.last_io = time.monotonic()
        self.testfr_at: float | None = None
        self.pending: deque[bytes] = deque()
        self.closed = asyncio.Event()

    # -- sending ------------------------------------------------------------------------------
    def send(self, asdu: bytes) -> None:
        if len(self.pending) >= OUT_QUEUE:
            self.pending.popleft()
            self.stats["dropped"] = self.stats.get("dropped", 0) + 1
        self.pending.append(asdu)
        self._flush()

    def _flush(self) -> None:
        while self.active and self.pending and len(self.sent_at) < self.p.k and not self.closed.is_set():
            asdu = self.pending.popleft()
            self._write(codec.encode_i(self.vs, self.vr, asdu))
            self.vs = (self.vs + 1) % codec.SEQ_MOD
            self.sent_at.append(time.monotonic())
            self.unacked_rx = 0  # an I-frame carries our N(R)
            self.stats["i_sent"] = self.stats.get("i_sent", 0) + 1

    def _write(self, data: bytes) -> None:
        self.w.write(data)
        self.last_io = time.monotonic()

    # -- receiving ----------------------------------------------------------------------------
    def _ack(self, nr: int) -> None:
        outstanding = len(self.sent_at)
        n = (nr - self.acked) % codec.SEQ_MOD
        if n > outstanding:
            raise codec.FrameError(f"N(R) {nr} acknowledges frames never sent (V(S) {self.vs})")
        for _ in range(n):
            self.sent_at.popleft()
        self.acked = nr

    def on_frame(self, f: codec.Frame) -> None:
        self.last_io = time.monotonic()
        self.testfr_at = None  # any frame shows the peer is alive
        if isinstance(f, codec.UFrame):
            self._on_u(f.function)
        elif isinstance(f, codec.SFrame):
            self._ack(f.nr)
        else:
            if not self.active:
                raise codec.FrameError("I-frame before STARTDT")
            if f.ns != self.vr:
                raise codec.FrameError(f"N(S) {f.ns} out of sequence (expected {self.vr})")
            self._ack(f.nr)
            self.vr = (self.vr + 1) % codec.SEQ_MOD
            if self.unacked_rx == 0:
                self.rx_first = time.monotonic()
            self.unacked_rx += 1
            self.stats["i_received"] = self.stats.get("i_received", 0) + 1
            for reply in self.station.handle(f.asdu, self.peer):
                self.send(reply)
            if self.unacked_rx >= self.p.w:
                self._write(codec.encode_s(self.vr))
                self.unacked_rx = 0
        self._flush()

    def _on_u(self, fn: int) -> None:
        if fn == codec.STARTDT_ACT:
            self._write(codec.encode_u(codec.STARTDT_CON))
            self.ever_started = True
            if not self.active:
                self.active = True
                log.info("iec104: %s started data transfer", self.peer)
                for asdu in self.station.started():
                    self.send(asdu)
        elif fn == codec.STOPDT_ACT:
            self.active = False
            if self.unacked_rx:
                self._write(codec.encode_s(self.vr))
                self.unacked_rx = 0
            self._write(codec.encode_u(codec.STOPDT_CON))
        elif fn == codec.TESTFR_ACT:
            self._write(codec.encode_u(codec.TESTFR_CON))
        # STARTDT/STOPDT con are answers to a client's role; TESTFR con clears testfr_at above

    # -- timers -------------------------------------------------------------------------------
    def tick(self) -> str | None:
        """Returns why the link must close, or None; sends S-frames and TESTFR as due."""
        now = time.monotonic()
        if not self.ever_started and now - self.opened > self.p.t0:
            return f"no STARTDT within t0 = {self.p.t0:g} s"
        if self.sent_at and now - self.sent_at[0] > self.p.t1:
            return f"I-frame not acknowledged within t1 = {self.p.t1:g} s"
        if self.testfr_at is not None and now - self.testfr_at > self.p.t1:
            return f"TESTFR not confirmed within t1 = {self.p.t1:g} s"
        if self.unacked_rx and now - self.rx_first >= self.p.t2:
            self._write(codec.encode_s(self.vr))
            self.unacked_rx = 0
        if self.testfr_at is None and now - self.last_io >= self.p.t3:
            self._write(codec.encode_u(codec.TESTFR_ACT))
            self.testfr_at = now
            self.stats["testfr_sent"] = self.stats.get("testfr_sent", 0) + 1
        return None

    async def run(self) -> None:
        reader = codec.FrameReader()
        ticker = asyncio.ensure_future(self._tick_loop())
        try:
            while True:
                data = await self.r.read(4096)
                if not data:
                    log.info("iec104: %s closed the connection", self.peer)
                    return
                for f in reader.feed(data):
                    self.on_frame(f)
                await self.w.drain()
        except codec.FrameError as exc:
            self.stats["protocol_errors"] = self.stats.get("protocol_errors", 0) + 1
            log.warning("iec104: closing %s: %s", self.peer, exc)
        except (ConnectionError, OSError) as exc:
            log.info("iec104: %s: %s", self.peer, exc)
        except Exception:  # a bug in handling one peer's frame must not end the server
            self.stats["internal_errors"] = self.stats.get("internal_errors", 0) + 1
            log.exception("iec104: closing %s after an internal error", self.peer)
        finally:
            ticker.cancel()
            self.closed.set()
            self.w.close()

    async def _tick_loop(self) -> None:
        step = max(0.01, min(0.1, self.p.t2 / 4, self.p.t3 / 4, self.p.t1 / 4))
        while True:
            await asyncio.sleep(step)
            why = self.tick()
            if why is not None:
                log.warning("iec104: closing %s: %s", self.peer, why)
                self.stats["timeouts"] = self.stats.get("timeouts", 0) + 1
                self.closed.set()
                self.w.close()
                return


def allowed(peer: str, allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allow)


class Server:
    """Listens on bind:port; refuses a second controlling station and addresses not allowed."""

    def __init__(self, station: Station, params: LinkParams, bind: str, port: int,
                 allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
                 on_connection: Callable[[Connection | None], None] = lambda c: None) -> None:
        self.station, self.params, self.bind, self.port, self.allow = station, params, bind, port, allow
        self.on_connection = on_connection
        self.conn: Connection | None = None
        self.stats: dict[str, int] = {}
        self._server: asyncio.base_events.Server | None = None
        self._ratelog = RateLog(log, every_s=10.0, burst=5)  # an RTU retrying every second

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.bind, self.port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.conn is not None:
            self.conn.w.close()
            await self.conn.closed.wait()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        if not allowed(peer, self.allow):
            self.stats["refused_not_allowed"] = self.stats.get("refused_not_allowed", 0) + 1
            self._ratelog.log(logging.WARNING, ("allow", peer), "iec104: refused %s: not in allow", peer)
            writer.close()
            return
        if self.conn is not None and not self.conn.closed.is_set():
            self.stats["refused_busy"] = self.stats.get("refused_busy", 0) + 1
            self._ratelog.log(logging.WARNING, ("busy", peer),
                              "iec104: refused %s: %s is connected (one controlling station at a time)",
                              peer, self.conn.peer)
            writer.close()
            return
        conn = Connection(reader, writer, self.station, self.params, peer, self.stats)
        self.conn = conn
        self.on_connection(conn)
        log.info("iec104: %s connected", peer)
        try:
            await conn.run()
        finally:
            if self.conn is conn:
                self.conn = None
                self.on_connection(None)
