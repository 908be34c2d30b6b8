"""The cFos document's own formula examples (tests/host/rules/cfos_doc_examples.toml), run as a user would.

Each example compiles against a configuration's resolver (meters M1, EVSEs E2/E3, CM variable var1,
an expression meter's own fields, and the example's inputs), so a name the document uses that gridtap
cannot resolve fails here as it would at load time.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtap.rules import cfos
from gridtap.rules.core import RuleSyntaxError
from gridtap.rules.names import METER_FIELDS, Resolver

FIXTURE = Path(__file__).resolve().parents[1] / "host" / "rules" / "cfos_doc_examples.toml"


@dataclass(frozen=True)
class Example:
    doc: str
    formula: str
    inputs: dict[str, float]
    want: float
    note: str


def examples() -> list[Example]:
    data: dict[str, Any] = tomllib.loads(FIXTURE.read_text(encoding="utf-8"))
    return [Example(e["doc"], e.get("formula", e["doc"]),
                    {k: float(v) for k, v in e.get("inputs", {}).items()},
                    float(e["want"]), e.get("note", "")) for e in data["example"]]


def resolver(inputs: dict[str, float]) -> Resolver:
    r = Resolver().add_globals(cm_vars=("var1",))
    for dev in ("M1", "E2", "E3"):
        r.add_device(dev)
    # An expression meter's formulas may omit the device: its own fields and dt.
    r.add((*METER_FIELDS, "dt"))
    return r.add(k for k in inputs if "." not in k)


def run(ex: Example) -> tuple[bool, str]:
    """(passed, what happened)."""
    try:
        fn, _ = cfos.compile_expression(ex.formula, names=resolver(ex.inputs))
    except RuleSyntaxError as exc:
        return False, f"does not compile: {exc}"
    try:
        got = float(fn(dict(ex.inputs)))
    except Exception as exc:  # noqa: BLE001 - any failure is a failed example, reported by name
        return False, f"{type(exc).__name__}: {exc}"
    return abs(got - ex.want) <= 1e-9 * max(1.0, abs(ex.want)), f"got {got:g}, want {ex.want:g}"


def score() -> tuple[int, int]:
    items = examples()
    return sum(run(e)[0] for e in items), len(items)
