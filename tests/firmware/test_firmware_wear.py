"""The EEPROM wear benchmark's year runs the firmware's own policy and ring consistently."""

from __future__ import annotations

import importlib.util
import json

from gridtap_fw import config, persist
from tests.support.mpy import ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_firmware", ROOT / "bench" / "bench_firmware.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_simulated_year_wear_levels_and_loses_nothing() -> None:
    res = load_bench().simulate(seed=3)
    board = json.loads((ROOT / "hardware" / "board.json").read_text())
    cfg = config.Config(3, 2)
    store = persist.Store(None, board, 3, 2, cfg.image_len())
    saves = res["firmware.eeprom.saves_per_year"]
    assert isinstance(saves, int)
    # threshold saves: at most one per save_wh of the 4,000 kWh, plus 2 per daily outage,
    # plus at most one per save_min of time
    assert 4_000_000 // (cfg.save_wh + 60) < saves <= 4_000_000 // cfg.save_wh + 730 + 365 * 48 + 1
    # every record is one pass of the ring: the busiest page is written saves / n_slots times
    per_cell = res["firmware.eeprom.writes_per_cell_per_year"]
    assert per_cell == -(-saves // store.n_slots)
    assert per_cell <= 10_000
    assert res["firmware.eeprom.max_loss_wh_on_outage"] == 0
    save_ms = res["firmware.eeprom.brownout_save_ms"]
    assert save_ms == store.slot_pages * 5 < board["supply_monitor"]["holdup_ms"]
