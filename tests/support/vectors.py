"""Read the test vectors out of docs/protocol.md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gridtap_fw import wire

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@dataclass(frozen=True)
class Vector:
    mtype: int
    seq: int
    flags: int
    values: tuple
    wire: bytes


@dataclass(frozen=True)
class Reject:
    counter: str
    wire: bytes


def _fields(block: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def _tupled(v: object) -> object:
    if isinstance(v, str) and v.startswith("hex:"):
        return bytes.fromhex(v[4:])
    if isinstance(v, list):
        return tuple(_tupled(x) for x in v)
    return v


def vectors() -> list[Vector]:
    text = DOC.read_text()
    out = []
    for block in re.findall(r"```vector\n(.*?)```", text, re.S):
        f = _fields(block)
        mtype = {n: c for c, n in wire.TYPE_NAMES.items()}[f["type"]]
        values = _tupled(json.loads(f["values"]))
        assert isinstance(values, tuple)
        out.append(Vector(mtype, int(f["seq"]), int(f["flags"]), values, bytes.fromhex(f["wire"])))
    return out


def rejects() -> list[Reject]:
    text = DOC.read_text()
    return [Reject(f["counter"], bytes.fromhex(f["wire"]))
            for f in (_fields(b) for b in re.findall(r"```reject\n(.*?)```", text, re.S))]
