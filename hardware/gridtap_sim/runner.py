"""Run firmware in a MicroPython unix-port process against the simulation.

The process's HAL is `gridtap_fw/hal_virtual.py`. Each boot gets fresh named
pipes in `<workdir>/boot-N/` (`req`: HAL -> simulator, `resp`: simulator ->
HAL, `adc`: the samples), named in the child's GRIDTAP_SIM_DIR. The simulator
owns time: `now` advances only by ADC blocks (a block of n sets is ready at the
instant its last set is sampled) and EEPROM write cycles. One ADC request is
answered with a batch of blocks (up to a simulated second when running flat
out, fewer when paced to the wall clock); requests carry the board's time, so
UART writes and EEPROM cycles are placed exactly where one request per block
would have placed them. The supply monitor
fires when the mains fails; the process is killed `holdup` later, mid-write
if it is writing (the page is then torn). When the mains returns the process
is started again (a fresh boot; the EEPROM keeps its contents).
"""

from __future__ import annotations

import fcntl
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from gridtap_sim.eeprom import Eeprom, EepromError
from gridtap_sim.engine import Simulation
from gridtap_sim.uart import FaultInjector, Pty

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
DEFAULT_FIRMWARE = "from gridtap_fw import app, hal_virtual\napp.App(hal_virtual.VirtualHal()).run()\n"

CMD_HELLO, CMD_ADC, CMD_UART_TX, CMD_EE_READ, CMD_EE_WRITE, CMD_RESET = 1, 2, 3, 4, 5, 6
RESET_POWER_ON, RESET_BROWNOUT, RESET_WATCHDOG, RESET_SOFT = 1, 2, 3, 4
MAX_PAYLOAD = 1 << 20
BATCH_WALL_S = 0.005  # when paced, a batch spans at most this much wall time (host bytes wait no longer)
BATCH_MAX_S = 1.0     # and at most this much simulated time (and never past a second boundary)
ADC_PIPE_BYTES = 1 << 18
NEVER_US = (1 << 62) - 1
HANG_WALL_S = 20.0   # no HAL request for this long (wall clock): the watchdog resets the board


class SimError(RuntimeError):
    """The firmware process misbehaved (crash loop, protocol violation)."""


class ChildGone(Exception):
    def __init__(self, why: str = "firmware process exited") -> None:
        super().__init__(why)
        self.why = why


def micropython_exe() -> str:
    import sys
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if found is None:
        raise SimError("micropython is not installed; run `make setup`")
    return found


@dataclass
class RunStats:
    boots: list[tuple[float, int]] = field(default_factory=list)     # (t, reset cause)
    deaths: list[tuple[float, str]] = field(default_factory=list)    # (t, why)
    brownout_flags: list[float] = field(default_factory=list)      # supply-monitor instants seen
    adc_blocks: int = 0
    sets_served: int = 0
    batches: int = 0             # ADC requests answered (each with one or more blocks)
    requests: int = 0            # HAL requests of any kind
    fw_cpu_s: float = 0.0        # CPU time of the firmware processes (from /proc), all boots
    ee_writes: int = 0
    ee_reads: int = 0
    uart_to_board: int = 0
    uart_from_board: int = 0
    wall_s: float = 0.0


