"""Done-when of issue 19: a real gridtap daemon (fake board on a pty) and a simulated Fluksometer
both upload to the hub on 127.0.0.1, and the owner reads the daemon's energy back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg
import pytest

from gridtap_hub import accounts
from gridtap_hub.loadgen import STEP_S, FlmClient, Home
from tests.hub.kit import PASSWORD, get, running_hub, stored
from tests.support.daemon import EXP, IMP, PULSE, config_text, running_daemon, short_tmp
from tests.support.fakeboard import FakeBoard

__all__ = ["short_tmp"]  # the fixture, used below

DEVICE = "d" * 32
KEY = "0123456789abcdef0123456789abcdef"


def test_daemon_and_simulated_flm_upload_to_the_hub(hub_dsn: str, hub_conn: psycopg.Connection,
                                                     short_tmp: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gridtap import daemon
    monkeypatch.setattr(daemon, "SPOOL_COMMIT_S", 0.5)
    uid = accounts.add_user(hub_conn, "owner", PASSWORD, shares=False)
    accounts.claim(hub_conn, uid, DEVICE, KEY, [(IMP, "main"), (EXP, "solar"), (PULSE, "other")])
    flm = Home.new(77)
    accounts.claim(hub_conn, accounts.add_user(hub_conn, "flm03", PASSWORD), flm.device, flm.key,
                   [(s.id, "main" if i == 0 else "other") for i, s in enumerate(flm.sensors)])
    (short_tmp / "device.key").write_text(KEY + "\n")
    board = FakeBoard(short_tmp, retx_s=2.0)
    board.appear()
    with running_hub(hub_dsn) as hub:
        text = config_text(board.path, short_tmp / "state", rrd_mode="batched") + f"""
[flukso]
base_url = "{hub.url}"
key_file = "{short_tmp / "device.key"}"
interval_s = 1
"""
        with running_daemon(board, text, short_tmp) as rig:
            now = int(time.time())
            for i in range(10):
                rig.board.step(now - 10 + i, power_w=[3600.0], pulses=[1])
            rig.wait(lambda: stored(hub_conn, IMP)[-1:] == [(now - 1, 10)], timeout=20)
            rig.wait(lambda: stored(hub_conn, PULSE)[-1:] == [(now - 1, 10)], timeout=20)
        # the simulated FLM03: ten minutes of its five sensors, posted as a Fluksometer does
        for k in range(60):
            flm.advance(now - 600 + k * STEP_S)
        assert FlmClient("127.0.0.1", hub.port).upload(flm) == 300
        assert all(stored(hub_conn, s.id) == s.generated for s in flm.sensors)
        token = hub_conn.execute("SELECT token FROM hub_user WHERE id = %s", (uid,)).fetchone()[0]  # type: ignore[index]
        st, body = get(hub.port, f"/sensor/{IMP}?version=1.0&interval=hour&unit=watt&token={token}")
        assert st == 200 and any(v != "nan" and v > 0 for _, v in json.loads(body))
        # the FLM's owner does not share: the daemon's owner may not read it
        assert get(hub.port, f"/sensor/{flm.sensors[0].id}?version=1.0&interval=hour&unit=watt"
                             f"&token={token}")[0] == 403
