"""A fake sensor board on a real pseudo-terminal, speaking docs/protocol.md with the wire codec.

The daemon opens `board.path` (a symlink to the pty slave, like
/dev/serial/by-id/...) with pyserial, exactly as it would open /dev/ttyUSB0.
The test drives the board: `step()` adds energy and sends COUNTER/PULSE/GAUGE
frames stamped with simulated time; `reset()` reboots it with a new boot
count and counters restored from its "EEPROM" or lost; `vanish()` and
`appear()` pull and replug the cable. Like the real board it keeps every
reliable frame until the host ACKs it and resends it (flag RETX, same seq)
when no ACK came, and it answers HELLO_REQ, TIME_SET, CONFIG_SET and COMMIT.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections import OrderedDict
from pathlib import Path

from gridtap_fw import wire


class FakeBoard:
    def __init__(
        self,
        link_dir: Path,
        n_ct: int = 3,
        n_pulse: int = 2,
        board_id: bytes = b"\x11" * 8,
        boot_count: int = 1,
        retx_s: float = 0.3,
        ring_max: int = 100_000,
    ) -> None:
        self.path = link_dir / "ttyGT0"
        self.n_ct = n_ct
        self.n_pulse = n_pulse
        self.board_id = board_id
        self.boot_count = boot_count
        self.retx_s = retx_s
        self.ring_max = ring_max
        self.lock = threading.RLock()
        # registers in thousandths (mWh / mL)
        self.ct = [[0, 0] for _ in range(n_ct)]
        self.q = [[0, 0] for _ in range(n_ct)]  # reactive registers Q+, Q- (mvarh): RAM, 0 at boot
        self.pulse = [0] * n_pulse
        self.pulses = [0] * n_pulse
        self.eeprom: tuple[list[list[int]], list[int]] = ([[0, 0] for _ in range(n_ct)], [0] * n_pulse)
        self.seq = 0
        self.ring: OrderedDict[int, tuple[bytes, float]] = OrderedDict()
        self.received: list[wire.Message] = []
        self.config: dict[tuple[int, int], dict[int, object]] = {}
        self.commits = 0
        self.clock_offset = 0.0
        self.clock_set = False
        self.answer = True  # False: ignore host commands (a board that does not listen)
        self.sent_frames = 0
        self.master: int | None = None
        self.slave: int | None = None
        self.decoder = wire.Decoder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ the cable

    def appear(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        with self.lock:
            self.master, self.slave = master, slave
        tmp = self.path.with_suffix(".new")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="fakeboard", daemon=True)
            self._thread.start()

    def vanish(self) -> None:
        with self.lock:
            for fd in (self.master, self.slave):
                if fd is not None:
                    os.close(fd)
            self.master = self.slave = None
        if self.path.is_symlink():
            self.path.unlink()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.vanish()

    # ------------------------------------------------------------ sending

    def _write(self, frame: bytes) -> None:
        with self.lock:
            if self.master is None:
                return
            view = memoryview(frame)
            deadline = time.monotonic() + 2.0
            while view:
                try:
                    n = os.write(self.master, view)
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return  # nobody reads: the bytes are lost on the wire, as on a real UART
                    time.sleep(0.001)
                    continue
                except OSError:
                    return
                view = view[n:]
            self.sent_frames += 1

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFF
        return seq

    def send(self, mtype: int, values: tuple, reliable: bool = False) -> int:
        with self.lock:
            seq = self._next_seq()
            frame = wire.encode(mtype, seq, values)
            if reliable:
                if len(self.ring) >= self.ring_max:
                    raise RuntimeError("fake board ring overflow: the host is not ACKing")
                self.ring[seq] = (frame, time.monotonic())
            self._write(frame)
            return seq

    def hello(self, reset_cause: int = wire.RESET_POWER_ON) -> None:
        self.send(
            wire.HELLO, (self.board_id, 0, 1, 0, 1, self.boot_count, reset_cause, 0, self.n_ct, self.n_pulse)
        )

    def board_time(self) -> float:
        return time.time() + self.clock_offset

    def send_time(self) -> None:
        now = self.board_time()
        s = int(now)
        self.send(wire.TIME, (s, min(999, int((now - s) * 1000)), 1000, 1 if self.clock_set else 0))

    # ------------------------------------------------------------ metering

    def step(
        self,
        t: int,
        power_w: list[float] | None = None,
        pulses: list[int] | None = None,
        seconds: float = 1.0,
        gauges: bool = True,
        ms: int = 0,
        var: list[float] | None = None,
    ) -> None:
        """Advance by `seconds` at the given signed CT powers (and reactive powers, var) and pulse
        counts; send the frames stamped t."""
        with self.lock:
            for ch, p in enumerate(power_w or []):
                q = var[ch] if var else 0.0
                self.q[ch][0 if q >= 0 else 1] += round(abs(q) * seconds / 3.6)  # mvarh, RAM only
                qp, qn = self.q[ch]
                milli = round(abs(p) * seconds / 3.6)  # W*s -> mWh
                self.ct[ch][0 if p >= 0 else 1] += milli
                imp, exp = self.ct[ch]
                self.send(wire.COUNTER, (ch, t, ms, imp // 1000, imp % 1000, exp // 1000, exp % 1000), True)
                if gauges:
                    self.send(
                        wire.GAUGE,
                        (
                            ch,
                            t,
                            ms,
                            round(p * 1000),
                            round(abs(p) * 1000),
                            230000,
                            round(abs(p) / 230 * 1000),
                            10000 if p >= 0 else -10000,
                            50000,
                            round(q * 1000), qp // 1000, qp % 1000, qn // 1000, qn % 1000,
                        ),
                    )
            for i, n in enumerate(pulses or []):
                if n == 0:
                    continue
                self.pulses[i] += n
                self.pulse[i] += n * 1000  # 1 Wh (or 1 L) per pulse: meter constant 1000 imp/kWh
                total = self.pulse[i]
                self.send(wire.PULSE, (i, t, ms, total // 1000, total % 1000, self.pulses[i]), True)

    def event(self, t: int, level: int, code: int, text: str) -> None:
        self.send(wire.EVENT, (t, 0, level, code, text.encode()), True)

    def save_eeprom(self) -> None:
        with self.lock:
            self.eeprom = ([list(c) for c in self.ct], list(self.pulse))

    def reset(self, restore: str = "eeprom", cause: int = wire.RESET_BROWNOUT, t: int | None = None) -> None:
        """Reboot: new boot count, seq 0, RAM ring lost; registers from EEPROM ("eeprom") or zero ("lost").

        With t, the board announces its restored registers right after HELLO, stamped t.
        """
        with self.lock:
            self.boot_count += 1
            self.seq = 0
            self.ring.clear()
            self.q = [[0, 0] for _ in range(self.n_ct)]  # the reactive registers live in RAM
            if restore == "eeprom":
                self.ct = [list(c) for c in self.eeprom[0]]
                self.pulse = list(self.eeprom[1])
            elif restore == "lost":
                self.ct = [[0, 0] for _ in range(self.n_ct)]
                self.pulse = [0] * self.n_pulse
            else:
                raise ValueError(restore)
            self.clock_set = False
            self.hello(cause)
            if t is not None:
                self.step(t, power_w=[0.0] * self.n_ct, gauges=False)
                for i, total in enumerate(self.pulse):
                    self.send(wire.PULSE, (i, t, 0, total // 1000, total % 1000, self.pulses[i]), True)

    def unacked(self) -> int:
        with self.lock:
            return len(self.ring)

    def wait_acked(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unacked():
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------ receiving

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                master = self.master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                data = os.read(master, 4096) if ready else b""
            except OSError:
                time.sleep(0.02)
                continue
            for msg in self.decoder.feed(data):
                self._handle(msg)
            self._retransmit()

    def _retransmit(self) -> None:
        now = time.monotonic()
        with self.lock:
            for seq, (frame, sent) in list(self.ring.items()):
                if now - sent < self.retx_s:
                    break
                raw = wire.cobs_decode(frame[1:-1])
                assert raw is not None
                msg = wire.decode_raw(raw)
                assert isinstance(msg, wire.Message)
                again = wire.encode(msg.mtype, seq, msg.values, wire.FLAG_RETX)
                self.ring[seq] = (frame, now)
                self.ring.move_to_end(seq)
                self._write(again)

    def _handle(self, msg: wire.Message) -> None:
        with self.lock:
            self.received.append(msg)
            t = msg.mtype
            if t == wire.ACK:
                for seq in msg.values[0]:
                    self.ring.pop(seq, None)
                return
            if not self.answer:
                return
            if t == wire.HELLO_REQ:
                self.hello(wire.RESET_UNKNOWN)
            elif t == wire.TIME_SET:
                self.clock_offset = msg.values[0] + msg.values[1] / 1000.0 - time.time()
                self.clock_set = True
                self._write(wire.encode(wire.ACK, self._next_seq(), ((msg.seq,),)))
            elif t == wire.CONFIG_SET:
                target, index, items = msg.values
                self.config.setdefault((target, index), {}).update(dict(items))
                self._write(wire.encode(wire.ACK, self._next_seq(), ((msg.seq,),)))
            elif t == wire.CONFIG_GET:
                target, index, params = msg.values
                have = self.config.get((target, index), {})
                items = tuple((pid, have[pid]) for pid in (params or sorted(have)) if pid in have)
                self._write(wire.encode(wire.CONFIG, self._next_seq(), (target, index, items)))
            elif t == wire.COMMIT:
                self.commits += 1
                self._write(wire.encode(wire.ACK, self._next_seq(), ((msg.seq,),)))
            else:
                self._write(wire.encode(wire.NAK, self._next_seq(), (msg.seq, t, wire.NAK_UNKNOWN_TYPE)))

    def got(self, mtype: int) -> list[wire.Message]:
        with self.lock:
            return [m for m in self.received if m.mtype == mtype]
