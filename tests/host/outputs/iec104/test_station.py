"""The Netflex station without a network: values, refusals, the persisted state, the published limits."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from gridtap.control.gridlimits import GridLimits
from gridtap.outputs.iec104 import codec
from gridtap.outputs.iec104.netflex import CommandedState, ModelConfig, NetflexStation, StateFile
from tests.support.iec104 import command, setpoint


class Station:
    def __init__(self, tmp: Path, **model: object) -> None:
        self.published: list[GridLimits] = []
        self.file = StateFile(tmp / "iec104-state.json")
        self.st = NetflexStation(ModelConfig(**model), self.file, self.published.append,  # type: ignore[arg-type]
                                 lambda c: (0.0, 0.0, True), lambda: 1767225600.0)

    def send(self, asdu: bytes) -> list[codec.Asdu]:
        return [codec.decode_asdu(b) for b in self.st.handle(asdu, "192.0.2.7")]


def test_setpoint_out_of_range_or_nan_is_refused(tmp_path: Path) -> None:
    s = Station(tmp_path)
    for v in (-1.0, 100.5, math.nan, math.inf):
        (a,) = s.send(setpoint(1101, v))
        assert (a.cot, a.negative) == (codec.COT_ACT_CON, True)
    assert s.st.state.setpoints["MINSETP"] == 100.0
    assert not s.file.path.exists()


def test_q_mode_accepts_only_local_or_remote(tmp_path: Path) -> None:
    s = Station(tmp_path)
    for dco, ok in ((0, False), (3, False), (2, True), (1, True)):
        a = s.send(command(codec.C_DC_NA_1, 1004, bytes([dco])))[0]
        assert a.negative is not ok


def test_commands_publish_limits_and_persist(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Station(tmp_path, contract_w=10000)
    caplog.set_level("INFO")
    s.send(setpoint(1101, 40.0))
    s.send(setpoint(1102, 0.0))
    s.send(command(codec.C_SC_NA_1, 1002, b"\x01"))
    s.send(setpoint(1103, 60.0))
    s.send(setpoint(1104, 25.0))
    lim = s.published[-1]
    assert (lim.max_production_pct, lim.max_consumption_pct) == (60.0, 25.0)
    assert (lim.export_limit_w, lim.import_limit_w, lim.stop_consumption, lim.stop_production) == (
        4000, 0, True, False)
    assert "command from 192.0.2.7: MINSETP = 40 executed" in caplog.text
    saved = json.loads(s.file.path.read_text())
    assert saved["stop_consumption"] is True and saved["setpoints"]["MINSETP"] == 40.0
    again = Station(tmp_path, contract_w=10000)
    assert again.published[0] == lim  # published at start from the persisted state


def test_repeated_command_writes_once(tmp_path: Path) -> None:
    s = Station(tmp_path)
    s.send(command(codec.C_SC_NA_1, 1001, b"\x01"))
    s.file.path.write_text(s.file.path.read_text())  # same content, new mtime
    mtime = s.file.path.stat().st_mtime_ns
    s.send(command(codec.C_SC_NA_1, 1001, b"\x01"))
    assert s.file.path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("reason_ioa", [1107, 1108])
def test_reason_99_is_a_dry_run_unless_configured(tmp_path: Path, reason_ioa: int) -> None:
    s = Station(tmp_path / "a")
    s.send(setpoint(reason_ioa, 99.0))
    assert s.published[-1].test_mode and s.published[-1].dry_run
    t = Station(tmp_path / "b", test_acts=True)
    t.send(setpoint(reason_ioa, 99.0))
    assert t.published[-1].test_mode and not t.published[-1].dry_run


BAD_SETPOINT = json.dumps({**CommandedState().to_json(), "setpoints": {"MINSETP": 500}})


@pytest.mark.parametrize("content", ["{not json", "[]", '{"stop_production": "yes"}', BAD_SETPOINT])
def test_a_bad_state_file_is_counted_and_starts_uncommanded(tmp_path: Path, content: str) -> None:
    (tmp_path / "iec104-state.json").write_text(content)
    s = Station(tmp_path)
    assert s.file.errors == 1 and s.st.state == CommandedState()


def test_unwritable_state_dir_degrades(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = Station(blocker)  # state_dir is a regular file: every save fails
    (a, fb, term) = s.send(command(codec.C_SC_NA_1, 1001, b"\x01"))
    assert not a.negative and s.st.state.stop_production and s.file.errors == 2  # the read, the write


def test_deactivation_cancels_a_selection(tmp_path: Path) -> None:
    s = Station(tmp_path, select=frozenset({"stop_production"}))
    assert not s.send(command(codec.C_SC_NA_1, 1001, b"\x81"))[0].negative  # select
    (a,) = s.send(command(codec.C_SC_NA_1, 1001, b"\x81", cot=codec.COT_DEACT))
    assert (a.cot, a.negative) == (codec.COT_DEACT_CON, False)
    assert s.send(command(codec.C_SC_NA_1, 1001, b"\x01"))[0].negative  # execute without select now


def test_execute_with_another_value_than_selected_is_refused(tmp_path: Path) -> None:
    s = Station(tmp_path, select=frozenset({"MINSETP"}))
    s.send(setpoint(1101, 20.0, select=True))
    assert s.send(setpoint(1101, 30.0))[0].negative


def test_clock_sync_sets_time_tags(tmp_path: Path) -> None:
    s = Station(tmp_path)
    (a,) = s.send(command(codec.C_CS_NA_1, 0, codec.encode_cp56(1767225600.0 + 3600)))
    assert (a.cot, a.negative) == (codec.COT_ACT_CON, False)
    (_con, fb, _term) = s.send(command(codec.C_SC_NA_1, 1001, b"\x01"))
    assert codec.decode_cp56(fb.objects[0][1][1:]) == pytest.approx(1767225600.0 + 3600, abs=0.01)
    (bad,) = s.send(command(codec.C_CS_NA_1, 0, b"\xff\xff" + bytes(5)))
    assert bad.negative


def test_group_interrogation_is_refused(tmp_path: Path) -> None:
    (a,) = Station(tmp_path).send(command(codec.C_IC_NA_1, 0, bytes([21])))
    assert (a.cot, a.negative) == (codec.COT_ACT_CON, True)


def test_measurements_mark_stale_categories_invalid(tmp_path: Path) -> None:
    st = NetflexStation(ModelConfig(), StateFile(tmp_path / "s.json"), lambda lim: None,
                        lambda c: (2500.0, -300.0, False) if c == "solar" else (0.0, 0.0, True))
    (raw,) = st.measurements(codec.COT_PERIODIC)
    objs = dict(codec.decode_asdu(raw).objects)
    assert struct.unpack("<f", objs[3101][:4])[0] == 2.5 and objs[3101][4] == 0x80
    assert struct.unpack("<f", objs[3201][:4])[0] == pytest.approx(-0.3) and objs[3102] == bytes(5)


def test_a_value_beyond_float32_is_sent_invalid() -> None:
    assert codec.short_float(1e40) == bytes(4) + b"\x80"
    assert codec.short_float(-2.5) == struct.pack("<f", -2.5) + b"\x00"


def test_refusals_are_logged_with_a_rate_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Station(tmp_path)
    for _ in range(50):
        s.send(command(codec.C_SC_NA_1, 4242, b"\x01"))
    lines = [r for r in caplog.records if "4242" in r.getMessage()]
    assert len(lines) == 20 and s.st.refused == 50
    assert "192.0.2.7" in lines[0].getMessage()


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    from gridtap.errors import UserError
    from gridtap.outputs.iec104.settings import Iec104Config
    from tests.support.iec104 import server

    with server(tmp_path / "a") as first:
        with pytest.raises(UserError, match=rf"\[iec104\] cannot listen on 127.0.0.1:{first.port}"):
            with server(tmp_path / "b", Iec104Config(port=first.port)):
                pass
