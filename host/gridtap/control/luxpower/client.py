"""One connection to a LuxPower datalogger that stays up (docs/luxpower.md, "Client").

A reader thread owns the receive side: it answers heartbeats (a datalogger stops pushing input
registers to a client that does not), keeps the latest pushed input registers with the time they
came, and hands replies to the request waiting for them. Requests (`read_hold`, `write_single`,
`write_multi`) come from the controller's thread, one at a time, each with a reply timeout.

The link is dropped and reconnected, with exponential backoff, when the socket fails, when
`max_timeouts` requests in a row get no reply, and by the watchdog when nothing at all (not even a
heartbeat) arrived for `silent_s`: a datalogger that stalls with the TCP connection up is the
failure users report most. TCP keepalive finds a peer that vanished without a FIN.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gridtap.control.luxpower import frame as fr
from gridtap.control.luxpower import registers as r

log = logging.getLogger("gridtap.control.luxpower")


class LinkError(OSError):
    """No usable answer from the inverter: not connected, no reply in time, a garbled reply."""


class InverterRefused(Exception):
    """The inverter answered a request with a Modbus exception."""

    def __init__(self, function: int, register: int, code: int) -> None:
        self.function, self.register, self.code = function, register, code
        what = fr.EXCEPTIONS.get(code, "unknown exception")
        super().__init__(f"the inverter refused function {function} on register {register}: "
                         f"exception {code} ({what})")


class SerialMismatch(Exception):
    """The inverter behind the datalogger has another serial than the configured one."""


@dataclass
class LinkSettings:
    reply_timeout_s: float = 10.0  # lxp-bridge's; octolux uses 5
    silent_s: float = 900.0  # watchdog: reconnect when nothing arrived for this long
    keepalive_s: int = 60
    backoff_min_s: float = 5.0
    backoff_max_s: float = 300.0
    max_timeouts: int = 2  # unanswered requests in a row before the link is dropped
    connect_timeout_s: float = 10.0


@dataclass
class Pushed:
    """The latest input registers pushed by the datalogger and when (clock seconds) they came."""

    values: dict[int, int]
    at: dict[int, float]


class LuxClient:
    def __init__(self, host: str, port: int, datalogger: str, inverter: str,
                 settings: LinkSettings | None = None, clock: Callable[[], float] = time.time) -> None:
        fr._serial(datalogger, "datalogger serial")
        fr._serial(inverter, "inverter serial")
        self.host, self.port = host, port
        self.datalogger, self.inverter = datalogger, inverter
        self.s = settings or LinkSettings()
        self.clock = clock
        self.sock: socket.socket | None = None
        self.sock_lock = threading.Lock()  # guards sock and sending
        self.request_lock = threading.Lock()  # one request at a time
        self.cond = threading.Condition()
        self.waiting: tuple[int, int] | None = None  # (function, register) of the pending request
        self.reply: fr.Translated | None = None
        self.inputs = Pushed({}, {})
        self.last_rx = time.monotonic()
        self.timeouts = 0
        self.wrong_serial: str | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.stats = {"connects": 0, "reconnects": 0, "heartbeats": 0, "pushes": 0, "timeouts": 0,
                      "bad_frames": 0, "watchdog": 0, "refused": 0}
        self.connected = threading.Event()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> LuxClient:
        self.thread = threading.Thread(target=self._run, name="luxpower", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop_event.set()
        self._drop("closing")
        if self.thread is not None:
            self.thread.join(5)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=self.s.connect_timeout_s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        keep = (("TCP_KEEPIDLE", self.s.keepalive_s), ("TCP_KEEPINTVL", max(self.s.keepalive_s // 4, 1)),
                ("TCP_KEEPCNT", 4))
        for opt, val in keep:
            if hasattr(socket, opt):
                s.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)
        s.settimeout(0.5)  # the reader wakes this often to run the watchdog
        return s

    def _run(self) -> None:
        delay = self.s.backoff_min_s
        while not self.stop_event.is_set():
            try:
                sock = self._connect()
            except OSError as exc:
                log.warning("LuxPower datalogger %s:%d: cannot connect: %s; retrying in %.0f s",
                            self.host, self.port, exc, delay)
                self.stop_event.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.s.backoff_max_s)
                continue
            with self.sock_lock:
                self.sock = sock
            self.stats["connects"] += 1
            if self.stats["connects"] > 1:
                self.stats["reconnects"] += 1
            self.last_rx = time.monotonic()
            self.timeouts = 0
            self.connected.set()
            log.info("LuxPower datalogger %s connected at %s:%d", self.datalogger, self.host, self.port)
            clean = self._read_loop(sock)
            self.connected.clear()
            self._drop("")
            if self.stop_event.is_set():
                break
            # A link that worked for a while starts over with the short delay; one that fails at
            # once backs off further.
            delay = self.s.backoff_min_s if clean else min(delay * 2, self.s.backoff_max_s)
            self.stop_event.wait(delay * random.uniform(0.8, 1.2))

    def _read_loop(self, sock: socket.socket) -> bool:
        """Read until the link fails; True if it carried at least one good frame."""
        split = fr.Splitter()
        good = False
        while not self.stop_event.is_set():
            if time.monotonic() - self.last_rx > self.s.silent_s:
                self.stats["watchdog"] += 1
                log.warning("LuxPower datalogger silent for %.0f s: reconnecting", self.s.silent_s)
                return good
            if self.sock is not sock:  # dropped by a request that timed out
                return good
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                log.warning("LuxPower datalogger link failed: %s", exc)
                return good
            if not data:
                log.warning("LuxPower datalogger closed the connection")
                return good
            self.last_rx = time.monotonic()
            for raw in split.feed(data):
                good = self._handle(raw) or good
        return good

    def _handle(self, raw: bytes) -> bool:
        try:
            f = fr.decode(raw)
        except fr.FrameError as exc:
            self.stats["bad_frames"] += 1
            log.debug("LuxPower: dropped a bad frame: %s", exc)
            return False
        if f.datalogger != self.datalogger:
            self.stats["bad_frames"] += 1
            log.warning("LuxPower: a frame from datalogger %s, configured %s: ignored", f.datalogger,
                        self.datalogger)
            return False
        if isinstance(f, fr.Heartbeat):
            self.stats["heartbeats"] += 1
            try:
                self._send(fr.encode(fr.Heartbeat(self.datalogger, f.protocol, f.body)))  # echo it back
            except LinkError:
                return False
            return True
        if not isinstance(f, fr.Translated) or not f.reply:
            return True
        if f.inverter != self.inverter:
            self.wrong_serial = f.inverter
            log.error("LuxPower: the inverter behind datalogger %s is %s, not the configured %s",
                      self.datalogger, f.inverter, self.inverter)
        with self.cond:
            if self.waiting == (f.function, f.register):
                self.reply = f
                self.cond.notify_all()
                return True
        if f.function == fr.READ_INPUT and f.exception is None:
            self._store_inputs(f)
        return True

    def _store_inputs(self, f: fr.Translated) -> None:
        if f.inverter != self.inverter:
            return
        now = self.clock()
        for i, v in enumerate(f.values):
            self.inputs.values[f.register + i] = v
            self.inputs.at[f.register + i] = now
        self.stats["pushes"] += 1

    def _send(self, data: bytes) -> None:
        with self.sock_lock:
            if self.sock is None:
                raise LinkError("not connected to the datalogger")
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise LinkError(f"sending to the datalogger failed: {exc}") from exc

    def _drop(self, why: str) -> None:
        with self.sock_lock:
            sock, self.sock = self.sock, None
            self.connected.clear()
        if sock is not None:
            if why:
                log.warning("LuxPower datalogger: dropping the link: %s", why)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    # -- requests -----------------------------------------------------------
    def request(self, f: fr.Translated) -> fr.Translated:
        """Send a request and wait for its reply; LinkError, InverterRefused or SerialMismatch."""
        if self.wrong_serial is not None:  # the pushes named another inverter: nothing to ask
            raise SerialMismatch(self._mismatch())
        with self.request_lock:
            with self.cond:
                self.waiting, self.reply = (f.function, f.register), None
            try:
                self._send(fr.encode(f))
                with self.cond:
                    self.cond.wait_for(lambda: self.reply is not None, self.s.reply_timeout_s)
                    got, self.waiting = self.reply, None
            finally:
                with self.cond:
                    self.waiting = None
            if got is None:
                self.stats["timeouts"] += 1
                self.timeouts += 1
                if self.timeouts >= self.s.max_timeouts:
                    self._drop(f"{self.timeouts} requests in a row got no reply")
                if self.wrong_serial is not None:
                    raise SerialMismatch(self._mismatch())
                raise LinkError(f"no reply from the inverter to function {f.function} register {f.register} "
                                f"within {self.s.reply_timeout_s:g} s")
            self.timeouts = 0
            if got.inverter != self.inverter:
                raise SerialMismatch(self._mismatch())
            if got.exception is not None:
                self.stats["refused"] += 1
                raise InverterRefused(f.function, f.register, got.exception)
            return got

    def _mismatch(self) -> str:
        return (f"the inverter behind datalogger {self.datalogger} has serial {self.wrong_serial}, "
                f"but [inverter] inverter_serial is {self.inverter}: "
                "check the serial on the inverter's label")

    def _req(self, function: int, register: int, **kw: object) -> fr.Translated:
        return fr.Translated(self.datalogger, self.inverter, function, register, **kw)  # type: ignore[arg-type]

    def read_hold(self, register: int, count: int = 1) -> tuple[int, ...]:
        got = self.request(self._req(fr.READ_HOLD, register, count=count))
        if len(got.values) != count:
            raise LinkError(f"asked for {count} registers from {register}, got {len(got.values)}")
        return got.values

    def write_single(self, register: int, value: int) -> None:
        got = self.request(self._req(fr.WRITE_SINGLE, register, values=(value,)))
        if got.values != (value,):
            raise LinkError(f"register {register}: wrote {value}, the echo says {got.values}")

    def write_multi(self, register: int, values: tuple[int, ...]) -> None:
        got = self.request(self._req(fr.WRITE_MULTI, register, values=values, protocol=2))
        if got.count != len(values):
            raise LinkError(f"registers {register}+: wrote {len(values)}, the reply says {got.count}")

    # -- pushed state ---------------------------------------------------------
    def soc(self) -> tuple[float | None, float | None]:
        """(SOC %, age in seconds) from the pushed input register 5 (low byte); None if never pushed."""
        v = self.inputs.values.get(r.IN_SOC)
        if v is None:
            return None, None
        soc = v & 0xFF
        age = self.clock() - self.inputs.at[r.IN_SOC]
        return (float(soc) if soc <= 100 else None), age

    def battery_w(self) -> float | None:
        """Battery power, + charging, - discharging, from input registers 10 and 11."""
        c, d = self.inputs.values.get(r.IN_CHARGE_W), self.inputs.values.get(r.IN_DISCHARGE_W)
        if c is None or d is None:
            return None
        return float(c - d)


class Writes(Protocol):
    def read_hold(self, register: int, count: int = 1) -> tuple[int, ...]: ...
    def write_single(self, register: int, value: int) -> None: ...


def write_verified(link: Writes, writes: list[tuple[int, int]], dry_run: bool = False) -> int:
    """Write each (register, value) in order, reading each back: a value that did not stick is a
    LinkError (retried by the caller's next tick). A dry run only logs what it would write. Returns the
    number of writes made and verified."""
    if dry_run:
        log.info("[dry run] would write %s", ", ".join(f"register {a} = {v}" for a, v in writes))
        return 0
    for reg, value in writes:
        log.debug("inverter: write register %d = %d", reg, value)
        link.write_single(reg, value)
        back = link.read_hold(reg)[0]
        if back != value:
            raise LinkError(f"register {reg}: wrote {value}, reads back {back}: the write did not stick")
    return len(writes)
