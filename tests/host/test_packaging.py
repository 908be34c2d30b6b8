"""What a fresh Debian 12 machine gets from `make setup` (issue #15, item 10)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it() -> None:
    """`license = { text = ... }` is deprecated (setuptools stops building it in 2027)."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["license"] == "MIT"
    req = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    m = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", req[0].replace(" ", ""))
    assert m and int(m.group(1)) >= 77, req  # PEP 639 license expressions: setuptools 77


def test_make_setup_installs_the_mqtt_client_the_demo_suggests() -> None:
    apt = re.search(r"^APT_PKGS :=(.*?)(?<!\\)\n", (ROOT / "Makefile").read_text(), re.M | re.S)
    assert apt and "mosquitto-clients" in apt.group(1).split()
