"""Load `hardware/board.json` and the simulator's own defaults (its `sim` section)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BOARD = Path(__file__).resolve().parents[1] / "board.json"

# Values the simulator needs that the firmware does not read. board.json may
# override any of them in a "sim" section.
SIM_DEFAULTS: dict[str, Any] = {
    "enob": 9.0,                 # RP2040 ADC effective bits (datasheet: ~9 ENOB)
    "adc_offset_counts_sd": 8.0,  # per-channel bias error (resistor tolerance), counts, 1 sigma
    "vt_lead_deg": 2.0,          # 9 V AC adapter phase lead over the mains at 50 Hz
    "ct_lead_deg": 3.0,          # CT secondary phase lead over the primary at 50 Hz
    "gain_error_sd": 0.005,      # per-channel transfer ratio error, 1 sigma (CT +-0.5 %)
    "ct_saturation_a": None,     # primary peak amps where the CT core saturates; None = never
    "boot_s": 0.3,               # from supply good to the firmware's first request
    "uart_rx_buffer": 2048,      # board UART receive buffer, bytes; overflow is dropped
    # MicroPython heap of the firmware process. The rp2 port has about 190 KB on a
    # 32-bit MCU; the unix port's objects are up to twice as big on 64 bits.
    "micropython_heap": "256K",
}


class BoardError(ValueError):
    """board.json is missing, not JSON, or lacks a key the simulator needs."""


@dataclass
class Board:
    path: Path
    raw: dict[str, Any]
    text: str
    sets_per_s: int
    slot_s: float
    bits: int
    midscale: int
    channels: list[dict[str, Any]]
    pulse_inputs: list[dict[str, Any]]
    baud: int
    ee_size: int
    ee_page: int
    ee_cycle_s: float
    holdup_s: float
    sim: dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def n_ct(self) -> int:
        return sum(1 for c in self.channels if c.get("kind") == "ct")


def _get(d: dict[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise BoardError(f"board file lacks key {path!r}")
        cur = cur[part]
    return cur


def load_board(path: str | Path | None = None) -> Board:
    p = Path(path) if path is not None else DEFAULT_BOARD
    try:
        text = p.read_text()
    except OSError as exc:
        raise BoardError(f"cannot read board file {p}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BoardError(f"board file {p} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BoardError(f"board file {p} must hold a JSON object")
    channels = _get(raw, "adc.channels")
    if not isinstance(channels, list) or not channels or channels[0].get("kind") != "voltage":
        raise BoardError("board file: adc.channels must start with the voltage channel")
    for i, ch in enumerate(channels):
        key = "v_per_count" if ch.get("kind") == "voltage" else "a_per_count"
        if not isinstance(ch.get(key), (int, float)) or ch[key] <= 0:
            raise BoardError(f"board file: adc.channels[{i}] needs a positive {key!r}")
    sets = _get(raw, "adc.sets_per_s")
    slot_us = _get(raw, "adc.slot_us")
    if not isinstance(sets, int) or sets <= 0:
        raise BoardError("board file: adc.sets_per_s must be a positive integer")
    if not isinstance(slot_us, (int, float)) or slot_us * len(channels) > 1e6 / sets + 1e-3:
        raise BoardError("board file: adc.slot_us x channels must fit in one sample set")
    sim = dict(SIM_DEFAULTS)
    sim.update(raw.get("sim", {}))
    return Board(
        path=p, raw=raw, text=text, sets_per_s=sets, slot_s=float(slot_us) * 1e-6,
        bits=int(_get(raw, "adc.bits")), midscale=int(_get(raw, "adc.midscale")),
        channels=list(channels), pulse_inputs=list(_get(raw, "pulse_inputs")),
        baud=int(_get(raw, "uart.baud")), ee_size=int(_get(raw, "i2c_eeprom.size_bytes")),
        ee_page=int(_get(raw, "i2c_eeprom.page_bytes")),
        ee_cycle_s=float(_get(raw, "i2c_eeprom.write_cycle_ms")) * 1e-3,
        holdup_s=float(_get(raw, "supply_monitor.holdup_ms")) * 1e-3, sim=sim,
    )
