"""`make test`'s share of the integrity campaign (issue 13): the cases marked fast in
tests/support/integrity.py, each the real daemon against hostile input on the fake board's pty,
checked from outside. The whole campaign is `make bench`'s area `integrity` (docs/integrity.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.integrity import CASES, Case, run_case


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c.fast], ids=lambda c: c.name)
def test_integrity_case(case: Case, tmp_path: Path) -> None:
    res = run_case(case, tmp_path)
    assert res.passed, f"{case.must}:\n  " + "\n  ".join(res.problems)
