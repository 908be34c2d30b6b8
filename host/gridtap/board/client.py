"""A synchronous request/response client for one board, for operator tools.

`gridtap flash` uses it to wait for HELLO after a reset and `gridtap calibrate`
to read gauges and write calibration. The daemon has its own long-running
link loop; this client is for short interactive sessions on a port the daemon
is not holding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import serial

from gridtap.board.link import make_decoder
from gridtap.errors import UserError
from gridtap_fw import wire

RELIABLE = (wire.COUNTER, wire.PULSE, wire.EVENT)


class BoardClient:
    """Speaks docs/protocol.md to one board over a serial port."""

    def __init__(self, port: Any, timeout: float = 0.5, retries: int = 4) -> None:
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.decoder = make_decoder()
        self.seq = 0
        self.backlog: list[wire.Message] = []
        # every decoded message, in arrival order, when a caller wants a transcript
        self.transcript: list[wire.Message] | None = None

    @classmethod
    def open(cls, device: str, baud: int = 115200) -> BoardClient:
        try:
            port = serial.serial_for_url(device, baudrate=baud, timeout=0.05)
        except (serial.SerialException, OSError) as exc:
            raise UserError(f"cannot open {device}: {exc}") from exc
        return cls(port)

    def close(self) -> None:
        self.port.close()

    # ------------------------------------------------------------ primitives

    def send(self, mtype: int, values: tuple = ()) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFF
        self.port.write(wire.encode(mtype, seq, values))
        self.port.flush()
        return seq

    def poll(self) -> list[wire.Message]:
        """Read what has arrived; ACK reliable frames so the board frees its ring."""
        data = self.port.read(4096)
        msgs = self.decoder.feed(data) if data else []
        if self.transcript is not None:
            self.transcript += msgs
        to_ack = [m.seq for m in msgs if m.mtype in RELIABLE]
        for i in range(0, len(to_ack), wire.ACK_MAX):
            self.send(wire.ACK, (tuple(to_ack[i:i + wire.ACK_MAX]),))
        return msgs

    def wait_for(self, match: Callable[[wire.Message], bool], timeout: float) -> wire.Message | None:
        """Return the first message that matches, keeping the others in backlog."""
        for i, m in enumerate(self.backlog):
            if match(m):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.poll():
                if match(m):
                    return m
                self.backlog.append(m)
            del self.backlog[:-1000]
        return None

    def request(self, mtype: int, values: tuple, reply: Callable[[wire.Message, int], bool],
                what: str) -> wire.Message:
        """Send a command and wait for its answer, retrying; NAK becomes a UserError."""
        for _ in range(self.retries):
            seq = self.send(mtype, values)

            def answer(m: wire.Message, seq: int = seq) -> bool:
                return reply(m, seq) or (m.mtype == wire.NAK and m.values[0] == seq)

            got = self.wait_for(answer, self.timeout)
            if got is None:
                continue
            if got.mtype == wire.NAK:
                raise UserError(f"board refused {what}: {nak_reason(got.values[2])}")
            return got
        raise UserError(f"board did not answer {what} after {self.retries} tries "
                        f"(is the port right and the daemon stopped?)")

    # ------------------------------------------------------------ commands

    def hello(self) -> dict[str, Any]:
        msg = self.request(wire.HELLO_REQ, (), lambda m, s: m.mtype == wire.HELLO, "HELLO_REQ")
        return msg.as_dict()

    def wait_hello(self, timeout: float) -> dict[str, Any] | None:
        """Wait for the HELLO a board sends when it boots, asking for one now and then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.wait_for(lambda m: m.mtype == wire.HELLO, min(1.0, self.timeout * 2))
            if msg is not None:
                return msg.as_dict()
            self.send(wire.HELLO_REQ)
        return None

    def set_time(self, now: float | None = None) -> None:
        t = time.time() if now is None else now
        self.request(wire.TIME_SET, (int(t), int((t % 1) * 1000)), _acked, "TIME_SET")

    def config_get(self, target: int, index: int, params: Iterable[int] = ()) -> dict[int, Any]:
        msg = self.request(wire.CONFIG_GET, (target, index, tuple(params)),
                           lambda m, s: m.mtype == wire.CONFIG and m.values[:2] == (target, index),
                           "CONFIG_GET")
        return dict(msg.values[2])

    def config_set(self, target: int, index: int, items: Iterable[tuple[int, Any]]) -> None:
        self.request(wire.CONFIG_SET, (target, index, tuple(items)), _acked_or_config, "CONFIG_SET")

    def commit(self, what: int = wire.COMMIT_CONFIG) -> None:
        self.request(wire.COMMIT, (what,), _acked, "COMMIT")

    def gauges(self, channel: int, seconds: float) -> list[dict[str, Any]]:
        """Collect GAUGE readings of one CT channel for a while."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.poll():
                if m.mtype == wire.GAUGE and m.values[0] == channel:
                    out.append(m.as_dict())
        return out


def _acked(m: wire.Message, seq: int) -> bool:
    return m.mtype == wire.ACK and seq in m.values[0]


def _acked_or_config(m: wire.Message, seq: int) -> bool:
    return _acked(m, seq) or m.mtype == wire.CONFIG


NAK_TEXT = {
    wire.NAK_UNKNOWN_TYPE: "unknown message type",
    wire.NAK_BAD_LENGTH: "bad length",
    wire.NAK_BAD_PARAM: "parameter not valid for that target",
    wire.NAK_BAD_VALUE: "value out of range",
    wire.NAK_BUSY: "busy",
    wire.NAK_STORAGE: "EEPROM write failed",
    wire.NAK_NOT_SYNCED: "board clock not set",
    wire.NAK_VERSION: "protocol version mismatch",
    wire.NAK_READ_ONLY: "read-only parameter",
}


def nak_reason(code: int) -> str:
    return NAK_TEXT.get(code, f"reason code {code}")
