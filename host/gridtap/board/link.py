"""The serial link to the board: open with pyserial, read and decode frames, reconnect with backoff.

`SerialLink.poll()` returns decoded messages (an empty list when there is
nothing, or while the port is away). When the port vanishes (USB unplugged,
pty closed) the link closes it and tries again after 0.5, 1, 2 ... 30 s;
`connected` and `reconnects` tell the rest of the daemon what happened.

Frames are decoded by the C decoder (`gridtap.board.native`) when it is
built, else by the reference Python one (`gridtap_fw.wire.Decoder`, the
router's package ships no C build): `make_decoder()` picks it, for the
command client and `gridtap wire` too. Both return the same `wire.Message`
objects and keep the same counters, so nothing past the link knows which it has.
"""

from __future__ import annotations

import importlib
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Protocol

import serial

from gridtap_fw import wire

log = logging.getLogger("gridtap.board.link")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
READ_ALL_MAX = 16      # reads per batched pass (4 KB each at most on a tty)
TTY_CHUNK = 4095       # what one read of a tty hands out at most (N_TTY_BUF_SIZE - 1)
BATCH_BYTES = 1024     # a batched read bigger than this is followed by the next one soon:
BATCH_BUSY_S = 0.05    # after this long


class FrameDecoder(Protocol):
    counts: list[int]

    def feed(self, data: bytes) -> list[wire.Message]: ...

    def counters(self) -> dict[str, int]: ...


def make_decoder(prefer_native: bool = True) -> FrameDecoder:
    """A streaming decoder: the C one if it was built and is wanted, else the Python one."""
    if prefer_native:
        try:
            native = importlib.import_module("gridtap.board.native")
        except ImportError:  # not built: gridtap.board._native is missing
            pass
        else:
            decoder: FrameDecoder = native.NativeDecoder()
            return decoder
    return wire.Decoder()


def implementation(decoder: FrameDecoder) -> str:
    return "python" if isinstance(decoder, wire.Decoder) else "c"


class SerialLink:
    def __init__(self, port: str, baud: int, read_timeout: float = 0.2, coalesce_s: float = 0.02,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.baud = baud
        self.read_timeout = read_timeout
        # After the first byte, let the rest of the burst arrive: the board sends a second's
        # frames back to back, and one wake-up per burst costs far less CPU than one per frame.
        self.coalesce_s = coalesce_s
        self.clock = clock
        self.ser: serial.Serial | None = None
        self.decoder = make_decoder()
        self.backoff = BACKOFF_MIN_S
        self.next_try = 0.0
        self.reconnects = 0
        self.opens = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.on_connect: Callable[[], None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._warned = False
        #: extra descriptors poll() also waits on (e.g. a pidfd of rrdcached); `alerts` lists the
        #: ones that were readable when the last poll() returned
        self.watch: list[int] = []
        self.alerts: list[int] = []
        #: while set (a clock() instant), poll() leaves the port unwatched and reads it then: bytes
        #: collect in the kernel's buffer instead of waking the daemon per burst fragment
        self.next_read: float | None = None

    @property
    def connected(self) -> bool:
        return self.ser is not None

    def _try_open(self) -> bool:
        now = self.clock()
        if now < self.next_try:
            return False
        try:
            self.ser = serial.Serial(
                self.port, self.baud, timeout=self.read_timeout, write_timeout=2.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._warned:
                log.warning("cannot open %s: %s; retrying with backoff", self.port, exc)
                self._warned = True
            self.next_try = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
            return False
        self._warned = False
        self.backoff = BACKOFF_MIN_S
        self.opens += 1
        if self.opens > 1:
            self.reconnects += 1
        log.info("opened %s at %d baud", self.port, self.baud)
        if self.on_connect is not None:
            self.on_connect()
        return True

    def _lost(self, exc: Exception) -> None:
        log.warning("lost %s: %s", self.port, exc)
        self.close()
        self.next_try = self.clock() + self.backoff

    def wake(self) -> None:
        """Make a poll() that is waiting for bytes return now (from another thread or a signal handler)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def poll(self, timeout: float | None = None, batch_s: float = 0.0) -> list[wire.Message]:
        """Wait up to timeout (default read_timeout) for bytes; return the messages they complete.

        pyserial opens and configures the port; reading goes straight to its file
        descriptor with one select() and one read() per burst, which costs a
        fraction of pyserial's per-call bookkeeping on a small router.

        With batch_s > 0 (wall seconds) the port is read at most once per batch_s
        while the board keeps talking: after a read the next one is scheduled
        batch_s later and the port is not watched until then, so a second's frames
        (which a board sends in several pieces) cost one wake-up, not one per
        piece. A read that finds nothing returns to waiting for the board's next
        byte. batch_s = 0 reads every byte as soon as it arrives.
        """
        wait = self.read_timeout if timeout is None else timeout
        if batch_s <= 0.0:
            self.next_read = None
        elif self.ser is not None and self.next_read is not None:
            return self._batched(wait, batch_s)
        if self.ser is None and not self._try_open():
            ready, _, _ = select.select([self._wake_r, *self.watch], [], [],
                                        min(wait, max(0.0, self.next_try - self.clock())))
            self.alerts = [f for f in self.watch if f in ready]
            self._drain_wake()
            return []
        assert self.ser is not None
        fd = self.ser.fd
        try:
            ready, _, _ = select.select([fd, self._wake_r, *self.watch], [], [], wait)
            if self.watch:
                self.alerts = [f for f in self.watch if f in ready]
            if self._wake_r in ready:
                self._drain_wake()
                return []
            if fd not in ready:
                return []
            data = os.read(fd, 65536)
            if not data:
                raise serial.SerialException("the port reports data but returns none (device gone)")
            if self.coalesce_s and data[-1] != 0:
                # Mid-frame: the rest of the burst is still on the wire. Let it arrive rather
                # than waking once per frame (a burst that ended on a delimiter needs no wait).
                time.sleep(self.coalesce_s)
                try:
                    data += os.read(fd, 65536)
                except BlockingIOError:
                    pass
        except (serial.SerialException, OSError, ValueError) as exc:
            self._lost(exc)
            return []
        self.bytes_in += len(data)
        if batch_s > 0.0:
            self._schedule_read(batch_s, len(data))
        return self.decoder.feed(data)

    def _batched(self, wait: float, batch_s: float) -> list[wire.Message]:
        """poll() while a read is scheduled: sleep until then (or a wake-up/alert), then read all."""
        assert self.ser is not None and self.next_read is not None
        ready, _, _ = select.select([self._wake_r, *self.watch], [], [],
                                    min(wait, max(0.0, self.next_read - self.clock())))
        if self.watch:
            self.alerts = [f for f in self.watch if f in ready]
        if self._wake_r in ready:
            self._drain_wake()
            return []
        if self.clock() < self.next_read:
            return []
        try:
            data = self._read_all(self.ser.fd)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._lost(exc)
            return []
        if not data:  # the board went quiet: wait for its next byte again
            self.next_read = None
            return []
        self.bytes_in += len(data)
        self._schedule_read(batch_s, len(data))
        return self.decoder.feed(data)

    @staticmethod
    def _read_all(fd: int) -> bytes:
        """Everything the kernel holds for the port now (a tty hands out at most 4 KB per read)."""
        chunks: list[bytes] = []
        for _ in range(READ_ALL_MAX):
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < TTY_CHUNK:  # less than a full tty buffer: that was all (no EAGAIN read)
                break
        return b"".join(chunks)

    def _schedule_read(self, batch_s: float, nbytes: int) -> None:
        # A board sends a few hundred bytes a second; much more (a backlog replayed after a
        # reconnect) is read again soon, so the kernel's 4 KB tty buffer never fills.
        wait = batch_s if nbytes <= BATCH_BYTES else min(batch_s, BATCH_BUSY_S)
        self.next_read = self.clock() + wait

    def read_more(self) -> list[wire.Message]:
        """The messages of bytes that arrived since the last read, without waiting (no select).

        A board writes a burst frame by frame; the loop calls this after handling
        what poll() returned, so frames that came in meanwhile join the same pass
        (one ACK, no second wake-up) instead of waking the daemon again.
        """
        if self.ser is None:
            return []
        try:
            data = os.read(self.ser.fd, 65536)
        except BlockingIOError:
            return []
        except (serial.SerialException, OSError, ValueError) as exc:
            self._lost(exc)
            return []
        if not data:  # nothing waiting (a tty without VMIN answers b""; a vanished port shows in poll())
            return []
        self.bytes_in += len(data)
        return self.decoder.feed(data)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass

    def send(self, frame: bytes) -> bool:
        if self.ser is None:
            return False
        try:
            n = os.write(self.ser.fd, frame)  # a frame fits the tty buffer: one syscall, no pyserial loop
            if n < len(frame):
                self.ser.write(frame[n:])
        except BlockingIOError:
            try:
                self.ser.write(frame)
            except (serial.SerialException, OSError) as exc:
                self._lost(exc)
                return False
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return False
        self.bytes_out += len(frame)
        return True

    def counters(self) -> dict[str, int]:
        return self.decoder.counters()

    def close(self) -> None:
        self.next_read = None
        if self.ser is not None:
            try:
                self.ser.close()
            except (serial.SerialException, OSError):
                pass
            self.ser = None

    def dispose(self) -> None:
        """Close the port and the wake-up pipe; the link cannot be used afterwards."""
        self.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
