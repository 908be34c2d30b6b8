"""A short libFuzzer run of the C decoder (the long one is `make fuzz`), and the seed corpus."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[2] / "native" / "fuzz"
pytestmark = pytest.mark.skipif(shutil.which("clang") is None,
                                reason="clang not installed (make setup installs it)")


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FUZZ_DIR / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fuzz_decoder_10_seconds_without_findings(tmp_path: Path) -> None:
    run_fuzz = _load("run_fuzz")
    rc, execs, log = run_fuzz.run(10, scratch=tmp_path)
    assert rc == 0, "libFuzzer found a problem:\n" + log[-6000:]
    assert execs > 10_000, "the fuzzer barely ran:\n" + log[-3000:]


def test_committed_seed_corpus_matches_the_doc_vectors() -> None:
    proc = subprocess.run([sys.executable, str(FUZZ_DIR / "make_corpus.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
