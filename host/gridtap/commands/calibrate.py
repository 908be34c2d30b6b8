"""`gridtap calibrate`: V and I gain and phase correction from a reference load and meter.

Put a known load on one CT channel, read the reference meter (V, A and, for
the phase, W), and run

    gridtap calibrate -c gridtap.toml --port /dev/ttyUSB0 --channel 0 \
        --ref-volts 231.4 --ref-amps 8.62 --ref-watts 1994

(--port is the board's protocol link: UART0 through a USB-serial adapter on
the gridtap-1, see hardware/hil-rig.md; stop the daemon first.)

The board's GAUGEs are averaged over --seconds, the new gains and phase are
computed from the ratios, written with CONFIG_SET and made permanent with
COMMIT, then checked by reading the gauges again.

**Who owns the settings.** gridtap.toml owns every CT's `gain` and
`phase_deg`: the daemon writes them to the board on every HELLO where the board
differs. So calibrate writes its result into the `[[sensor]]` of that channel
in gridtap.toml first (only those two values; every other byte of the file
stays), then to the board; the daemon then finds nothing to change. The
board's phase_mdeg includes the line's lag (L2 +120, L3 +240 degrees, wrapped);
`phase_deg` in the file and the phase printed here exclude it. The voltage
gain has no key in gridtap.toml: the daemon never sets it, and calibrate keeps
it in the board's EEPROM.

Why a reactive load for the phase: with a resistive load the board sees
PF = cos(error), which is symmetric in the error's sign and flat near zero, so
the phase cannot be recovered. With PF around 0.5 the slope is steep and the
sign is known. With a resistive reference only the gains are changed.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtap.config import LINE_LAG_DEG, wrap_mdeg
from gridtap.errors import UserError
from gridtap.tomllines import set_value
from gridtap_fw import wire

# Below this reference PF the phase error is observable well enough.
PHASE_PF_LIMIT = 0.9
# Below this reference current the ratio is mostly ADC noise.
MIN_AMPS = 0.05


@dataclass(frozen=True)
class Reading:
    volts: float
    amps: float
    watts: float | None = None


@dataclass(frozen=True)
class Calibration:
    v_gain_e6: int
    i_gain_e6: int
    phase_mdeg: int
    phase_changed: bool


def average_gauges(gauges: list[dict[str, Any]]) -> Reading:
    if len(gauges) < 3:
        raise UserError(f"only {len(gauges)} GAUGE readings arrived; is the channel enabled and the load on?")
    n = len(gauges)
    return Reading(
        volts=sum(g["vrms_mv"] for g in gauges) / n / 1000,
        amps=sum(g["irms_ma"] for g in gauges) / n / 1000,
        watts=sum(g["power_mw"] for g in gauges) / n / 1000,
    )


def compute(board: Reading, ref: Reading, v_gain_e6: int, i_gain_e6: int, phase_mdeg: int) -> Calibration:
    """New calibration from what the board read and what the reference meter read."""
    if board.volts <= 0 or board.amps <= 0:
        raise UserError("the board reads no voltage or no current on that channel")
    if ref.volts <= 0 or ref.amps <= 0:
        raise UserError("reference volts and amps must be positive")
    if ref.amps < MIN_AMPS:
        raise UserError(f"reference current {ref.amps} A is too small to calibrate from; use a bigger load")
    new_v = round(v_gain_e6 * ref.volts / board.volts)
    new_i = round(i_gain_e6 * ref.amps / board.amps)
    new_phase = phase_mdeg
    changed = False
    if ref.watts is not None and board.watts is not None:
        ref_pf = ref.watts / (ref.volts * ref.amps)
        if abs(ref_pf) > 1.02:
            raise UserError(f"reference readings give PF {ref_pf:.3f} > 1: check the numbers")
        board_pf = board.watts / (board.volts * board.amps)
        if abs(ref_pf) < PHASE_PF_LIMIT:
            # Angles by which the current lags the voltage, as each meter sees it.
            phi_ref = math.degrees(math.acos(max(-1.0, min(1.0, ref_pf))))
            phi_board = math.degrees(math.acos(max(-1.0, min(1.0, board_pf))))
            # Kept within the board's -180..180 degrees: a CT on L2 or L3 carries
            # its line's 120 degrees in phase_mdeg too (hardware/analogue.md 2a).
            new_phase = wrap_mdeg(phase_mdeg + round((phi_board - phi_ref) * 1000))
            changed = True
    lo, hi = wire.PARAMS[wire.P_GAIN_E6][3], wire.PARAMS[wire.P_GAIN_E6][4]
    for name, value in (("voltage gain", new_v), ("current gain", new_i)):
        if not lo <= value <= hi:
            raise UserError(f"computed {name} {value / 1e6:.4f} is outside the board's "
                            f"{lo / 1e6:g}..{hi / 1e6:g}: check the reference readings and the wiring")
    return Calibration(new_v, new_i, new_phase, changed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="compute and write V/I gain and phase from a reference meter",
                       description="Calibrate one CT channel against a reference meter: average the "
                                   "board's gauges for --seconds, compute the current gain (and, with "
                                   "--ref-watts, the phase correction) and the voltage gain, write them "
                                   "into the channel's [[sensor]] in gridtap.toml, then to the board, and "
                                   "commit. Stop the daemon first: this opens the board's port.")
    p.add_argument("-c", "--config", type=Path, help="gridtap.toml: the result is written into the channel's "
                   "[[sensor]] (required unless --dry-run)")
    p.add_argument("--port", required=True, help="serial port of the board (stop the daemon first)")
    p.add_argument("--baud", type=int, default=115200, help="link baud rate (default 115200)")
    p.add_argument("--channel", type=int, required=True, help="CT channel, from 0 (CT1 = 0)")
    p.add_argument("--ref-volts", type=float, required=True, help="reference meter voltage, V rms")
    p.add_argument("--ref-amps", type=float, required=True, help="reference meter current, A rms")
    p.add_argument("--ref-watts", type=float, help="reference real power, W (needed for the phase)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to average the board's gauges")
    p.add_argument("--dry-run", action="store_true", help="compute and print, but write nothing")
    p.set_defaults(func=run)


@dataclass(frozen=True)
class Home:
    """Where a CT channel's calibration lives in gridtap.toml."""

    path: Path
    text: str
    table: int  # index of its [[sensor]]
    name: str
    line: str  # L1, L2 or L3


