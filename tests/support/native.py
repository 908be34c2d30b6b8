"""Load the built C codec for tests.

`make setup` builds gridtap.board._native, so a missing module is a test failure,
not a skip: a CI run must never pass without exercising the C codec. Set
GRIDTAP_NO_NATIVE=1 to skip those tests on purpose (e.g. no C compiler).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def load_native() -> ModuleType:
    if os.environ.get("GRIDTAP_NO_NATIVE") == "1":
        return pytest.importorskip("gridtap.board.native", reason="GRIDTAP_NO_NATIVE=1")
    try:
        native = importlib.import_module("gridtap.board.native")
    except ImportError as exc:
        raise AssertionError(
            "gridtap.board._native is not built (run `make setup`, or set GRIDTAP_NO_NATIVE=1 "
            f"to skip the C codec tests): {exc}") from exc
    return native
