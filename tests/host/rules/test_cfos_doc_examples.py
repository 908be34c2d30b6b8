"""Every formula example of the cFos document, from the committed fixture, against gridtap's engine."""

from __future__ import annotations

import pytest

from gridtap.rules import cfos
from gridtap.rules.core import RuleSyntaxError
from gridtap.rules.names import charging_rule_names, phase_values
from tests.support.cfos_doc import FIXTURE, Example, examples, resolver, run

EXAMPLES = examples()


def test_fixture_covers_the_document() -> None:
    docs = {e.doc for e in EXAMPLES}
    for text in ("M1.current >= 6500 ? M1.current : 0", "date.dayminute >= 480 ? 8000 : 0",
                 "16000 - M1.current", "import_wh + M1.power_w * dt / 3600",
                 "(power_w * (20 - dt) + M1.power_w * dt) / 20", "cm.var1 ? 6000 : 0",
                 "PB.input2 ? 6000 : 0"):
        assert text in docs
    assert len(EXAMPLES) == 30 and FIXTURE.name == "cfos_doc_examples.toml"


@pytest.mark.parametrize("ex", EXAMPLES, ids=[f"{i}:{e.doc}" for i, e in enumerate(EXAMPLES)])
def test_document_example(ex: Example) -> None:
    ok, what = run(ex)
    assert ok, f"{ex.doc!r}: {what}"


@pytest.mark.parametrize("src", ["v99", "M1.curent", "M7.power_w", "date.weekdy", "CM.var2",
                                 "GM.sunshine.power_w", "E2.power_w + foo"])
def test_unknown_names_are_refused_at_load(src: str) -> None:
    with pytest.raises(RuleSyntaxError, match="unknown name"):
        cfos.compile_expression(src, names=resolver({}))


def test_current_is_the_phase_being_evaluated() -> None:
    """"for charging rules, the Charging Manager queries all phases one after the other"."""
    fn, _ = cfos.compile_expression("16000 - M1.current", names=resolver({}))
    env = {"M1.current_l1": 5000.0, "M1.current_l2": 1000.0, "M1.current_l3": 0.0, "E2.current_l1": 7.0}
    assert [fn({**env, **phase_values(env, p)}) for p in (1, 2, 3)] == [11000.0, 15000.0, 16000.0]


def test_exists_needs_no_resolution() -> None:
    fn, _ = cfos.compile_expression("exists(M9.power_w) ? 1 : 2", names=resolver({}))
    assert fn({}) == 2.0


def test_charging_rule_names() -> None:
    names = charging_rule_names([1], [1, 2], ["var1"])
    for ok in ("E2.txn_energy", "E1.state", "E1.cphases", "E2.surplus_pcur", "E1.com_err",
               "CM._price", "CM._surplus", "CM.var1", "GM.surplus.power_w", "date.dayminute",
               "PB.input2", "M1.current_l3"):
        assert ok in names
    for bad in ("E3.state", "M2.power_w", "CM.var2", "E1.stat"):
        assert bad not in names
    fn, _ = cfos.compile_expression("E1.state == 3 && CM._surplus > 1400 ? 6000 : 0", names=names)
    assert fn({"E1.state": 3.0, "CM._surplus": 2000.0}) == 6000.0
