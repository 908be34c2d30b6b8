"""docs/hub.md's X-Digest test vector is what the shared Flukso API code computes."""

from __future__ import annotations

import re
from pathlib import Path

from gridtap.fluksoapi import digest

DOC = Path(__file__).resolve().parents[2] / "docs" / "hub.md"


def test_digest_vector_in_doc() -> None:
    text = DOC.read_text()
    key = re.search(r"device key\s+`([0-9a-f]{32})`", text)
    body = re.search(r"```\n(\{\"measurements\".*)\n```", text)
    sig = re.search(r"X-Digest: ([0-9a-f]{40})", text)
    assert key and body and sig
    assert digest(key.group(1), body.group(1).encode()) == sig.group(1)
