"""A LuxPower hybrid inverter and its WiFi datalogger, as a real TCP server on 127.0.0.1.

The test peer of gridtap's LuxPower client and the demo's inverter (docs/luxpower.md, "Simulator").
Pure Python (no numpy), so the host tests can run it.

* `Inverter`: the battery (capacity, charge/discharge power limits, round-trip efficiency, SOC
  limits), the holding registers gridtap writes (21 AC charge / forced discharge bits, 59/61 reactive
  mode and %, 64-67 power % and AC-charge SOC limit, 68-73 AC-charge windows, 105 cut-off SOC) and
  the input registers it pushes. `advance(t)` integrates the battery up to time t of the clock it
  is given. Its AC power (+ charging from the grid, - discharging) is what the virtual house's
  battery load draws (gridtap_sim.model.battery), so the grid CT sees what the controller does; its
  reactive power (`q_var`) is a load in quadrature on the same CT (gridtap_sim.model.reactive).
* `Datalogger`: the TCP server (port 8000 on a real one; 0 = any free port here). It sends a
  heartbeat every `heartbeat_s` and pushes input registers 0-39 every `push_s` to every client that
  answered the last heartbeat (a real datalogger stops pushing to one that does not), and answers
  function-194 requests for the inverter. Faults on request: `drop()` closes every connection,
  `stall(s)` goes silent for s seconds (connected, nothing sent or answered), `refuse(n, code)`
  answers the next n requests with a Modbus exception, `garble(n)` corrupts the next n replies'
  CRC, `not_sticking(n)` acknowledges the next n writes without applying them, `reject(register)`
  refuses every write of a register (exception 3, "illegal data value").

Times come from `clock` (seconds; a simulated one in the benchmark), network waits are real.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gridtap.control.luxpower import frame as fr
from gridtap.control.luxpower import registers as r


@dataclass
class Battery:
    capacity_wh: float = 10_000.0
    max_charge_w: float = 3_000.0
    max_discharge_w: float = 3_000.0
    round_trip: float = 0.9  # energy out / energy in
    soc_min_pct: float = 10.0  # the BMS floor (the cut-off register may set a higher one)
    soc_max_pct: float = 100.0
    soc_pct: float = 50.0


class Inverter:
    def __init__(self, serial: str = "5555555555", battery: Battery | None = None,
                 clock: Callable[[], float] = time.time,
                 house_w: Callable[[float], float] | None = None, rated_va: float = 3600.0) -> None:
        self.serial = serial
        self.rated_va = rated_va  # the reactive % of register 61 are of it
        self.battery = battery or Battery()
        self.clock = clock
        self.house_w = house_w  # net house load (W, + import) for self-consumption; None: idle
        self.hold = [0] * 256
        self.hold[r.REG_FUNCTION] = 62292  # octolux's logged value: AC charge and forced discharge off
        self.hold[r.REG_CHARGE_PCT] = 100
        self.hold[r.REG_DISCHARGE_PCT] = 100
        self.hold[r.REG_AC_CHARGE_PCT] = 100
        self.hold[r.REG_AC_CHARGE_SOC] = 100
        self.hold[r.REG_FORCED_DISCHARGE_PCT] = 100
        self.hold[r.REG_DISCHARGE_CUTOFF_SOC] = 10
        self.hold[r.REG_REACTIVE_MODE] = r.Q_UNITY  # the factory setting: unity power factor
        self.hold[60] = 100  # active power % (not modelled)
        wins = r.windows_values([r.WHOLE_DAY])
        self.hold[r.REG_AC_CHARGE_WINDOWS:r.REG_AC_CHARGE_WINDOWS + 6] = list(wins)
        self.hold[r.REG_FORCED_DISCHARGE_WINDOWS:r.REG_FORCED_DISCHARGE_WINDOWS + 6] = list(wins)
        self.t = clock()
        self.ac_w = 0.0  # battery AC power now: + charging, - discharging
        self.lock = threading.RLock()

    # -- the battery ---------------------------------------------------------
    def _in_window(self, base: int, t: float) -> bool:
        tm = time.gmtime(t)
        now = tm.tm_hour * 60 + tm.tm_min
        for i in range(3):
            h1, m1 = r.unpack_time(self.hold[base + 2 * i])
            h2, m2 = r.unpack_time(self.hold[base + 2 * i + 1])
            a, b = h1 * 60 + m1, h2 * 60 + m2
            if (a <= now <= b) if a <= b else (now >= a or now <= b):
                if (a, b) != (0, 0):
                    return True
        return False

    def wanted_w(self, t: float) -> float:
        """The battery's AC power the settings ask for at t (before the SOC limits)."""
        b, h = self.battery, self.hold
        soc = b.soc_pct
        if h[r.REG_FUNCTION] & r.BIT_FORCED_DISCHARGE and self._in_window(r.REG_FORCED_DISCHARGE_WINDOWS, t):
            floor = max(b.soc_min_pct, h[r.REG_DISCHARGE_CUTOFF_SOC])
            return -b.max_discharge_w * min(h[r.REG_FORCED_DISCHARGE_PCT], 100) / 100 if soc > floor else 0.0
        if h[r.REG_FUNCTION] & r.BIT_AC_CHARGE and self._in_window(r.REG_AC_CHARGE_WINDOWS, t):
            top = min(b.soc_max_pct, h[r.REG_AC_CHARGE_SOC])
            return b.max_charge_w * min(h[r.REG_AC_CHARGE_PCT], 100) / 100 if soc < top else 0.0
        if self.house_w is None:
            return 0.0
        # self-consumption: cover the import from the battery, store the export
        net = self.house_w(t)
        if net > 0 and soc > max(b.soc_min_pct, h[r.REG_DISCHARGE_CUTOFF_SOC]):
            return -min(net, b.max_discharge_w * min(h[r.REG_DISCHARGE_PCT], 100) / 100)
        if net < 0 and soc < b.soc_max_pct:
            return min(-net, b.max_charge_w * min(h[r.REG_CHARGE_PCT], 100) / 100)
        return 0.0

    def advance(self, t: float | None = None) -> None:
        """Integrate the battery up to t (default: the clock), in steps of at most 10 s."""
        with self.lock:
            t = self.clock() if t is None else t
            eff = math.sqrt(self.battery.round_trip)
            b = self.battery
            while self.t < t:
                dt = min(10.0, t - self.t)
                w = self.wanted_w(self.t)
                wh = w * dt / 3600 * (eff if w > 0 else 1 / eff)
                b.soc_pct = min(max(b.soc_pct + 100 * wh / b.capacity_wh, 0.0), 100.0)
                self.ac_w = w
                self.t += dt
            self.ac_w = self.wanted_w(self.t)

    def ac_power(self) -> float:
        """The battery's AC power now (W, + charging from the grid, - discharging)."""
        self.advance()
        return self.ac_w

    def q_var(self) -> float:
        """The inverter's reactive power now (var, + inductive: absorbed, lagging as the grid CT sees it):
        registers 59/61 in the fixed modes 4 (capacitive) and 5 (inductive), % of `rated_va` capped at 60 %;
        unity power factor and the curve modes (Q(P), Q(V), PF: not modelled) give 0."""
        with self.lock:
            mode, pct = self.hold[r.REG_REACTIVE_MODE], min(self.hold[r.REG_REACTIVE_PCT], r.Q_PCT_MAX)
        if mode == r.Q_INDUCTIVE:
            return self.rated_va * pct / 100.0
        if mode == r.Q_CAPACITIVE:
            return -self.rated_va * pct / 100.0
        return 0.0

    def inputs(self) -> tuple[int, ...]:
        """Input registers 0..39 as pushed."""
        with self.lock:
            self.advance()
            regs = [0] * 40
            regs[r.IN_STATUS] = 0x10 if self.ac_w else 0x0C  # a plausible status word, not decoded
            regs[4] = 520  # battery volts x10
            regs[r.IN_SOC] = int(round(self.battery.soc_pct)) | (100 << 8)
            regs[r.IN_CHARGE_W] = int(max(self.ac_w, 0))
            regs[r.IN_DISCHARGE_W] = int(max(-self.ac_w, 0))
            regs[12] = 2300
            regs[15] = 5000
            return tuple(regs)