class VirtualBoard:
    def __init__(self, sim: Simulation, *, firmware: str | Path | None = None, speed: float = math.inf,
                 ber: float = 0.0, drop: float = 0.0, stall_per_min: float = 0.0, use_pty: bool = True,
                 fw_log: str | Path | None = None, extra_path: list[Path] | None = None,
                 heap: str | None = None, hang_wall_s: float = HANG_WALL_S,
                 batch_max_s: float = BATCH_MAX_S,
                 ber_bursts: list[tuple[float, float, float]] | None = None,
                 command: Callable[[Path], list[str]] | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.sim = sim
        self.board = sim.board
        self.fs = sim.fs
        self.speed = speed
        rng = np.random.default_rng(np.random.SeedSequence(sim.seed, spawn_key=(70,)))
        self.eeprom = Eeprom(self.board.ee_size, self.board.ee_page, self.board.ee_cycle_s,
                             np.random.default_rng(rng.integers(1 << 62)))
        def rng2() -> np.random.Generator:
            return np.random.default_rng(rng.integers(1 << 62))
        self.to_board = FaultInjector(rng2(), ber, drop, stall_per_min)
        self.from_board = FaultInjector(rng2(), ber, drop, stall_per_min)
        # windows of simulated time [start, end) with their own bit error rate (a noisy wire for a
        # while), both directions; outside them `ber`. Switched per ADC batch (<= 1 s of board time).
        self.ber = ber
        self.ber_bursts = sorted(ber_bursts or [])
        for a, b, r in self.ber_bursts:
            if not (0.0 <= a < b and 0.0 <= r <= 0.5):
                raise ValueError(f"BER burst ({a}, {b}, {r}): need 0 <= start < end and 0 <= BER <= 0.5")
        self.uid = bytes(rng.integers(0, 256, 8, dtype=np.uint8).tolist())
        self.pty = Pty() if use_pty else None
        self.workdir = Path(tempfile.mkdtemp(prefix="gridtap-sim-"))
        if fw_log is None:   # outlives the run (the work directory does not)
            fd, name = tempfile.mkstemp(prefix="gridtap-sim-fw-", suffix=".log")
            os.close(fd)
            fw_log = name
        self.fw_log_path = Path(fw_log)
        self.fw_log: BinaryIO = open(self.fw_log_path, "ab")
        self.firmware = firmware
        # argv of another firmware process for a boot directory (gridtap_sim.qemu_m0: the
        # firmware on an emulated Cortex-M0); None runs the MicroPython unix port
        self.command = command
        self.extra_path = list(extra_path or [])
        self.heap = heap or str(self.board.sim["micropython_heap"])
        self.byte_s = 10.0 / self.board.baud
        self.rx_limit = int(self.board.sim["uart_rx_buffer"])
        self.stats = RunStats()
        self.hang_wall_s = hang_wall_s
        # simulated seconds one ADC request may cover: shorter batches hand the firmware the
        # host's bytes sooner in simulated time, at a few more round trips
        if not 0.0 < batch_max_s <= 60.0:
            raise ValueError(f"batch_max_s must be within 0..60 s, got {batch_max_s}")
        self.batch_max_s = batch_max_s
        # board state
        self.now = 0.0
        self.next_set = 0
        self.boot_t = 0.0
        self.boot_n = 0
        self.child: subprocess.Popen[bytes] | None = None
        self.req_fd = -1
        self.resp_fd = -1
        self.adc_fd = -1
        self.adc_capacity = 1 << 16
        self.rbuf = bytearray()
        self.duration = math.inf
        self.horizon = 0.0                            # the board time at the end of the last batch
        self._ee_pos = 0
        self._held: bytes | None = None               # an ADC request left for the next run()
        # the batch being consumed: first set, block sets, ready times, edges sent (block, edge)
        self._batch: tuple[int, int, list[float], list[tuple[int, tuple[float, int, int]]]] | None = None
        self._tmap: dict[int, float] = {0: 0.0}     # board µs the HAL may report -> exact sim time
        self.rx: deque[tuple[float, bytes]] = deque()      # host -> board (arrival, bytes)
        self.rx_free_at = 0.0
        self.tx: deque[tuple[float, bytes]] = deque()      # board -> host (done, bytes)
        self.tx_busy = 0.0
        self.brown_seen = False
        self.outage_i = 0
        self.wall0 = 0.0
        self.crash_times: list[float] = []
        self.host_bytes_while_dead = 0
        self.clock_writer: Any = None   # gridtap.simclock.ClockWriter (gridtap sim --clock-file), or None

    @property
    def pty_path(self) -> str | None:
        return self.pty.path if self.pty else None

    # -- supply --------------------------------------------------------------
    def _outage(self) -> tuple[float, float] | None:
        spans = self.sim.scn.outages.spans
        while self.outage_i < len(spans) and spans[self.outage_i][0] + self.board.holdup_s < self.now:
            self.outage_i += 1
        return spans[self.outage_i] if self.outage_i < len(spans) else None

    def _death_time(self) -> float:
        o = self._outage()
        return o[0] + self.board.holdup_s if o else math.inf

    def _brown_time(self) -> float:
        o = self._outage()
        return o[0] if o else math.inf

    # -- child process -------------------------------------------------------
    def _spawn(self, cause: int) -> None:
        self.boot_n += 1
        d = self.workdir / f"boot-{self.boot_n}"
        d.mkdir()
        os.mkfifo(d / "req")
        os.mkfifo(d / "resp")
        os.mkfifo(d / "adc")
        self.req_fd = os.open(d / "req", os.O_RDONLY | os.O_NONBLOCK)
        self.resp_fd = os.open(d / "resp", os.O_RDWR)    # never blocks on Linux
        self.adc_fd = os.open(d / "adc", os.O_RDWR)
        try:   # a batch must fit in the pipe: the HAL reads it block by block
            fcntl.fcntl(self.adc_fd, fcntl.F_SETPIPE_SZ, ADC_PIPE_BYTES)
        except OSError:
            pass
        self.adc_capacity = fcntl.fcntl(self.adc_fd, fcntl.F_GETPIPE_SZ)
        self.rbuf = bytearray()
        self._batch = None
        paths = [str(FIRMWARE_DIR)] + [str(p) for p in self.extra_path] + [".frozen"]
        env = dict(os.environ, MICROPYPATH=":".join(paths), GRIDTAP_SIM_DIR=str(d))
        if self.command is not None:
            argv = self.command(d)
        else:
            argv = [micropython_exe(), "-X", f"heapsize={self.heap}"]
            if self.firmware is None:
                argv += ["-c", DEFAULT_FIRMWARE]
            else:
                argv += [str(self.firmware)]
        self.fw_log.write(b"--- boot %d at t=%.6f s, reset cause %d ---\n" % (self.boot_n, self.now, cause))
        self.fw_log.flush()
        # own session: a Ctrl-C at the terminal stops the simulator, which then ends the board
        self.child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self.fw_log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.boot_t = self.now
        self.horizon = self.now
        self._tmap = {0: self.now}
        self.next_set = int(math.ceil(self.now * self.fs - 1e-9))
        self.reset_cause = cause
        self.brown_seen = False
        self.stats.boots.append((self.now, cause))
        self.tx.clear()
        self.rx.clear()

    def _kill(self, why: str) -> None:
        self._flush_tx()     # what was on the wire before the end still arrives
        if self.child is not None:
            if self.child.returncode is None:
                self.child.send_signal(signal.SIGKILL)
                try:   # reap it here for its CPU time
                    _, status, ru = os.wait4(self.child.pid, 0)
                    self.stats.fw_cpu_s += ru.ru_utime + ru.ru_stime
                    self.child.returncode = os.waitstatus_to_exitcode(status)
                except ChildProcessError:
                    pass
            self.child.wait()
            self.child = None
        for fd in (self.req_fd, self.resp_fd, self.adc_fd):
            if fd >= 0:
                os.close(fd)
        self.req_fd = self.resp_fd = self.adc_fd = -1
        if self._batch is not None:   # edges the board had not reached yet: a next boot may see them
            back = [e for _, e in self._batch[3] if e[0] >= self.now]
            if back:
                self.sim.edges = sorted(back + self.sim.edges)
        self._batch = None
        self._held = None
        self.stats.deaths.append((self.now, why))
        self.tx.clear()
        self.rx.clear()

    # -- wall clock and the host side ------------------------------------------
    def _wall_target(self, t: float) -> float:
        return self.wall0 + t / self.speed

    def _service_host(self, until_wall: float | None = None) -> None:
        """Read host bytes from the pty; with until_wall, wait (pacing) until then."""
        while True:
            if self.pty is not None:
                data = self.pty.read()
                if data:
                    self._host_bytes(data)
                    continue
            if until_wall is None:
                return
            left = until_wall - time.monotonic()
            if left <= 0:
                return
            if self.pty is not None:
                select.select([self.pty.master], [], [], left)
            else:
                time.sleep(left)

    def _host_bytes(self, data: bytes) -> None:
        if self.child is None:
            self.host_bytes_while_dead += len(data)
            return
        start = max(self.now, self.rx_free_at)
        start = self.to_board.release_time(start)
        arrive = start + len(data) * self.byte_s
        self.rx_free_at = arrive
        out = self.to_board.corrupt(data)
        if out:
            self.rx.append((arrive, out))

    def _flush_tx(self, until: float | None = None) -> None:
        limit = self.now if until is None else until
        while self.tx and self.tx[0][0] <= limit:
            _, data = self.tx.popleft()
            if self.pty is not None:
                self.pty.write(data)
            self.stats.uart_from_board += len(data)

    # -- the request/response protocol ------------------------------------------
    def _fill(self, n: int) -> None:
        since = time.monotonic()
        while len(self.rbuf) < n:
            assert self.child is not None
            if time.monotonic() - since > self.hang_wall_s:
                raise ChildGone(f"firmware hung: no HAL request for {self.hang_wall_s:g} s of wall time")
            r, _, _ = select.select([self.req_fd] + ([self.pty.master] if self.pty else []), [], [], 1.0)
            if self.pty is not None and self.pty.master in r:
                self._service_host()
            if self.req_fd in r:
                try:
                    chunk = os.read(self.req_fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise ChildGone()
                self.rbuf += chunk
            elif self.child.poll() is not None:
                try:
                    chunk = os.read(self.req_fd, 65536)
                except BlockingIOError:
                    chunk = b""
                if not chunk:
                    raise ChildGone()
                self.rbuf += chunk

    def _request(self) -> tuple[int, bytes]:
        self._fill(5)
        cmd, n = struct.unpack_from("<BI", self.rbuf)
        if n > MAX_PAYLOAD:
            raise SimError(f"firmware sent a request of {n} bytes")
        self._fill(5 + n)
        payload = bytes(self.rbuf[5:5 + n])
        del self.rbuf[:5 + n]
        return cmd, payload

    def _reply(self, cmd: int, payload: bytes) -> None:
        self._write_all(self.resp_fd, struct.pack("<BI", cmd, len(payload)) + payload)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                k = os.write(fd, view)
            except BlockingIOError:
                select.select([], [fd], [], 1.0)
                continue
            view = view[k:]

    def _us(self, t: float) -> int:
        return int(round((t - self.boot_t) * 1e6))

    def _sync(self, now_us: int, flags: int = 0) -> None:
        """The board's time as the HAL reports it, mapped back to the exact simulated time."""
        t = self._tmap.get(now_us)
        self.now = t if t is not None else self.boot_t + now_us * 1e-6
        if flags & 1 and not self.brown_seen:          # the firmware has been told of the brownout
            self.brown_seen = True
            self.stats.brownout_flags.append(self._brown_time())
        if self.clock_writer is not None:   # the firmware's present is the host's now (never goes back)
            self.clock_writer.publish(self.now)

    def _commit(self, consumed: int) -> None:
        """The HAL used `consumed` blocks of the last batch; the rest were never seen: rewind."""
        if self._batch is None:
            return
        first, n, readies, edges = self._batch
        self._batch = None
        if consumed > len(readies):
            raise SimError(f"firmware claims {consumed} blocks of a batch of {len(readies)}")
        unseen = len(readies) - consumed
        if unseen:
            self.next_set = first + consumed * n
            self.stats.adc_blocks -= unseen
            self.stats.sets_served -= unseen * n
            back = [e for b, e in edges if b >= consumed]
            if back:
                self.sim.edges = sorted(back + self.sim.edges)

    def _batch_blocks(self, n: int, cap: int) -> int:
        """How many blocks of n sets one request gets (the firmware sees the same either way)."""
        block_s = n / self.fs
        span = self.batch_max_s if self.speed == math.inf else min(self.batch_max_s,
                                                                    self.speed * BATCH_WALL_S)
        k = max(1, min(cap, int(span / block_s + 1e-9),
                       self.adc_capacity // (n * self.board.n_channels * 2)))
        # end the batch at the end of a simulated second: the model makes whole seconds
        to_second = -(-((self.next_set // self.fs + 1) * self.fs - self.next_set) // n)
        return max(1, min(k, to_second))

    def _on_adc(self, payload: bytes) -> bool:
        if len(payload) != 15:
            raise SimError(f"ADC request of {len(payload)} bytes, expected 15")
        n, cap, consumed, flags, now_us = struct.unpack("<HHHBQ", payload)
        if n == 0:
            raise SimError("firmware asked for an ADC block of 0 sets")
        self._commit(consumed)
        self._sync(now_us, flags)
        t_req = self.now
        death = self._death_time()
        k_max = self._batch_blocks(n, cap)
        fs = self.fs
        s0 = self.next_set
        readies = [(s0 + n * j) / fs for j in range(1, k_max + 1)]
        nows = readies if readies[0] >= t_req else [max(t_req, r) for r in readies]
        k = bisect_left(nows, death)               # blocks ready before the board dies
        if self.duration != math.inf:              # and none after the one that reaches the end
            k = min(k, bisect_left(nows, self.duration) + 1)
        if k == 0:
            self.now = death
            self._kill("supply lost (hold-up expired)")
            return False
        del readies[k:]
        if nows is not readies:
            del nows[k:]
        now = nows[-1]
        s = s0 + n * k
        if self.speed != math.inf:
            self._service_host(self._wall_target(now))
        else:
            self._service_host()
        first = self.next_set
        samples = self.sim.samples(first, n * k)
        raw = self.sim.take_edges(self.boot_t, readies[-1])
        edges: list[tuple[int, tuple[float, int, int]]] = []
        j = 0
        for e in raw:                    # an edge belongs to the first block ready after it
            while readies[j] <= e[0]:
                j += 1
            edges.append((j, e))
        self.next_set = s
        rx: list[tuple[float, bytes]] = []
        while self.rx and self.rx[0][0] <= now:
            rx.append(self.rx.popleft())
        self.stats.uart_to_board += sum(len(d) for _, d in rx)
        brown_t = self._brown_time()
        self.now = now
        self._flush_tx()
        ready_us = np.rint((np.asarray(readies) - self.boot_t) * 1e6).astype(np.int64)
        now_us_list = ready_us.tolist() if nows is readies else [self._us(t) for t in nows]
        self._tmap = dict(zip(now_us_list, nows, strict=True))
        self._tmap[now_us] = t_req
        self.horizon = now
        self._batch = (first, n, readies, edges)
        self.stats.adc_blocks += k
        self.stats.sets_served += n * k
        self.stats.batches += 1
        parts = [struct.pack("<HQHH", k, NEVER_US if brown_t == math.inf else max(self._us(brown_t), 0),
                             len(edges), len(rx)),
                 ready_us.astype("<u8").tobytes()]
        parts += [struct.pack("<HBBQ", b, inp, lvl, max(self._us(t), 0)) for b, (t, inp, lvl) in edges]
        for t, data in rx:
            parts.append(struct.pack("<QH", max(int(math.ceil((t - self.boot_t) * 1e6 - 1e-6)), 0),
                                     len(data)) + data)
        self._write_all(self.adc_fd, samples.astype("<u2", copy=False).tobytes())
        self._reply(CMD_ADC, b"".join(parts))
        if self.ber_bursts:
            self.to_board.ber = self.from_board.ber = self.ber_at(now)
        return True

    def ber_at(self, t: float) -> float:
        """The wire's bit error rate at simulated time t (a burst's, or the base rate)."""
        for a, b, r in self.ber_bursts:
            if a <= t < b:
                return r
            if a > t:
                break
        return self.ber

    def _on_uart_tx(self, payload: bytes) -> None:
        data = self.from_board.corrupt(payload)
        start = self.from_board.release_time(max(self.now, self.tx_busy))
        done = start + len(payload) * self.byte_s
        self.tx_busy = done
        if data:
            self.tx.append((done, data))
        # Bytes the board will have sent before the end of the batch it is consuming go to the pty
        # now, not at its next ADC request (up to a batch later): long batches then keep the
        # board-to-host latency of a real board. The board lives to the batch's end by construction.
        if self.tx and self.tx[-1][0] <= self.horizon:
            self._flush_tx(self.horizon)

    def _on_ee_write(self, payload: bytes) -> bool:
        if len(payload) < 5:
            self._reply(CMD_EE_WRITE, b"\x01" + b"eeprom_write needs an address and 1 or more bytes")
            return True
        (addr,) = struct.unpack_from("<I", payload)
        data = payload[4:]
        try:
            self.eeprom._addresses(addr, len(data))
        except EepromError as exc:
            self._reply(CMD_EE_WRITE, b"\x01" + str(exc).encode())
            return True
        end = self.now + self.eeprom.cycle_s
        death = self._death_time()
        self.stats.ee_writes += 1
        if death <= self.now + 1e-9:   # dead before the chip saw the command
            self.now = max(self.now, death)
            self._kill("supply lost before an EEPROM write")
            return False
        if death < end:
            self.eeprom.tear(addr, data, max(0.0, (death - self.now) / self.eeprom.cycle_s))
            self.now = max(self.now, death)
            self._kill("supply lost during an EEPROM write (page torn)")
            return False
        self.eeprom.write(addr, data)
        self.now = end
        end_us = self._us(end)
        self._tmap[end_us] = end
        # blocks of the batch still ahead: the HAL may use them only if the board lives to see them
        keep = 0
        if self._batch is not None and end < death:
            keep = max(len(self._batch[2]) - self._ee_pos, 0)
        self._reply(CMD_EE_WRITE, b"\x00" + struct.pack("<QH", end_us, keep))
        return True

    def _on_ee_read(self, payload: bytes) -> None:
        addr, n = struct.unpack("<II", payload)
        self.stats.ee_reads += 1
        try:
            data = self.eeprom.read(addr, n)
        except EepromError:
            data = b""
        self._reply(CMD_EE_READ, data)

    def _hello(self) -> bytes:
        return (bytes([self.reset_cause]) + self.uid + struct.pack("<I", self.rx_limit)
                + self.board.text.encode())

    def _serve(self, duration: float) -> None:
        """Answer requests until the child dies or `duration` is reached."""
        self.duration = duration
        while self.child is not None:
            if self._held is not None:
                payload, self._held = self._held, None
                if not self._on_adc(payload):
                    return
                continue
            if max(self.now, self.horizon) >= duration and self._batch is None:
                return
            try:
                cmd, payload = self._request()
            except ChildGone as exc:
                self._crashed(exc.why)
                return
            self.stats.requests += 1
            if cmd == CMD_ADC:
                if max(self.now, self.horizon) >= duration:
                    # the firmware has used up the last batch (its UART writes are in): the run
                    # ends here, and a later run() answers this request
                    self._held = payload
                    return
                if not self._on_adc(payload):
                    return
            elif cmd == CMD_UART_TX:
                if len(payload) < 8:
                    raise SimError("UART_TX request without the board time")
                self._sync(struct.unpack_from("<Q", payload)[0])
                self._on_uart_tx(payload[8:])
            elif cmd == CMD_EE_WRITE:
                if len(payload) < 11:
                    raise SimError("EE_WRITE request without the board time")
                now_us, self._ee_pos, flags = struct.unpack_from("<QHB", payload)
                self._sync(now_us, flags)
                if not self._on_ee_write(payload[11:]):
                    return
            elif cmd == CMD_EE_READ:
                self._on_ee_read(payload)
            elif cmd == CMD_HELLO:
                self._reply(CMD_HELLO, self._hello())
            elif cmd == CMD_RESET:
                if len(payload) >= 8:
                    self._sync(struct.unpack_from("<Q", payload)[0])
                self._kill("soft reset requested")
                self.now += float(self.board.sim["boot_s"])
                self._spawn(RESET_SOFT)
            else:
                raise SimError(f"firmware sent unknown request {cmd}")

    def _crashed(self, why: str) -> None:
        self.now = max(self.now, self.horizon)    # somewhere in the last batch: say at its end
        tail = self._log_tail()
        self._kill(why)
        self.crash_times.append(self.now)
        recent = [t for t in self.crash_times if self.now - t < 5.0]
        if len(recent) >= 3:
            raise SimError(f"firmware crashed 3 times within 5 simulated seconds; last output:\n{tail}")
        self.now += float(self.board.sim["boot_s"])
        self._spawn(RESET_WATCHDOG)

    def _log_tail(self, n: int = 2000) -> str:
        self.fw_log.flush()
        try:
            data = self.fw_log_path.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")

    # -- the run loop -------------------------------------------------------------
    def run(self, duration: float, on_second: Any = None) -> RunStats:
        """Run until simulated `duration` seconds (math.inf: until interrupted)."""
        self.wall0 = time.monotonic()
        w0 = time.perf_counter()
        self.sim.start_prefetch()
        try:
            if self.child is None and self.now == 0.0:
                self._spawn(RESET_POWER_ON)
            while max(self.now, self.horizon) < duration:
                if self.child is not None:
                    self._serve(duration)
                    continue
                # dead: wait for the mains to return, then boot
                o = self._outage()
                restore = o[1] if o else self.now
                boot = max(restore, self.now) + float(self.board.sim["boot_s"])
                self.outage_i += 1 if o else 0
                target = min(boot, duration)
                if self.speed != math.inf:
                    self._service_host(self._wall_target(target))
                self.now = target
                if self.now >= duration:
                    break
                self._spawn(RESET_BROWNOUT)
        finally:
            self.now = max(self.now, self.horizon)
            self.stats.wall_s = time.perf_counter() - w0
            self.sim.ensure_second(int(math.ceil(min(duration, self.now))) - 1)
            self.sim.stop_prefetch()
        return self.stats

    def close(self) -> None:
        if self.child is not None:
            self._kill("simulation ended")
            self.stats.deaths.pop()
        self.fw_log.close()
        if self.pty is not None:
            self.pty.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def record_extras(self) -> tuple[dict[str, Any], dict[str, Any]]:
        meta = {
            "sim_s": self.now,
            "speed": "max" if self.speed == math.inf else self.speed,
            "wall_s": self.stats.wall_s,
            "boots": self.stats.boots,
            "deaths": self.stats.deaths,
            "brownout_flags_s": self.stats.brownout_flags,
            "adc_blocks": self.stats.adc_blocks,
            "eeprom": {"writes": self.stats.ee_writes, "reads": self.stats.ee_reads,
                       "page_wraps": self.eeprom.page_wraps, "torn": self.eeprom.torn},
            "uart": {"to_board": vars(self.to_board.stats), "from_board": vars(self.from_board.stats),
                     "pty_overflow": self.pty.overflow if self.pty else 0},
        }
        arrays = {"eeprom_writes": self.eeprom.writes.copy(),
                  "eeprom_data": np.frombuffer(bytes(self.eeprom.data), dtype=np.uint8).copy()}
        return meta, arrays
