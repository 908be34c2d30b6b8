"""Where a key sits in a TOML file: tomllib parses values but forgets positions.

`locate(text)` scans the raw text once and maps key paths to 1-based line
numbers, e.g. ("board", "baud") -> 7 and ("sensor", 1, "gain") -> 23 for the
second `[[sensor]]` table. Table headers map too (("sensor", 1) -> its
`[[sensor]]` line). It only needs to be right for files tomllib accepted, and
is used for error messages only, so anything it cannot place maps to the
nearest enclosing table.

`set_value(text, table, key, value)` changes one plain value in place (used
by `gridtap calibrate` to write its result into gridtap.toml), leaving every
other byte of the file, comments included, as it was.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r'^\s*((?:[A-Za-z0-9_\-]+|"[^"]*"|\'[^\']*\')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"[^"]*"|\'[^\']*\'))*)\s*='
)


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r'"[^"]*"|\'[^\']*\'|[A-Za-z0-9_\-]+', dotted)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def locate(text: str) -> dict[Path, int]:
    lines: dict[Path, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: Path = ()
    in_multiline: str | None = None
    depth = 0  # open brackets of a multi-line array or inline table
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        header = _HEADER.match(line)
        if header is not None and not _KEY.match(line):
            names = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                table = (*_resolve(names, counts), index)
            else:
                table = _resolve(names, counts)
            lines.setdefault(table, lineno)
            continue
        key = _KEY.match(line)
        if key is None:
            continue
        path = (*table, *_split_key(key.group(1)))
        lines.setdefault(path, lineno)
        rest = line[key.end() :]
        for quote in ('"""', "'''"):
            if rest.count(quote) % 2 == 1:
                in_multiline = quote
                break
        else:
            depth = max(0, _bracket_balance(rest))
    return lines


def _resolve(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> Path:
    """[[a]] then [a.b]: b belongs to the last element of array a."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = names[: i + 1]
        if i < len(names) - 1 and prefix in counts:
            out.append(counts[prefix] - 1)
    return tuple(out)


def _bracket_balance(text: str) -> int:
    # possessive: a long string is one match, not one backtracking frame per character
    text = re.sub(r'"(?:[^"\\]++|\\.)*+"|\'[^\']*+\'', "", text)
    text = text.split("#", 1)[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of path, or of its nearest enclosing table/key that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None


_SIMPLE_VALUE = re.compile(r"^(\s*)([A-Za-z0-9_\-]+)(\s*=\s*)([^\s#]+)(\s*(?:#.*)?)$")


def set_value(text: str, table: Path, key: str, value: str) -> str:
    """`text` with `key = value` (value already TOML) in the table at `table`, the rest unchanged.

    An existing `key = <number or word>` line keeps its indentation and comment;
    a missing key is added right after the table's header line. Raises
    ValueError when the table is not there or the key's line is not that
    simple (a multi-line or inline-table value): the caller asks for a hand edit.
    """
    lines = text.splitlines(keepends=True)
    where = locate(text)
    at = where.get((*table, key))
    if at is not None:
        line = lines[at - 1]
        body = line.rstrip("\r\n")
        m = _SIMPLE_VALUE.match(body)
        if m is None or m.group(2) != key:
            raise ValueError(f"line {at} ({body.strip()!r}) is not a plain `{key} = value`")
        lines[at - 1] = m.group(1) + key + m.group(3) + value + m.group(5) + line[len(body):]
        return "".join(lines)
    head = where.get(table)
    if head is None:
        raise ValueError(f"no table {table} in the file")
    eol = "\r\n" if lines[head - 1].endswith("\r\n") else "\n"
    if not lines[head - 1].endswith(("\n", "\r")):
        lines[head - 1] += eol
    lines.insert(head, f"{key} = {value}{eol}")
    return "".join(lines)
