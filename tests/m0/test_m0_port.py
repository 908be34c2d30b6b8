"""The modules the qemu_m0 port adds for the firmware (json.loads, binascii.crc32), on the emulated M0.

Each is checked against CPython's own (json, zlib) on the same inputs, in one
QEMU run: the probe below is compiled on the device and prints one repr per case.
"""

from __future__ import annotations

import ast
import json
import subprocess
import zlib
from pathlib import Path

from gridtap_sim import qemu_m0

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    '{"a": [1, 2.5, -3e2, "x\\n\\u0041\\"\\\\/", true, false, null, {}, []], "b": {"c": "d"}}',
    "  [ ]  ", "0", "-12", '""', "[[[[1]]]]",
    *(p.read_text() for p in sorted((ROOT / "hardware").glob("board*.json"))),
]
BAD = ['{"a" 1}', "[1,", "[1 2]", '{"a":1,}', '"abc', "[tru]", "", "{} x", '"\\q"']
BLOBS = [b"", b"123456789", bytes(range(256)), b"\x00" * 1000]

PROBE = """
import binascii, json
for doc in %r:
    print(repr(json.loads(doc)))
for doc in %r:
    try:
        json.loads(doc)
        print("accepted")
    except ValueError:
        print("ValueError")
for blob in %r:
    print(binascii.crc32(blob), binascii.crc32(blob[5:], binascii.crc32(blob[:5])))
"""


def test_json_and_crc32_agree_with_cpython(tmp_path: Path) -> None:
    assert qemu_m0.ELF["single"].exists(), "run `make m0`"
    (tmp_path / "probe.py").write_text(PROBE % (DOCS, BAD, BLOBS))
    proc = subprocess.run(qemu_m0.argv("probe", [], paths=[tmp_path]), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(DOCS) + len(BAD) + len(BLOBS), proc.stdout
    for doc, line in zip(DOCS, lines, strict=False):
        assert ast.literal_eval(line) == json.loads(doc), doc[:60]
    assert lines[len(DOCS):len(DOCS) + len(BAD)] == ["ValueError"] * len(BAD)
    for blob, line in zip(BLOBS, lines[len(DOCS) + len(BAD):], strict=True):
        assert line.split() == [str(zlib.crc32(blob))] * 2, len(blob)
