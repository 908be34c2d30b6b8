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


def test_reactive_series_and_the_reactive_endpoint(tmp_path: Path) -> None:
    """A CT's Q+ series answers like any series (var from its RRD and the live window), /reactive
    lists each CT's latest var and its stored varh; the Q series stay out of /sensors."""
    from gridtap.board.plausible import reactive_ids
    from gridtap.store.rrd import RrdSink

    cfg = parse_config(config_text(tmp_path / "tty", tmp_path / "state"), tmp_path / "gridtap.toml")
    qpos, qneg = reactive_ids(IMP)
    live = LiveStore()
    rrd = RrdStore(tmp_path / "rrd", None)
    sink = RrdSink(rrd)
    now = 1_700_000_000
    for k in range(0, 1201, 60):  # 720 var for 20 minutes: 0.2 varh a second, 240 varh in all
        t = now - 1200 + k
        sink.reactive_counter(qpos, t * 1000, 200 * k)
        sink.reactive_counter(qneg, t * 1000, 5_000)
    sink.flush_held()
    for t in range(now - 3, now + 1):
        live.put(qpos, t, 200.0)
    live.put_reactive(IMP, now, 720.0)
    view = StoreView(cfg, live, rrd, NightStore(rrd), status=dict, now=lambda: float(now))
    api = Answerer(view)
    minute = json.loads(api.answer(f"/sensor/{qpos}", "version=1.0&interval=minute&unit=var")[0])
    assert minute[-1] == [now, 720]
    hour = json.loads(api.answer(f"/sensor/{qpos}", "version=1.0&interval=hour&unit=var")[0])
    values = [v for _t, v in hour if v != "nan"][1:]  # the first minute holds only its first reading
    assert len(values) >= 15 and all(abs(v - 720) < 1e-6 for v in values), hour
    meta = json.loads(api.answer(f"/sensor/{qneg}", "version=1.0&param=all")[0])
    assert meta["function"] == "mains.reactive-" and meta["lastupdate"][1] == 5.0
    react = {r["id"]: r for r in json.loads(api.answer("/reactive", "")[0])}
    mains = react[IMP]
    assert (mains["t"], mains["var"], mains["qpos_id"], mains["qneg_id"]) == (now, 720.0, qpos, qneg)
    assert mains["qpos_varh"] == 240.0 and mains["qneg_varh"] == 5.0
    assert not {qpos, qneg} & {s["id"] for s in json.loads(api.answer("/sensors", "")[0])}
