"""The REST API answers from its read-only view of the stores alone: no daemon, no board session behind it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gridtap.config import parse_config
from gridtap.outputs.restapi import Answerer, StoreView
from gridtap.store.live import LiveStore
from gridtap.store.rrd import NightStore, RrdStore
from tests.support.daemon import IMP, config_text


def test_minute_interval_from_a_view_without_a_daemon(tmp_path: Path) -> None:
    cfg = parse_config(config_text(tmp_path / "tty", tmp_path / "state"), tmp_path / "gridtap.toml")
    live = LiveStore()
    now = 1_700_000_000
    for t in range(now - 3, now + 1):
        live.put(IMP, t, 1000.0)  # 1 Wh per second: 3600 W
    rrd = RrdStore(tmp_path / "rrd", None)
    view = StoreView(cfg, live, rrd, NightStore(rrd), status=dict, now=lambda: float(now))
    body, ctype = Answerer(view).answer(f"/sensor/{IMP}", "version=1.0&interval=minute&unit=watt")
    points = json.loads(body)
    assert ctype == "application/json" and len(points) == 60
    assert points[-1] == [now, 3600] and points[0][1] == "nan"
    assert not {"session", "link", "store", "cfg", "outputs"} & set(vars(view))


def test_the_api_module_does_not_import_the_daemon() -> None:
    code = "import sys, gridtap.outputs.restapi\nprint('gridtap.daemon' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
