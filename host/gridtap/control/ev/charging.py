"""A wallbox's charging rule: a cFos formula whose value is the wished current in mA.

The formula is compiled once by the cFos dialect (`gridtap.rules.cfos`); its
names are resolved from the variables this module builds each step
(`variables`): the grid meter ``M1.*``, every wallbox's ``E<n>.*`` fields,
``date.*``, ``surplus_w`` and the wallbox's own plan (``target_wh``,
``minutes_left``). A formula that fails, or yields NaN or a negative
value, makes the wallbox pause; the reason is logged, never raised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gridtap.rules.cfos import compile_expression
from gridtap.rules.core import Fn, RuleRuntimeError, RuleSyntaxError

# Ready-made rules (docs/ev.md). `surplus` charges from PV surplus only; `gridtap` adds what the
# cFos document calls "min + PV": once the sun gives more than 300 W (and until it gives nothing)
# it charges at least 2.5 A per phase (7.5 A on one phase for a wallbox that switches), so no
# surplus is exported while a car waits; from 15:00 the sun only weakens until the car leaves, so
# surplus is taken at full current; and it charges at full current when the remaining energy
# needs the rest of the night (at 90 % of full power, with an hour to spare).
PRESETS = {
    "full": "E.max_ma",
    "surplus": "surplus_w * 1000 / (230 * E.phases)",
    "gridtap": ("(E.target_wh - E.txn_energy) * 60 >= 0.9 * E.max_w * (E.minutes_left - 60) ? E.max_ma"
                " : surplus_w > (E.power_w > 0 ? 0 : 300)"
                " ? (date.hour >= 15 ? E.max_ma : max(2500, surplus_w * 1000 / (230 * E.phases))) : 0"),
}


class RuleConfigError(ValueError):
    """A charging rule that does not compile (raised at load time)."""


@dataclass
class ChargeRule:
    source: str
    fn: Fn
    names: tuple[str, ...]

    @classmethod
    def compile(cls, source: str) -> ChargeRule:
        text = PRESETS.get(source, source)
        try:
            fn, cols = compile_expression(text)
        except RuleSyntaxError as exc:
            raise RuleConfigError(f"column {exc.column}: {exc.reason}") from exc
        return cls(text, fn, tuple(cols))

    def unknown(self, known: set[str]) -> list[str]:
        """Names this rule reads that the configuration cannot give a value."""
        return [n for n in self.names if n not in known]

    def milliamps(self, env: Mapping[str, float]) -> tuple[float, str]:
        """(wished mA, "" or why the rule gave nothing usable -> the caller pauses)."""
        try:
            v = float(self.fn(dict(env)))
        except RuleRuntimeError as exc:
            return math.nan, f"column {exc.column}: {exc.reason}"
        except KeyError as exc:
            return math.nan, f"{exc.args[0]} has no value"
        except (ArithmeticError, ValueError) as exc:
            return math.nan, f"{type(exc).__name__}: {exc}"
        if not math.isfinite(v):
            return math.nan, f"rule gave {v}"
        if v < 0:
            return math.nan, f"rule gave a negative current ({v:.0f} mA)"
        return v, ""


def box_variables(prefix: str, fields: Mapping[str, float]) -> dict[str, float]:
    """`fields` of one wallbox under its E<n>. name (and under ``E.`` for its own rule)."""
    return {f"{prefix}.{k}": float(v) for k, v in fields.items()}


PLAN_FIELDS = ("power_w", "import_wh", "current_l1", "current_l2", "current_l3", "state", "cphases",
               "txn_energy", "phases", "max_ma", "min_ma", "max_w", "target_wh", "minutes_left")
