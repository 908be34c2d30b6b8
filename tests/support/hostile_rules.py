"""A generated corpus of hostile rule inputs for both dialects (used by a test and by bench_rules).

Every entry is something a rule must not be able to do: reach builtins or
attributes, run code, allocate or compute without bound, or smuggle syntax.
`check_one` compiles and (if it compiles) runs an entry and says whether it
was rejected at compile time or bounded at run time; anything else raises.
"""

from __future__ import annotations

import math
from pathlib import Path

from gridtap.rules import RuleSetError, RuleSyntaxError, cfos, flukso
from gridtap.rules.core import RuleSet

CANARY = Path("/tmp/gridtap-hostile-canary")

PY_PAYLOADS = [
    "__import__('os').system('touch /tmp/gridtap-hostile-canary')",
    "open('/tmp/gridtap-hostile-canary', 'w')",
    "().__class__.__bases__[0].__subclasses__()",
    "v1.__class__.__mro__",
    "v1.real",
    "(lambda: 0)()",
    "(lambda f: f(f))(lambda f: f(f))",
    "[x for x in range(10**9)]",
    "{x: x for x in range(10)}",
    "{x for x in ()}",
    "sum(x for x in range(10**9))",
    "9**9**9",
    "10**10**10",
    "(v1 + 1) ** 99999999",
    "'a' * 10**9",
    "f'{v1}'",
    "f'{__import__(\"os\")}'",
    "(v1 := 5)",
    "eval('1')",
    "exec('1')",
    "compile('1', 'x', 'eval')",
    "getattr(v1, 'real')",
    "globals()",
    "locals()",
    "vars()",
    "type(v1)",
    "v1[0]",
    "v1[0:1]",
    "[1, 2]",
    "(1, 2)",
    "{1: 2}",
    "{1}",
    "...",
    "None",
    "b'x'",
    "1j",
    "v13",
    "__builtins__",
    "__name__",
    "min(*[1, 2])",
    "round(v1, ndigits=2)",
    "max(v1, key=abs)",
    "v1 is v2",
    "v1 in [1]",
    "v1 << 99999999",
    "~v1",
    "v1 @ v2",
    "v1 // 0",
    "1e999",
    "1" * 4400,
    "0x" + "f" * 100,
    "await v1",
    "(yield)",
    "v1; import os",
    "import os",
    "v1 = 1",
    "v1\n__import__('os')",
    "v1 \x00",
    "print(v1)",
    "breakpoint()",
    "abs.__self__",
    "min.__call__(1, 2)",
    "round(v1, 99)",
    "round(v1, v2)",
    "min(" + ", ".join(["v1"] * 40) + ")",
]

CFOS_PAYLOADS = [
    "__import__(1)",
    "__import__('os')",
    "M1.__class__",
    "a.__globals__.x",
    "__builtins__",
    "eval(1)",
    "exec(1)",
    "open(1)",
    "system(1)",
    "9^9^9",
    "10^10^10",
    "(v1 + 1) ^ 99999999",
    "10^1000",
    "1e999",
    "1" * 4400,
    "\"x\"",
    "'x'",
    "x = 1",
    "v1 := 1",
    "v1; v2",
    "v1[0]",
    "{1}",
    "`ls`",
    "$HOME",
    "v1 ~ v2",
    "v1 << 2",
    "v1 ** 2",
    "v1 @ v2",
    "sqrt()",
    "clamp(1)",
    "exists(1 + 1)",
    "exists(__x)",
    "min(" + ", ".join(["v1"] * 40) + ")",
    "1 +",
    "(1",
    "1)",
    "? 1 : 2",
    "1 ? 2",
    "a..b",
    "M1.",
    ".power_w",
    "v1 \x00",
    "v1 \u202e",
    "lambda",
    "1 / 0",
    "5 % 0",
    "sqrt(-1)",
    "round(1e999)",
]

PY_CONTEXTS = ["{p}", "v1 + {p}", "({p})", "{p} if v1 else 0", "0 if v1 else {p}", "min(v1, {p})",
               "abs({p})", "v1 * ({p}) - 1", "not ({p})", "v1 < ({p}) < v2"]
CFOS_CONTEXTS = ["{p}", "v1 + {p}", "({p})", "v1 ? {p} : 0", "v1 ? 0 : {p}", "min(v1, {p})",
                 "abs({p})", "v1 * ({p}) - 1", "!({p})", "clamp({p}, 0, 1)"]


def _nesting() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for n in range(45, 1045, 50):
        out.append(("flukso", "(" * n + "v1" + ")" * n))
        out.append(("flukso", "-" * n + "v1"))
        out.append(("flukso", "not " * n + "v1"))
        out.append(("flukso", "v1 + " * n + "v1"))
        out.append(("flukso", "[" * n + "]" * n))
        out.append(("cfos", "(" * n + "v1" + ")" * n))
        out.append(("cfos", "-" * n + "v1"))
        out.append(("cfos", "!" * n + "v1"))
        out.append(("cfos", "v1 + " * n + "v1"))
        out.append(("cfos", "v1 ? " * n + "1" + " : 0" * n))
    for digits in (16, 17, 20, 50, 300, 309, 400, 1000, 4300, 5000):
        out.append(("flukso", "1" + "0" * digits))
        out.append(("cfos", "1" + "0" * digits))
        out.append(("flukso", "1e" + str(digits)))
        out.append(("cfos", "1e" + str(digits)))
    return out


def corpus() -> list[tuple[str, str]]:
    """(dialect, source) pairs; at least 1000."""
    items: list[tuple[str, str]] = []
    for p in PY_PAYLOADS:
        items.extend(("flukso", c.replace("{p}", p)) for c in PY_CONTEXTS)
    for p in CFOS_PAYLOADS:
        items.extend(("cfos", c.replace("{p}", p)) for c in CFOS_CONTEXTS)
    items.extend(_nesting())
    return items


HOSTILE_ENV = {**{f"v{i}": float(i) for i in range(1, 13)}, "M1.power_w": 1e15, "a.b": -1e15}


def check_one(dialect: str, source: str) -> str:
    """Return "rejected" or "bounded"; raise AssertionError for anything else."""
    try:
        rs: RuleSet = (flukso.compile_rules({"v1": [source]}) if dialect == "flukso"
                       else cfos.compile_rules([("v1", source)]))
    except RuleSetError as exc:
        assert exc.errors and all(e.reason for e in exc.errors)
        return "rejected"
    except RuleSyntaxError:
        return "rejected"
    ev = rs.evaluate(HOSTILE_ENV)
    value = ev.values["v1"]
    assert math.isfinite(value) and abs(value) <= 1e15, (dialect, source, value)
    return "bounded"
