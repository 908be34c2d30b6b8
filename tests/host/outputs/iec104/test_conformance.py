"""The conformance suite (tests/support/iec104.py CASES) against gridtap's IEC-104 server.

Timers and the report period are shortened (t1 0.6 s, t3 0.8 s, reports every 0.5 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("c104", reason="c104 wheels exist for x86-64 only")

from tests.support.iec104 import CASES  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_conformance(name: str, tmp_path: Path) -> None:
    CASES[name](tmp_path)
