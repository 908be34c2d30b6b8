"""A text file the user names (a rule file, a key or password file): read bounded, as UTF-8.

What cannot be read is a UserError that names the file and the reason, never
the content (it may be a secret). The bound keeps a wrong path (a log, a
disk image) from being read whole into a router's RAM.
"""

from __future__ import annotations

import os

from gridtap.errors import UserError


def read_text(path: str | os.PathLike[str], what: str, limit: int) -> str:
    """The text of `path`, at most `limit` bytes of UTF-8; `what` names it in errors ("rule file")."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read the {what} {os.fspath(path)}: {exc.strerror}") from None
    return decode_text(raw, f"the {what} {os.fspath(path)}", limit)


def decode_text(raw: bytes, name: str, limit: int) -> str:
    """`raw` (read up to limit + 1 bytes from what `name` says, e.g. "the rule file on stdin") as text."""
    if len(raw) > limit:
        raise UserError(f"{name} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{name} is not UTF-8 text (byte {exc.start})") from None
