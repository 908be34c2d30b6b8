"""Every struct format and byte-level operation of the Python codec states its byte order.

The wire is little-endian ("<", docs/protocol.md); gridtap.board.native reads the C codec's
structs out of memory in the CPU's own order ("="), which is what a big-endian router
(OpenWrt ath79, MIPS) needs. A format without a prefix would mean native order *and*
native alignment: right on the build machine, wrong on such a router.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest

from gridtap_fw import wire

ROOT = Path(__file__).resolve().parents[2]
CODEC_FILES = [ROOT / "firmware" / "gridtap_fw" / "wire.py", ROOT / "host" / "gridtap" / "board" / "link.py",
               ROOT / "host" / "gridtap" / "board" / "native.py"]
STRUCT_CALLS = {"pack", "unpack", "unpack_from", "pack_into", "calcsize", "Struct", "iter_unpack"}
ORDER = "<>!="


def _literal_prefix(node: ast.expr) -> str | None:
    """The literal text a format argument starts with, if it starts with one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_prefix(node.left)
    return None


def _problems(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, where = node.func.attr, f"{path.name}:{node.lineno}"
        base = node.func.value
        if name in STRUCT_CALLS and isinstance(base, ast.Name) and base.id == "struct" and node.args:
            fmt = _literal_prefix(node.args[0])
            if fmt is not None and fmt[:1] not in ORDER:
                out.append(f"{where}: struct.{name}({fmt!r}) has no byte order")
        if name in ("from_bytes", "to_bytes"):
            given = len(node.args) >= 2 or any(
                k.arg == "byteorder" for k in node.keywords)
            if not given:
                out.append(f"{where}: {name} without byteorder")
        if name == "cast":  # memoryview.cast reads in native order
            out.append(f"{where}: memoryview.cast uses the CPU's byte order")
    return out


@pytest.mark.parametrize("path", CODEC_FILES, ids=lambda p: p.name)
def test_literal_formats_and_byte_ops_name_their_order(path: Path) -> None:
    assert _problems(path) == []


def test_the_checker_finds_a_format_without_order(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import struct\nstruct.pack('IH', 1, 2)\nint.from_bytes(b'ab')\n"
                   "memoryview(b'').cast('H')\nstruct.unpack('<I' + 'H', b'')\n")
    found = _problems(bad)
    assert len(found) == 3 and "struct.pack('IH')" in found[0]


def test_wire_tables_are_little_endian() -> None:
    formats = [fmt for fmt, _names in wire.LAYOUTS.values()] + [spec[1] for spec in wire.PARAMS.values()]
    formats.append(wire.EVENT_HEAD)
    assert formats and all(f.startswith("<") for f in formats), formats
    # and "<" really is the wire's order: a COUNTER's unix_s as bytes
    raw = wire.encode(wire.COUNTER, 1, (0, 0x01020304, 0, 0, 0, 0, 0))
    assert bytes([4, 3, 2, 1]) in wire.cobs_decode(raw[1:-1])  # type: ignore[operator]


def test_native_reads_c_structs_in_the_cpus_order() -> None:
    native = pytest.importorskip("gridtap.board.native", reason="the C codec is not built (make native)")
    fmts = native._FORMATS.values()
    assert fmts and all(f.format.startswith("=") for f in fmts)
    # "=" is standard sizes without alignment padding: the explicit "x" padding in the
    # format is what places each field at the C struct's offset
    assert all(struct.calcsize(f.format) == f.size for f in fmts)
