"""Rules engine: evaluation rate, speed-up over FluksoToPvoutput's eval(), hostile corpus.

All rates are single-core, best of several repeats, measured in the same run
as their baseline so the ratio does not depend on the machine's speed.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gridtap.rules import cfos, flukso, load_text  # noqa: E402
from tests.support.cfos_doc import score  # noqa: E402
from tests.support.hostile_rules import check_one, corpus  # noqa: E402
from tests.support.seed_rules import FLM02  # noqa: E402

RULE = "(v4 + v2) if v2 < 50 else v4"
CFOS_RULE = "v2 < 50 ? v4 + v2 : v4"

ANCHORS = {
    "rules.evals_per_s": "FluksoToPvoutput: eval() ≈17 µs/eval, zeros dropped",
    "rules.speedup_vs_eval": "simpleeval with previously_parsed: 3.4 µs",
}
HOW = {
    "rules.evals_per_s": f"compiled closure of `{RULE}`, 12 variables bound, best of 5 x 1e6 calls",
    "rules.speedup_vs_eval": "eval() of the same string every call "
                             "(FluksoToPvoutput: eval(rule, {}, values)) "
                             "divided by the compiled closure, same run",
    "rules.eval_us_per_eval": "the eval() baseline of rules.speedup_vs_eval, µs per call",
    "rules.cfos_evals_per_s": f"cFos dialect `{CFOS_RULE}`, same variables",
    "rules.seed_ruleset_evals_per_s": "RuleSet.evaluate of the seed's FLM02 CUSTOM_RULES (6 rules), per set",
    "rules.hostile_inputs_rejected": "entries of the generated hostile corpus rejected at compile time",
    "rules.hostile_inputs_total": "entries of the corpus; the rest are bounded at run time (no crash/hang)",
    "rules.cfos_doc_examples_passed": "formula examples of the cFos document (tests/host/rules/"
                                      "cfos_doc_examples.toml) that load against a configuration's names "
                                      "and give the stated value",
    "rules.cfos_doc_examples_total": "formula examples in that fixture",
}


def _rate(stmt: str, env: dict[str, object], number: int, repeat: int) -> float:
    best = min(timeit.repeat(stmt, globals=env, number=number, repeat=repeat))
    return number / best


def run() -> dict[str, object]:
    values = {f"v{i}": float(100 * i) for i in range(1, 13)}
    values["v2"] = 45.0
    fn, _ = flukso.compile_expression(RULE)
    cfn, _ = cfos.compile_expression(CFOS_RULE)
    assert fn(values) == cfn(values) == eval(RULE, {}, dict(values))  # noqa: S307 - the baseline itself
    ours = _rate("fn(values)", {"fn": fn, "values": values}, 1_000_000, 5)
    theirs = _rate("eval(rule, {}, dict(values))", {"rule": RULE, "values": values}, 20_000, 5)
    cfos_rate = _rate("fn(values)", {"fn": cfn, "values": values}, 1_000_000, 3)
    rs = load_text(FLM02)
    set_rate = _rate("rs.evaluate(values)", {"rs": rs, "values": values}, 100_000, 3)
    items = corpus()
    outcomes = [check_one(d, s) for d, s in items]
    passed, total = score()
    return {
        "rules.evals_per_s": round(ours),
        "rules.speedup_vs_eval": round(ours / theirs, 1),
        "rules.eval_us_per_eval": round(1e6 / theirs, 2),
        "rules.cfos_evals_per_s": round(cfos_rate),
        "rules.seed_ruleset_evals_per_s": round(set_rate),
        "rules.hostile_inputs_rejected": outcomes.count("rejected"),
        "rules.hostile_inputs_total": len(items),
        "rules.cfos_doc_examples_passed": passed,
        "rules.cfos_doc_examples_total": total,
    }


if __name__ == "__main__":
    for k, v in run().items():
        print(k, v)
