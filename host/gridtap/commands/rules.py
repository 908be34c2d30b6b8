"""`gridtap rules`: check a rule file, or run it on values you give.

    gridtap rules check custom_rules.py                  # FluksoToPvoutput CUSTOM_RULES block
    gridtap rules check meters.cfos --dialect cfos       # cFos formula lines
    gridtap rules eval custom_rules.py --set v2=45 --set v4=500

File formats (``--format``, default auto): ``python`` (a verbatim
``CUSTOM_RULES = {...}`` block or FluksoToPvoutput config), ``json``,
``toml`` and ``cfos`` (lines ``target = formula``). Auto uses the file name
(.json, .toml) and then the content. ``--dialect`` chooses how the
expressions inside python/json/toml mappings are read: ``flukso`` (Python
syntax, the default) or ``cfos``. See docs/rules.md.

``eval`` prints every step and its result; a step that fails at run time is
shown with its reason and keeps the previous value. The exit status is 1
when any step failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from gridtap.errors import UserError
from gridtap.rules import DIALECTS, FORMATS, RuleFileError, RuleSet, RuleSetError, load_text
from gridtap.rules.core import MAX_FILE_BYTES, check_result, checked_name
from gridtap.rules.loader import detection
from gridtap.textfile import decode_text, read_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="check or evaluate upload rules (Flukso CUSTOM_RULES or cFos formulas)",
                       description="Check a rule file, or run it on values you give (docs/rules.md).")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("file", help="rule file, or - for stdin")
        q.add_argument("--format", choices=FORMATS, default="auto", help="file format (default: auto)")
        q.add_argument("--dialect", choices=DIALECTS, default="auto",
                       help="expression dialect of python/json/toml mappings (default: flukso)")
        q.add_argument("--name", action="append", default=[], metavar="NAME",
                       help="extra name a rule may read, e.g. a series name (cFos: NAME.power_w and the "
                            "other quantities; repeatable)")

    c = rsub.add_parser("check", help="validate a rule file and list its rules",
                        description="Load a rule file without running it: say which format and "
                                    "dialect it was read in and why, list its rules, and fail on any "
                                    "problem (also on a file without rules).")
    common(c)
    c.set_defaults(func=run_check)

    e = rsub.add_parser("eval", help="run a rule file on the given values and print each step",
                        description="Run a rule file on the values given with --set and print every "
                                    "step and its result; exit status 1 when a step failed.")
    common(e)
    e.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="values",
                   help="input value, e.g. --set v2=1234 (repeatable)")
    e.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    e.set_defaults(func=run_eval)


def _read(path: str) -> str:
    if path != "-":
        return read_text(path, "rule file", MAX_FILE_BYTES)
    try:
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot read the rule file from standard input: {exc.strerror}") from exc
    return decode_text(data, "the rule file on standard input", MAX_FILE_BYTES)


def _load(args: argparse.Namespace, names: list[str]) -> RuleSet:
    for n in names:
        if not checked_name(n):
            raise UserError(f"--name {n!r} is not a valid name")
    text = args.text = _read(args.file)
    try:
        return load_text(text, args.format, args.dialect, "" if args.file == "-" else args.file, names)
    except RuleFileError as exc:
        raise UserError(f"{args.file}: {exc} (read in {detected(args, text)})") from exc
    except RuleSetError as exc:
        lines = "\n  ".join(str(e) for e in exc.errors)
        raise UserError(f"{args.file}: {len(exc.errors)} rule(s) do not compile (read in "
                        f"{detected(args, text)}):\n  {lines}") from exc


def _parse_sets(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--set {item!r} must look like NAME=VALUE, e.g. v2=1234")
        if not checked_name(name):
            raise UserError(f"--set {item!r}: {name!r} is not a valid name")
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--set {item!r}: {text!r} is not a number") from None
        if check_result(value) is not None or not math.isfinite(value):
            raise UserError(f"--set {item!r}: {text!r} is not a finite number within range")
        out[name] = value
    return out


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def detected(args: argparse.Namespace, text: str) -> str:
    """Which format and dialect the file is read as, and why."""
    if args.format == "auto":
        fmt, why = detection(text, "" if args.file == "-" else args.file)
        fmt_text = f"{fmt} format ({why})"
    else:
        fmt, fmt_text = args.format, f"{args.format} format (--format)"
    if fmt == "cfos":
        dialect = "the cfos dialect (cFos lines are always cfos)"
    elif args.dialect != "auto":
        dialect = f"the {args.dialect} dialect (--dialect)"
    else:
        dialect = "the flukso dialect (the default for a mapping; --dialect cfos reads cFos formulas)"
    return f"{dialect}, {fmt_text}"


def run_check(args: argparse.Namespace) -> int:
    rs = _load(args, list(args.name))
    how = detected(args, args.text)
    if len(rs) == 0:
        raise UserError(f"{args.file}: no rules (read in {how})")
    print(f"{args.file}: {len(rs)} rule(s) in {how}")
    print(f"  targets {', '.join(rs.targets)}")
    for s in rs.steps:
        print(f"  {s.target}[{s.index}]  {s.source}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    values = _parse_sets(list(args.values))
    rs = _load(args, list(args.name) + list(values))
    ev = rs.evaluate(values)
    errors = {(e.target, e.index): e for e in ev.errors}
    if args.json:
        doc = {
            "dialect": rs.dialect,
            "steps": [{"target": s.target, "index": s.index, "rule": s.source, "value": v,
                       "error": str(errors[(s.target, s.index)]) if v is None else None}
                      for s, v in ev.trace],
            "values": ev.values,
        }
        print(json.dumps(doc))
    else:
        width = max((len(s.source) for s in rs.steps), default=0)
        for s, v in ev.trace:
            label = f"{s.target}[{s.index}]"
            if v is None:
                err = errors[(s.target, s.index)]
                col = f" at column {err.column}" if err.column else ""
                kept = ev.values.get(s.target)
                keep = f"kept {_fmt(kept)}" if kept is not None else "left unset"
                print(f"{label:<8} {s.source:<{width}}  ! {err.reason}{col} ({keep})")
            else:
                print(f"{label:<8} {s.source:<{width}}  = {_fmt(v)}")
        print("result: " + " ".join(f"{k}={_fmt(v)}" for k, v in ev.values.items()))
    return 1 if ev.errors else 0
