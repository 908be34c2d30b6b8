"""The Flukso dialect: FluksoToPvoutput ``CUSTOM_RULES`` expressions in Python syntax.

The text is parsed with ``ast.parse(mode="eval")`` (parsing runs nothing) and
every node is checked against an allow-list:

* numbers (int, float, True/False), names ``v1..v12`` and the configured names;
* ``+ - * / % **``, unary ``- + not``, ``and``/``or``, comparisons
  ``== != < <= > >=`` (chained too: ``0 < v2 < 50``), ``a if c else b``;
* calls of ``min``, ``max`` (2 or more arguments), ``abs``, ``round(x[, n])``.

Everything else (attributes, subscripts, lambdas, comprehensions, strings and
f-strings, other calls, keyword or starred arguments, assignments and the
walrus) is rejected with the column and the reason. The checked tree is turned
into closures once; constant sub-expressions are folded at compile time, so
``9**9**9`` fails when the rule is loaded, not when it runs.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Collection, Mapping, Sequence

from gridtap.rules.core import (
    BUILTIN_NAMES,
    MAX_ARGS,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_NODES,
    MAX_SOURCE_CHARS,
    Env,
    Fn,
    RuleError,
    RuleRuntimeError,
    RuleSet,
    RuleSetError,
    RuleSyntaxError,
    Step,
    check_literal,
    checked_name,
    fold,
    power,
)

DIALECT = "flukso"
FUNCTIONS = ("min", "max", "abs", "round")

_REJECTED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Slice: "slices are not allowed",
}


def _col(node: ast.AST) -> int:
    return int(getattr(node, "col_offset", 0)) + 1


def _precheck(tree: ast.AST) -> None:
    """Node count and depth, iteratively (no recursion on hostile input)."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RuleSyntaxError(_col(node), f"expression has more than {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise RuleSyntaxError(_col(node), f"expression nests deeper than {MAX_DEPTH} levels")
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1))


