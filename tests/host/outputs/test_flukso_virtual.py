"""Virtual sensors (a wallbox's E<n>, an expression meter) uploaded to Flukso under ids of their own
([[flukso.sensor]]), against the real Flukso-compatible HTTP server of tests/support."""

from __future__ import annotations

import logging
import math
import random
import re
import time
from pathlib import Path

import pytest

from gridtap import daemon
from gridtap.backoff import Backoff
from gridtap.config import parse_config
from gridtap.control.ev.config import sensor_id
from gridtap.daemon import Daemon
from gridtap.errors import UserError
from gridtap.meters import derived_id
from gridtap.outputs.flukso import FluksoOutput, FluksoUploader, Secret, Target, VirtualUpload
from gridtap.store.spool import Spool
from tests.support.daemon import EXP, IMP, IMP2, PULSE, WATER, config_text, running_daemon
from tests.support.fakeboard import FakeBoard
from tests.support.fakes import FakeClock
from tests.support.flukso_server import FluksoServer

KEY = "0123456789abcdef0123456789abcdef"      # the device key
E1_KEY = "00112233445566778899aabbccddeeff"   # the key of the Flukso device E1 was provisioned under
V1 = "5b3c1f0e9d8a7b6c5d4e3f2a1b0c9d8e"       # the Flukso sensor ids the server gave the virtual sensors
V2 = "6c4d2e1f0a9b8c7d6e5f4a3b2c1d0e9f"
V3 = "7d5e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"
GARAGE, CARPORT = sensor_id("garage"), sensor_id("carport")
T0 = 1_700_000_000

EV = """
[ev]
port = 0
max_total_current_a = 25
grid_sensor = "mains"

[[ev.wallbox]]
id = "garage"

[[ev.wallbox]]
id = "carport"
"""
# an expression meter with an export series too
METERS = """
[[meter]]
id = 1
sensors = ["heatpump"]
[[meter]]
id = 2
name = "house"
import_wh = "import_wh + max(M1.power_w, 0) * dt / 3600"
export_wh = "export_wh"
"""


def flukso(extra: str = "", key_file: str = "/etc/gridtap/device.key") -> str:
    return f'\n[flukso]\nbase_url = "http://127.0.0.1:9/"\nkey_file = "{key_file}"\n' + extra


def table(name: str, ident: str = V1, more: str = "") -> str:
    return f'\n[[flukso.sensor]]\nname = "{name}"\nid = "{ident}"\n{more}'


BASE = config_text(Path("/dev/ttyACM0"), Path("/var/lib/gridtap")) + EV + METERS


# -- configuration: the same rules as a board sensor's ids ------------------------------------------

def test_virtual_sensors_get_flukso_ids_of_their_own() -> None:
    cfg = parse_config(BASE + flukso(table("E1", V1, 'key_env = "GRIDTAP_E1_KEY"\n')
                                     + table("house", V2, f'export_id = "{V3}"\n')), Path("/etc/gt/g.toml"))
    assert cfg.outputs["flukso"].virtual == (
        VirtualUpload("E1", GARAGE, V1, None, "GRIDTAP_E1_KEY"),
        VirtualUpload("house", derived_id("house"), V2),
        VirtualUpload("house", derived_id("house", "export"), V3),
    )
    assert cfg.sensor("house").export_id == derived_id("house", "export")
    # without tables nothing virtual goes up (as before): a virtual sensor is uploaded when asked for
    assert parse_config(BASE + flukso()).outputs["flukso"].virtual == ()


@pytest.mark.parametrize(("extra", "message"), [
    (table("E3"), r"\[flukso\] key 'sensor.0.name': no virtual sensor is named 'E3' "
                  r"\(virtual sensors: E1, E2, house;"),
    (table("mains"), r"'mains' is a board sensor: its \[\[sensor\]\] id is its Flukso sensor id"),
    (table("E1", "ABC"), r"key 'sensor.0.id': must be 32 lowercase hex digits, got 'ABC'"),
    (table("E1", V1.upper()), "must be 32 lowercase hex digits"),
    (table("E1", IMP), f"key 'sensor.0.id': sensor id {IMP} is already 'mains''s"),
    (table("E1", CARPORT), f"sensor id {CARPORT} is already 'E2''s"),
    (table("E1") + table("E2"), f"key 'sensor.1.id': sensor id {V1} is already 'E1''s"),
    (table("E1") + table("E1", V2), r"key 'sensor.1.name': 'E1' has a \[\[flukso.sensor\]\] table already"),
    (table("E1", V1, f'export_id = "{V2}"\n'), "'E1' has no export series"),
    (table("E1", V1, 'key_file = "e1.key"\nkey_env = "K"\n'), "as key_file or key_env, not both"),
    (table("E1", V1, 'token = "x"\n'), r"key 'sensor.0.token': unknown key \(known here: export_id, id, "),
    ('\n[[flukso.sensor]]\nid = "' + V1 + '"\n', "key 'sensor.0.name': is required"),
    (table("E1", V1).replace(f'id = "{V1}"', "id = 5"), "key 'sensor.0.id': expected a non-empty string"),
    ('sensor = "E1"\n', "must be an array of tables, written \\[\\[flukso.sensor\\]\\]"),
])
def test_a_bad_virtual_upload_is_refused_naming_it(extra: str, message: str) -> None:
    text = BASE + flukso(extra)
    with pytest.raises(UserError, match=message) as bad:
        parse_config(text)
    # and names the line of the key at fault (its table's when the key is missing)
    m = re.search(r"key 'sensor\.(\d+)\.(\w+)'", str(bad.value))
    if m is not None:
        lines = text.splitlines()
        at = [n for n, line in enumerate(lines) if line == "[[flukso.sensor]]"][int(m.group(1))]
        key_at = next((n for n in range(at, len(lines)) if lines[n].startswith(m.group(2) + " =")), at)
        assert str(bad.value).startswith(f"gridtap.toml line {key_at + 1}: "), (str(bad.value), key_at + 1)


