"""Both dialects: semantics, limits, per-rule runtime errors, differential checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.rules import RuleSetError, RuleSyntaxError, cfos, flukso, load_text
from gridtap.rules.core import MAX_EXPONENT

ENV = {f"v{i}": float(i * 10) for i in range(1, 13)}


def fx(src: str, **env: float) -> float:
    fn, _ = flukso.compile_expression(src)
    return float(fn({**ENV, **env}))


def cx(src: str, **env: float) -> float:
    fn, _ = cfos.compile_expression(src)
    return float(fn({**ENV, **{k.replace("__", "."): v for k, v in env.items()}}))


@pytest.mark.parametrize(("src", "want"), [
    ("(v4 + v2) if v2 < 50 else v4", 60.0),
    ("v1 < v2 < v3", 1.0),
    ("v3 < v2 < v4", 0.0),
    ("not v1", 0.0),
    ("v1 and 0", 0.0),
    ("0 or v5", 50.0),
    ("min(v1, v2, v3)", 10.0),
    ("max(v1, 7)", 10.0),
    ("abs(v1 - v2)", 10.0),
    ("round(v1 / 3, 2)", 3.33),
    ("v2 ** 2", 400.0),
    ("v5 % 7", 1.0),
    ("-v1 + +v2", 10.0),
    ("True + 1", 2.0),
])
def test_flukso_semantics(src: str, want: float) -> None:
    assert fx(src) == pytest.approx(want)


@pytest.mark.parametrize(("src", "reason"), [
    ("v1.real", "attribute"),
    ("v1[0]", "subscript"),
    ("(lambda: 1)()", "only min"),
    ("[v for v in (1,)]", "comprehension"),
    ("'abc'", "string"),
    ("f'{v1}'", "f-string"),
    ("(x := 1)", ":="),
    ("min(*v1)", "starred"),
    ("round(v1, ndigits=1)", "keyword"),
    ("open('x')", "not allowed"),
    ("__import__('os')", "not allowed"),
    ("v13", "unknown name"),
    ("v1 = 3", "syntax error"),
    ("v1 is v2", "comparison"),
    ("v1 in v2", "comparison"),
    ("v1 << 2", "operator"),
    ("~v1", "bitwise"),
    ("9**9**9", "exponent"),
    ("10**100000", "exponent"),
    ("1" * 40, "number"),
    ("1e300", "number"),
    ("1/0", "division by zero"),
    ("v1 +" * 300 + " 1", "longer than"),
    ("-" * 200 + "v1", "nests deeper"),
    ("min", "must be called"),
    ("min(v1)", "2 to"),
    ("", "empty"),
])
def test_flukso_rejects(src: str, reason: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        flukso.compile_expression(src)
    assert reason in info.value.reason


def test_flukso_column_points_at_the_problem() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        flukso.compile_expression("v1 + v2.__class__")
    assert info.value.column == 6


@pytest.mark.parametrize(("src", "want"), [
    ("10^2", 100.0),
    ("-2^2", -4.0),
    ("2^3^2", 512.0),
    ("2^-1", 0.5),
    ("M1.current >= 6500 ? M1.current : 0", 7000.0),
    ("M1.current >= 8000 ? M1.current : 0", 0.0),
    ("min(3, 1, 2, 5)", 1.0),
    ("max(3)", 3.0),
    ("clamp(12, 0, 10)", 10.0),
    ("clamp(-1, 0, 10)", 0.0),
    ("round(2.5) + round(-2.5) + round(0.4)", 0.0),
    ("round(10*1.26)/10", 1.3),
    ("sqrt(16)", 4.0),
    ("exists(M1.current) + exists(M9.current)", 1.0),
    ("6 & 3", 2.0),
    ("6 | 3", 7.0),
    ("1 + 2 == 3", 1.0),
    ("!0 && 1 || 0", 1.0),
    ("0 ? 1 : 0 ? 2 : 3", 3.0),
    ("7 % 3 + -7 % 3", 0.0),
    ("date.dayminute >= 480 ? 8000 : 0", 8000.0),
    ("date.weekday == 5 || date.weekday == 6 ? 16000 : 0", 16000.0),
    ("(power_w * (20 - dt) + M1.power_w * dt) / 20", 150.0),
    ("import_wh + M1.power_w * dt / 3600", 1000.0 + 200 * 10 / 3600),
])
def test_cfos_semantics(src: str, want: float) -> None:
    env = {"M1.current": 7000.0, "date.dayminute": 500.0, "date.weekday": 6.0, "power_w": 100.0,
           "M1.power_w": 200.0, "dt": 10.0, "import_wh": 1000.0}
    fn, _ = cfos.compile_expression(src)
    assert fn(env) == pytest.approx(want)


@pytest.mark.parametrize(("src", "reason"), [
    ("__import__('os')", "string"),
    ("__import__(1)", "unknown function"),
    ("M1.__class__", "not allowed"),
    ("eval(1)", "unknown function"),
    ("x = 1", "'='"),
    ("1 +", "expected"),
    ("(1", "expected ')'"),
    ("1 2", "unexpected"),
    ("a[0]", "not allowed"),
    ("9^9^9", "exponent"),
    ("1/0", "division by zero"),
    ("sqrt(-1)", "negative"),
    ("clamp(1, 2)", "3 arguments"),
    ("exists(1)", "takes a name"),
    ("min()", "at least 1"),
    ("1e400", "number"),
    ("(" * 60 + "1" + ")" * 60, "nests deeper"),
    ("1+" * 300 + "1", "more than"),
    ("", "empty"),
    ("$x", "unexpected character"),
])
def test_cfos_rejects(src: str, reason: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        cfos.compile_expression(src)
    assert reason in info.value.reason


def test_runtime_error_keeps_previous_value_and_names_rule_and_column() -> None:
    rs = load_text('CUSTOM_RULES = {"v4": ["v4 * 2", "v4 / v3", "v4 + 1"], "v5": ["v4 - 1"]}')
    ev = rs.evaluate({"v4": 10.0, "v3": 0.0})
    assert ev.values["v4"] == 21.0   # 10*2 = 20, division failed (kept 20), +1
    assert ev.values["v5"] == 20.0
    [err] = ev.errors
    assert (err.target, err.index, err.column) == ("v4", 1, 1)
    assert "division by zero" in err.reason
    assert str(err).startswith("rule v4[1], column 1:")


@pytest.mark.parametrize(("src", "reason"), [
    ("v1 ** v2", "exponent"),       # 10 ** 2000 > cap
    ("v1 ** 400", "overflow"),
    ("(-v1) ** 0.5", "domain"),
    ("v3 * 1e15", "exceeds the limit"),
    ("v1 % v9", "modulo by zero"),
    ("round(v7, 1)", "infinite"),
    ("v7 - v7", "NaN"),
    ("v7 * 0 + v1", "NaN"),
])
def test_runtime_errors_are_per_rule(src: str, reason: str) -> None:
    rs = flukso.compile_rules({"v1": [src], "v2": ["v2 + 1"]})
    ev = rs.evaluate({"v1": 10.0, "v2": 2000.0, "v3": 10.0, "v9": 0.0, "v7": math.inf})
    assert ev.values["v1"] == 10.0
    assert ev.values["v2"] == 2001.0
    assert len(ev.errors) == 1 and reason in ev.errors[0].reason, ev.errors


def test_nan_and_missing_names_are_errors_not_values() -> None:
    rs = cfos.compile_rules([("v1", "M1.power_w * 2"), ("v2", "exists(M1.power_w) ? 1 : 0"),
                             ("v3", "5 & v9")])
    ev = rs.evaluate({"v9": 2.5})
    assert "v1" not in ev.values and ev.values["v2"] == 0.0 and "v3" not in ev.values
    reasons = [e.reason for e in ev.errors]
    assert "M1.power_w has no value" in reasons[0] and ev.errors[0].column == 1
    assert "whole numbers" in reasons[1]


def test_compile_errors_collected_for_all_rules() -> None:
    with pytest.raises(RuleSetError) as info:
        flukso.compile_rules({"v1": ["v1 +", "v1"], "v2": ["v2.x"], "v3.y": ["1"]})
    targets = [(e.target, e.index) for e in info.value.errors]
    assert targets == [("v1", 0), ("v2", 0), ("v3.y", 0)]


def test_exponent_limit_applies_at_runtime() -> None:
    fn, _ = cfos.compile_expression("x ^ y")
    assert fn({"x": 1.0, "y": MAX_EXPONENT}) == 1.0
    with pytest.raises(Exception, match="exponent"):
        fn({"x": 1.0, "y": MAX_EXPONENT + 1})


# ---- differential: the same random tree in both dialects and in Python --------------------

NAMES = ["v1", "v2", "v3", "v4"]


def trees(depth: int = 4) -> st.SearchStrategy[tuple[str, str]]:
    leaf = st.one_of(st.integers(0, 99).map(lambda i: (str(i), str(i))),
                     st.sampled_from(NAMES).map(lambda n: (n, n)))

    def extend(sub: st.SearchStrategy[tuple[str, str]]) -> st.SearchStrategy[tuple[str, str]]:
        binop = st.tuples(sub, st.sampled_from(["+", "-", "*"]), sub).map(
            lambda t: (f"({t[0][0]} {t[1]} {t[2][0]})", f"({t[0][1]} {t[1]} {t[2][1]})"))
        cmp = st.tuples(sub, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), sub).map(
            lambda t: (f"({t[0][0]} {t[1]} {t[2][0]})", f"({t[0][1]} {t[1]} {t[2][1]})"))
        ifexp = st.tuples(sub, sub, sub).map(
            lambda t: (f"({t[1][0]} if {t[0][0]} else {t[2][0]})", f"({t[0][1]} ? {t[1][1]} : {t[2][1]})"))
        fn = st.tuples(st.sampled_from(["min", "max"]), sub, sub).map(
            lambda t: (f"{t[0]}({t[1][0]}, {t[2][0]})", f"{t[0]}({t[1][1]}, {t[2][1]})"))
        neg = sub.map(lambda s: (f"(-{s[0]})", f"(-{s[1]})"))
        return st.one_of(binop, cmp, ifexp, fn, neg, sub.map(lambda s: (f"abs({s[0]})", f"abs({s[1]})")))

    return st.recursive(leaf, extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(trees(), st.lists(st.integers(-1000, 1000), min_size=4, max_size=4))
def test_dialects_agree_with_python(pair: tuple[str, str], values: list[int]) -> None:
    py_src, cfos_src = pair
    env = {n: float(v) for n, v in zip(NAMES, values, strict=True)}
    oracle = {"__builtins__": {}, "min": min, "max": max, "abs": abs}
    expected = float(eval(py_src, oracle, dict(env)))  # test oracle, on generated text only
    try:
        f_fn, _ = flukso.compile_expression(py_src)
        c_fn, _ = cfos.compile_expression(cfos_src)
    except RuleSyntaxError as exc:
        assert "limit" in exc.reason or "nodes" in exc.reason or "deeper" in exc.reason
        return
    assert math.isclose(float(f_fn(env)), expected, rel_tol=1e-12, abs_tol=1e-9)
    assert math.isclose(float(c_fn(env)), expected, rel_tol=1e-12, abs_tol=1e-9)
