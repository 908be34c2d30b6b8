"""Shared machinery of both rule dialects: limits, errors, the compiled rule set.

A rule is one expression that computes a new value for a *target*. A rule set
is an ordered list of steps ``(target, index, source, function)``; evaluating
it runs the steps top to bottom, and every step sees the results of the steps
before it (FluksoToPvoutput V3.x semantics: keys top to bottom, rules left to
right).

Both dialects compile an expression once into a tree of Python closures that
take one argument, the environment ``dict[str, float]``. Nothing of the user's
text is ever passed to ``eval``, ``exec`` or ``compile``.

Runtime errors are local to their rule: a division by zero, a domain error,
an overflow, a name without a value or a NaN/inf/oversized result keeps the
target's previous value (or leaves it unset), is reported as a `RuleError`
naming target, index, column and reason, and the evaluation goes on with the
next step. Zero is an ordinary value: nothing is ever dropped because it is 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

Env = dict[str, float]
Fn = Callable[[Env], float]

# Limits. Each one is checked before any work that could be slow or large.
MAX_SOURCE_CHARS = 1000        # one expression
MAX_NODES = 200                # AST nodes (Python) / parse nodes (cFos) per expression
MAX_DEPTH = 40                 # nesting depth per expression
MAX_EXPONENT = 1000.0          # |b| in a ** b / a ^ b
MAX_LITERAL = 1e15             # |literal| in the source
MAX_RESULT = 1e15              # |result| of a rule; bigger is reported as an overflow
MAX_RULES = 500                # steps per rule set
MAX_ARGS = 32                  # arguments of min/max
MAX_FILE_BYTES = 1 << 20       # rule files

BUILTIN_NAMES = tuple(f"v{i}" for i in range(1, 13))


class RuleSyntaxError(Exception):
    """A rule that does not compile. `column` is 1-based within the expression."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column = column
        self.reason = reason


class RuleRuntimeError(Exception):
    """Raised by a compiled closure; carries the column of the failing operation."""

    def __init__(self, column: int, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class RuleError:
    """One rule's compile or runtime problem, for reports and logs."""

    target: str
    index: int
    column: int
    reason: str
    source: str = ""

    def __str__(self) -> str:
        where = f"rule {self.target}[{self.index}]"
        col = f", column {self.column}" if self.column else ""
        return f"{where}{col}: {self.reason}"


class RuleSetError(Exception):
    """A rule set that does not compile: every problem found, each naming its rule."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Step:
    """One compiled rule. `columns` maps each name the rule reads to its first column."""

    target: str
    index: int
    source: str
    fn: Fn = field(repr=False, compare=False)
    columns: dict[str, int] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Evaluation:
    """What one run of a rule set produced."""

    values: Env
    errors: list[RuleError]
    trace: list[tuple[Step, float | None]]


def check_result(value: float) -> str | None:
    """The reason a rule result cannot be used, or None when it is fine."""
    if value != value:
        return "result is NaN"
    if value in (math.inf, -math.inf):
        return "result is infinite"
    if abs(value) > MAX_RESULT:
        return f"result {value:.6g} exceeds the limit {MAX_RESULT:.0e}"
    return None


class RuleSet:
    """An ordered, compiled list of rules of one dialect."""

    def __init__(self, dialect: str, steps: Iterable[Step]) -> None:
        self.dialect = dialect
        self.steps = list(steps)
        if len(self.steps) > MAX_RULES:
            raise RuleSyntaxError(0, f"{len(self.steps)} rules; the limit is {MAX_RULES}")

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def targets(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.steps:
            seen.setdefault(s.target, None)
        return list(seen)

    def evaluate(self, inputs: Mapping[str, float]) -> Evaluation:
        """Run every step in order on a copy of `inputs`.

        Inputs are converted to float. A failing step is reported and leaves its
        target as it was; the following steps still run.
        """
        env: Env = {k: float(v) for k, v in inputs.items()}
        errors: list[RuleError] = []
        trace: list[tuple[Step, float | None]] = []
        for step in self.steps:
            try:
                result = float(step.fn(env))
            except RuleRuntimeError as exc:
                errors.append(RuleError(step.target, step.index, exc.column, exc.reason, step.source))
                trace.append((step, None))
                continue
            except KeyError as exc:
                name = str(exc.args[0]) if exc.args else "?"
                errors.append(RuleError(step.target, step.index, step.columns.get(name, 0),
                                        f"{name} has no value", step.source))
                trace.append((step, None))
                continue
            except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError) as exc:
                errors.append(RuleError(step.target, step.index, 0, f"{type(exc).__name__}: {exc}",
                                        step.source))
                trace.append((step, None))
                continue
            problem = check_result(result)
            if problem is not None:
                errors.append(RuleError(step.target, step.index, 1, problem, step.source))
                trace.append((step, None))
                continue
            env[step.target] = result
            trace.append((step, result))
        return Evaluation(env, errors, trace)


# ---- helpers shared by both compilers --------------------------------------------------------

def check_literal(value: float, column: int) -> float:
    if value != value or abs(value) > MAX_LITERAL:
        raise RuleSyntaxError(column, f"number {value!r} is larger than the limit {MAX_LITERAL:.0e}")
    return float(value)


def power(a: float, b: float, column: int) -> float:
    """a ** b on floats, bounded: exponent cap, no complex results, overflow reported."""
    if abs(b) > MAX_EXPONENT:
        raise RuleRuntimeError(column, f"exponent {b:.6g} exceeds the limit {MAX_EXPONENT:g}")
    try:
        return math.pow(a, b)
    except OverflowError:
        raise RuleRuntimeError(column, "overflow in power") from None
    except ValueError:
        raise RuleRuntimeError(column, f"power {a:.6g} ^ {b:.6g} is undefined (domain error)") from None


def checked_name(name: str) -> bool:
    """True for names a rule may read or write: ASCII identifiers (dotted allowed), no dunders."""
    parts = name.split(".")
    return all(p.isidentifier() and p.isascii() and not p.startswith("__") for p in parts)


def fold(fn: Fn, column: int) -> float:
    """Evaluate a constant sub-expression at compile time; its failure is a compile error."""
    try:
        value = float(fn({}))
    except RuleRuntimeError as exc:
        raise RuleSyntaxError(exc.column, exc.reason) from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise RuleSyntaxError(column, f"{type(exc).__name__}: {exc}") from None
    problem = check_result(value)
    if problem is not None:
        raise RuleSyntaxError(column, problem)
    return value
