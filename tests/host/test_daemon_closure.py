"""A started `gridtap daemon` with only [board] loads few of this project's modules, none it does not use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.closure import LIMIT, board_only_config, daemon_closure


def test_board_only_daemon_loads_at_most_the_limit(short_tmp: Path) -> None:
    closure = daemon_closure(short_tmp)
    assert "gridtap.daemon" in closure.sources and "gridtap.board.session" in closure.sources
    assert closure.forbidden() == []
    assert len(closure.sources) <= LIMIT, closure.sources


def test_the_rest_api_and_its_view_load_only_when_the_api_is_on(short_tmp: Path) -> None:
    board_only = board_only_config(short_tmp / "ttyGT0", short_tmp / "state")
    text = board_only.replace("port = 0\n", "port = 0\napi = false\n", 1)
    closure = daemon_closure(short_tmp, text)
    assert "gridtap.daemon" in closure.sources
    assert "gridtap.outputs.restapi" not in closure.everything and "socketserver" not in closure.everything


def test_pvoutput_without_rules_loads_no_rule_compiler(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDTAP_PVOUTPUT_KEY", "c0ffee0123456789abcdef0123456789deadbeef")
    text = board_only_config(short_tmp / "ttyGT0", short_tmp / "state") + (
        '\n[pvoutput]\nsystem_id = 4242\nbase_url = "http://127.0.0.1:9/"\nv4 = "mains:power"\n')
    closure = daemon_closure(short_tmp, text, ack=False)  # PVOutput's spool commits every 30 s
    assert "gridtap.outputs.pvoutput.output" in closure.sources
    assert not {"gridtap.rules.loader", "gridtap.rules.flukso", "gridtap.rules.cfos"} & set(closure.sources)


def test_iec104_loads_its_own_modules_and_no_c104(short_tmp: Path) -> None:
    text = board_only_config(short_tmp / "ttyGT0", short_tmp / "state") + "\n[iec104]\nport = 0\n"
    closure = daemon_closure(short_tmp, text)
    assert {"gridtap.outputs.iec104.output", "gridtap.control.gridlimits"} <= set(closure.sources)
    assert closure.forbidden() == []
    assert not [m for m in closure.everything if m.split(".")[0] in ("c104", "iec60870")]
