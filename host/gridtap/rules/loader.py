"""Loading rule sets from text: every format gridtap accepts, read without running anything.

Formats (``fmt``):

* ``python``: a FluksoToPvoutput ``CUSTOM_RULES = { ... }`` block pasted
  verbatim (or a bare ``{ ... }`` dict, or a whole FluksoToPvoutput config
  file: only the ``CUSTOM_RULES`` assignment is read). The text is parsed
  with ``ast`` and walked by hand: keys must be strings, values a string
  (V2) or a list of strings (V3.x). Nothing is evaluated.
* ``json``: an object ``{"v4": ["v4 * 0.89", ...], ...}``.
* ``toml``: a table of the same shape; read from ``[rules]``,
  ``[pvoutput.rules]``, ``pvoutput.custom_rules`` (a string holding a python
  block or cFos lines) or the top level, in that order.
* ``cfos``: cFos formula lines ``target = expression`` with ``#`` comments.

``auto`` picks the format from the file name (``.json``, ``.toml``) and
otherwise from the content: text containing ``CUSTOM_RULES`` or starting with
``{`` is a python block, anything else is cFos lines. The *dialect* of the
expressions inside JSON/TOML/python mappings is ``flukso`` (Python syntax)
unless ``cfos`` is asked for; cFos lines are always the cFos dialect.
"""

from __future__ import annotations

import ast
import json
import tomllib
from collections.abc import Collection, Mapping
from typing import Any

from gridtap.rules import cfos, flukso
from gridtap.rules.core import MAX_FILE_BYTES, RuleError, RuleSet, RuleSetError

FORMATS = ("auto", "python", "json", "toml", "cfos")
DIALECTS = ("auto", "flukso", "cfos")


class RuleFileError(ValueError):
    """A rule file that cannot be read as rules; the message names the place."""


def _python_mapping(text: str) -> dict[str, list[str]]:
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as exc:
        raise RuleFileError(f"line {exc.lineno}: not a Python CUSTOM_RULES block: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise RuleFileError(f"cannot parse as Python: {exc}") from None
    node: ast.AST | None = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CUSTOM_RULES"
                                                for t in stmt.targets):
            node = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) \
                and stmt.target.id == "CUSTOM_RULES":
            node = stmt.value
    if node is None and len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        node = tree.body[0].value
    if node is None:
        raise RuleFileError("no CUSTOM_RULES = { ... } assignment found")
    if not isinstance(node, ast.Dict):
        raise RuleFileError(f"line {getattr(node, 'lineno', '?')}: CUSTOM_RULES must be a dict literal")
    out: dict[str, list[str]] = {}
    for k, v in zip(node.keys, node.values, strict=True):
        line = getattr(v, "lineno", "?")
        if not (isinstance(k, ast.Constant) and isinstance(k.value, str)):
            raise RuleFileError(f"line {line}: CUSTOM_RULES keys must be strings like \"v4\"")
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            rules = [v.value]
        elif isinstance(v, ast.List | ast.Tuple):
            rules = []
            for item in v.elts:
                if not (isinstance(item, ast.Constant) and isinstance(item.value, str)):
                    raise RuleFileError(f"line {line}: rules for {k.value!r} must be strings")
                rules.append(item.value)
        else:
            raise RuleFileError(f"line {line}: rules for {k.value!r} must be a string or a list of strings")
        if k.value in out:
            raise RuleFileError(f"line {line}: {k.value!r} appears twice")
        out[k.value] = rules
    return out


def mapping_from(obj: Any, where: str) -> dict[str, list[str]]:
    """Check a decoded JSON/TOML value is target -> string | list of strings."""
    if not isinstance(obj, Mapping):
        raise RuleFileError(f"{where}: rules must be a table/object of target = rule(s)")
    out: dict[str, list[str]] = {}
    for k, v in obj.items():
        if isinstance(v, str):
            out[str(k)] = [v]
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            out[str(k)] = list(v)
        else:
            raise RuleFileError(f"{where}: {k!r} must be a rule string or a list of rule strings")
    return out


def detect_format(text: str, filename: str = "") -> str:
    return detection(text, filename)[0]


def detection(text: str, filename: str = "") -> tuple[str, str]:
    """The format auto picks for a file, and why (for `gridtap rules check`)."""
    name = filename.lower()
    if name.endswith(".json"):
        return "json", "the file name ends in .json"
    if name.endswith(".toml"):
        return "toml", "the file name ends in .toml"
    if "CUSTOM_RULES" in text:
        return "python", "the text contains CUSTOM_RULES"
    if text.lstrip().startswith("{"):
        return "python", "the text starts with {"
    return "cfos", "no CUSTOM_RULES, no { at the start and not .json/.toml: cFos formula lines"


