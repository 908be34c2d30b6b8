"""A started `gridtap daemon` with only [board] loads few of this project's modules, none it does not use."""

from __future__ import annotations

from pathlib import Path

from tests.support.closure import LIMIT, daemon_closure


def test_board_only_daemon_loads_at_most_the_limit(short_tmp: Path) -> None:
    closure = daemon_closure(short_tmp)
    assert "gridtap.daemon" in closure.sources and "gridtap.board.session" in closure.sources
    assert closure.forbidden() == []
    assert len(closure.sources) <= LIMIT, closure.sources
