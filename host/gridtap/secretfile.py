"""Secrets kept in files (keys, passwords): read them, and say so when other users can read them too.

A key or password file that its group or everybody may read is accepted (the
daemon must not refuse to meter because of a mode bit) but warned about once
per file, naming the file and the fix, never the secret.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from gridtap.errors import UserError
from gridtap.textfile import read_text

log = logging.getLogger("gridtap.secrets")

MAX_SECRET_BYTES = 64 * 1024  # a key or password; a PEM client key fits with room to spare


def warn_if_exposed(path: str | os.PathLike[str], what: str) -> bool:
    """Log a warning if `path` is readable (or writable) by its group or others; True if it is."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # the reader reports a missing file with its own words
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return False
    log.warning("the %s %s can be read by other users (mode %03o): chmod 600 it", what, path,
                stat.S_IMODE(mode))
    return True


def read_secret_line(path: str | os.PathLike[str], what: str) -> str:
    """The first line of a secret file, stripped; UserError (naming the file, not the secret) if unusable."""
    warn_if_exposed(path, what)
    text = read_text(path, what, MAX_SECRET_BYTES)
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line:
        raise UserError(f"the {what} {path} is empty")
    if not line.isprintable():
        raise UserError(f"the {what} {path} holds control characters")
    return line


def readable_file(path: Path, what: str) -> str | None:
    """None if `path` is a readable regular file, else why not (for config checks)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot read the {what} {path}: {exc.strerror}"
    if not path.is_file():
        return f"the {what} {path} is not a regular file"
    return None