def test_no_virtual_sensors_at_all_says_so() -> None:
    base = config_text(Path("/dev/ttyACM0"), Path("/var/lib/gridtap"))
    with pytest.raises(UserError, match=r"no virtual sensor is named 'E1' \(virtual sensors: none are "):
        parse_config(base + flukso(table("E1")))


def test_a_virtual_sensors_key_file_is_read_at_start_and_named(short_tmp: Path) -> None:
    (short_tmp / "device.key").write_text(KEY + "\n")
    text = (config_text(short_tmp / "tty", short_tmp / "state") + EV
            + flukso(table("E1", V1, 'key_file = "missing-e1.key"\n'), str(short_tmp / "device.key")))
    d = Daemon(parse_config(text, short_tmp / "gridtap.toml"))
    try:
        with pytest.raises(UserError, match=r"\[flukso\] sensor E1: cannot read the Flukso device key file "
                                            r".*missing-e1.key"):
            d.start()
    finally:
        d.close()
    (short_tmp / "missing-e1.key").write_text("not a key\n")
    d = Daemon(parse_config(text, short_tmp / "gridtap.toml"))
    try:
        with pytest.raises(UserError, match=r"sensor E1: the Flukso device key in the key file .* must be"):
            d.start()
    finally:
        d.close()


# -- the uploader: targets with their own ids and keys ----------------------------------------------

