"""`gridtap wire`: decode captured link bytes, or build a frame by hand.

    gridtap wire decode capture.bin          # raw UART bytes
    gridtap wire decode --hex capture.txt    # hex text, whitespace ignored
    gridtap wire encode COUNTER seq=7 sensor=1 unix_s=1700000000 ...
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gridtap.board.link import implementation, make_decoder
from gridtap.errors import UserError
from gridtap_fw import wire

TYPE_BY_NAME = {name: code for code, name in wire.TYPE_NAMES.items()}
BYTES_FIELDS = {"board_id": 8, "text": None}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wire", help="decode or build gridtap link frames",
                       description="Decode captured link bytes, or build a frame by hand (docs/protocol.md).")
    wsub = p.add_subparsers(dest="wire_command", metavar="ACTION", required=True)

    d = wsub.add_parser("decode", help="decode link bytes from a file or stdin to JSON lines",
                        description="Decode COBS/CRC-32 link frames from a file or stdin into JSON "
                                    "lines, counting the bad ones.")
    d.add_argument("file", nargs="?", default="-", help="capture file, or - for stdin (default)")
    d.add_argument("--hex", action="store_true", help="input is hex text instead of raw bytes")
    d.add_argument("--python", action="store_true", help="use the Python decoder even if C is built")
    d.set_defaults(func=run_decode)

    e = wsub.add_parser("encode", help="print one frame as hex",
                        description="Build one frame from its type and field=value pairs and print "
                                    "it as hex, e.g. gridtap wire encode HELLO_REQ seq=1.")
    e.add_argument("type", help="message type, e.g. COUNTER, HELLO_REQ, TIME_SET")
    e.add_argument("fields", nargs="*", help="seq=N, flags=N and the type's fields as name=value")
    e.set_defaults(func=run_encode)


def _read_input(path: str, is_hex: bool) -> bytes:
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    if not is_hex:
        return data
    text = "".join(data.decode("ascii", "replace").split())
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise UserError(f"{path} is not hex text: {exc}") from exc


def message_json(msg: wire.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"type": wire.TYPE_NAMES[msg.mtype], "seq": msg.seq, "flags": msg.flags}
    for name, value in msg.as_dict().items():
        if name == "items":
            value = {wire.PARAMS[p][0]: (v.hex() if isinstance(v, bytes) else v) for p, v in value}
        elif name == "params":
            value = [wire.PARAMS[p][0] for p in value]
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace") if name == "text" else value.hex()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def run_decode(args: argparse.Namespace) -> int:
    data = _read_input(args.file, args.hex)
    decoder = make_decoder(prefer_native=not args.python)
    for msg in decoder.feed(data):
        print(json.dumps(message_json(msg)))
    report = {"decoder": implementation(decoder), **decoder.counters()}
    print(json.dumps({"counters": report}), file=sys.stderr)
    return 0


def _parse_value(name: str, text: str) -> Any:
    if name == "text":
        return text.encode()
    if name in BYTES_FIELDS:
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise UserError(f"{name} must be hex: {text!r}") from exc
    if name == "seqs":
        return tuple(_int(name, s) for s in text.split(","))
    if name in ("items", "params"):
        raise UserError(f"{name} cannot be given on the command line; use the config tools")
    return _int(name, text)


def _int(name: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError as exc:
        raise UserError(f"{name} must be an integer, got {text!r}") from exc


def run_encode(args: argparse.Namespace) -> int:
    mtype = TYPE_BY_NAME.get(args.type.upper())
    if mtype is None:
        raise UserError(f"unknown message type {args.type!r}; known: {', '.join(sorted(TYPE_BY_NAME))}")
    given: dict[str, Any] = {}
    for item in args.fields:
        name, sep, text = item.partition("=")
        if not sep:
            raise UserError(f"field {item!r} must look like name=value")
        given[name] = _parse_value(name, text)
    seq = given.pop("seq", 0)
    flags = given.pop("flags", 0)
    names = wire.FIELDS[mtype]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UserError(f"{args.type} has no field {unknown[0]!r}; its fields: {', '.join(names) or 'none'}")
    missing = [n for n in names if n not in given]
    if missing:
        raise UserError(f"{args.type} needs {', '.join(missing)}")
    try:
        frame = wire.encode(mtype, seq, tuple(given[n] for n in names), flags)
    except wire.WireError as exc:
        raise UserError(str(exc)) from exc
    print(frame.hex(" "))
    return 0
