"""Finding 13.9 (config): a hostile gridtap.toml is refused with a clear error in bounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridtap.config import parse_config
from gridtap.errors import UserError
from tests.support.daemon import config_text

ROOT = Path(__file__).resolve().parents[2]

# `gridtap daemon --check` in a fresh interpreter that reports its own peak RSS (kB) afterwards.
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so the child would report
# the peak of the (large) pytest process it was forked from.
_CHECK = """
import sys
from gridtap.cli import main
rc = main(["daemon", "-c", sys.argv[1], "--check"])
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print("RC", rc, "RSS", hwm)
"""


def test_a_10_mb_string_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    f = tmp_path / "gridtap.toml"
    f.write_text(config_text(tmp_path / "tty", tmp_path / "state")
                 + '\n[mqtt]\nusername = "' + "x" * 10_000_000 + '"\n')
    p = subprocess.run([sys.executable, "-c", _CHECK, str(f)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    rc, rss_kb = (int(x) for x in p.stdout.split()[1::2])
    assert rc != 0 and "larger than 256 kB" in p.stderr + p.stdout
    assert rss_kb < 120_000, f"--check peaked at {rss_kb / 1024:.0f} MB"


def test_deep_nesting_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    text = config_text(tmp_path / "tty", tmp_path / "state").replace(
        "[board]", "deep = " + "[" * 100_000 + "]" * 100_000 + "\n\n[board]", 1)
    with pytest.raises(UserError, match="nested too deeply"):
        parse_config(text, tmp_path / "gridtap.toml")
