"""The cFos dialect: cFos Charging Manager formulas, with their own tokenizer and parser.

Grammar (precedence from loosest to tightest; all binary operators are left
associative except ``^`` and ``?:``, which associate to the right)::

    expr     := or ( "?" expr ":" expr )?
    or       := and ( "||" and )*
    and      := bitor ( "&&" bitor )*
    bitor    := bitand ( "|" bitand )*
    bitand   := equal ( "&" equal )*
    equal    := rel ( ("==" | "!=") rel )*
    rel      := add ( ("<" | "<=" | ">" | ">=") add )*
    add      := mul ( ("+" | "-") mul )*
    mul      := unary ( ("*" | "/" | "%") unary )*
    unary    := ("-" | "+" | "!") unary | power
    power    := primary ( "^" unary )?
    primary  := NUMBER | NAME | NAME "(" args ")" | "(" expr ")"
    NAME     := ident ( "." ident )*          e.g. M1.power_w, solar.power_w, date.hour, dt

Semantics: all values are floats. Comparisons and ``! && ||`` give 1 or 0
(``&&``/``||`` short-circuit); a value is true when it is not 0. ``^`` is the
power (``10^2`` = 100, ``-2^2`` = -4). ``%`` takes the sign of the dividend
(C ``fmod``). ``&`` and ``|`` need whole numbers (|x| <= 2^53). Functions:
``min``/``max`` (1 to 32 arguments), ``abs``, ``clamp(x, lo, hi)``,
``round`` (halves away from zero), ``sqrt`` and ``exists(name)`` (1 when the
name has a value, else 0; the only place a missing name is not an error).

Rule files are lines ``target = expression``; ``#`` starts a comment; blank
lines are ignored; a target may appear on several lines, which then run in
order, like a Flukso list (see docs/rules.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from gridtap.rules.core import (
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
from gridtap.rules.names import Resolver, canonical, uploader_names

DIALECT = "cfos"
FUNCTIONS = ("min", "max", "abs", "clamp", "round", "sqrt", "exists")
MAX_BITWISE = float(2 ** 53)

_TOKEN = re.compile(
    r"(?P<ws>[ \t\r\n]+)"
    r"|(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%^&|!<>?:(),])"
)


def date_env(t: float, tz: tzinfo | None) -> dict[str, float]:
    """cFos ``date.*`` names for the local time t (month 0..11 and weekday Sunday=0, as cFos)."""
    dt = datetime.fromtimestamp(t, tz)
    return {"date.year": float(dt.year), "date.month": float(dt.month - 1), "date.day": float(dt.day),
            "date.weekday": float((dt.weekday() + 1) % 7), "date.yearday": float(dt.timetuple().tm_yday - 1),
            "date.hour": float(dt.hour), "date.minute": float(dt.minute), "date.second": float(dt.second),
            "date.dayminute": float(dt.hour * 60 + dt.minute),
            "date.daysecond": float(dt.hour * 3600 + dt.minute * 60 + dt.second),
            "date.dst": 1.0 if dt.dst() else 0.0}


@dataclass(frozen=True)
class HostFunction:
    """A function the embedding program adds to the dialect (e.g. the battery policy's ``cheapest``).

    `fn` gets the evaluated arguments; a ValueError it raises becomes a runtime error of the rule
    at the call's column. Host functions are never constant-folded: they may read live data.
    """

    min_args: int
    max_args: int
    fn: Callable[[Sequence[float]], float]


@dataclass(frozen=True)
class Token:
    kind: str   # "num", "name", "op", "end"
    text: str
    column: int  # 1-based


def tokenize(source: str) -> list[Token]:
    if len(source) > MAX_SOURCE_CHARS:
        raise RuleSyntaxError(MAX_SOURCE_CHARS, f"rule is longer than {MAX_SOURCE_CHARS} characters")
    out: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            ch = source[pos]
            if ch in "\"'":
                reason = "strings are not supported"
            elif ch == "=":
                reason = "'=' is not an operator in a formula (use == to compare)"
            elif ch in "[]{}":
                reason = f"{ch!r} is not allowed"
            else:
                reason = f"unexpected character {ch!r}"
            raise RuleSyntaxError(pos + 1, reason)
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    out.append(Token("end", "", len(source) + 1))
    return out


_BINARY_LEVELS: list[tuple[str, ...]] = [
    ("||",), ("&&",), ("|",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%"),
]


class _Parser:
    """Recursive descent with precedence climbing; builds closures directly."""

    def __init__(self, source: str, functions: Mapping[str, HostFunction] | None = None) -> None:
        self.functions = functions or {}
        self.tokens = tokenize(source)
        self.pos = 0
        self.nodes = 0
        self.depth = 0
        self.columns: dict[str, int] = {}

    # -- token helpers
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.take()
        if tok.text != text:
            found = "end of formula" if tok.kind == "end" else repr(tok.text)
            raise RuleSyntaxError(tok.column, f"expected {text!r}, found {found}")
        return tok

    def node(self, column: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RuleSyntaxError(column, f"formula has more than {MAX_NODES} nodes")

    def enter(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise RuleSyntaxError(column, f"formula nests deeper than {MAX_DEPTH} levels")

    # -- grammar; every method returns (fn, constant or None)
    def parse(self) -> Fn:
        fn, _ = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise RuleSyntaxError(tok.column, f"unexpected {tok.text!r} after the end of the formula")
        return fn

    def expr(self) -> tuple[Fn, float | None]:
        start = self.peek().column
        self.enter(start)
        cond = self.binary(0)
        if self.peek().text == "?":
            col = self.take().column
            self.node(col)
            a = self.expr()
            self.expect(":")
            b = self.expr()
            result = _ternary(cond, a, b)
        else:
            result = cond
        self.depth -= 1
        return result

    def binary(self, level: int) -> tuple[Fn, float | None]:
        if level == len(_BINARY_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        ops = _BINARY_LEVELS[level]
        while self.peek().kind == "op" and self.peek().text in ops:
            tok = self.take()
            self.node(tok.column)
            right = self.binary(level + 1)
            left = _const_fold(_binop(tok.text, left[0], right[0], tok.column), tok.column,
                               left[1] is not None and right[1] is not None)
        return left

    def unary(self) -> tuple[Fn, float | None]:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("-", "+", "!"):
            self.take()
            self.node(tok.column)
            self.enter(tok.column)
            f, c = self.unary()
            self.depth -= 1
            if tok.text == "+":
                return f, c
            fn: Fn = (lambda env: -f(env)) if tok.text == "-" else (lambda env: 0.0 if f(env) else 1.0)
            return _const_fold(fn, tok.column, c is not None)
        return self.power()

    def power(self) -> tuple[Fn, float | None]:
        base = self.primary()
        tok = self.peek()
        if tok.text == "^" and tok.kind == "op":
            self.take()
            self.node(tok.column)
            self.enter(tok.column)
            exp = self.unary()
            self.depth -= 1
            if exp[1] is not None and abs(exp[1]) > MAX_EXPONENT:
                raise RuleSyntaxError(tok.column, f"exponent {exp[1]:.6g} exceeds the limit {MAX_EXPONENT:g}")
            fb, fe, col = base[0], exp[0], tok.column
            return _const_fold(lambda env: power(fb(env), fe(env), col), col,
                               base[1] is not None and exp[1] is not None)
        return base

    def primary(self) -> tuple[Fn, float | None]:
        tok = self.take()
        self.node(tok.column)
        if tok.kind == "num":
            try:
                value = float(tok.text)
            except (ValueError, OverflowError):
                raise RuleSyntaxError(tok.column, f"bad number {tok.text!r}") from None
            v = check_literal(value, tok.column)
            return (lambda env: v), v
        if tok.kind == "name":
            if self.peek().text == "(":
                return self.call(tok)
            return self.name(tok)
        if tok.text == "(":
            self.enter(tok.column)
            inner = self.expr()
            self.expect(")")
            self.depth -= 1
            return inner
        found = "end of formula" if tok.kind == "end" else repr(tok.text)
        raise RuleSyntaxError(tok.column, f"expected a number, a name or '(', found {found}")

    def name(self, tok: Token) -> tuple[Fn, float | None]:
        name = canonical(tok.text)
        if name in FUNCTIONS or name in self.functions:
            raise RuleSyntaxError(tok.column, f"{name} must be called, e.g. {name}(x)")
        if not checked_name(name):
            raise RuleSyntaxError(tok.column, f"name {name!r} is not allowed (no '__' parts)")
        self.columns.setdefault(name, tok.column)
        return (lambda env: env[name]), None

    def call(self, tok: Token) -> tuple[Fn, float | None]:
        fname, col = tok.text, tok.column
        if fname not in FUNCTIONS and fname not in self.functions:
            allowed = ", ".join((*FUNCTIONS, *self.functions))
            raise RuleSyntaxError(col, f"unknown function {fname!r} (allowed: {allowed})")
        self.expect("(")
        self.enter(col)
        if fname == "exists":
            arg = self.take()
            if arg.kind != "name":
                raise RuleSyntaxError(arg.column, "exists() takes a name, e.g. exists(M1.power_w)")
            if not checked_name(arg.text):
                raise RuleSyntaxError(arg.column, f"name {arg.text!r} is not allowed")
            self.expect(")")
            self.depth -= 1
            key = canonical(arg.text)
            return (lambda env: 1.0 if key in env else 0.0), None
        args: list[tuple[Fn, float | None]] = []
        if self.peek().text != ")":
            while True:
                args.append(self.expr())
                if len(args) > MAX_ARGS:
                    raise RuleSyntaxError(col, f"{fname}() takes at most {MAX_ARGS} arguments")
                if self.peek().text == ",":
                    self.take()
                    continue
                break
        self.expect(")")
        self.depth -= 1
        fns = [a[0] for a in args]
        n = len(fns)
        host = self.functions.get(fname) if fname not in FUNCTIONS else None
        if host is not None:
            if not host.min_args <= n <= host.max_args:
                span = str(host.min_args) if host.min_args == host.max_args else \
                    f"{host.min_args} to {host.max_args}"
                raise RuleSyntaxError(col, f"{fname}() takes {span} arguments, got {n}")
            return _host_call(host, fns, col), None
        want = {"abs": 1, "round": 1, "sqrt": 1, "clamp": 3}.get(fname)
        if want is not None and n != want:
            raise RuleSyntaxError(col, f"{fname}() takes {want} argument{'s' if want > 1 else ''}, got {n}")
        if fname in ("min", "max") and n == 0:
            raise RuleSyntaxError(col, f"{fname}() needs at least 1 argument")
        fn = _function(fname, fns, col)
        return _const_fold(fn, col, all(a[1] is not None for a in args))


def _host_call(host: HostFunction, fns: list[Fn], col: int) -> Fn:
    def call(env: Env) -> float:
        try:
            return float(host.fn([f(env) for f in fns]))
        except ValueError as exc:
            raise RuleRuntimeError(col, str(exc)) from None
    return call


def _const_fold(fn: Fn, column: int, is_const: bool) -> tuple[Fn, float | None]:
    if not is_const:
        return fn, None
    value = fold(fn, column)
    return (lambda env: value), value


def _ternary(cond: tuple[Fn, float | None], a: tuple[Fn, float | None],
             b: tuple[Fn, float | None]) -> tuple[Fn, float | None]:
    if cond[1] is not None:
        return a if cond[1] else b
    fc, fa, fb = cond[0], a[0], b[0]
    return (lambda env: fa(env) if fc(env) else fb(env)), None


def _whole(x: float, column: int, op: str) -> int:
    if x != x or abs(x) > MAX_BITWISE or x != math.floor(x):
        raise RuleRuntimeError(column, f"bitwise {op} needs whole numbers, got {x:.6g}")
    return int(x)


def _binop(op: str, fa: Fn, fb: Fn, col: int) -> Fn:
    if op == "+":
        return lambda env: fa(env) + fb(env)
    if op == "-":
        return lambda env: fa(env) - fb(env)
    if op == "*":
        return lambda env: fa(env) * fb(env)
    if op == "/":
        def div(env: Env) -> float:
            try:
                return fa(env) / fb(env)
            except ZeroDivisionError:
                raise RuleRuntimeError(col, "division by zero") from None
        return div
    if op == "%":
        def mod(env: Env) -> float:
            a, b = fa(env), fb(env)
            if b == 0:
                raise RuleRuntimeError(col, "modulo by zero")
            try:
                return math.fmod(a, b)
            except ValueError:
                raise RuleRuntimeError(col, "modulo of an infinite value") from None
        return mod
    if op == "<":
        return lambda env: 1.0 if fa(env) < fb(env) else 0.0
    if op == "<=":
        return lambda env: 1.0 if fa(env) <= fb(env) else 0.0
    if op == ">":
        return lambda env: 1.0 if fa(env) > fb(env) else 0.0
    if op == ">=":
        return lambda env: 1.0 if fa(env) >= fb(env) else 0.0
    if op == "==":
        return lambda env: 1.0 if fa(env) == fb(env) else 0.0
    if op == "!=":
        return lambda env: 1.0 if fa(env) != fb(env) else 0.0
    if op == "&&":
        return lambda env: 1.0 if (fa(env) and fb(env)) else 0.0
    if op == "||":
        return lambda env: 1.0 if (fa(env) or fb(env)) else 0.0
    if op == "&":
        return lambda env: float(_whole(fa(env), col, "&") & _whole(fb(env), col, "&"))
    if op == "|":
        return lambda env: float(_whole(fa(env), col, "|") | _whole(fb(env), col, "|"))
    raise RuleSyntaxError(col, f"unknown operator {op!r}")


def _round_half_away(x: float, col: int) -> float:
    try:
        r = math.floor(abs(x) + 0.5)
    except (OverflowError, ValueError):
        raise RuleRuntimeError(col, "cannot round a NaN or infinite value") from None
    return float(r) if x >= 0 else -float(r)


def _function(name: str, fns: list[Fn], col: int) -> Fn:
    if name == "min":
        if len(fns) == 2:
            f0, f1 = fns
            return lambda env: min(f0(env), f1(env))
        return lambda env: min([f(env) for f in fns])
    if name == "max":
        if len(fns) == 2:
            f0, f1 = fns
            return lambda env: max(f0(env), f1(env))
        return lambda env: max([f(env) for f in fns])
    if name == "abs":
        f = fns[0]
        return lambda env: abs(f(env))
    if name == "clamp":
        fx, flo, fhi = fns
        return lambda env: min(max(fx(env), flo(env)), fhi(env))
    if name == "round":
        f = fns[0]
        return lambda env: _round_half_away(f(env), col)
    f = fns[0]

    def sqrt(env: Env) -> float:
        x = f(env)
        if x < 0:
            raise RuleRuntimeError(col, f"sqrt of a negative number ({x:.6g})")
        try:
            return math.sqrt(x)
        except ValueError:
            raise RuleRuntimeError(col, "sqrt of NaN") from None
    return sqrt


def compile_expression(source: str, functions: Mapping[str, HostFunction] | None = None,
                       names: Collection[str] | None = None) -> tuple[Fn, dict[str, int]]:
    """Compile one formula; returns the closure and the column of each name it reads.

    `functions` adds host functions (see HostFunction) to the built-in ones. With `names` (a set
    or a `gridtap.rules.names.Resolver`), every name the formula reads must be in it, so a typo
    is refused when the formula loads; ``exists(x)`` is exempt (asking is its purpose)."""
    if not isinstance(source, str):
        raise RuleSyntaxError(0, f"a formula must be a string, got {type(source).__name__}")
    if not source.strip():
        raise RuleSyntaxError(1, "formula is empty")
    p = _Parser(source, functions)
    fn = p.parse()
    if names is not None:
        for name, column in sorted(p.columns.items(), key=lambda kv: kv[1]):
            if name not in names:
                hint = getattr(names, "hint", None)
                raise RuleSyntaxError(column, hint(name) if hint else f"unknown name {name!r}")
    return fn, p.columns


_LINE = re.compile(r"^\s*(?P<target>[A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(?P<expr>.*)$")


def parse_file(text: str) -> list[tuple[str, str, int]]:
    """Split a cFos rule file into (target, expression, line number); raise RuleSetError."""
    out: list[tuple[str, str, int]] = []
    errors: list[RuleError] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            errors.append(RuleError(f"line {lineno}", 0, 1, "expected 'target = expression'"))
            continue
        out.append((m.group("target"), m.group("expr").strip(), lineno))
    if errors:
        raise RuleSetError(errors)
    return out


class _WithTargets(Collection[str]):
    """A resolver extended by a rule set's own targets (a rule reads what an earlier one wrote)."""

    def __init__(self, names: Collection[str], targets: set[str]) -> None:
        self.names, self.targets = names, targets

    def __contains__(self, name: object) -> bool:
        return name in self.targets or name in self.names

    def __iter__(self) -> Iterator[str]:
        yield from self.targets
        yield from self.names

    def __len__(self) -> int:
        return len(self.targets) + len(self.names)

    def hint(self, name: str) -> str:
        hint = getattr(self.names, "hint", None)
        return hint(name) if hint else f"unknown name {name!r}"


def compile_rules(rules: Iterable[tuple[str, str]], names: Collection[str] | None = None,
                  functions: Mapping[str, HostFunction] | None = None) -> RuleSet:
    """Compile (target, formula) pairs in order; a repeated target gets index 1, 2, ...

    `functions` adds host functions (see HostFunction) to the built-in ones.

    With `names`, a formula may read those names and every target of the set, and a rule that
    reads a name no one provides is refused here, as in the Flukso dialect, instead of failing at
    every run (exists(name) may test any name). `names` is a `gridtap.rules.names.Resolver`, or
    the configured series (and the names a check is told of): then the uploader's names apply
    (v1..v12, dt, date.<field>, <series>.<quantity>, see `names.uploader_names`)."""
    rules = list(rules)
    known: Collection[str] | None = None
    if names is not None:
        resolver = names if isinstance(names, Resolver) else uploader_names(names)
        known = _WithTargets(resolver, {str(t) for t, _ in rules})
    steps: list[Step] = []
    errors: list[RuleError] = []
    counts: dict[str, int] = {}
    for target, source in rules:
        index = counts.get(target, 0)
        counts[target] = index + 1
        if not isinstance(target, str) or not checked_name(target) or "." in target:
            errors.append(RuleError(str(target), index, 0, "target must be a name such as v4"))
            continue
        try:
            fn, cols = compile_expression(source, functions, known)
        except RuleSyntaxError as exc:
            errors.append(RuleError(target, index, exc.column, exc.reason, str(source)))
            continue
        steps.append(Step(target, index, source, fn, cols))
    if errors:
        raise RuleSetError(errors)
    return RuleSet(DIALECT, steps)
