"""The C codec and kernel on big-endian MIPS (most OpenWrt routers), under qemu-mips-static.

native/mips/harness.py cross-builds them with mips-linux-gnu-gcc and checks every protocol
vector and reject of docs/protocol.md, the CRC check value and kernel calls against the
Python references (tests/support/kernel_ref.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mips_harness", ROOT / "native" / "mips" / "harness.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_codec_and_kernel_pass_on_big_endian_mips(tmp_path: Path) -> None:
    h = harness()
    missing = h.tools_missing()
    if missing:
        pytest.skip("big-endian MIPS toolchain missing (make setup installs it): " + ", ".join(missing))
    exe = h.build(tmp_path)
    todo = h.cases()
    assert sum(c.line.startswith("D ") for c in todo) >= 20  # every vector and reject of protocol.md
    assert sum(c.line.startswith("K ") for c in todo) == h.KERNEL_CASES
    passed, failures = h.run(exe, todo)
    assert not failures, "\n".join(failures[:10])
    assert passed == len(todo)


def test_a_wrong_answer_is_reported() -> None:
    """The comparison is real: a case whose expectation is off fails, naming the case."""
    h = harness()
    case = h.codec_cases()[0]
    bad = h.Case(case.name, case.line, case.expect.replace(" E ", " 1 E ", 1))
    assert not h._same(bad, case.expect)
    assert h._same(case, case.expect)
