"""Rule files in every format, and the `gridtap rules` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gridtap.cli import main
from gridtap.rules import RuleFileError, RuleSetError, detect_format, load_text
from tests.support.seed_rules import FLM02

CFOS = """# FLM02 seed rules written as cFos formulas
v4 = v4 * 0.89
v4 = v2 < 50 ? v4 + v2 : v4   # standby goes to consumption
v2 = v2 * 0.89
v2 = v2 < 50 ? 0 : v2
v11 = v2 > v4 ? v2 - v4 : 0
v12 = v4 > v2 ? v4 - v2 : 0
"""


def expect_seed(rs_values: dict[str, float]) -> None:
    assert rs_values["v2"] == 0.0 and rs_values["v4"] == pytest.approx(490.0)


def test_all_formats_give_the_same_result() -> None:
    rules = {"v4": ["v4 * 0.89", "(v4 + v2) if v2 < 50 else v4"], "v2": ["v2 * 0.89", "0 if v2 < 50 else v2"]}
    texts = {
        "python": FLM02,
        "json": json.dumps(rules),
        "toml": '[rules]\nv4 = ["v4 * 0.89", "(v4 + v2) if v2 < 50 else v4"]\n'
                'v2 = ["v2 * 0.89", "0 if v2 < 50 else v2"]\n',
        "cfos": CFOS,
    }
    for fmt, text in texts.items():
        expect_seed(load_text(text, fmt).evaluate({"v2": 45, "v4": 500}).values)
    pv = "[pvoutput]\nsystem_id = 1\ncustom_rules = '''\n" + FLM02 + "'''\n"
    expect_seed(load_text(pv, "toml").evaluate({"v2": 45, "v4": 500}).values)
    assert load_text(CFOS).dialect == "cfos"
    assert load_text(json.dumps({"v4": "v2 < 50 ? v4 + v2 : v4"}), "json", "cfos").dialect == "cfos"


def test_detect_format() -> None:
    assert detect_format(FLM02) == "python"
    assert detect_format("{}", "x.json") == "json"
    assert detect_format("", "x.toml") == "toml"
    assert detect_format(CFOS) == "cfos"


def test_v2_single_string_rules_and_whole_config_file() -> None:
    text = 'MQTT_HOST = "192.168.1.5"\nCUSTOM_RULES = {"v4": "v4 * 2"}\nprint("never run")\n'
    assert load_text(text).evaluate({"v4": 3}).values["v4"] == 6.0


@pytest.mark.parametrize(("text", "fmt", "needle"), [
    ("CUSTOM_RULES = [1]", "python", "dict literal"),
    ("CUSTOM_RULES = {1: 'v1'}", "python", "keys must be strings"),
    ("CUSTOM_RULES = {'v1': [1]}", "python", "must be strings"),
    ("CUSTOM_RULES = {'v1': __import__('os').system('x')}", "python", "string or a list"),
    ("x = 1", "python", "no CUSTOM_RULES"),
    ("{", "json", "bad JSON"),
    ('{"v1": 3}', "json", "rule string"),
    ("v1 = [", "toml", "bad TOML"),
    ("this is not a rule", "cfos", "target = expression"),
    ("[" * 100000 + "]" * 100000, "json", "JSON"),
    ("a = " + "[" * 100000 + "]" * 100000, "toml", "TOML"),
    ("CUSTOM_RULES = " + "[" * 100000 + "]" * 100000, "python", "Python"),
])
def test_bad_files(text: str, fmt: str, needle: str) -> None:
    with pytest.raises((RuleFileError, RuleSetError)) as info:
        load_text(text, fmt)
    assert needle in str(info.value)


def test_cfos_errors_carry_the_line() -> None:
    with pytest.raises(RuleSetError) as info:
        load_text("v1 = 1\n\n# c\nv2 = 1 +\n", "cfos")
    assert "line 4" in str(info.value) and "v2[0]" in str(info.value)


def test_cli_check_and_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "rules.py"
    f.write_text(FLM02)
    assert main(["rules", "check", str(f)]) == 0
    assert "6 rule(s) in the flukso dialect" in capsys.readouterr().out
    assert main(["rules", "eval", str(f), "--set", "v2=45", "--set", "v4=500"]) == 0
    out = capsys.readouterr().out
    assert "v4[1]" in out and "= 490" in out and "result: v2=0 v4=490" in out
    assert main(["rules", "eval", str(f), "--set", "v2=45", "--set", "v4=500", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["values"]["v2"] == 0.0 and len(doc["steps"]) == 6


def test_cli_eval_runtime_error_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.cfos"
    f.write_text("v4 = grid.power_w / x\nv5 = 0\n")
    assert main(["rules", "eval", str(f), "--set", "grid.power_w=5", "--set", "x=0"]) == 1
    out = capsys.readouterr().out
    assert "division by zero at column 14 (left unset)" in out and "v5=0" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["rules", "check", "/nonexistent/rules.py"], "cannot read"),
    (["rules", "eval", "FILE", "--set", "v2"], "NAME=VALUE"),
    (["rules", "eval", "FILE", "--set", "v2=abc"], "not a number"),
    (["rules", "eval", "FILE", "--set", "v2=inf"], "finite"),
    (["rules", "eval", "FILE", "--set", "__x=1"], "not a valid name"),
    (["rules", "check", "BAD"], "do not compile"),
])
def test_cli_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], needle: str) -> None:
    good = tmp_path / "rules.py"
    good.write_text(FLM02)
    bad = tmp_path / "bad.py"
    bad.write_text('CUSTOM_RULES = {"v1": ["v1.__class__"]}')
    args = [str(good) if a == "FILE" else str(bad) if a == "BAD" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_check_of_an_empty_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It passed as "0 rule(s) in the cfos dialect" (issue #15, item 9)."""
    f = tmp_path / "rules.cfos"
    f.write_text("# nothing yet\n\n")
    assert main(["rules", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "no rules" in err and "cfos format (no CUSTOM_RULES" in err


def test_check_says_which_dialect_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "r.txt"
    f.write_text('{"v4": "v4 * 2"}')
    assert main(["rules", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "in the flukso dialect (the default for a mapping" in out and "the text starts with {" in out
    assert main(["rules", "check", str(f), "--dialect", "cfos"]) == 0
    assert "the cfos dialect (--dialect)" in capsys.readouterr().out


def test_check_of_a_gridtap_toml_without_pvoutput(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "'daemon' must be a rule string or a list of rule strings"."""
    f = tmp_path / "gridtap.toml"
    f.write_text('[daemon]\nstate_dir = "/tmp/x"\n\n[board]\nport = "/dev/ttyUSB0"\n\n'
                 '[[sensor]]\nname = "a"\n')
    assert main(["rules", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "no [rules] table and no [pvoutput] section" in err and "must be a rule string" not in err
    f.write_text('[pvoutput]\nsystem_id = 1\n')
    assert main(["rules", "check", str(f)]) == 2
    assert "[pvoutput] has no rules" in capsys.readouterr().err


def test_cfos_rejects_unknown_names_at_check_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As the Flukso dialect does: a name nothing provides fails the check, not every upload."""
    f = tmp_path / "meters.cfos"
    f.write_text("v4 = grid.power_w + solr.power_w\nv2 = exists(M1.power_w) ? v4 : date.hour + dt\n")
    assert main(["rules", "check", str(f), "--name", "grid", "--name", "solar"]) == 2
    err = capsys.readouterr().err
    assert "unknown name 'solr.power_w'" in err and "grid.power_w'" not in err and "M1" not in err
    f.write_text("v4 = grid.power_w + solar.energy_wh\nv2 = exists(M1.power_w) ? v4 : date.hour + dt\n")
    assert main(["rules", "check", str(f), "--name", "grid", "--name", "solar"]) == 0
    f.write_text("v4 = grid.voltage\n")
    assert main(["rules", "check", str(f), "--name", "grid"]) == 2
    assert main(["rules", "eval", str(f), "--set", "grid.voltage=230"]) == 0
    with pytest.raises(RuleSetError):
        load_text("v4 = date.hours", "cfos", names=())


def test_cli_check_refuses_an_unknown_cfos_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both dialects refuse at check time a name nothing gives a value (cFos failed only at run time)."""
    f = tmp_path / "r.cfos"
    f.write_text("v4 = v2 + v99\n")
    assert main(["rules", "check", str(f)]) == 2
    assert "column 6: unknown name 'v99'" in capsys.readouterr().err
    g = tmp_path / "m.cfos"
    g.write_text("v4 = M1.current >= 6500 ? M1.current : 0\n")
    assert main(["rules", "check", str(g)]) == 2  # no M1 without --name or --set
    capsys.readouterr()
    assert main(["rules", "eval", str(g), "--set", "M1.current=7000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["values"]["v4"] == 7000.0
