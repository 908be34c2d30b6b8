"""Build the libFuzzer harness for the C wire codec and run it for a bounded time.

    .venv/bin/python native/fuzz/run_fuzz.py --seconds 60      # what `make fuzz` runs

Builds native/build/fuzz/fuzz_wire with clang -fsanitize=fuzzer,address,undefined
(every UBSan finding is fatal), runs it on a scratch corpus seeded from the
committed native/fuzz/corpus/, and exits non-zero on any finding; crash inputs
are kept in native/fuzz/findings/ (git-ignored) for `fuzz_wire FILE` to replay.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NATIVE = HERE.parent
BUILD = NATIVE / "build" / "fuzz"
BINARY = BUILD / "fuzz_wire"
SEEDS = HERE / "corpus"
FINDINGS = HERE / "findings"
CFLAGS = ["-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
          "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all"]


def build(binary: Path = BINARY, clang: str = "clang") -> Path:
    if shutil.which(clang) is None:
        raise SystemExit("fuzz: clang is not installed (make setup installs it)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    cmd = [clang, *CFLAGS, "-I", str(NATIVE), str(HERE / "fuzz_wire.c"), str(NATIVE / "gt_wire.c"),
           "-o", str(binary)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("fuzz: build failed:\n" + proc.stderr)
    return binary


def run(seconds: int, scratch: Path | None = None) -> tuple[int, int, str]:
    """Fuzz for `seconds`; returns (exit code, executions, libFuzzer's log).

    With `scratch`, the binary and the working corpus live there (tests use a
    temporary directory, so parallel runs never share files)."""
    binary = build(scratch / "fuzz_wire" if scratch else BINARY)
    work = scratch / "corpus" if scratch else BUILD / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    FINDINGS.mkdir(exist_ok=True)
    cmd = [str(binary), f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
           "-max_len=4096", "-print_final_stats=1", f"-artifact_prefix={FINDINGS}/",
           str(work), str(SEEDS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    log = proc.stderr + proc.stdout
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    return proc.returncode, int(m.group(1)) if m else 0, log


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time budget (default 60)")
    args = ap.parse_args(argv)
    if args.seconds < 1:
        ap.error("--seconds must be at least 1")
    rc, execs, log = run(args.seconds)
    if rc != 0:
        print(log[-6000:], file=sys.stderr)
        print(f"fuzz: FAILED (exit {rc}); reproducer in {FINDINGS.relative_to(NATIVE.parent)}/",
              file=sys.stderr)
        return 1
    print(f"fuzz: {execs} inputs in {args.seconds} s, no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
