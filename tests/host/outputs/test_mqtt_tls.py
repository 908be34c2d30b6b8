"""Finding 13.9 (outputs): MQTT over TLS (CA, client certificate) and a password file, against a real
mosquitto with a TLS listener; certificates from `trustme` (a throwaway CA, nothing from the system)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gridtap.config import parse_config
from gridtap.errors import UserError
from gridtap.outputs import OutputContext
from gridtap.outputs.mqtt import MqttOutput
from tests.support.broker import Collector, Mosquitto, free_port, tls_listener, wait_until
from tests.support.daemon import IMP, config_text


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Path]]:
    # mosquitto started as root reads its certificates as the user "mosquitto": the broker's
    # files live in a directory that user can enter (pytest's tmp_path is private)
    shared = Path(tempfile.mkdtemp(prefix="gtmq"))
    shared.chmod(0o755)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gridtap-client")
    other_ca = trustme.CA()
    files = {"ca": shared / "ca.pem", "other_ca": tmp_path / "other-ca.pem",
             "server_cert": shared / "server.pem", "server_key": shared / "server.key",
             "client_cert": tmp_path / "client.pem", "client_key": tmp_path / "client.key",
             "shared": shared}
    ca.cert_pem.write_to_path(str(files["ca"]))
    other_ca.cert_pem.write_to_path(str(files["other_ca"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    server.cert_chain_pems[0].write_to_path(str(files["server_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    for f in (files["client_key"], files["other_ca"], files["client_cert"]):
        f.chmod(0o600)
    for f in (files["ca"], files["server_cert"], files["server_key"]):
        f.chmod(0o644)
    yield files
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def tls_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[tuple[Mosquitto, int]]:
    """Plain listener for the test's subscriber, TLS listener (client certificate required) for gridtap."""
    tls_port = free_port()
    users = pki["shared"] / "users"
    users.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(users), "meter", "s3cret pass"], check=True,
                   capture_output=True)
    users.chmod(0o644)  # read by mosquitto (it may drop privileges)
    extra = f"password_file {users}\n" + tls_listener(tls_port, pki["ca"], pki["server_cert"],
                                                       pki["server_key"], require_certificate=True)
    with Mosquitto(tmp_path, extra=extra) as broker:
        yield broker, tls_port


def _mqtt_config(tmp: Path, lines: str) -> str:
    head = '\n[mqtt]\nhost = "127.0.0.1"\ndevice_id = "tls-test"\n'
    return config_text(tmp / "tty", tmp / "state") + head + lines


def _publish_once(tmp: Path, text: str, broker_port: int, expect: bool) -> None:
    cfg = parse_config(text, tmp / "gridtap.toml")
    sink = MqttOutput(cfg.outputs["mqtt"], OutputContext(cfg))
    sub = Collector(broker_port)
    try:
        sink.start()
        connected = sink.pub.wait_connected(5 if expect else 2)
        assert connected is expect
        if expect:
            sink.counter(IMP, "import", 1_790_000_000, 42_000)
            assert wait_until(lambda: sub.last_json(f"/sensor/{IMP}/counter") == [1_790_000_000, 42, "Wh"])
    finally:
        sink.stop()
        sub.close()


@pytest.mark.parametrize("password, connects", [("s3cret pass", True), ("wrong", False)])
def test_tls_with_client_certificate_and_password_file(tmp_path: Path, pki: dict[str, Path],
                                                       tls_broker: tuple[Mosquitto, int],
                                                       password: str, connects: bool) -> None:
    broker, tls_port = tls_broker
    pw = tmp_path / "mqtt.password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    text = _mqtt_config(tmp_path, f"""port = {tls_port}
tls = true
ca_file = "{pki['ca']}"
cert_file = "{pki['client_cert']}"
key_file = "{pki['client_key']}"
username = "meter"
password_file = "{pw}"
""")
    _publish_once(tmp_path, text, broker.port, expect=connects)


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, pki: dict[str, Path],
                                                         tls_broker: tuple[Mosquitto, int]) -> None:
    broker, tls_port = tls_broker
    text = _mqtt_config(tmp_path, f"""port = {tls_port}
tls = true
ca_file = "{pki['other_ca']}"
cert_file = "{pki['client_cert']}"
key_file = "{pki['client_key']}"
""")
    _publish_once(tmp_path, text, broker.port, expect=False)


def test_key_and_password_files_readable_by_others_are_warned_about(
        tmp_path: Path, pki: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    pw = tmp_path / "mqtt.password"
    pw.write_text("s3cret pass\n")
    pw.chmod(0o644)
    pki["client_key"].chmod(0o640)
    text = _mqtt_config(tmp_path, f"""tls = true
cert_file = "{pki['client_cert']}"
key_file = "{pki['client_key']}"
username = "meter"
password_file = "{pw}"
""")
    with caplog.at_level(logging.WARNING):
        cfg = parse_config(text, tmp_path / "gridtap.toml")
    assert cfg.outputs["mqtt"].port == 8883
    warned = [r.getMessage() for r in caplog.records if "can be read by other users" in r.getMessage()]
    assert any(str(pw) in m and "644" in m for m in warned), warned
    assert any(str(pki["client_key"]) in m and "640" in m for m in warned), warned
    assert not any("s3cret" in r.getMessage() for r in caplog.records)


def test_the_flukso_key_file_readable_by_others_is_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from gridtap.outputs.flukso import load_device_key

    key = tmp_path / "device.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    key.chmod(0o604)
    with caplog.at_level(logging.WARNING):
        load_device_key(key)
    assert "can be read by other users" in caplog.text and "0123456789abcdef" not in caplog.text
    os.chmod(key, 0o600)
    caplog.clear()
    load_device_key(key)
    assert "can be read by other users" not in caplog.text


@pytest.mark.parametrize("lines, words", [
    ('ca_file = "/nonexistent/ca.pem"\n', "applies to TLS connections only"),
    ('tls = true\ncert_file = "{cert}"\n', "needs both cert_file and key_file"),
    ('tls = true\nca_file = "/nonexistent/ca.pem"\n', "cannot read the CA certificate"),
    ('discovery_prefix = "home\\u0000assistant"\n', "'discovery_prefix': must be a topic without wildcards"),
    ('discovery_prefix = "$SYS"\n', "must not start with '$'"),
    ('discovery_prefix = "ha//x"\n', "must not start or end with '/'"),
    ('username = "a\\u0000b"\npassword_env = "X"\n', "printable"),
    ('password_env = "X"\n', "a password needs a username"),
])
def test_mqtt_settings_are_checked(tmp_path: Path, pki: dict[str, Path], lines: str, words: str) -> None:
    text = _mqtt_config(tmp_path, lines.replace("{cert}", str(pki["client_cert"])))
    with pytest.raises(UserError, match=words.replace("$", r"\$")):
        parse_config(text, tmp_path / "gridtap.toml")