def test_a_refused_virtual_sensor_does_not_hold_back_the_others(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """E1 signed with a key the server does not know it by (401), E2 fine: E2's points go up in the same
    pass and on the normal interval; E1 alone backs off (skipped, not asked again, until it is due),
    its points stay spooled, /status names it, never the key. A server that is down ends a pass."""
    sp = Spool(tmp_path / "s.db", ["flukso"], aging=())
    for i in range(5):
        sp.add(GARAGE, T0 + 10 * i, 100.0 + i)
        sp.add(CARPORT, T0 + 10 * i, 200.5 + 2 * i)
    sp.commit()
    wrong = "f" * 32
    mono = FakeClock(100.0)
    refusal = f"sensor E1 ({V1}): HTTP 401 (check the sensor key)"
    with FluksoServer({V1: E1_KEY, V2: KEY}) as srv, caplog.at_level(logging.DEBUG):
        targets = [Target(GARAGE, V1, Secret(wrong), "E1"), Target(CARPORT, V2, None, "E2")]
        up = FluksoUploader(sp, srv.url, Secret(KEY), [], targets=targets, clock=mono,
                            backoff=Backoff(base=10, cap=100, rng=random.Random(1)))
        assert up.step() == pytest.approx(300)   # the next pass on the interval: E2 is not held back
        assert srv.measurements(V1) == []
        assert srv.measurements(V2) == [(T0 + 10 * i, math.floor(200.5 + 2 * i)) for i in range(5)]
        assert up.last_report.error == refusal and not up.last_report.fatal
        assert up.backoff.failures == 0 and up.held[GARAGE][0].failures == 1
        assert 105 <= up.held[GARAGE][0].not_before <= 110
        assert len(sp.pending("flukso", GARAGE)) == 5 and sp.pending("flukso", CARPORT) == []
        assert up.status() == {"backlog": 5, "last_upload": up.last_upload, "error": refusal}
        # while E1 backs off, a pass does not ask for it again, and still says why it is held
        sp.add(CARPORT, T0 + 100, 300.0)
        sp.commit()
        posts = srv.posts
        assert up.upload().error == refusal and srv.posts == posts + 1
        # the server learns E1 by that key; once E1 is due, its points go up and nothing is held
        srv.keys[V1] = wrong
        mono.t += 10
        assert up.upload().ok and up.held == {}
        assert srv.measurements(V1) == [(T0 + 10 * i, 100 + i) for i in range(5)]
        # an RRD that refuses E1's points (HTTP 200, an error as the response) holds back E1 alone
        sp.add(GARAGE, T0 + 100, 200.0)
        sp.add(CARPORT, T0 + 110, 301.0)
        sp.commit()
        srv.rrd_error_next(V1, "ERROR: rrd_update failed")
        rep = up.upload()
        assert not rep.fatal and rep.error == f"sensor E1 ({V1}): server answered 'ERROR: rrd_update failed'"
        assert srv.measurements(V2)[-1] == (T0 + 110, 301) and len(sp.pending("flukso", GARAGE)) == 1
        mono.t += 10
        assert up.upload().ok and srv.measurements(V1)[-1] == (T0 + 100, 200)
        # a server that is down ends the pass at once: one request, not one per sensor
        sp.add(GARAGE, T0 + 200, 201.0)
        sp.add(CARPORT, T0 + 210, 302.0)
        sp.commit()
        srv.fail_next(2, status=503)
        posts = srv.posts
        rep = up.upload()
        assert rep.fatal and srv.posts == posts + 1 and up.held == {}
    assert wrong not in caplog.text and "E1" in caplog.text
    sp.close()


# -- the daemon: a wallbox's register reaches Flukso, in order, once, across a restart --------------

def _daemon_text(board: FakeBoard, tmp: Path, url: str) -> str:
    return (config_text(board.path, tmp / "state") + EV
            + f'\n[flukso]\nbase_url = "{url}"\nkey_file = "{tmp / "device.key"}"\ninterval_s = 1\n'
            + table("E1", V1, f'key_file = "{tmp / "e1.key"}"\n'))


def test_virtual_points_reach_flukso_in_order_once_across_a_restart(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """E1's MeterValues (through the daemon's virtual inbox, as the OCPP server puts them) go up as
    Flukso sensor V1 signed with E1's own key. A reply lost on the way back, then a daemon restart
    before the retry: the restarted uploader resends from the spool, the server's "last update" answer
    clears what it has, and the server ends with every point exactly once, in order."""
    monkeypatch.setattr(daemon, "SPOOL_COMMIT_S", 0.3)
    (short_tmp / "device.key").write_text(KEY + "\n")
    (short_tmp / "e1.key").write_text(E1_KEY + "\n")
    (short_tmp / "e1.key").chmod(0o600)
    start = (int(time.time()) - 900) // 60 * 60
    # 30 s apart: no aging bucket (60 s) holds three of them, so every point must arrive
    readings = [(start + 30 * i, 1000.4 + 7.3 * i) for i in range(12)]
    expected = [(t, math.floor(round(wh * 1000) / 1000)) for t, wh in readings]
    keys = {s: KEY for s in (IMP, EXP, IMP2, PULSE, WATER)} | {V1: E1_KEY}

    def feed(rig: object, part: list[tuple[int, float]]) -> None:
        d = rig.daemon  # type: ignore[attr-defined]
        for t, wh in part:
            d.inbox.counter(GARAGE, t, wh, boot=7)
        d.link.wake()

    with FluksoServer(keys) as srv:
        board = FakeBoard(short_tmp)
        board.appear()
        with running_daemon(board, _daemon_text(board, short_tmp, srv.url), short_tmp) as rig:
            up = next(o for o in rig.daemon.outputs if isinstance(o, FluksoOutput)).uploader
            feed(rig, readings[:4])
            rig.wait(lambda: srv.measurements(V1) == expected[:4], timeout=15)
            srv.drop_reply_next()          # the server takes the next post; its answer never comes back
            feed(rig, readings[4:8])
            rig.wait(lambda: up.last_report.error is not None, timeout=15)
            # the server has points whose reply was lost: the spool does not know it has them
            assert len(srv.measurements(V1)) > 4 and up.status()["backlog"] > 0
        board = FakeBoard(short_tmp)
        board.appear()
        with running_daemon(board, _daemon_text(board, short_tmp, srv.url), short_tmp) as rig:
            up = next(o for o in rig.daemon.outputs if isinstance(o, FluksoOutput)).uploader
            rig.wait(lambda: up.status()["backlog"] == 0 and up.last_report.ok, timeout=15)
            feed(rig, readings[8:])
            rig.wait(lambda: len(srv.measurements(V1)) >= len(expected), timeout=15)
            rig.wait(lambda: up.status()["backlog"] == 0, timeout=15)
            assert rig.total(GARAGE) == round(readings[-1][1] * 1000)
            assert rig.daemon.virtual.refused == {}
        assert srv.measurements(V1) == expected
        # E2 has no [[flukso.sensor]]: nothing of it went up (the board was not stepped: nothing of it)
        assert {s for s, pts in srv.stored.items() if pts} == {V1}


def test_the_example_configs_flukso_block_parses(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[3] / "docs" / "gridtap.example.toml").read_text()

    def uncommented(start: str, end: str) -> str:
        part = example[example.index(start):example.index(end)]
        return "\n".join(re.sub(r"^# ?", "", ln) for ln in part.splitlines())

    head = example[:example.index("# Optional sections")]
    text = head + uncommented("# [[meter]]", "# [mqtt]") + uncommented("# [flukso]", "# [iec104]")
    f = parse_config(text, tmp_path / "gridtap.toml").outputs["flukso"]
    assert f.virtual == (VirtualUpload("grid_smooth", derived_id("grid_smooth"),
                                       "5b3c1f0e9d8a7b6c5d4e3f2a1b0c9d8e"),)
    assert f.interval_s == 300