def load_text(text: str, fmt: str = "auto", dialect: str = "auto", filename: str = "",
              names: Collection[str] = ()) -> RuleSet:
    """Compile a rule file's text. Raises RuleFileError or RuleSetError with clear messages."""
    if fmt not in FORMATS:
        raise RuleFileError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if dialect not in DIALECTS:
        raise RuleFileError(f"unknown dialect {dialect!r} (one of {', '.join(DIALECTS)})")
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise RuleFileError(f"rule file is larger than {MAX_FILE_BYTES} bytes")
    if fmt == "auto":
        fmt = detect_format(text, filename)
    if fmt == "cfos":
        if dialect == "flukso":
            raise RuleFileError("cFos formula lines are always the cfos dialect")
        pairs = cfos.parse_file(text)
        try:
            return cfos.compile_rules(((t, e) for t, e, _ in pairs), names)
        except RuleSetError as exc:
            lines = {}
            counts: dict[str, int] = {}
            for t, _, ln in pairs:
                lines[(t, counts.get(t, 0))] = ln
                counts[t] = counts.get(t, 0) + 1
            raise RuleSetError([_with_line(e, lines.get((e.target, e.index))) for e in exc.errors]) from None
    if fmt == "python":
        mapping = _python_mapping(text)
    elif fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleFileError(f"line {exc.lineno} column {exc.colno}: bad JSON: {exc.msg}") from None
        except RecursionError:
            raise RuleFileError("JSON nests too deeply") from None
        mapping = mapping_from(obj.get("rules", obj) if isinstance(obj, dict) else obj, "JSON")
    else:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RuleFileError(f"bad TOML: {exc}") from None
        except RecursionError:
            raise RuleFileError("TOML nests too deeply") from None
        pv_obj = doc.get("pvoutput")
        pv: dict[str, Any] = pv_obj if isinstance(pv_obj, dict) else {}
        if "rules" in doc:
            mapping = mapping_from(doc["rules"], "[rules]")
        elif "rules" in pv:
            mapping = mapping_from(pv["rules"], "[pvoutput.rules]")
        elif "custom_rules" in pv:
            if not isinstance(pv["custom_rules"], str):
                raise RuleFileError("pvoutput.custom_rules must be a string")
            return load_text(pv["custom_rules"], "auto", dialect, "", names)
        elif pv_obj is not None:
            raise RuleFileError("[pvoutput] has no rules: give it rules = {...} or custom_rules")
        elif any(isinstance(v, dict | list) and not _rule_list(v) for v in doc.values()):
            tables = ", ".join(k for k, v in doc.items() if isinstance(v, dict | list) and not _rule_list(v))
            raise RuleFileError(f"no rules here: no [rules] table and no [pvoutput] section (a gridtap.toml "
                                f"keeps its rules in [pvoutput]); {tables} are not rules")
        else:
            mapping = mapping_from(doc, "TOML")
    return compile_mapping(mapping, "flukso" if dialect == "auto" else dialect, names)


def _rule_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def compile_mapping(mapping: Mapping[str, list[str]], dialect: str, names: Collection[str] = ()) -> RuleSet:
    if dialect == "cfos":
        return cfos.compile_rules(((t, src) for t, rules in mapping.items() for src in rules), names)
    return flukso.compile_rules(mapping, names)


def _with_line(err: RuleError, line: int | None) -> RuleError:
    if line is None:
        return err
    return RuleError(err.target, err.index, err.column, f"{err.reason} (line {line})", err.source)


def parse_config(section: Any) -> RuleSet:
    """The [rules] section of gridtap.toml: ``dialect`` plus a target table or ``custom_rules``.

    Raises `gridtap.errors.UserError` naming the key.
    """
    from gridtap.errors import UserError

    if not isinstance(section, dict):
        raise UserError("[rules] must be a table")
    body = dict(section)
    dialect = body.pop("dialect", "flukso")
    if dialect not in ("flukso", "cfos"):
        raise UserError(f"[rules] key 'dialect': must be flukso or cfos, got {dialect!r}")
    try:
        if "custom_rules" in body:
            text = body.pop("custom_rules")
            if body:
                raise UserError(f"[rules] key {next(iter(body))!r}: give custom_rules or targets, not both")
            if not isinstance(text, str):
                raise UserError("[rules] key 'custom_rules': expected a string")
            return load_text(text, "auto", dialect)
        return compile_mapping(mapping_from(body, "[rules]"), dialect)
    except RuleFileError as exc:
        raise UserError(f"[rules]: {exc}") from None
    except RuleSetError as exc:
        raise UserError("[rules]: " + "; ".join(str(e) for e in exc.errors)) from None
