"""docs/protocol.md's vectors must hold for every codec, so the doc cannot drift."""

from __future__ import annotations

import pytest

from gridtap_fw import wire
from tests.support.vectors import rejects, vectors


def test_doc_covers_every_message_type() -> None:
    assert {v.mtype for v in vectors()} == set(wire.TYPE_NAMES)


def test_doc_covers_every_reject_counter() -> None:
    assert {r.counter for r in rejects()} == set(wire.COUNTER_NAMES) - {"frames_ok", "oversize"}


@pytest.mark.parametrize("vec", vectors(), ids=lambda v: f"{wire.TYPE_NAMES[v.mtype]}-{v.seq}-{v.flags}")
def test_python_encoder_matches_doc(vec) -> None:
    assert wire.encode(vec.mtype, vec.seq, vec.values, vec.flags) == vec.wire


@pytest.mark.parametrize("vec", vectors(), ids=lambda v: f"{wire.TYPE_NAMES[v.mtype]}-{v.seq}-{v.flags}")
def test_python_decoder_matches_doc(vec) -> None:
    dec = wire.Decoder()
    assert dec.feed(vec.wire) == [wire.Message(vec.mtype, vec.seq, vec.flags, vec.values)]
    assert dec.counters()["frames_ok"] == 1


@pytest.mark.parametrize("rej", rejects(), ids=lambda r: r.counter)
def test_python_decoder_rejects_doc_vectors(rej) -> None:
    dec = wire.Decoder()
    assert dec.feed(rej.wire) == []
    counts = dec.counters()
    assert counts[rej.counter] == 1
    assert sum(counts.values()) == 1