def find_home(path: Path, channel: int) -> Home:
    """The [[sensor]] of CT channel `channel` in the config at `path` (which must be valid)."""
    from gridtap.config import load_config

    cfg = load_config(path)
    text = path.read_text(encoding="utf-8")
    for i, s in enumerate(cfg.sensors):
        if s.kind == "ct" and s.index == channel:
            return Home(path, text, i, s.name, s.line)
    raise UserError(f"{path} has no [[sensor]] on CT channel {channel}: add one (kind = \"ct\", "
                    f"channel = {channel}) so the calibration has a home")


def file_phase_mdeg(board_phase_mdeg: int, line: str) -> int:
    """gridtap.toml's phase_deg (in millidegrees) for a board phase: the line's lag taken out."""
    return wrap_mdeg(board_phase_mdeg - LINE_LAG_DEG[line] * 1000)


def write_home(home: Home, cal: Calibration) -> None:
    """Put the CT gain (and phase) into the file, verified by parsing it back, then replace it atomically."""
    from gridtap.config import parse_config

    values = {"gain": f"{cal.i_gain_e6 / 1e6:.6f}"}
    if cal.phase_changed:
        values["phase_deg"] = f"{file_phase_mdeg(cal.phase_mdeg, home.line) / 1000:.3f}"
    text = home.text
    for key, value in values.items():
        try:
            text = set_value(text, ("sensor", home.table), key, value)
        except ValueError as exc:
            wanted = ", ".join(f"{k} = {v}" for k, v in values.items())
            raise UserError(f"cannot write the calibration into {home.path}: {exc}; set {wanted} in "
                            f"[[sensor]] {home.name!r} by hand (nothing was written)") from None
    s = parse_config(text, home.path).sensors[home.table]
    if round(s.gain * 1e6) != cal.i_gain_e6 or (cal.phase_changed and s.phase_mdeg != cal.phase_mdeg):
        raise UserError(f"writing the calibration into {home.path} did not read back; the file is unchanged")
    tmp = home.path.with_name(f".{home.path.name}.calibrate")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, stat.S_IMODE(os.stat(home.path).st_mode))
    os.replace(tmp, home.path)


