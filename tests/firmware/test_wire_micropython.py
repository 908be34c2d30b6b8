"""The firmware codec runs under real MicroPython and agrees byte for byte with CPython."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from gridtap_fw import wire
from tests.support.mpy import FIRMWARE, run_micropython
from tests.support.vectors import rejects, vectors


def test_micropython_encodes_and_decodes_doc_vectors() -> None:
    script = """
import json, sys
from gridtap_fw import wire
cases = json.loads(sys.stdin.read())
out = []
for c in cases:
    data = bytes.fromhex(c)
    d = wire.Decoder()
    msgs = d.feed(data)
    again = [wire.encode(m.mtype, m.seq, m.values, m.flags).hex() for m in msgs]
    out.append([again, d.counts])
print(json.dumps(out))
"""
    cases = [v.wire.hex() for v in vectors()] + [r.wire.hex() for r in rejects()]
    result = json.loads(run_micropython(script, stdin=json.dumps(cases).encode()))
    for case, (again, counts) in zip(cases, result, strict=True):
        dec = wire.Decoder()
        msgs = dec.feed(bytes.fromhex(case))
        assert again == [wire.encode(m.mtype, m.seq, m.values, m.flags).hex() for m in msgs]
        assert counts == dec.counts


def test_every_firmware_module_compiles_with_mpy_cross(tmp_path: Path) -> None:
    from tests.support.mpy import micropython_exe

    mpy_cross = Path(micropython_exe()).parent / "mpy-cross"
    modules = sorted(FIRMWARE.rglob("*.py"))
    assert modules
    for src in modules:
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run([str(mpy_cross), "-march=armv6m", "-o", str(out), str(src)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{src}: {proc.stderr}"
        assert out.stat().st_size > 0
