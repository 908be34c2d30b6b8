"""The hostile corpus: every entry is rejected at compile time or bounded at run time."""

from __future__ import annotations

from collections import Counter

from tests.support.hostile_rules import CANARY, check_one, corpus


def test_hostile_corpus_rejected_or_bounded_without_side_effects() -> None:
    CANARY.unlink(missing_ok=True)
    items = corpus()
    assert len(items) >= 1000
    seen = Counter(check_one(d, s) for d, s in items)
    assert seen["rejected"] + seen["bounded"] == len(items)
    assert seen["rejected"] >= 0.95 * len(items)
    assert not CANARY.exists()


def test_payloads_that_reach_code_are_all_rejected() -> None:
    for dialect, source in corpus():
        if any(word in source for word in ("__", "import", "open(", "eval(", "exec(", "lambda:", "getattr")):
            assert check_one(dialect, source) == "rejected", (dialect, source)
