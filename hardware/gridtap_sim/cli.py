"""`gridtap sim`: run the board firmware on the virtual board behind a pseudo-terminal.

    gridtap sim --scenario household-pv --speed 60 --seed 1 --duration 3600 --record run.npz
    pty: /dev/pts/5        <- open this like /dev/ttyUSB0

numpy (the simulator's only dependency) is imported inside the command, so
the daemon never loads it. docs/sim.md describes the model and the record.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gridtap.errors import UserError

SCENARIO_NAMES = ("household", "household-pv", "three-phase", "pulse-meters", "brownouts", "steady")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run the firmware on the virtual board (needs numpy)",
                       description="Run the unmodified firmware in a MicroPython process against the "
                                   "board simulator; the board's UART appears on a pseudo-terminal.")
    p.add_argument("--scenario", default="household", metavar="NAME",
                   help="one of: " + ", ".join(SCENARIO_NAMES) + " (default household)")
    p.add_argument("--speed", default="1", help="simulated seconds per wall second; 0 or max = "
                                                "as fast as possible (default 1, real time)")
    p.add_argument("--seed", default="1", help="random seed; a run is deterministic for a seed (default 1)")
    p.add_argument("--duration", default=None, help="simulated seconds to run (default: until Ctrl-C)")
    p.add_argument("--record", default=None, metavar="FILE.npz",
                   help="write the ground truth (energy per second, pulse times) here at the end")
    p.add_argument("--ber", default="0", help="UART bit error rate, both directions (e.g. 1e-4)")
    p.add_argument("--drop", default="0", help="UART byte loss probability, both directions")
    p.add_argument("--stalls", default="0", help="UART stalls per minute (0.1..2 s each)")
    p.add_argument("--outage", action="append", default=[], metavar="AT:SECONDS",
                   help="a mains failure at simulated second AT lasting SECONDS (the supply monitor fires, "
                        "the board saves and dies after its hold-up, and boots when the mains returns); "
                        "repeatable, in any scenario")
    p.add_argument("--ber-burst", action="append", default=[], metavar="FROM:TO:BER",
                   help="a noisy wire from simulated second FROM to TO at bit error rate BER, both "
                        "directions (e.g. 600:900:1e-3); repeatable")
    p.add_argument("--board", default=None, help="board file (default hardware/board.json)")
    p.add_argument("--start", default=None, metavar="HH:MM",
                   help="time of day at simulated t=0 (default per scenario; household-pv 12:00)")
    p.add_argument("--firmware", default=None, metavar="SCRIPT",
                   help="MicroPython script to run instead of the firmware core (gridtap_fw.app)")
    p.add_argument("--core", default="unix", choices=CORES,
                   help="what runs the firmware: the MicroPython unix port (default), or gridtap's "
                        "Cortex-M0 port under QEMU with float32 as on the RP2040 (qemu-m0) or float64 "
                        "as the unix port (qemu-m0-double); `make m0` builds it (hardware/qemu-m0.md)")
    p.add_argument("--eeprom", default=None, metavar="FILE",
                   help="EEPROM image: loaded at start if it exists, written back at the end, "
                        "so the board keeps its counters and config from run to run")
    p.add_argument("--fw-log", default=None, metavar="FILE",
                   help="append the firmware's stdout/stderr here (default: a temporary file)")
    p.add_argument("--clock-file", default=None, metavar="PATH",
                   help="publish the simulated Unix time here (16 bytes, float64 LE at offset 0), for "
                        "`gridtap daemon --clock-file`")
    p.add_argument("--batch-max-s", default=None, metavar="S",
                   help="simulated time one ADC batch may span (default 1 s); smaller batches bring host "
                        "bytes to the board sooner, at some cost in speed")
    p.add_argument("--luxpower", default=None, metavar="PORT",
                   help="also run a LuxPower inverter + datalogger simulator on 127.0.0.1:PORT (0: any free "
                        "port); its battery is a load on the scenario's grid CT (docs/sim.md)")
    p.add_argument("--battery", default="10:3:50", metavar="KWH:KW:SOC",
                   help="the simulated battery with --luxpower: capacity, power limit, initial SOC "
                        "(default 10:3:50)")
    p.add_argument("--wallbox", action="append", default=[], metavar="URL/ID@S",
                   help="also run a simulated OCPP 1.6J wallbox that connects to the central system at "
                        "URL as charge point ID and has a car (60 kWh, 30 %%) plugged in S simulated "
                        "seconds after the start, e.g. ws://127.0.0.1:9000/garage@60; its draw on L1 is a "
                        "load on the scenario's grid CT (repeatable; docs/ev.md)")
    p.add_argument("--wallbox-log", default=None, metavar="FILE",
                   help="with --wallbox: write each wallbox report here as CSV "
                        "(t,id,amps,phases,power_w,energy_wh,soc)")
    p.add_argument("--t0", default=None, metavar="UNIX",
                   help="with --clock-file: Unix time of simulated t=0 (default: the latest --start time "
                        "of day, UTC, that is not in the future); sets the time of day unless --start does")
    p.set_defaults(func=run_sim)


# --core: the firmware process; the qemu ones name the float build of firmware/ports/qemu_m0
CORES = ("unix", "qemu-m0", "qemu-m0-double")


def _float(name: str, text: str, lo: float | None = None, hi: float | None = None) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise UserError(f"--{name} must be a number, got {text!r}") from exc
    if math.isnan(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise UserError(f"--{name} {text} is out of range {lo}..{hi}")
    return v


def parse_speed(text: str) -> float:
    if text.strip().lower() in ("max", "0", "0.0", "inf"):
        return math.inf
    v = _float("speed", text, 0.0)
    if v <= 0:
        raise UserError("--speed must be positive (or 0/max for as fast as possible)")
    return v


def parse_start(text: str | None) -> float | None:
    if text is None:
        return None
    hh, sep, mm = text.partition(":")
    try:
        h, m = int(hh), int(mm or "0")
    except ValueError as exc:
        raise UserError(f"--start must look like HH:MM, got {text!r}") from exc
    if not sep or not (0 <= h < 24 and 0 <= m < 60):
        raise UserError(f"--start must look like HH:MM with HH 0..23 and MM 0..59, got {text!r}")
    return h * 3600.0 + m * 60.0


def parse_seed(text: str) -> int:
    """--seed: a non-negative integer, in any base Python writes (0x2a)."""
    try:
        seed = int(text, 0)
    except ValueError as exc:
        raise UserError(f"--seed must be an integer, got {text!r}") from exc
    if seed < 0:
        raise UserError("--seed must not be negative")
    return seed


def options(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the command line; every problem is a UserError naming the option."""
    if args.scenario not in SCENARIO_NAMES:
        raise UserError(f"--scenario {args.scenario!r} is unknown; known: {', '.join(SCENARIO_NAMES)}")
    seed = parse_seed(args.seed)
    duration = math.inf if args.duration is None else _float("duration", args.duration, 0.0)
    if duration <= 0:
        raise UserError("--duration must be positive")
    for name in ("record", "eeprom"):
        path = getattr(args, name)
        if path is not None:
            parent = Path(path).resolve().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK):
                raise UserError(f"--{name} {path}: directory {parent} does not exist or is not writable")
    clock_file, t0 = getattr(args, "clock_file", None), None
    if clock_file is not None:
        parent = Path(clock_file).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UserError(f"--clock-file {clock_file}: directory {parent} does not exist or is not "
                            "writable")
    if getattr(args, "t0", None) is not None:
        if clock_file is None:
            raise UserError("--t0 sets where the published simulated clock starts: it needs --clock-file")
        t0 = _float("t0", args.t0, 946684800.0, 4102444800.0)
    start = parse_start(args.start)
    if t0 is not None:
        if start is None:
            start = t0 % 86400.0
        elif min((t0 - start) % 86400.0, -(t0 - start) % 86400.0) > 1e-3:
            raise UserError(f"--t0 {args.t0} is not at --start {args.start} (UTC); give one of them")
    firmware = None
    if args.firmware is not None:
        firmware = Path(args.firmware)
        if not firmware.is_file():
            raise UserError(f"--firmware {args.firmware}: no such file")
    luxpower, battery = None, (10.0, 3.0, 50.0)
    if getattr(args, "luxpower", None) is not None:
        luxpower = int(_float("luxpower", args.luxpower, 0, 65535))
        if args.scenario not in ("household", "household-pv", "pulse-meters", "brownouts"):
            raise UserError(f"--luxpower: scenario {args.scenario!r} has no grid CT for the battery")
        kwh, kw, soc = (_float("battery", f, 0.0, 1000.0)
                        for f in _fields("battery", args.battery, "KWH:KW:SOC", "10:3:50"))
        if kwh <= 0 or kw <= 0 or soc > 100:
            raise UserError(f"--battery {args.battery}: capacity and power must be positive, SOC 0..100")
        battery = (kwh, kw, soc)
    wallboxes = parse_wallboxes(getattr(args, "wallbox", []))
    if wallboxes and args.scenario not in ("household", "household-pv", "pulse-meters", "brownouts"):
        raise UserError(f"--wallbox: scenario {args.scenario!r} has no grid CT for the wallboxes")
    return {
        "wallboxes": wallboxes, "wallbox_log": getattr(args, "wallbox_log", None),
        "luxpower": luxpower, "battery": battery,
        "scenario": args.scenario, "seed": seed, "duration": duration, "speed": parse_speed(args.speed),
        "ber": _float("ber", args.ber, 0.0, 0.5), "drop": _float("drop", args.drop, 0.0, 0.99),
        "stalls": _float("stalls", args.stalls, 0.0, 600.0), "start": start,
        "firmware": firmware, "record": args.record, "board": args.board, "fw_log": args.fw_log,
        "eeprom": args.eeprom, "clock_file": clock_file, "t0": t0,
        "core": getattr(args, "core", "unix"),
        "outages": parse_outages(getattr(args, "outage", [])),
        "ber_bursts": parse_ber_bursts(getattr(args, "ber_burst", [])),
        "batch_max_s": None if getattr(args, "batch_max_s", None) is None
        else _float("batch-max-s", args.batch_max_s, 0.001, 60.0),
    }