class Datalogger:
    def __init__(self, inverter: Inverter, serial: str = "2222222222", port: int = 0,
                 heartbeat_s: float = 30.0, push_s: float = 120.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.inverter = inverter
        self.serial = serial
        self.clock = clock or inverter.clock
        self.heartbeat_s = heartbeat_s
        self.push_s = push_s
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.clients: dict[socket.socket, dict[str, object]] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lux-datalogger", daemon=True)
        self.lock = threading.Lock()
        self.stall_until = 0.0  # monotonic
        self.refusals = 0
        self.refuse_code = 4
        self.garbles = 0
        self.unstuck = 0
        self.rejected: set[int] = set()
        self.writes = 0  # holding-register writes applied (the benchmark's count)
        self.requests = 0
        self.connections = 0

    # -- faults --------------------------------------------------------------
    def drop(self) -> None:
        with self.lock:
            for c in list(self.clients):
                self._close(c)

    def stall(self, seconds: float) -> None:
        self.stall_until = time.monotonic() + seconds

    def refuse(self, n: int = 1, code: int = 4) -> None:
        self.refusals, self.refuse_code = n, code

    def garble(self, n: int = 1) -> None:
        self.garbles = n

    def not_sticking(self, n: int = 1) -> None:
        self.unstuck = n

    def reject(self, register: int) -> None:
        self.rejected.add(register)

    # -- server --------------------------------------------------------------
    def start(self) -> Datalogger:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        with self.lock:
            for c in list(self.clients):
                self._close(c)
        self.sock.close()

    def __enter__(self) -> Datalogger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close(self, c: socket.socket) -> None:
        self.clients.pop(c, None)
        try:
            c.close()
        except OSError:
            pass

    def _run(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                socks = [self.sock, *self.clients]
            try:
                ready, _, _ = select.select(socks, [], [], 0.01)
            except (OSError, ValueError):  # a client closed under us by drop()
                continue
            stalled = time.monotonic() < self.stall_until
            if stalled and ready:
                time.sleep(0.01)  # unread data keeps select() returning: do not spin while silent
            for s in ready:
                if s is self.sock:
                    self._accept()
                elif not stalled:
                    self._read(s)
            if not stalled:
                self._timers()

    def _accept(self) -> None:
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        now = self.clock()
        with self.lock:
            self.connections += 1
            self.clients[c] = {"split": fr.Splitter(), "hb": now, "push": now + 1.0, "answered": True}

    def _send(self, c: socket.socket, data: bytes) -> None:
        try:
            c.sendall(data)
        except OSError:
            with self.lock:
                self._close(c)

    def _timers(self) -> None:
        now = self.clock()
        with self.lock:
            items = list(self.clients.items())
        for c, st in items:
            if now >= float(st["hb"]):  # type: ignore[arg-type]
                st["hb"] = now + self.heartbeat_s
                st["answered"] = False
                self._send(c, fr.encode(fr.Heartbeat(self.serial)))
            if now >= float(st["push"]):  # type: ignore[arg-type]
                st["push"] = now + self.push_s
                if st["answered"]:
                    push = fr.Translated(self.serial, self.inverter.serial, fr.READ_INPUT, 0, reply=True,
                                         values=self.inverter.inputs(), protocol=2)
                    self._send(c, fr.encode(push))

    def _read(self, c: socket.socket) -> None:
        try:
            data = c.recv(4096)
        except OSError:
            data = b""
        if not data:
            with self.lock:
                self._close(c)
            return
        st = self.clients.get(c)
        if st is None:
            return
        split: fr.Splitter = st["split"]  # type: ignore[assignment]
        for raw in split.feed(data):
            try:
                f = fr.decode(raw)
            except fr.FrameError:
                continue  # a real datalogger ignores what it cannot parse
            if isinstance(f, fr.Heartbeat):
                st["answered"] = True
            elif isinstance(f, fr.Translated) and not f.reply:
                out = self._answer(f)
                if out is not None:
                    self._send(c, out)

    def _answer(self, f: fr.Translated) -> bytes | None:
        self.requests += 1
        inv = self.inverter
        base = {"datalogger": self.serial, "inverter": inv.serial, "function": f.function,
                "register": f.register, "reply": True, "protocol": 2}
        if self.refusals > 0:
            self.refusals -= 1
            return fr.encode(fr.Translated(**base, exception=self.refuse_code))  # type: ignore[arg-type]
        if f.inverter != inv.serial:
            return None  # addressed to another inverter: nobody answers
        n = f.count or len(f.values)
        if f.register + n > len(inv.hold):
            return fr.encode(fr.Translated(**base, exception=2))  # type: ignore[arg-type]
        reply: fr.Translated
        with inv.lock:
            inv.advance()
            if f.function == fr.READ_HOLD:
                reply = fr.Translated(**base, values=tuple(inv.hold[f.register:f.register + n]))  # type: ignore[arg-type]
            elif f.function == fr.READ_INPUT:
                regs = inv.inputs() + (0,) * 256
                reply = fr.Translated(**base, values=regs[f.register:f.register + n])  # type: ignore[arg-type]
            else:
                if any(reg in self.rejected for reg in range(f.register, f.register + n)):
                    return fr.encode(fr.Translated(**base, exception=3))  # type: ignore[arg-type]
                if self.unstuck > 0:
                    self.unstuck -= 1
                else:
                    inv.hold[f.register:f.register + n] = list(f.values)
                    self.writes += 1
                if f.function == fr.WRITE_SINGLE:
                    reply = fr.Translated(**base, values=f.values)  # type: ignore[arg-type]
                else:
                    reply = fr.Translated(**base, count=n)  # type: ignore[arg-type]
        out = fr.encode(reply)
        if self.garbles > 0:
            self.garbles -= 1
            out = out[:-1] + bytes([out[-1] ^ 0x5A])
        return out
