"""[iec104] in gridtap.toml: defaults, the IOA map and asset mapping, errors with their lines."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gridtap.config import parse_config
from gridtap.errors import UserError
from gridtap.outputs.iec104.netflex import default_ioas
from gridtap.outputs.iec104.settings import Iec104Config
from tests.support.daemon import config_text


def parse(tmp: Path, body: str) -> Iec104Config:
    text = config_text(tmp / "tty", tmp / "state") + "\n[iec104]\n" + body + "\n"
    cfg: Iec104Config = parse_config(text, tmp / "gridtap.toml").outputs["iec104"]
    return cfg


def test_defaults_are_loopback_port_2404_and_the_documented_map(tmp_path: Path) -> None:
    c = parse(tmp_path, "")
    assert (c.bind, c.port, c.model.ca, c.report_s) == ("127.0.0.1", 2404, 100, 30.0)
    assert c.allow == (ipaddress.ip_network("127.0.0.1/32"),)
    assert (c.link.k, c.link.w, c.link.t1, c.link.t3) == (12, 8, 15.0, 20.0)
    assert c.model.ioas == default_ioas() and c.model.ioas["MINSETP"] == 1101


def test_a_full_section(tmp_path: Path) -> None:
    c = parse(tmp_path, 'bind = "0.0.0.0"\nallow = ["192.168.10.0/24"]\nselect = ["stop_production"]\n'
                        "contract_w = 17000\n[iec104.ioa]\nstop_production = 5001\n"
                        '[iec104.assets]\nsolar = ["heatpump"]\nstorage = ["-mains.export"]\n')
    assert c.model.ioas["stop_production"] == 5001 and c.model.contract_w == 17000
    assert c.model.assets == {"solar": ("heatpump",), "storage": ("-mains.export",)}
    assert c.model.select == frozenset({"stop_production"})
    assert c.model.grid_sensor is None  # config_text has no sensor named "grid": set it, or no grid loop
    assert parse(tmp_path, 'grid_sensor = "mains"').model.grid_sensor == "mains"


@pytest.mark.parametrize(("body", "where", "needle"), [
    ('bind = "localhost"', "bind", "must be an IP address"),
    ('allow = ["10.0.0.300"]', "allow", "is not an IP address or network"),
    ("allow = []", "allow", "is empty"),
    ("w = 13", "w", "must not exceed k"),
    ("t2 = 20", "t2", "must be shorter than t1"),
    ("common_address = 65535", "common_address", "must be 1..65534"),
    ('select = ["reboot"]', "select", "unknown command 'reboot'"),
    ("[iec104.ioa]\nMINSETP = 2001", "[iec104.ioa]",
     "MINSETP and stop_production.feedback both use IOA 2001"),
    ("[iec104.ioa]\nfoo = 1", "[iec104.ioa]", "unknown point 'foo'"),
    ('[iec104.assets]\nsun = ["mains"]', "[iec104.assets]", "unknown category 'sun'"),
    ('[iec104.assets]\nsolar = ["pv"]', "[iec104.assets]", "no sensor provides the series 'pv'"),
    ("porrt = 1", "porrt", "unknown key"),
    ('grid_sensor = "grid"', "grid_sensor", "no sensor is named 'grid'"),
    ('grid_sensor = "mains.export"', "grid_sensor", "no sensor is named 'mains.export'"),
])
def test_errors_name_key_and_line(tmp_path: Path, body: str, where: str, needle: str) -> None:
    text = config_text(tmp_path / "tty", tmp_path / "state") + "\n[iec104]\n" + body + "\n"
    with pytest.raises(UserError) as info:
        parse_config(text, tmp_path / "gridtap.toml")
    msg = str(info.value)
    lines = text.splitlines()
    start = lines.index("[iec104]")
    line = next(i for i, x in enumerate(lines, 1) if i > start and x.startswith(where))
    assert needle in msg and f"gridtap.toml line {line}:" in msg, msg


def test_the_example_config_block_parses(tmp_path: Path) -> None:
    import re

    example = (Path(__file__).resolve().parents[4] / "docs" / "gridtap.example.toml").read_text()
    block = "\n".join(re.sub(r"^# ?", "", ln) for ln in example[example.index("# [iec104]"):].splitlines())
    head = example[:example.index("# Optional sections")]
    c = parse_config(head + "\n" + block, tmp_path / "gridtap.toml").outputs["iec104"]
    assert (c.bind, c.model.assets) == ("192.168.10.2", {"solar": ("pv-meter",)})
    assert c.model.grid_sensor == "mains"