def parse(source: str) -> ast.expr:
    if not isinstance(source, str):
        raise RuleSyntaxError(0, f"a rule must be a string, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise RuleSyntaxError(MAX_SOURCE_CHARS, f"rule is longer than {MAX_SOURCE_CHARS} characters")
    if not source.strip():
        raise RuleSyntaxError(1, "rule is empty")
    if "\x00" in source:
        raise RuleSyntaxError(source.index("\x00") + 1, "NUL character in rule")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleSyntaxError(int(exc.offset or 1), f"syntax error: {exc.msg}") from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise RuleSyntaxError(1, f"cannot parse: {exc}") from None
    _precheck(tree)
    return tree.body


class _Compiler:
    def __init__(self, names: Collection[str]) -> None:
        self.names = names
        self.columns: dict[str, int] = {}

    # Each compile method returns (fn, constant value or None).
    def expr(self, node: ast.expr) -> tuple[Fn, float | None]:
        for kind, reason in _REJECTED.items():
            if isinstance(node, kind):
                raise RuleSyntaxError(_col(node), reason)
        method = getattr(self, "c_" + type(node).__name__, None)
        if method is None:
            raise RuleSyntaxError(_col(node), f"{type(node).__name__} is not allowed in a rule")
        fn, const = method(node)
        if const is None and getattr(fn, "_all_const", False):
            const = fold(fn, _col(node))
        if const is not None:
            c = const

            def constant(env: Env) -> float:
                return c

            return constant, c
        return fn, None

    def c_Constant(self, node: ast.Constant) -> tuple[Fn, float | None]:
        v = node.value
        if isinstance(v, bool) or (isinstance(v, int | float) and not isinstance(v, complex)):
            if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 60:
                raise RuleSyntaxError(_col(node), "number is larger than the limit 1e+15")
            value = check_literal(float(v), _col(node))
            return (lambda env: value), value
        if isinstance(v, str):
            raise RuleSyntaxError(_col(node), "strings are not allowed")
        raise RuleSyntaxError(_col(node), f"constant {type(v).__name__} is not allowed")

    def c_Name(self, node: ast.Name) -> tuple[Fn, float | None]:
        name = node.id
        if not isinstance(node.ctx, ast.Load):
            raise RuleSyntaxError(_col(node), "assignment is not allowed")
        if name in FUNCTIONS:
            raise RuleSyntaxError(_col(node), f"{name} must be called")
        if not checked_name(name) or name not in self.names:
            known = ", ".join(sorted(set(self.names) - set(BUILTIN_NAMES))) or "none"
            raise RuleSyntaxError(_col(node),
                                  f"unknown name {name!r} (allowed: v1..v12; configured: {known})")
        self.columns.setdefault(name, _col(node))
        return (lambda env: env[name]), None

    def _operand(self, node: ast.expr) -> tuple[str, object]:
        fn, const = self.expr(node)
        if const is not None:
            return "c", const
        if isinstance(node, ast.Name):
            return "n", node.id
        return "f", fn

    def c_BinOp(self, node: ast.BinOp) -> tuple[Fn, float | None]:
        col = _col(node)
        ka, a = self._operand(node.left)
        kb, b = self._operand(node.right)
        op = type(node.op)
        fn = _binop(op, ka, a, kb, b, col)
        if ka == "c" and kb == "c":
            fn._all_const = True  # type: ignore[attr-defined]
        return fn, None

    def c_UnaryOp(self, node: ast.UnaryOp) -> tuple[Fn, float | None]:
        f, const = self.expr(node.operand)
        op = type(node.op)
        if op is ast.USub:
            fn: Fn = lambda env: -f(env)  # noqa: E731
        elif op is ast.UAdd:
            fn = f
        elif op is ast.Not:
            fn = lambda env: not f(env)  # noqa: E731
        else:
            raise RuleSyntaxError(_col(node), "bitwise ~ is not allowed")
        if const is not None:
            fn._all_const = True  # type: ignore[attr-defined]
        return fn, None

    def c_BoolOp(self, node: ast.BoolOp) -> tuple[Fn, float | None]:
        parts = [self.expr(v) for v in node.values]
        fns = [p[0] for p in parts]
        fn = fns[0]
        is_and = isinstance(node.op, ast.And)
        for nxt in fns[1:]:
            fn = _and(fn, nxt) if is_and else _or(fn, nxt)
        if all(c is not None for _, c in parts):
            fn._all_const = True  # type: ignore[attr-defined]
        return fn, None

    def c_Compare(self, node: ast.Compare) -> tuple[Fn, float | None]:
        col = _col(node)
        ops = []
        for op in node.ops:
            if type(op) not in _CMP:
                raise RuleSyntaxError(col, f"comparison {type(op).__name__} is not allowed")
            ops.append(type(op))
        operands = [self._operand(node.left)] + [self._operand(c) for c in node.comparators]
        if len(ops) == 1:
            (ka, a), (kb, b) = operands
            fn = _compare(ops[0], ka, a, kb, b)
        else:
            fns = [_as_fn(k, v) for k, v in operands]
            tests = [_CMP[o] for o in ops]

            def fn(env: Env) -> float:
                left = fns[0](env)
                for test, right_fn in zip(tests, fns[1:], strict=True):
                    right = right_fn(env)
                    if not test(left, right):
                        return False
                    left = right
                return True

        if all(k == "c" for k, _ in operands):
            fn._all_const = True  # type: ignore[attr-defined]
        return fn, None

    def c_IfExp(self, node: ast.IfExp) -> tuple[Fn, float | None]:
        t, tc = self.expr(node.test)
        b, bc = self.expr(node.body)
        o, oc = self.expr(node.orelse)
        if tc is not None:
            return (b, bc) if tc else (o, oc)

        def ifexp(env: Env) -> float:
            return b(env) if t(env) else o(env)

        return ifexp, None

    def c_Call(self, node: ast.Call) -> tuple[Fn, float | None]:
        col = _col(node)
        if not isinstance(node.func, ast.Name):
            raise RuleSyntaxError(col, "only min, max, abs and round can be called")
        name = node.func.id
        if name not in FUNCTIONS:
            raise RuleSyntaxError(col, f"function {name!r} is not allowed (allowed: {', '.join(FUNCTIONS)})")
        if node.keywords:
            raise RuleSyntaxError(col, f"{name}() takes no keyword arguments")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise RuleSyntaxError(_col(a), "starred arguments are not allowed")
        args = [self.expr(a) for a in node.args]
        fns = [f for f, _ in args]
        n = len(fns)
        fn: Fn
        if name in ("min", "max"):
            if not 2 <= n <= MAX_ARGS:
                raise RuleSyntaxError(col, f"{name}() takes 2 to {MAX_ARGS} arguments, got {n}")
            pick = min if name == "min" else max
            if n == 2:
                f0, f1 = fns
                fn = lambda env: pick(f0(env), f1(env))  # noqa: E731
            else:
                fn = lambda env: pick([f(env) for f in fns])  # noqa: E731
        elif name == "abs":
            if n != 1:
                raise RuleSyntaxError(col, f"abs() takes 1 argument, got {n}")
            f0 = fns[0]
            fn = lambda env: abs(f0(env))  # noqa: E731
        else:
            if n not in (1, 2):
                raise RuleSyntaxError(col, f"round() takes 1 or 2 arguments, got {n}")
            digits = 0
            if n == 2:
                d = args[1][1]
                if d is None or d != int(d) or not 0 <= d <= 12:
                    raise RuleSyntaxError(col, "round(x, n) needs n to be a whole number 0..12")
                digits = int(d)
            fn = _round(fns[0], digits, col)
        if all(c is not None for _, c in args):
            fn._all_const = True  # type: ignore[attr-defined]
        return fn, None


def _and(a: Fn, b: Fn) -> Fn:
    return lambda env: a(env) and b(env)


def _or(a: Fn, b: Fn) -> Fn:
    return lambda env: a(env) or b(env)


def _round(f: Fn, digits: int, col: int) -> Fn:
    def rnd(env: Env) -> float:
        try:
            return float(round(f(env), digits))
        except (OverflowError, ValueError):
            raise RuleRuntimeError(col, "cannot round a NaN or infinite value") from None
    return rnd


def _as_fn(kind: str, v: object) -> Fn:
    if kind == "c":
        c = v
        return lambda env: c  # type: ignore[return-value]
    if kind == "n":
        k = v
        return lambda env: env[k]  # type: ignore[index]
    return v  # type: ignore[return-value]


def _binop(op: type, ka: str, a: object, kb: str, b: object, col: int) -> Fn:
    """Closures specialised for the operand kinds (name, constant, sub-expression)."""
    if op is ast.Pow:
        if kb == "c" and abs(b) > MAX_EXPONENT:  # type: ignore[arg-type]
            raise RuleSyntaxError(col, f"exponent {b:.6g} exceeds the limit {MAX_EXPONENT:g}")
        fa, fb = _as_fn(ka, a), _as_fn(kb, b)
        return lambda env: power(fa(env), fb(env), col)
    if op in (ast.Div, ast.Mod):
        fa, fb = _as_fn(ka, a), _as_fn(kb, b)
        is_div = op is ast.Div
        what = "division" if is_div else "modulo"

        def divmod_(env: Env) -> float:
            try:
                return fa(env) / fb(env) if is_div else fa(env) % fb(env)
            except ZeroDivisionError:
                raise RuleRuntimeError(col, f"{what} by zero") from None
        return divmod_
    if op not in (ast.Add, ast.Sub, ast.Mult):
        raise RuleSyntaxError(col, f"operator {op.__name__} is not allowed (allowed: + - * / % **)")
    if ka == "n" and kb == "n":
        x, y = a, b
        if op is ast.Add:
            return lambda env: env[x] + env[y]  # type: ignore[index]
        if op is ast.Sub:
            return lambda env: env[x] - env[y]  # type: ignore[index]
        return lambda env: env[x] * env[y]  # type: ignore[index]
    if ka == "n" and kb == "c":
        x, c = a, b
        if op is ast.Add:
            return lambda env: env[x] + c  # type: ignore[index,operator]
        if op is ast.Sub:
            return lambda env: env[x] - c  # type: ignore[index,operator]
        return lambda env: env[x] * c  # type: ignore[index,operator]
    fa, fb = _as_fn(ka, a), _as_fn(kb, b)
    if op is ast.Add:
        return lambda env: fa(env) + fb(env)
    if op is ast.Sub:
        return lambda env: fa(env) - fb(env)
    return lambda env: fa(env) * fb(env)


_CMP = {
    ast.Lt: lambda x, y: x < y,
    ast.LtE: lambda x, y: x <= y,
    ast.Gt: lambda x, y: x > y,
    ast.GtE: lambda x, y: x >= y,
    ast.Eq: lambda x, y: x == y,
    ast.NotEq: lambda x, y: x != y,
}


def _compare(op: type, ka: str, a: object, kb: str, b: object) -> Fn:
    if ka == "n" and kb == "c":
        x, c = a, b
        if op is ast.Lt:
            return lambda env: env[x] < c  # type: ignore[index,operator,return-value]
        if op is ast.Gt:
            return lambda env: env[x] > c  # type: ignore[index,operator,return-value]
        if op is ast.LtE:
            return lambda env: env[x] <= c  # type: ignore[index,operator,return-value]
        if op is ast.GtE:
            return lambda env: env[x] >= c  # type: ignore[index,operator,return-value]
    if ka == "n" and kb == "n":
        x, y = a, b
        if op is ast.Lt:
            return lambda env: env[x] < env[y]  # type: ignore[index,operator,return-value]
        if op is ast.Gt:
            return lambda env: env[x] > env[y]  # type: ignore[index,operator,return-value]
    fa, fb = _as_fn(ka, a), _as_fn(kb, b)
    test = _CMP[op]  # type: ignore[index]
    return lambda env: test(fa(env), fb(env))  # type: ignore[no-any-return]


def compile_expression(source: str, names: Collection[str] = BUILTIN_NAMES) -> tuple[Fn, dict[str, int]]:
    """Compile one expression; returns the closure and the column of each name it reads."""
    tree = parse(source)
    comp = _Compiler(names)
    fn, _ = comp.expr(tree)
    return fn, comp.columns


def compile_rules(rules: Mapping[str, str | Sequence[str]], names: Collection[str] = ()) -> RuleSet:
    """Compile a CUSTOM_RULES mapping (target -> rule or list of rules) into a RuleSet.

    Names a rule may read: v1..v12, `names`, and every target. All problems are
    collected and raised together as `RuleSetError`.
    """
    known = set(BUILTIN_NAMES) | set(names) | {str(t) for t in rules}
    steps: list[Step] = []
    errors: list[RuleError] = []
    for target, value in rules.items():
        if not isinstance(target, str) or not checked_name(target) or "." in target:
            errors.append(RuleError(str(target), 0, 0, "target must be a name such as v4"))
            continue
        sources = [value] if isinstance(value, str) else list(value)
        if not sources:
            errors.append(RuleError(target, 0, 0, "empty list of rules"))
        for i, src in enumerate(sources):
            try:
                fn, cols = compile_expression(src, known)
            except RuleSyntaxError as exc:
                errors.append(RuleError(target, i, exc.column, exc.reason, str(src)))
                continue
            steps.append(Step(target, i, src, fn, cols))
    if errors:
        raise RuleSetError(errors)
    return RuleSet(DIALECT, steps)


__all__ = ["compile_expression", "compile_rules", "DIALECT", "FUNCTIONS", "math"]
