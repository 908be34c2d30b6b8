"""A real full disk for storage-fault tests: a size-limited tmpfs, and a filler that fills it.

The tests run as root (as CI does), so `mount -t tmpfs -o size=...` works
without a loop device or an image; the mount is always undone.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(mnt: Path, size: str = "6m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on the (new) directory mnt for the duration; skip unless root."""
    if os.geteuid() != 0:
        pytest.skip("a size-limited tmpfs needs root (CI runs as root)")
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "gridtap-test", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Fill the file system to the last byte with one file; return it (delete it to free the space)."""
    filler = mnt / "filler"
    chunk = b"\xa5" * 65536
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    f.write(chunk[:size])
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler
