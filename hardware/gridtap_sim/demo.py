"""`gridtap demo`: the whole stack on the virtual board, from one command to graphs and a report.

    gridtap demo                      # household-pv at 60x for 2 simulated hours, output in demo-out/
    gridtap demo --speed max --duration 600 --out /tmp/demo

It starts, as real processes: the virtual board (`gridtap sim`, the unmodified
firmware, scenario household-pv) publishing its simulated clock, the daemon
(`gridtap daemon --clock-file`, with its own rrdcached) on a generated config,
and mosquitto when it is installed. While it runs it prints the live power of
every sensor from the daemon's REST API and redraws the graphs; at the end (the
duration, Ctrl-C or SIGTERM) it stops every process it started, draws the final
graphs and compares each series' energy as the firmware counted it (the
daemon's totals of the board's registers) with the simulator's ground truth
(`--record`). A report is also written as `report.json`.

numpy (for reading the record) and the simulator are only imported inside the
command; the daemon never loads them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gridtap.errors import UserError
from gridtap_sim.demo_battery import PriceServer, Tracker, daemon_sections, demo_prices
from gridtap_sim.procs import Procs

SCENARIO = "household-pv"
# Simulated time per ADC batch: host bytes (ACKs, TIME_SET) reach the board at the next batch, so
# short batches keep the link's latency near a real board's; with one-second batches and a host
# attached the virtual board's HAL can also run out of heap (docs/e2e.md, finding 3).
BATCH_MAX_S = 0.05
MARKER = ".gridtap-demo"
WH_J = 3600.0


@dataclass(frozen=True)
class Series:
    """One RRD series of the demo config and where its truth lies in the simulator's record."""

    sensor: str     # sensor name in gridtap.toml
    role: str       # import | export | pulse
    id: str         # 32 hex
    index: int      # CT channel or pulse input


# household-pv on hardware/board.json: CT1 inverter, CT2 grid, CT3 kitchen; P1 grid import meter, P2 PV meter
SENSORS: tuple[tuple[str, str, int, bool], ...] = (
    ("pv-inverter", "ct", 0, True),
    ("grid", "ct", 1, True),
    ("kitchen", "ct", 2, False),
    ("grid-meter", "pulse", 0, False),
    ("pv-meter", "pulse", 1, False),
)


def sensor_id(name: str, role: str) -> str:
    """Stable 32-hex ids, so URLs stay the same from run to run."""
    return hashlib.md5(f"gridtap-demo/{name}/{role}".encode(), usedforsecurity=False).hexdigest()


def demo_series() -> list[Series]:
    out: list[Series] = []
    for name, kind, index, export in SENSORS:
        if kind == "ct":
            out.append(Series(name, "import", sensor_id(name, "import"), index))
            if export:
                out.append(Series(name, "export", sensor_id(name, "export"), index))
        else:
            out.append(Series(name, "pulse", sensor_id(name, "pulse"), index))
    return out


def sensors_toml() -> list[str]:
    """The [[sensor]] tables of the demo's sensors (every input of the reference board), as lines."""
    lines: list[str] = []
    for name, kind, index, export in SENSORS:
        lines += ["[[sensor]]", f'name = "{name}"', f'kind = "{kind}"']
        if kind == "ct":
            lines += [f"channel = {index}", f'id = "{sensor_id(name, "import")}"']
            if export:
                lines.append(f'export_id = "{sensor_id(name, "export")}"')
        else:
            lines += [f"input = {index}", f'id = "{sensor_id(name, "pulse")}"', "meter_constant = 1000",
                      'unit = "wh"']
        lines.append("")
    return lines


# The simulated LuxPower inverter's serials (gridtap_sim.luxpower defaults)
LUX_DATALOGGER, LUX_INVERTER = "2222222222", "5555555555"


def daemon_toml(out: Path, tty: Path, api_port: int, mqtt_port: int | None,
                battery: list[str] | None = None) -> str:
    lines = [
        "# written by `gridtap demo`; the daemon runs on the simulator's clock (--clock-file)",
        "[daemon]",
        f'state_dir = "{out / "state"}"',
        f'rrd_dir = "{out / "rrd"}"',
        "rrdcached_flush_s = 60",
        'bind = "127.0.0.1"',
        f"port = {api_port}",
        "api = true",
        "state_flush_s = 60",
        "",
        "[board]",
        f'port = "{tty}"',
        "baud = 115200",
        "",
    ]
    lines += sensors_toml()
    if mqtt_port is not None:
        lines += ["[mqtt]", 'host = "127.0.0.1"', f"port = {mqtt_port}", 'device_id = "gridtap-demo"', ""]
    if battery is not None:  # the simulated battery (gridtap sim --luxpower) and its planner (demo_battery)
        lines += battery
    return "\n".join(lines)


# -- options ----------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run board, daemon, REST API and graphs on the virtual board, then "
                                    "report energy against the simulator's truth (needs numpy)",
                       description="Run the whole stack on the virtual board (household-pv): the "
                                   "simulator with the unmodified firmware, the daemon on the simulated "
                                   "clock with its rrdcached, mosquitto if installed; print live power, "
                                   "draw graphs, and compare the firmware's energy with the truth.")
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="output directory: config, state, RRDs, graphs, logs, record (default demo-out)")
    p.add_argument("--speed", default="60", help="simulated seconds per wall second, or max (default 60)")
    p.add_argument("--duration", default="7200", metavar="S",
                   help="simulated seconds to run (default 7200: two hours)")
    p.add_argument("--start", default=None, metavar="HH:MM",
                   help="time of day (UTC) where the simulation starts (default 11:00: the default two "
                        "hours rise to the PV peak at 13:00; with --scenario ev 14:00)")
    p.add_argument("--scenario", default="household-pv", choices=("household-pv", "ev"),
                   help="household-pv (default): the house, its PV and a battery; ev: three simulated "
                        "OCPP wallboxes charging from PV surplus under a 25 A connection limit, their "
                        "draw in the grid CT (gridtap_sim.demo_ev)")
    p.add_argument("--port", default=None, help="REST API port on 127.0.0.1 (default: a free one)")
    p.add_argument("--seed", default="1", help="simulator seed (default 1)")
    p.add_argument("--no-mqtt", action="store_true",
                   help="do not start mosquitto; the daemon runs without MQTT")
    p.add_argument("--status-every", default="300", metavar="S",
                   help="simulated seconds between status lines (default 300)")
    p.add_argument("--graph-every", default="1800", metavar="S",
                   help="simulated seconds between graph redraws while running (default 1800)")
    p.set_defaults(func=run)


def _number(name: str, text: str, lo: float, hi: float) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise UserError(f"--{name} must be a number, got {text!r}") from exc
    if not lo <= v <= hi:
        raise UserError(f"--{name} must be between {lo:g} and {hi:g}, got {text}")
    return v


def options(args: argparse.Namespace) -> dict[str, Any]:
    from gridtap_sim.cli import parse_seed, parse_speed, parse_start

    speed = parse_speed(args.speed)
    duration = _number("duration", args.duration, 10.0, 86400.0 * 366)
    scenario = getattr(args, "scenario", "household-pv")
    start = parse_start(args.start or ("14:00" if scenario == "ev" else "11:00"))
    assert start is not None
    seed = parse_seed(args.seed)
    port = None
    if args.port is not None:
        try:
            port = int(args.port)
        except ValueError as exc:
            raise UserError(f"--port must be a TCP port number, got {args.port!r}") from exc
        if not 1 <= port <= 65535:
            raise UserError(f"--port must be 1..65535, got {port}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(f"--out {out}: the directory is not empty and was not made by gridtap demo; "
                        "give a new or empty directory")
    sock = out.resolve() / "state" / "rrdcached.sock"
    if len(str(sock)) > 100:
        raise UserError(f"--out {out}: the path is too long for rrdcached's unix socket ({sock}); "
                        "use a shorter one")
    return {"out": out, "speed": speed, "speed_text": "max" if speed == math.inf else f"{speed:g}",
            "duration": duration, "start": start, "seed": seed, "port": port, "scenario": scenario,
            "mqtt": not getattr(args, "no_mqtt", False),
            "status_every": _number("status-every", args.status_every, 10.0, 86400.0),
            "graph_every": _number("graph-every", args.graph_every, 60.0, 86400.0 * 366)}


def demo_t0(start_of_day_s: float, duration_s: float, now: float) -> float:
    """The latest instant at that time of day (UTC) from which the whole run lies in the past."""
    t = now - now % 86400.0 + start_of_day_s
    while t + duration_s > now:
        t -= 86400.0
    return t


def time_sync_s(speed: float) -> float:
    """The daemon's board-clock re-sync threshold: its wall-time latency (tens of ms) times the speed-up."""
    return 10.0 if speed == math.inf else max(1.0, speed / 10.0)


def prepare_out(out: Path) -> Path:
    """Create the output directory, or clear what a previous demo left in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by gridtap demo; the next demo run clears its files here\n")
        for d in ("state", "rrd"):
            shutil.rmtree(out / d, ignore_errors=True)
        for f in out.iterdir():
            if f.suffix in (".png", ".log", ".npz", ".bin", ".toml", ".conf", ".json", ".tty"):
                f.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: {exc.strerror or exc}") from exc
    return out.resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def mosquitto_exe() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


# -- the energy comparison -------------------------------------------------------------------------

def truth_wh(arrays: dict[str, Any], meta: dict[str, Any], s: Series, until_s: float) -> float:
    """The simulator's true energy of a series from simulated t = 0 to `until_s`, in Wh.

    CT series sum the record's per-second import (or export) energy, the last
    second pro rata; pulse series count the meter's true pulses that started
    before `until_s` times its energy per pulse.
    """
    if s.role == "pulse":
        meters = {int(mt["input"]): float(mt["unit_per_pulse"]) for mt in meta["meters"]}
        starts = arrays["pulse_t_s"][arrays["pulse_input"] == s.index]
        return float((starts < until_s).sum()) * meters[s.index] / WH_J
    col = arrays["e_imp_j" if s.role == "import" else "e_exp_j"][:, s.index]
    n = len(col)
    until = min(max(until_s, 0.0), float(n))
    k = int(math.floor(until))
    e = float(col[:k].sum())
    if k < n:
        e += float(col[k]) * (until - k)
    return e / WH_J


def compare(arrays: dict[str, Any], meta: dict[str, Any], t0: float,
            totals: dict[str, tuple[int, float]]) -> list[dict[str, Any]]:
    """Per series: the firmware's energy (daemon total of the register, mWh) against the truth up to
    the board time of that register reading (the daemon keeps the time of the last advance)."""
    rows: list[dict[str, Any]] = []
    record_s = float(len(arrays["t_s"]))
    for s in demo_series():
        row: dict[str, Any] = {"sensor": s.sensor, "series": s.role, "id": s.id}
        got = totals.get(s.id)
        if got is None:
            row.update(firmware_wh=None, truth_wh=None, error_pct=None, until_s=None)
            rows.append(row)
            continue
        milli, t_board = got
        # a register stamped before the board clock was set (a series that never moved since its
        # first reading) stands for the whole run
        until = min(t_board - t0, record_s) if t_board >= t0 else record_s
        fw = milli / 1000.0
        tr = truth_wh(arrays, meta, s, until)
        err = (fw - tr) / tr * 100.0 if tr >= 1.0 else None
        row.update(firmware_wh=round(fw, 3), truth_wh=round(tr, 3), diff_wh=round(fw - tr, 3),
                   error_pct=None if err is None else round(err, 3), until_s=round(until, 1))
        rows.append(row)
    return rows


def read_totals(state_dir: Path) -> dict[str, tuple[int, float]]:
    """The daemon's per-series totals (mWh) and the board time of the register they come from."""
    from gridtap.store.epochs import CounterStore

    path = state_dir / "counters.sqlite"
    if not path.exists():
        return {}
    store = CounterStore(path)
    try:
        return {sid: (st.total, st.t) for sid, st in store.state.items()}
    finally:
        store.close()


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def read_pty_line(p: subprocess.Popen[bytes], log: Path, timeout: float = 60.0,
                  stopped: Callable[[], bool] = lambda: False) -> str:
    """The simulator prints `pty: /dev/pts/N` on stdout once the board is ready."""
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            if stopped():
                raise KeyboardInterrupt
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError(f"the virtual board did not start within {timeout:.0f} s; "
                                f"{log}:\n{_tail(log)}")
            if sel.select(min(left, 0.5)):
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    p.wait(timeout=10)
                    raise UserError(f"the virtual board exited ({p.returncode}) before it was ready; "
                                    f"{log}:\n{_tail(log)}")
                buf += chunk
    finally:
        sel.close()
    line = buf.split(b"\n", 1)[0].decode(errors="replace")
    if not line.startswith("pty: /"):
        raise UserError(f"the virtual board said {line!r}, not its pty")
    return line[5:].strip()


# -- the REST API and graphs -------------------------------------------------------------------------

class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.ok = 0
        self.failed = 0

    def url(self, sid: str, interval: str = "minute") -> str:
        return f"{self.base}/sensor/{sid}?version=1.0&interval={interval}&unit=watt"

    def get(self, sid: str, interval: str = "minute", count: bool = True) -> list[Any] | None:
        try:
            with urllib.request.urlopen(self.url(sid, interval), timeout=3.0) as r:
                data = json.loads(r.read())
        except (OSError, urllib.error.URLError, ValueError):
            self.failed += count
            return None
        self.ok += count
        return data if isinstance(data, list) else None

    def latest(self, sid: str) -> float | None:
        """The newest per-second value of the minute interval (W), or None."""
        pts = self.get(sid)
        for item in reversed(pts or []):
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float):
                return float(item[1])
        return None


def draw_graphs(cfg_path: Path, out: Path, start: int, end: int, quiet: bool) -> list[Path]:
    """`gridtap graph --start --end` of every sensor over the simulated window, as <sensor>.png;
    a sensor with no RRD yet is skipped."""
    from gridtap.commands.graph import flush_for_reading, graph_args
    from gridtap.config import load_config

    cfg = load_config(cfg_path)
    sensors = cfg.all_sensors  # virtual ones (wallboxes, expression meters) have RRDs too
    flush_for_reading(cfg, [cfg.daemon.rrd_dir / f"{sid}.rrd" for s in sensors for sid, _r in s.series])
    done: list[Path] = []
    for s in sensors:
        png = out / f"{s.name}.png"
        try:
            cmd = graph_args(cfg, s, "day", png, end, 800, 250, start=start)
        except UserError:
            continue  # no RRD yet
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0:
            done.append(png)
        elif not quiet:
            print(f"  graph {png.name}: rrdtool graph failed: {res.stderr.strip()}", file=sys.stderr)
    return done


FIRST_COUNTER = re.compile(r"rrd ([0-9a-f]{32}): new file, first counter (\d+) at (\d+)")


def graph_energy(rrd_dir: Path, daemon_log: Path, start: int, end: int) -> dict[str, tuple[float, float]]:
    """Per series (id): the energy its graph's legend shows over start..end (Wh, from the RRD's
    rows) and the counter at the RRD's first value (Wh, from the daemon's log): the energy the
    firmware counted before the daemon first stored the series. Together they are the series'
    total when the RRDs hold every step."""
    from gridtap.commands.graph import series_energy

    firsts = {m.group(1): int(m.group(2)) for m in FIRST_COUNTER.finditer(_tail(daemon_log, 10**7))}
    out: dict[str, tuple[float, float]] = {}
    for s in demo_series():
        path = rrd_dir / f"{s.id}.rrd"
        if path.exists() and s.id in firsts:
            out[s.id] = (series_energy(path, start, end) / 1000.0, firsts[s.id] / 1000.0)
    return out


def hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def fmt_w(v: float | None) -> str:
    return "     -  " if v is None else f"{v:+7.0f} W"