def run(args: argparse.Namespace) -> int:
    from gridtap.board.client import BoardClient

    if not args.seconds > 0:
        raise UserError("--seconds must be positive")
    if args.config is None and not args.dry_run:
        raise UserError("give the daemon's config with -c gridtap.toml: the calibration is written there "
                        "(the daemon sets the board from it on every HELLO)")
    home = find_home(args.config, args.channel) if args.config is not None else None
    line = home.line if home is not None else "L1"
    client = BoardClient.open(args.port, args.baud)
    try:
        hello = client.hello()
        if not 0 <= args.channel < hello["n_ct"]:
            raise UserError(f"--channel must be 0..{hello['n_ct'] - 1} on this board")
        client.set_time()
        v_cfg = client.config_get(wire.TARGET_VOLTAGE, 0, (wire.P_GAIN_E6,))
        i_cfg = client.config_get(wire.TARGET_CT, args.channel, (wire.P_GAIN_E6, wire.P_PHASE_MDEG))
        board = average_gauges(client.gauges(args.channel, args.seconds))
        ref = Reading(args.ref_volts, args.ref_amps, args.ref_watts)
        cal = compute(board, ref, v_cfg[wire.P_GAIN_E6], i_cfg[wire.P_GAIN_E6], i_cfg[wire.P_PHASE_MDEG])
        print(f"board read   {board.volts:.2f} V  {board.amps:.3f} A  {board.watts:.1f} W")
        print(f"reference    {ref.volts:.2f} V  {ref.amps:.3f} A  "
              f"{'-' if ref.watts is None else f'{ref.watts:.1f}'} W")
        print(f"voltage gain {v_cfg[wire.P_GAIN_E6] / 1e6:.6f} -> {cal.v_gain_e6 / 1e6:.6f}  (board EEPROM)")
        print(f"gain         {i_cfg[wire.P_GAIN_E6] / 1e6:.6f} -> {cal.i_gain_e6 / 1e6:.6f}")
        if cal.phase_changed:
            old = file_phase_mdeg(i_cfg[wire.P_PHASE_MDEG], line) / 1000
            lag = f" (the board adds {line}'s {LINE_LAG_DEG[line]})" if LINE_LAG_DEG[line] else ""
            new = file_phase_mdeg(cal.phase_mdeg, line) / 1000
            print(f"phase_deg    {old:.3f} -> {new:.3f} degrees{lag}")
        else:
            print("phase_deg    unchanged (needs --ref-watts with a reactive load, PF < 0.9)")
        if args.dry_run:
            return 0
        assert home is not None
        write_home(home, cal)  # first: if the board write fails, the daemon pushes these values anyway
        print(f"written      {home.path}: [[sensor]] {home.name!r} gain"
              f"{' and phase_deg' if cal.phase_changed else ''}")
        client.config_set(wire.TARGET_VOLTAGE, 0, ((wire.P_GAIN_E6, cal.v_gain_e6),))
        client.config_set(wire.TARGET_CT, args.channel,
                          ((wire.P_GAIN_E6, cal.i_gain_e6), (wire.P_PHASE_MDEG, cal.phase_mdeg)))
        client.commit(wire.COMMIT_CONFIG)
        # the first gauges after the write may describe a second begun with the old values
        after = average_gauges(client.gauges(args.channel, max(3.0, min(args.seconds, 5.0)) + 2.0)[2:])
        print(f"after        {after.volts:.2f} V  {after.amps:.3f} A  {after.watts:.1f} W  (committed)")
        return 0
    finally:
        client.close()