def _fields(option: str, text: str, form: str, example: str) -> list[str]:
    """The colon-separated numbers of one --outage/--ber-burst value, as many as form has."""
    parts = text.split(":")
    if len(parts) != form.count(":") + 1:
        raise UserError(f"--{option} {text!r}: expected {form}, e.g. {example}")
    return parts


def parse_wallboxes(items: list[str]) -> list[tuple[str, str, float]]:
    """--wallbox ws://HOST:PORT/ID@S values as (url, id, arrival s)."""
    out = []
    for text in items:
        where, at, arrive = text.rpartition("@")
        url, _, ident = (where if at else text).rpartition("/")
        if not url.startswith(("ws://", "wss://")) or not ident or "/" in url.split("//", 1)[1]:
            raise UserError(f"--wallbox {text!r}: expected ws://HOST:PORT/ID@S, e.g. "
                            "ws://127.0.0.1:9000/garage@60")
        out.append((url, ident, _float("wallbox", arrive, 0.0) if at else 0.0))
    if len({ident for _u, ident, _a in out}) < len(out):
        raise UserError("--wallbox: each wallbox needs its own ID")
    return out


def parse_outages(items: list[str]) -> list[tuple[float, float]]:
    out = []
    for text in items:
        parts = _fields("outage", text, "AT:SECONDS", "600:5")
        at = _float("outage", parts[0], 0.0)
        length = _float("outage", parts[1], 0.0, 86400.0 * 366)
        if length <= 0:
            raise UserError(f"--outage {text!r}: the failure must last more than 0 s")
        out.append((at, at + length))
    return out


