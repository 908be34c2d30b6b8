"""The C codec and kernel on big-endian MIPS: cross-built, run under qemu-mips-static.

Most OpenWrt routers (ath79) are big-endian MIPS 24Kc/74Kc. `build()` compiles
native/gt_wire.c, native/gt_kernel.c and the driver gt_be_test.c with Debian's
mips-linux-gnu-gcc (static, -std=c99 -Wall -Wextra -Werror); `cases()` makes
the cases and their answers on the build machine from the references: every
vector and reject of docs/protocol.md (decoded, then encoded again), the CRC
check value, and kernel calls checked against tests/support/kernel_ref.py's ref_block
(random, full-scale, out-of-range and three-phase blocks, random V histories);
`run()` feeds them to the binary under qemu-mips-static and compares.

The kernel's V history is compared as u16 entries in memory order, which is
its contract (docs/kernel.md): the reference's int32 words are those entries
read as little-endian halves, which only holds on a little-endian CPU.

    python native/mips/harness.py [outdir]   # build, run, print passed/total
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CC = "mips-linux-gnu-gcc"
QEMU = "qemu-mips-static"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-static"]
SOURCES = [HERE / "gt_be_test.c", ROOT / "native" / "gt_wire.c", ROOT / "native" / "gt_kernel.c"]
KERNEL_CASES = 60


@dataclass(frozen=True)
class Case:
    name: str
    line: str  # the driver's input
    expect: str  # its answer, as the reference gives it


def tools_missing() -> list[str]:
    return [t for t in (CC, QEMU) if shutil.which(t) is None]


def build(outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    exe = outdir / "gt_be_test"
    res = subprocess.run([CC, *CFLAGS, "-o", str(exe), *map(str, SOURCES)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{CC} failed:\n{res.stderr}")
    head = exe.read_bytes()[:6]
    if head[:4] != b"\x7fELF" or head[5] != 2:  # EI_DATA 2: big-endian
        raise RuntimeError(f"{exe} is not a big-endian ELF")
    return exe


def _tokens(values: object) -> Iterator[str]:
    """A message's values in the driver's printed form."""
    for v in values if isinstance(values, tuple | list) else (values,):
        if isinstance(v, bytes):
            yield v.hex()
        elif isinstance(v, tuple | list):
            yield "["
            yield from _tokens(v)
            yield "]"
        else:
            yield str(v)


def _importable() -> None:
    for d in (str(ROOT), str(ROOT / "firmware")):
        if d not in sys.path:
            sys.path.insert(0, d)


def codec_cases() -> list[Case]:
    _importable()
    from gridtap_fw import wire
    from tests.support.vectors import rejects, vectors

    out = []
    for i, v in enumerate(vectors()):
        msg = " ".join(["M", str(v.mtype), str(v.seq), str(v.flags), *_tokens(v.values)])
        out.append(Case(f"vector {i} {wire.TYPE_NAMES[v.mtype]}", f"D {v.wire.hex()}",
                        f"D {msg} E {v.wire.hex()}"))
    for r in rejects():
        out.append(Case(f"reject {r.counter}", f"D {r.wire.hex()}",
                        f"D R {wire.COUNTER_NAMES.index(r.counter)}"))
    out.append(Case("crc check value", "C " + b"123456789".hex(), "C 3421780262"))
    return out


def kernel_cases(n: int = KERNEL_CASES, seed: int = 21) -> list[Case]:
    _importable()
    from tests.support import kernel_ref as kr

    rng = random.Random(seed)
    out = []
    for i in range(n):
        nch = rng.randint(2, 5)
        nsets = rng.choice([0, 1, 7, 96, 255, 256, 300])
        start = rng.choice([0, 0, 3]) if nsets else 0
        style = i % 4
        if style == 0:  # anything, also above 12 bits
            samples = [rng.randrange(0x10000) for _ in range(nsets * nch)]
        elif style == 1:  # full scale square-ish
            samples = [rng.choice([0, 4095]) for _ in range(nsets * nch)]
        else:  # a noisy mains-like wave
            samples = [max(0, min(4095, int(2048 + 1800 * ((s // 48) % 2 * 2 - 1) * (c + 1) / nch
                                             + rng.randint(-20, 20))))
                       for s in range(nsets) for c in range(nch)]
        delays = [rng.randrange(128) for _ in range(4)]
        pol, hyst = rng.randint(0, 1), rng.choice([0, 8, 40, -5])
        fill = rng.choice([kr.HIST_KEEP, kr.HIST_KEEP + 100, kr.HIST_LEN, kr.HIST_LEN - 10])
        hist = [rng.randrange(0x10000) for _ in range(kr.HIST_LEN)]
        state = kr.new_state(hyst=hyst, pol=pol, delays=tuple(delays[: nch - 1]), fill=fill)
        for k in range(nch - 1, 4):  # the driver sets all four delay words
            state[kr.DELAY + 1 + k] = delays[k]
        kr.hist_put(state, hist)
        out_words = [0] * kr.out_len(nch)
        got = kr.ref_block(samples, start, nsets, nch, state, out_words)
        line = " ".join(map(str, ["K", nch, start, nsets, hyst, len(samples), *samples, *delays, pol, fill,
                                  *hist]))
        expect = " ".join(map(str, ["K", got, *state[: kr.HIST_WORD], *kr.hist_get(state), *out_words]))
        out.append(Case(f"kernel {i} nch={nch} nsets={nsets}", line, expect))
    return out


def cases() -> list[Case]:
    return codec_cases() + kernel_cases()


def _same(case: Case, got: str) -> bool:
    if case.line.startswith("K "):  # the driver prints out for 5 channels; the rest stays 0
        n = len(case.expect.split())
        words = got.split()
        return words[:n] == case.expect.split() and all(w == "0" for w in words[n:])
    return got == case.expect


def run(exe: Path, todo: list[Case], timeout: float = 120.0) -> tuple[int, list[str]]:
    """Run every case in one qemu process; return (passed, descriptions of the failures)."""
    res = subprocess.run([QEMU, str(exe)], input="".join(c.line + "\n" for c in todo), capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        return 0, [f"{exe.name} exited with {res.returncode}: {res.stderr.strip()[:500]}"]
    answers = res.stdout.splitlines()
    failures = []
    for i, case in enumerate(todo):
        got = answers[i] if i < len(answers) else "(no answer)"
        if not _same(case, got):
            failures.append(f"{case.name}: expected {case.expect[:200]!r}, got {got[:200]!r}")
    return len(todo) - len(failures), failures


def main() -> int:
    missing = tools_missing()
    if missing:
        print("missing: " + ", ".join(missing) + " (apt: gcc-mips-linux-gnu qemu-user-static)")
        return 1
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "native" / "build" / "mips-be"
    exe = build(outdir)
    todo = cases()
    passed, failures = run(exe, todo)
    for f in failures:
        print("FAIL", f)
    print(f"big-endian MIPS: {passed}/{len(todo)} passed ({exe})")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
