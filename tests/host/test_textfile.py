"""Files the user names are read bounded and as UTF-8, by one reader: rule files and secret files alike."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from gridtap.cli import main
from gridtap.errors import UserError
from gridtap.outputs.flukso import load_device_key
from gridtap.rules.core import MAX_FILE_BYTES
from gridtap.secretfile import MAX_SECRET_BYTES, read_secret_line
from gridtap.textfile import read_text

SECRET = "hunter2-0123456789abcdef"


def test_a_text_file_is_read_whole_up_to_its_limit(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes("grüß\n".encode() * 2)
    assert read_text(f, "test file", 14) == "grüß\ngrüß\n"  # 14 bytes
    with pytest.raises(UserError, match=r"the test file .*t\.txt is larger than 13 bytes"):
        read_text(f, "test file", 13)
    with pytest.raises(UserError, match=r"cannot read the test file .*missing\.txt: No such file"):
        read_text(tmp_path / "missing.txt", "test file", 12)


def test_the_rules_command_refuses_a_large_or_binary_file_by_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    binary = tmp_path / "bin.py"
    binary.write_bytes(b'CUSTOM_RULES = {"v1": ["v1 \xff"]}')
    assert main(["rules", "check", str(big)]) == 2
    assert f"the rule file {big} is larger than {MAX_FILE_BYTES} bytes" in capsys.readouterr().err
    assert main(["rules", "check", str(binary)]) == 2
    assert f"the rule file {binary} is not UTF-8 text (byte 27)" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"v4 = \xfe\n")))
    assert main(["rules", "check", "-"]) == 2
    assert "the rule file on standard input is not UTF-8 text (byte 5)" in capsys.readouterr().err


def test_a_secret_file_is_refused_by_name_never_by_content(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_bytes(SECRET.encode() + b"\n" + b"x" * MAX_SECRET_BYTES)
    with pytest.raises(UserError, match=f"the MQTT password file {f} is larger than") as big:
        read_secret_line(f, "MQTT password file")
    f.write_bytes(SECRET.encode() + b"\xff\n")
    with pytest.raises(UserError, match="is not UTF-8 text") as binary:
        read_secret_line(f, "MQTT password file")
    assert SECRET not in str(big.value) + str(binary.value)


def test_the_flukso_key_file_is_read_as_every_secret_file(tmp_path: Path) -> None:
    """It was read whole (any size) and undecodable bytes became '?'; now as the other key files."""
    f = tmp_path / "key"
    f.write_bytes(b"\n\n")
    with pytest.raises(UserError, match=f"the Flukso device key file {f} is empty"):
        load_device_key(f)
    f.write_bytes(b"0" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(UserError, match="is larger than"):
        load_device_key(f)
