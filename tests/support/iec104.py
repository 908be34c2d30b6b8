"""IEC-104 test kit: gridtap's [iec104] output on loopback, the operator's RTU (c104), a raw client.

The raw client speaks bytes and checks every frame the server sends with the
independent parser `iec60870-parser`; the RTU is lib60870 through c104. Both
the pytest conformance suite and bench/bench_iec104.py walk `CASES`.
"""

# no `from __future__ import annotations`: c104 checks its callbacks' annotations as objects

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from iec60870.parser import FrameStatus, parse_frame

from gridtap.config import parse_config
from gridtap.outputs import OutputContext
from gridtap.outputs.iec104 import codec
from gridtap.outputs.iec104.link import LinkParams
from gridtap.outputs.iec104.netflex import ModelConfig
from gridtap.outputs.iec104.output import Iec104Output
from gridtap.outputs.iec104.settings import Iec104Config

FAST = LinkParams(k=12, w=8, t0=2.0, t1=0.6, t2=0.2, t3=0.8)
# c104 acknowledges after w frames or its t2 (confirm_interval, whole seconds, 1 at least): a longer t1
RTU_LINK = LinkParams(k=12, w=8, t0=10.0, t1=3.0, t2=0.2, t3=5.0)
# c104 binds one type to an IOA, and interrogation answers cannot carry time tags: untagged feedback
RTU_MODEL = ModelConfig(time_tags=False)


def rtu_config(report_s: float = 60.0) -> Iec104Config:
    return Iec104Config(port=0, report_s=report_s, link=RTU_LINK, model=RTU_MODEL)
SENSORS = """
[daemon]
state_dir = "{state}"
[board]
port = "/dev/null"
[[sensor]]
name = "pv"
id = "{pv}"
kind = "ct"
channel = 1
[[sensor]]
name = "battery"
id = "{battery}"
kind = "ct"
channel = 2
"""
PV_ID = "0123456789abcdef0123456789abcdef"
BATTERY_ID = "1123456789abcdef0123456789abcdef"


def daemon_config(state_dir: Path) -> Any:
    text = SENSORS.format(state=state_dir, pv=PV_ID, battery=BATTERY_ID)
    return parse_config(text, state_dir / "gridtap.toml")


@contextlib.contextmanager
def server(state_dir: Path, cfg: Iec104Config | None = None) -> Iterator[Iec104Output]:
    cfg = cfg or Iec104Config(port=0, report_s=60.0, link=FAST)  # reports would keep t3 from running
    if not cfg.model.assets:
        cfg = replace(cfg, model=replace(cfg.model, assets={"solar": ("pv",), "storage": ("battery",)}))
    out = Iec104Output(cfg, OutputContext(daemon_config(state_dir)))
    out.start()
    try:
        yield out
    finally:
        out.stop()


# -- raw client, frames checked with iec60870-parser -----------------------------------------------