def parse_ber_bursts(items: list[str]) -> list[tuple[float, float, float]]:
    out = []
    for text in items:
        parts = _fields("ber-burst", text, "FROM:TO:BER", "600:900:1e-3")
        a = _float("ber-burst", parts[0], 0.0)
        b = _float("ber-burst", parts[1], 0.0)
        if b <= a:
            raise UserError(f"--ber-burst {text!r}: TO must be after FROM")
        out.append((a, b, _float("ber-burst", parts[2], 0.0, 0.5)))
    return out


def default_t0(start_of_day_s: float, now: float) -> float:
    """The latest instant at that time of day (UTC) that is not after `now`."""
    t = now - now % 86400.0 + start_of_day_s
    return t - 86400.0 if t > now else t


def run_sim(args: argparse.Namespace) -> int:
    opt = options(args)
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        raise UserError("gridtap sim needs numpy: pip install 'gridtap[sim]'") from exc
    from gridtap_sim.board import BoardError, load_board
    from gridtap_sim.engine import Simulation
    from gridtap_sim.runner import FIRMWARE_DIR, SimError, VirtualBoard

    try:
        board = load_board(opt["board"])
    except BoardError as exc:
        raise UserError(str(exc)) from exc
    if opt["firmware"] is None and not (FIRMWARE_DIR / "gridtap_fw" / "app.py").exists():
        raise UserError("the firmware core (firmware/gridtap_fw/app.py) is not there yet; "
                        "pass --firmware SCRIPT to run another MicroPython program")
    command = None
    if opt["core"] != "unix":
        from gridtap_sim import qemu_m0
        if opt["firmware"] is not None:
            raise UserError(f"--firmware runs on the unix port only, not with --core {opt['core']}")
        try:
            command = qemu_m0.command("double" if opt["core"] == "qemu-m0-double" else "single")
        except qemu_m0.M0Missing as exc:
            raise UserError(f"--core {opt['core']}: {exc}") from exc
    vb_now: list[Any] = []  # the VirtualBoard once it exists: the inverter's clock is simulated time
    base = [0.0]  # Unix time of simulated t = 0
    lux = None
    if opt["luxpower"] is not None:
        from gridtap_sim.luxpower import Battery, Inverter

        kwh, kw, soc = opt["battery"]
        cell = Battery(capacity_wh=kwh * 1000, max_charge_w=kw * 1000, max_discharge_w=kw * 1000, soc_pct=soc)
        lux = Inverter(battery=cell,
                       clock=lambda: base[0] + (vb_now[0].now if vb_now else 0.0))
    fleet = None
    if opt["wallboxes"]:
        from gridtap_sim.wallbox import Fleet

        fleet = Fleet(opt["wallboxes"], clock=lambda: base[0] + (vb_now[0].now if vb_now else 0.0),
                      start=0.0, log=opt["wallbox_log"])
    sim = Simulation(board, opt["scenario"], opt["seed"], opt["start"],
                     battery=None if lux is None else lux.ac_power,
                     ev=None if fleet is None else fleet.grid_w)
    if lux is not None:  # self-consumption follows the house as the grid CT meters it (engine.house_net_w)
        lux.house_w = lambda t: sim.house_net_w
    sim.add_outages(opt["outages"])
    vb = VirtualBoard(sim, firmware=opt["firmware"], speed=opt["speed"], ber=opt["ber"], drop=opt["drop"],
                      stall_per_min=opt["stalls"], fw_log=opt["fw_log"], ber_bursts=opt["ber_bursts"],
                      command=command,
                      **({} if opt["batch_max_s"] is None else {"batch_max_s": opt["batch_max_s"]}))
    vb_now.append(vb)
    base[0] = opt["t0"] if opt["t0"] is not None else default_t0(sim.scn.start_of_day_s, time.time())
    datalogger = None
    if lux is not None:
        from gridtap_sim.luxpower import Datalogger

        lux.t = lux.clock()
        try:
            datalogger = Datalogger(lux, port=opt["luxpower"]).start()
        except OSError as exc:
            vb.close()
            raise UserError(f"--luxpower {opt['luxpower']}: cannot listen: {exc.strerror}") from exc
        print(f"luxpower: 127.0.0.1:{datalogger.port} datalogger {datalogger.serial} inverter {lux.serial}",
              file=sys.stderr, flush=True)
    if opt["eeprom"] and Path(opt["eeprom"]).exists():
        from gridtap_sim.eeprom import EepromError
        try:
            vb.eeprom.load_image(Path(opt["eeprom"]).read_bytes())
        except (OSError, EepromError) as exc:
            vb.close()
            raise UserError(f"--eeprom {opt['eeprom']}: {exc}") from exc
    clock = None
    if opt["clock_file"]:
        from gridtap.simclock import ClockWriter
        t0 = opt["t0"] if opt["t0"] is not None else default_t0(sim.scn.start_of_day_s, time.time())
        try:
            clock = ClockWriter(opt["clock_file"], t0)
        except UserError:
            vb.close()
            raise
        vb.clock_writer = clock
        print(f"clock: {opt['clock_file']} (simulated t=0 is Unix {t0:.0f})", file=sys.stderr, flush=True)
    if fleet is not None:
        fleet.start_t = base[0]   # simulated t = 0 as Unix time: the cars' arrivals count from it
        fleet.start()
        print(f"wallboxes: {', '.join(f'{u}/{i} (car at {a:g} s)' for u, i, a in opt['wallboxes'])}",
              file=sys.stderr, flush=True)
    print(f"pty: {vb.pty_path}", flush=True)
    print(f"scenario: {opt['scenario']} ({sim.scn.description}); seed {opt['seed']}; "
          f"firmware log: {vb.fw_log_path}", file=sys.stderr, flush=True)
    interrupted = False
    error: str | None = None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, stop)   # a service manager's stop ends the run cleanly too
    try:
        vb.run(opt["duration"])
    except KeyboardInterrupt:
        interrupted = True
    except SimError as exc:
        error = str(exc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        n_seconds = int(math.floor(vb.now))
        meta, arrays = vb.record_extras()
        if opt["record"]:
            sim.write_record(opt["record"], n_seconds, meta, arrays)
        if opt["eeprom"]:
            Path(opt["eeprom"]).write_bytes(bytes(vb.eeprom.data))
        vb.close()
        if datalogger is not None:
            datalogger.close()
        if fleet is not None:
            fleet.stop()
            for err in fleet.errors[-5:]:
                print(f"wallbox link: {err}", file=sys.stderr, flush=True)
        if clock is not None:
            clock.close()
    st = vb.stats
    print(f"simulated {vb.now:.1f} s in {st.wall_s:.1f} s wall ({vb.now / max(st.wall_s, 1e-9):.0f}x); "
          f"boots {len(st.boots)}, outages survived {len(st.deaths)}, EEPROM writes {st.ee_writes} "
          f"(torn {len(vb.eeprom.torn)}), UART bytes to/from board {st.uart_to_board}/{st.uart_from_board}"
          + (f"; record {opt['record']}" if opt["record"] else ""), file=sys.stderr)
    if error:
        raise UserError(error)
    return 130 if interrupted else 0