# -- the run ------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, opt: dict[str, Any], stream: TextIO = sys.stdout) -> None:
        self.opt = opt
        self.say_to = stream
        self.out = prepare_out(opt["out"])
        self.procs = Procs()
        self.stop_requested: str | None = None
        self.t0 = demo_t0(opt["start"], opt["duration"], time.time())
        self.cfg = self.out / "gridtap.toml"
        self.clock_path = self.out / "clock.bin"
        self.record = self.out / "record.npz"
        self.api: Api | None = None
        self.mqtt_port: int | None = None
        self.statuses = 0
        self.wall0 = 0.0
        self.lux_port = 0
        self.prices = demo_prices(self.t0, opt["duration"])
        self.price_server: PriceServer | None = None
        self.tracker = Tracker(self.prices)
        self.grid_w: float | None = None  # the grid CT's power at the latest status line
        self.status_t = self.t0  # the simulated time of the latest status line
        self.battery: Any = None  # a LuxClient that watches the simulated battery for the status lines

    def say(self, text: str) -> None:
        print(text, file=self.say_to, flush=True)

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stop_requested is None:
            self.stop_requested = signal.Signals(signum).name

    def start(self) -> None:
        o = self.opt
        api_port = o["port"] if o["port"] is not None else free_port()
        if not port_free(api_port):
            raise UserError(f"--port {api_port} is already in use on 127.0.0.1")
        mosq = mosquitto_exe() if o["mqtt"] else None
        if mosq is not None:
            self.mqtt_port = free_port()
            conf = self.out / "mosquitto.conf"
            conf.write_text(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                            "log_dest stderr\n")
            self.procs.start("mosquitto", [mosq, "-c", str(conf)], self.out / "mosquitto.log")
        elif o["mqtt"]:
            self.say("mosquitto is not installed (not on PATH nor /usr/sbin): running without MQTT")
        else:
            self.say("--no-mqtt: running without MQTT")
        sim_log = self.out / "sim.log"
        self.lux_port = free_port()
        self.wall0 = time.monotonic()
        sim = self.procs.start("sim", [
            sys.executable, "-m", "gridtap.cli", "sim", "--scenario", SCENARIO, "--speed", o["speed_text"],
            "--seed", str(o["seed"]), "--duration", repr(o["duration"]), "--record", str(self.record),
            "--clock-file", str(self.clock_path), "--t0", repr(self.t0), "--batch-max-s", f"{BATCH_MAX_S:g}",
            "--fw-log", str(self.out / "firmware.log"), *self.sim_options()], sim_log,
            stdout_pipe=True)
        pty = read_pty_line(sim, sim_log, stopped=lambda: self.stop_requested is not None)
        tty = self.out / "board.tty"
        tty.unlink(missing_ok=True)
        tty.symlink_to(pty)
        self.cfg.write_text(self.config_text(tty, api_port))
        self.attach()
        if self.mqtt_port is not None:
            self._wait_port(self.mqtt_port, "mosquitto", self.out / "mosquitto.log")
        self.procs.start("daemon", [
            sys.executable, "-m", "gridtap.cli", "daemon", "-c", str(self.cfg), "--clock-file",
            str(self.clock_path), "--time-sync-s", f"{time_sync_s(o['speed']):g}", "--log-level", "info"],
            self.out / "daemon.log")
        self.api = Api(api_port)
        self._wait_api()

    # -- what a scenario adds (gridtap_sim.demo_ev overrides these) --

    def sim_options(self) -> list[str]:
        """`gridtap sim` options beyond the board's: the simulated LuxPower battery."""
        return ["--luxpower", str(self.lux_port)]

    def config_text(self, tty: Path, api_port: int) -> str:
        self.price_server = PriceServer(self.prices)
        battery = daemon_sections(self.lux_port, self.price_server.url, LUX_DATALOGGER, LUX_INVERTER)
        return daemon_toml(self.out, tty, api_port, self.mqtt_port, battery)

    def attach(self) -> None:
        """Watch the simulated devices for the status lines (the battery, through its datalogger)."""
        from gridtap.control.luxpower.client import LinkSettings, LuxClient

        self.battery = LuxClient("127.0.0.1", self.lux_port, LUX_DATALOGGER, LUX_INVERTER,
                                 LinkSettings(backoff_min_s=0.5, backoff_max_s=2.0)).start()

    def say_devices(self) -> None:
        neg = [(a, b) for a, b, p in self.prices if p < 0]
        self.say(f"  battery: a simulated LuxPower inverter (10 kWh, 3 kW) on the grid CT, 127.0.0.1:"
                 f"{self.lux_port}; the daemon's planner runs it on Agile-shaped prices from a local "
                 f"Octopus API ({self.price_server.url if self.price_server else '-'}), below zero "
                 f"{hhmm(neg[0][0])[:5]}-{hhmm(neg[-1][1])[:5]} UTC")

    def device_header(self) -> str:
        return f"{'battery':>14}"

    def device_status(self) -> str:
        soc, _age = (None, None) if self.battery is None else self.battery.soc()
        bw = None if self.battery is None else self.battery.battery_w()
        batt = "-" if soc is None or bw is None else f"{bw:+.0f} W {soc:.0f} %"
        self.tracker.add(self.status_t, bw, self.grid_w)
        return f"{batt:>14}"

    def _wait_port(self, port: int, name: str, log: Path) -> None:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            p = self.procs.procs.get(name)
            if p is not None and p.poll() is not None:
                raise UserError(f"{name} exited ({p.returncode}) at start; {log}:\n{_tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise UserError(f"{name} did not listen on 127.0.0.1:{port} within 10 s; {log}:\n{_tail(log)}")

    def _wait_api(self) -> None:
        assert self.api is not None
        sid = demo_series()[0].id
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.stop_requested is not None:
                raise KeyboardInterrupt
            self._check_alive()
            if self.api.get(sid, count=False) is not None:
                return
            time.sleep(0.1)
        raise UserError(f"the daemon's REST API did not answer within 30 s; {self.out / 'daemon.log'}:\n"
                        f"{_tail(self.out / 'daemon.log')}")

    def _check_alive(self) -> None:
        d = self.procs.procs.get("daemon")
        if d is not None and d.poll() is not None:
            raise UserError(f"the daemon exited ({d.returncode}); {self.out / 'daemon.log'}:\n"
                            f"{_tail(self.out / 'daemon.log')}")

    def banner(self) -> None:
        o = self.opt
        assert self.api is not None
        end = self.t0 + o["duration"]
        speed = "as fast as it goes" if o["speed"] == math.inf else f"at {o['speed']:g}x"
        span = f"{o['duration'] / 3600:.4g} h" if o["duration"] >= 3600 else f"{o['duration'] / 60:.4g} min"
        day = datetime.fromtimestamp(self.t0, UTC).strftime("%Y-%m-%d")
        self.say(f"gridtap demo: {SCENARIO} on the virtual board {speed}; simulated {day} "
                 f"{hhmm(self.t0)[:5]}..{hhmm(end)[:5]} UTC ({span}); "
                 f"output in {o['out']}/")
        self.say(f"  web page: {self.api.base}/  (live power, today's energy, graphs, health)")
        self.say("  REST API (Flukso FLM), e.g.:")
        self.say(f"    curl '{self.api.url(demo_series()[0].id)}'")
        for s in demo_series():
            self.say(f"    {s.sensor:<12} {s.role:<7} {self.api.base}/sensor/{s.id}")
        if self.mqtt_port is not None:
            if shutil.which("mosquitto_sub"):  # Debian's mosquitto-clients
                self.say(f"  MQTT: mosquitto_sub -h 127.0.0.1 -p {self.mqtt_port} -t '/sensor/#' -v")
            else:
                self.say(f"  MQTT: broker on 127.0.0.1:{self.mqtt_port}, topics /sensor/# (mosquitto_sub is "
                         "in Debian's mosquitto-clients)")
        self.say(f"  graphs: {o['out']}/<sensor>.png over the simulated window, redrawn every "
                 f"{o['graph_every'] / 60:g} simulated min and at the end")
        self.say_devices()
        self.say(f"  logs: {o['out']}/daemon.log, sim.log, firmware.log; Ctrl-C stops everything cleanly")
        names = "  ".join(f"{n:>12}" for n, *_ in SENSORS)
        self.say(f"  {'time (UTC)':<10} {'speed':>6}  {names}  {self.device_header()}")

    def status(self, now: float, speed: float | None) -> None:
        assert self.api is not None
        cols = []
        for name, kind, _i, export in SENSORS:
            if kind == "ct":
                imp = self.api.latest(sensor_id(name, "import"))
                exp = self.api.latest(sensor_id(name, "export")) if export else 0.0
                v = None if imp is None or exp is None else imp - exp
            else:
                v = self.api.latest(sensor_id(name, "pulse"))
            cols.append(f"{fmt_w(v):>12}")
            if name == "grid":
                self.grid_w = v
        self.status_t = now
        sp = "" if speed is None else f"{speed:5.0f}x"
        self.say(f"  {hhmm(now):<10} {sp:>6}  " + "  ".join(cols) + f"  {self.device_status()}")
        self.statuses += 1

    def run(self) -> None:
        """Status lines and graphs until the simulator ends or a stop is requested."""
        from gridtap.simclock import ClockReader

        o = self.opt
        clock = ClockReader(self.clock_path)
        try:
            next_status = self.t0 + o["status_every"]
            next_graph = self.t0 + o["graph_every"]
            last: tuple[float, float] | None = None
            while self.stop_requested is None:
                sim = self.procs.procs["sim"]
                if sim.poll() is not None:
                    break
                self._check_alive()
                now = clock.now()
                if now >= next_status:
                    w = time.monotonic()
                    speed = None if last is None or w <= last[1] else (now - last[0]) / (w - last[1])
                    self.status(now, speed)
                    last = (now, w)
                    next_status = now - (now - self.t0) % o["status_every"] + o["status_every"]
                if now >= next_graph:
                    draw_graphs(self.cfg, self.out, int(self.t0), int(now), quiet=True)
                    next_graph = now + o["graph_every"]
                time.sleep(0.1)
        finally:
            clock.close()

    def finish(self) -> dict[str, Any]:
        """Stop the board (it writes the record), then the daemon (it flushes), graphs, report."""
        from gridtap.simclock import ClockReader

        sim = self.procs.procs.get("sim")
        if self.battery is not None:
            self.battery.close()
            self.battery = None
        sim_rc = self.procs.stop("sim", timeout=120.0)
        if self.price_server is not None:
            self.price_server.close()
            self.price_server = None
        wall = time.monotonic() - self.wall0
        reader = ClockReader(self.clock_path)
        sim_end = reader.now()
        reader.close()
        time.sleep(0.5)   # the daemon reads the board's last bytes
        daemon_rc = self.procs.stop("daemon", timeout=60.0)
        if sim is not None and sim_rc not in (0, 130, -signal.SIGTERM):
            raise UserError(f"the virtual board failed ({sim_rc}); {self.out / 'sim.log'}:\n"
                            f"{_tail(self.out / 'sim.log')}")
        end = math.ceil(sim_end)
        graphs = draw_graphs(self.cfg, self.out, int(self.t0), end, quiet=False)
        legends = graph_energy(self.out / "rrd", self.out / "daemon.log", int(self.t0), end)
        totals = read_totals(self.out / "state")
        mqtt = self.mqtt_counters(totals) if self.mqtt_port is not None else None
        self.procs.stop("mosquitto", timeout=10.0)
        if not self.record.exists():
            raise UserError(f"the virtual board wrote no record {self.record}; {self.out / 'sim.log'}:\n"
                            f"{_tail(self.out / 'sim.log')}")
        from gridtap_sim.engine import load_record

        meta, arrays = load_record(self.record)
        rows = compare(arrays, meta, self.t0, totals)
        for row in rows:
            got = legends.get(row["id"])
            row["graph_wh"] = None if got is None else round(got[0], 3)
            row["before_graph_wh"] = None if got is None else round(got[1], 3)
        report = {
            "scenario": SCENARIO, "seed": self.opt["seed"], "t0": self.t0,
            "requested_speed": self.opt["speed_text"], "duration_s": self.opt["duration"],
            "simulated_s": round(float(meta.get("sim_s", sim_end - self.t0)), 3),
            "sim_wall_s": round(float(meta.get("wall_s", wall)), 3),
            "demo_wall_s": round(time.monotonic() - self.wall0, 3),
            "stopped_by": self.stop_requested or "duration",
            "daemon_exit": daemon_rc,
            "rest": {"base": None if self.api is None else self.api.base,
                     "answers": 0 if self.api is None else self.api.ok,
                     "failures": 0 if self.api is None else self.api.failed},
            "mqtt": mqtt,
            "boots": [[round(float(t), 3), int(c)] for t, c in meta.get("boots", [])],
            "graphs": [g.name for g in graphs],
            "energy": rows,
            **({"battery": self.tracker.slots()} if self.tracker.samples else {}),
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        self.print_report(report)
        return report

    def mqtt_counters(self, totals: dict[str, tuple[int, float]]) -> dict[str, Any]:
        """The broker's retained `/sensor/<id>/counter` of each series against the daemon's totals."""
        import threading

        import paho.mqtt.client as mqtt

        got: dict[str, float] = {}
        done = threading.Event()
        want = {s.id for s in demo_series()}

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            parts = msg.topic.split("/")
            try:
                val = json.loads(msg.payload)
                if len(parts) == 4 and parts[2] in want:
                    got[parts[2]] = float(val[1])
            except (ValueError, TypeError, IndexError):
                pass
            if want <= got.keys():
                done.set()

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gridtap-demo-{os.getpid()}")
        c.on_message = on_message
        c.on_connect = lambda cl, ud, fl, rc, pr=None: cl.subscribe("/sensor/+/counter")
        try:
            assert self.mqtt_port is not None
            c.connect("127.0.0.1", self.mqtt_port, keepalive=10)
        except OSError as exc:
            return {"error": f"cannot connect to mosquitto: {exc}"}
        c.loop_start()
        done.wait(3.0)
        c.loop_stop()
        c.disconnect()
        match = sum(1 for sid, wh in got.items()
                    if sid in totals and abs(wh - totals[sid][0] / 1000.0) < 0.0015)
        missing = [f"{s.sensor} {s.role}" for s in demo_series() if s.id not in got]
        return {"retained_counters": len(got), "equal_to_daemon_totals": match, "series": len(want),
                "missing": missing}

    def say_legends(self, r: dict[str, Any]) -> None:
        """Whether the graphs' legends add up to the firmware's registers."""
        drawn = [row for row in r["energy"] if row.get("graph_wh") is not None]
        if not drawn:
            return
        before = max(row["before_graph_wh"] for row in drawn)
        equal = sum(1 for row in drawn
                    if abs(row["graph_wh"] + row["before_graph_wh"] - row["firmware_wh"]) < 0.5)
        self.say(f"graph Wh: the legends of the graphs, each series' counter delta over the simulated "
                 f"window as its RRD holds it; with what the board counted before the daemon first "
                 f"stored it (its clock not yet set: up to {before:.1f} Wh, daemon.log \"first counter\") "
                 f"they equal the firmware's figure to the Wh for {equal} of {len(drawn)} series")

    def print_report(self, r: dict[str, Any]) -> None:
        self.say("")
        sim_s, wall = r["simulated_s"], r["sim_wall_s"]
        self.say(f"simulated {sim_s:.0f} s ({sim_s / 3600:.2f} h) in {wall:.1f} s wall: "
                 f"{sim_s / max(wall, 1e-9):.1f}x (asked: {r['requested_speed']}); "
                 f"stopped by {r['stopped_by']}; the whole demo took {r['demo_wall_s']:.1f} s")
        resets = [(t, c) for t, c in r["boots"][1:]]
        if resets:
            why = {2: "brownout", 3: "watchdog: the firmware crashed, see firmware.log", 4: "soft reset"}
            self.say(f"the board rebooted {len(resets)} time(s): "
                     + ", ".join(f"at {t:.0f} s ({why.get(c, f'cause {c}')})" for t, c in resets)
                     + "; each loses the energy counted since the board's last EEPROM save")
        self.say("energy, firmware registers (via the daemon) against the simulator's truth:")
        self.say(f"  {'sensor':<12} {'series':<7} {'firmware Wh':>12} {'truth Wh':>12} {'diff Wh':>9} "
                 f"{'error':>8} {'graph Wh':>10}")
        for row in r["energy"]:
            if row["firmware_wh"] is None:
                self.say(f"  {row['sensor']:<12} {row['series']:<7} {'(no data)':>12}")
                continue
            err = "-" if row["error_pct"] is None else f"{row['error_pct']:+.2f} %"
            graph = "-" if row.get("graph_wh") is None else f"{row['graph_wh']:.1f}"
            self.say(f"  {row['sensor']:<12} {row['series']:<7} {row['firmware_wh']:12.1f} "
                     f"{row['truth_wh']:12.1f} {row['diff_wh']:+9.2f} {err:>8} {graph:>10}")
        self.say("  (CT errors are the board's uncalibrated CT/VT/ADC errors; pulse series are exact "
                 "up to a pulse in flight; error \"-\": under 1 Wh of truth, nothing to compare)")
        self.say_legends(r)
        for line in self.tracker.report():
            self.say(line)
        rest = r["rest"]
        self.say(f"REST API: {rest['answers']} answers, {rest['failures']} failures")
        if r["mqtt"] is None:
            self.say("MQTT: not run" + ("" if not self.opt["mqtt"] else " (mosquitto is not installed)"))
        elif "error" in r["mqtt"]:
            self.say(f"MQTT: {r['mqtt']['error']}")
        else:
            m = r["mqtt"]
            none = f" (none for {', '.join(m['missing'])})" if m["missing"] else ""
            self.say(f"MQTT: retained counters for {m['retained_counters']} of {m['series']} series{none}, "
                     f"{m['equal_to_daemon_totals']} equal to the daemon's totals")
        out = self.opt["out"]
        self.say(f"graphs: {', '.join(str(Path(out) / g) for g in r['graphs']) or 'none'}")
        self.say(f"report: {Path(out) / 'report.json'}")


def run(args: argparse.Namespace) -> int:
    opt = options(args)
    try:
        import numpy  # noqa: F401

        import gridtap_sim.engine  # noqa: F401
    except ImportError as exc:
        raise UserError("gridtap demo needs the simulator and numpy: pip install 'gridtap[sim]'") from exc
    if shutil.which("rrdtool") is None or shutil.which("rrdcached") is None:
        raise UserError("gridtap demo needs rrdtool and rrdcached; run `make setup`")
    if opt["scenario"] == "ev":
        from gridtap_sim.demo_ev import EvDemo

        demo: Demo = EvDemo(opt)
    else:
        demo = Demo(opt)
    previous = {s: signal.signal(s, demo.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        demo.start()
        demo.banner()
        demo.run()
        demo.finish()
    finally:
        if demo.battery is not None:
            demo.battery.close()
        demo.procs.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return 130 if demo.stop_requested else 0