class Raw:
    def __init__(self, port: int, timeout: float = 2.0, auto_ack: bool = True) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.auto_ack = auto_ack  # acknowledge every I-frame at once (w = 1)
        self.buf = b""
        self.nr = 0  # next N(S) expected from the server
        self.ns = 0

    def close(self) -> None:
        self.s.close()

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def send_asdu(self, asdu: bytes, nr: int | None = None) -> None:
        self.send(codec.encode_i(self.ns, self.nr if nr is None else nr, asdu))
        self.ns += 1

    def frame(self, timeout: float = 2.0) -> bytes | None:
        """The next APDU, checked by iec60870-parser; None when the server closed the link."""
        end = time.monotonic() + timeout
        while len(self.buf) < 2 or len(self.buf) < self.buf[1] + 2:
            self.s.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.s.recv(4096)
            except (ConnectionResetError, TimeoutError):
                if time.monotonic() >= end:
                    raise TimeoutError("no frame from the server") from None
                return None
            if not chunk:
                return None
            self.buf += chunk
        n = self.buf[1] + 2
        apdu, self.buf = self.buf[:n], self.buf[n:]
        res = parse_frame(apdu, protocol="t104")
        assert res.status == FrameStatus.VALID, (apdu.hex(), res.error)
        if res.frame_type == "I":
            assert res.fields["send_sequence"] == self.nr, "server N(S) out of sequence"
            self.nr += 1
            if self.auto_ack:
                self.send(codec.encode_s(self.nr))
        return apdu

    def asdu(self, timeout: float = 2.0) -> codec.Asdu:
        while True:
            f = self.frame(timeout)
            assert f is not None, "server closed the link"
            if f[2] & 1 == 0:
                return codec.decode_asdu(f[6:])

    def start(self) -> codec.Asdu:
        self.send(codec.encode_u(codec.STARTDT_ACT))
        assert self.frame() == codec.encode_u(codec.STARTDT_CON)
        ei = self.asdu()
        assert (ei.type_id, ei.cot) == (codec.M_EI_NA_1, codec.COT_INITIALISED)
        return ei

    def closed_within(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                if self.frame(end - time.monotonic()) is None:
                    return True
            except TimeoutError:
                return False
        return False


def command(type_id: int, ioa: int, elem: bytes, cot: int = codec.COT_ACT, ca: int = 100) -> bytes:
    return codec.encode_asdu(codec.Asdu(type_id, cot, ca, ((ioa, elem),)))


def setpoint(ioa: int, value: float, select: bool = False) -> bytes:
    return command(codec.C_SE_NC_1, ioa, struct.pack("<f", value) + bytes([0x80 if select else 0]))


# -- the operator's RTU: c104 ------------------------------------------------------------------------

@dataclass
class Rtu:
    """A c104 client with the Netflex points; records when each feedback value arrives."""

    port: int
    client: Any = None
    conn: Any = None
    station: Any = None
    received: list[tuple[float, int, Any, str]] = field(default_factory=list)  # (t, ioa, value, cot)
    raw: list[bytes] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # what lib60870 found wrong in our messages
    initialised: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "Rtu":
        import c104

        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=2000)
        self.conn = self.client.add_connection(ip="127.0.0.1", port=self.port, init=c104.Init.NONE)
        self.conn.protocol_parameters.confirm_interval = 1
        self.station = self.conn.add_station(common_address=100)
        rec = self.received
        raw = self.raw

        def on_point(point: c104.Point, previous_info: c104.Information,
                     message: c104.IncomingMessage) -> c104.ResponseState:
            rec.append((time.monotonic(), point.io_address, point.value, str(message.cot)))
            return c104.ResponseState.SUCCESS

        def on_new_point(client: c104.Client, station: c104.Station, io_address: int,
                         point_type: c104.Type) -> None:
            point = station.add_point(io_address=io_address, type=point_type)
            assert point is not None
            point.on_receive(callable=on_point)

        def on_raw(connection: c104.Connection, data: bytes) -> None:
            raw.append(bytes(data))

        def on_init(client: c104.Client, station: c104.Station, cause: c104.Coi) -> None:
            self.initialised.set()

        def on_unexpected(connection: c104.Connection, message: c104.IncomingMessage,
                          cause: c104.Umc) -> None:
            self.unexpected.append(f"{cause} type {message.type} ioa {message.io_address}")

        self.conn.on_unexpected_message(callable=on_unexpected)
        self.client.on_new_point(callable=on_new_point)
        self.client.on_station_initialized(callable=on_init)
        self.conn.on_receive_raw(callable=on_raw)
        for ioa, t in ((1001, c104.Type.C_SC_NA_1), (1002, c104.Type.C_SC_NA_1), (1003, c104.Type.C_SC_NA_1),
                       (1004, c104.Type.C_DC_NA_1)):
            self.station.add_point(io_address=ioa, type=t)
        for i in range(8):
            self.station.add_point(io_address=1101 + i, type=c104.Type.C_SE_NC_1)
        self.client.start()
        for _attempt in range(3):  # c104 #58: a connection now and then never starts; reconnect
            end = time.monotonic() + 3
            while self.conn.state != c104.ConnectionState.OPEN and time.monotonic() < end:
                time.sleep(0.01)
            if self.conn.state == c104.ConnectionState.OPEN:
                return self
            self.conn.disconnect()
            self.conn.connect()
        raise AssertionError("c104 client did not open the connection")

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def point(self, ioa: int) -> Any:
        return self.station.get_point(io_address=ioa)

    def send(self, ioa: int, value: Any, select: bool = False) -> bool:
        import c104

        p = self.point(ioa)
        p.value = value
        # c104 #20/#33: a command right after opening can fail once; one retry
        return bool(p.transmit(cause=c104.Cot.ACTIVATION) or p.transmit(cause=c104.Cot.ACTIVATION))

    def wait_value(self, ioa: int, since: float, timeout: float = 2.0) -> tuple[float, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, i, v, _cot in list(self.received):
                if i == ioa and t >= since:
                    return t, v
            time.sleep(0.001)
        raise AssertionError(f"no value for IOA {ioa} within {timeout} s")


# -- conformance cases ------------------------------------------------------------------------------

def case_seed_sequence(state: Path) -> None:
    """Connect, end of initialisation, GI, clock sync, every command and setpoint with its feedback."""
    import c104

    with server(state, rtu_config()) as out, Rtu(out.port) as rtu:
        assert rtu.initialised.wait(2), "no end of initialisation"
        assert rtu.conn.interrogation(common_address=100, cause=c104.Cot.ACTIVATION,
                                      qualifier=c104.Qoi.STATION)
        assert rtu.conn.clock_sync(common_address=100)
        time.sleep(0.2)
        assert rtu.point(3000).value == 1.0  # interface version
        for ioa, value, fb, want in ((1001, True, 2001, True), (1002, True, 2002, True),
                                     (1003, True, 2003, True), (1004, c104.Double.ON, 2004, c104.Double.ON)):
            t = time.monotonic()
            assert rtu.send(ioa, value), f"command {ioa} not confirmed"
            assert rtu.wait_value(fb, t)[1] == want
        for i, v in enumerate((40.0, 80.0, 90.0, 70.0, -20.0, 30.0, 99.0, 1.0)):
            t = time.monotonic()
            assert rtu.send(1101 + i, v), f"setpoint {1101 + i} not confirmed"
            assert abs(rtu.wait_value(2101 + i, t)[1] - v) < 1e-6
        lim = out.station.state
        assert lim.stop_production and lim.stop_consumption and lim.setpoints["MINSETP"] == 40.0
        assert not rtu.unexpected, rtu.unexpected
        for apdu in rtu.raw:  # every frame the RTU saw also passes the independent parser
            assert parse_frame(apdu, protocol="t104").status == FrameStatus.VALID, apdu.hex()


def case_periodic_reports(state: Path) -> None:
    with server(state, rtu_config(0.5)) as out, Rtu(out.port) as rtu:
        out.gauge(PV_ID, "import", 0, 1500.0, "W")
        t = time.monotonic()
        time.sleep(1.6)
        reports = [r for r in rtu.received if r[1] == 3101 and r[0] >= t and "PERIODIC" in r[3]]
        assert len(reports) >= 2, reports


def case_restart_keeps_stop(state: Path) -> None:
    with server(state, rtu_config()) as out, Rtu(out.port) as rtu:
        assert rtu.send(1001, True)
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        raw.send_asdu(command(codec.C_IC_NA_1, 0, bytes([20])))
        seen = {}
        while True:
            a = raw.asdu()
            if a.cot == codec.COT_ACT_TERM:
                break
            for ioa, elem in a.objects:
                seen[ioa] = elem
        raw.close()
        assert seen[2001][0] & 1 == 1, "emergency stop production lost across the restart"


def case_negative_confirmations(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        for asdu, cot in ((command(58, 1001, b"\x01" + bytes(7)), codec.COT_UNKNOWN_TYPE),
                          (command(codec.C_SC_NA_1, 1001, b"\x01", cot=codec.COT_SPONTANEOUS),
                           codec.COT_UNKNOWN_CAUSE),
                          (command(codec.C_SC_NA_1, 1001, b"\x01", ca=7), codec.COT_UNKNOWN_CA),
                          (command(codec.C_SC_NA_1, 4242, b"\x01"), codec.COT_UNKNOWN_IOA),
                          (command(codec.C_SC_NA_1, 2001, b"\x01"), codec.COT_UNKNOWN_IOA)):
            raw.send_asdu(asdu)
            a = raw.asdu()
            assert (a.cot, a.negative) == (cot, True), (a, cot)
        raw.close()


def case_select_before_operate(state: Path) -> None:
    cfg = Iec104Config(port=0, report_s=5, link=FAST)
    cfg = replace(cfg, model=replace(cfg.model, select=frozenset({"MINSETP"})))
    with server(state, cfg) as out:
        raw = Raw(out.port)
        raw.start()
        raw.send_asdu(setpoint(1101, 50.0))
        assert raw.asdu().negative, "execute without select was accepted"
        raw.send_asdu(setpoint(1101, 50.0, select=True))
        a = raw.asdu()
        assert (a.cot, a.negative) == (codec.COT_ACT_CON, False)
        raw.send_asdu(setpoint(1101, 50.0))
        a = raw.asdu()
        assert (a.cot, a.negative) == (codec.COT_ACT_CON, False)
        fb = raw.asdu()
        assert fb.objects[0][0] == 2101 and struct.unpack("<f", fb.objects[0][1][:4])[0] == 50.0
        raw.close()


def case_spontaneous_feedback_time_tagged(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        raw.send_asdu(command(codec.C_SC_NA_1, 1002, b"\x01"))
        assert raw.asdu().cot == codec.COT_ACT_CON
        f = raw.frame()
        assert f is not None
        theirs = parse_frame(f, protocol="t104").fields["asdu"]
        assert (theirs["type_id"], theirs["cot"]) == (codec.M_SP_TB_1, codec.COT_SPONTANEOUS)
        obj = theirs["information_objects"][0]
        assert (obj["ioa"], obj["value"]) == (2002, 1)
        assert abs(codec.decode_cp56(bytes(obj["cp56time2a"])) - time.time()) < 5
        raw.close()


def case_broadcast_gi(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        raw.send_asdu(command(codec.C_IC_NA_1, 0, bytes([20]), ca=0xFFFF))
        a = raw.asdu()
        assert (a.type_id, a.cot, a.ca, a.negative) == (codec.C_IC_NA_1, codec.COT_ACT_CON, 100, False)
        while a.cot != codec.COT_ACT_TERM:
            a = raw.asdu()
        raw.close()


def case_t1_closes(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port, auto_ack=False)
        raw.start()  # the end of initialisation is never acknowledged
        assert raw.closed_within(FAST.t1 + 1.0), "server kept a link whose I-frames were not acknowledged"


def case_t3_testfr(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        f = raw.frame(FAST.t3 + 1.0)
        assert f == codec.encode_u(codec.TESTFR_ACT), f
        raw.send(codec.encode_u(codec.TESTFR_CON))
        assert not raw.closed_within(FAST.t1 + 0.2)  # answered: the link stays
        assert raw.closed_within(FAST.t3 + FAST.t1 + 1.0)  # next TESTFR unanswered: closed
        raw.close()


def case_window_k(state: Path) -> None:
    link = replace(FAST, t1=3.0, t3=10.0)  # the waits below must not run into t1
    with server(state, Iec104Config(port=0, report_s=60.0, link=link)) as out:
        raw = Raw(out.port, auto_ack=False)
        raw.start()  # 1 I-frame outstanding
        # answers: ACT_CON, 12 feedback, 1 measurement ASDU, ACT_TERM; the end of initialisation stays unacked
        raw.send_asdu(command(codec.C_IC_NA_1, 0, bytes([20])), nr=0)
        got = 1
        with contextlib.suppress(TimeoutError):
            while raw.frame(0.6):
                got += 1
        assert got == FAST.k, f"{got} I-frames unacknowledged (k = {FAST.k})"
        raw.send(codec.encode_s(raw.nr))
        rest = 0
        with contextlib.suppress(TimeoutError):
            while raw.frame(0.6):
                rest += 1
        assert got + rest == 1 + 15, rest
        raw.close()


def case_w_acknowledges(state: Path) -> None:
    """w received I-frames are acknowledged at once by an S-frame; fewer within t2."""
    link = replace(FAST, t1=3.0, t2=1.0, t3=10.0)  # a t2 long enough to tell "at once" from "after t2"
    with server(state, Iec104Config(port=0, report_s=60.0, link=link)) as out:
        raw = Raw(out.port)
        raw.start()
        empty = codec.encode_asdu(codec.Asdu(58, codec.COT_ACT, 100, ((0, b""),)))[:6]  # no object: no reply
        for _ in range(FAST.w):
            raw.send_asdu(empty)
        t = time.monotonic()
        assert raw.frame() == codec.encode_s(FAST.w)
        assert time.monotonic() - t < link.t2, "w frames were not acknowledged at once"
        t = time.monotonic()
        raw.send_asdu(empty)
        assert raw.frame(link.t2 + 1.0) == codec.encode_s(FAST.w + 1)
        assert time.monotonic() - t >= link.t2 * 0.9
        raw.close()


def case_second_client_refused(state: Path) -> None:
    with server(state) as out:
        first = Raw(out.port)
        first.start()
        second = Raw(out.port)
        assert second.closed_within(1.0), "a second controlling station was accepted"
        first.send(codec.encode_u(codec.TESTFR_ACT))
        assert first.frame() is not None  # the first link is untouched
        first.close()
        second.close()


def case_not_allowed_refused(state: Path) -> None:
    import ipaddress

    cfg = Iec104Config(port=0, report_s=5, link=FAST, allow=(ipaddress.ip_network("10.9.9.9/32"),))
    with server(state, cfg) as out:
        raw = Raw(out.port)
        assert raw.closed_within(1.0), "a client outside the allow-list was accepted"
        raw.close()
        assert out.server.stats.get("refused_not_allowed") == 1


def case_bad_sequence_closes(state: Path) -> None:
    with server(state) as out:
        raw = Raw(out.port)
        raw.start()
        raw.ns = 5  # skips N(S) 0..4
        raw.send_asdu(command(codec.C_IC_NA_1, 0, bytes([20])))
        assert raw.closed_within(1.0)
        raw.close()


def case_t0_without_startdt(state: Path) -> None:
    cfg = Iec104Config(port=0, report_s=60.0, link=replace(FAST, t0=0.5))
    with server(state, cfg) as out:
        raw = Raw(out.port)
        assert raw.closed_within(1.5), "a connection without STARTDT outlived t0"
        raw.close()
        raw = Raw(out.port)
        raw.start()
        raw.send(codec.encode_u(codec.STOPDT_ACT))
        assert raw.frame() == codec.encode_u(codec.STOPDT_CON)
        raw.send(codec.encode_u(codec.TESTFR_ACT))
        assert raw.frame() == codec.encode_u(codec.TESTFR_CON)
        assert not raw.closed_within(0.7), "t0 closed a link after STARTDT/STOPDT"
        raw.close()


CASES: dict[str, Callable[[Path], None]] = {
    "seed_sequence": case_seed_sequence,
    "periodic_reports": case_periodic_reports,
    "restart_keeps_stop": case_restart_keeps_stop,
    "negative_confirmations": case_negative_confirmations,
    "select_before_operate": case_select_before_operate,
    "spontaneous_feedback_time_tagged": case_spontaneous_feedback_time_tagged,
    "broadcast_gi": case_broadcast_gi,
    "t0_without_startdt": case_t0_without_startdt,
    "t1_closes": case_t1_closes,
    "t3_testfr": case_t3_testfr,
    "window_k": case_window_k,
    "w_acknowledges": case_w_acknowledges,
    "second_client_refused": case_second_client_refused,
    "not_allowed_refused": case_not_allowed_refused,
    "bad_sequence_closes": case_bad_sequence_closes,
}

