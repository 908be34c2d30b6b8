"""The local web page in a real headless browser against a daemon fed by the virtual board (#15 item 5).

The virtual board (`gridtap sim`, scenario household-pv: the unmodified
firmware on the simulator, at real speed) talks to the daemon over a pty; the
daemon serves the page on its REST API's port. Chromium (Debian's chromium
and chromium-driver, driven by selenium) loads it, and every number the page
shows is checked against the REST API's own answer for the same series and
instant: live power, today's energy, the graphs' points, the board's health
and the upload destinations. The board runs SPEED times faster than real
time and the daemon on its published clock (as `gridtap demo` runs them), so
the page, which takes its "now" from the daemon, has whole minutes to draw
within seconds. A screenshot is kept in the test's directory
($GRIDTAP_SCREENSHOT names a copy).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gridtap import daemon as daemon_module
from gridtap.config import parse_config
from gridtap.daemon import Daemon
from gridtap.outputs import web
from gridtap.simclock import ClockReader
from gridtap_sim.procs import stop_process
from tests.hub.browser import chromium
from tests.support.flukso_server import FluksoServer

KEY = "0123456789abcdef0123456789abcdef"
# household-pv on hardware/board.json: CT1 inverter, CT2 grid, CT3 kitchen; P1 grid meter, P2 PV meter
PV, PV_EXP = "f" * 31 + "1", "f" * 31 + "2"
GRID, GRID_EXP = "f" * 31 + "3", "f" * 31 + "4"
KITCHEN, PV_METER = "f" * 31 + "5", "f" * 31 + "6"
ELECTRIC = [PV, PV_EXP, GRID, GRID_EXP, KITCHEN, PV_METER]
SPEED = 20  # simulated seconds per wall second
PAGE_BUDGET = 32 * 1024  # bytes of HTML, script and style together: a router's flash and a slow link


def config(tmp: Path, tty: str, flukso_url: str) -> str:
    return f"""
[daemon]
state_dir = "{tmp / "state"}"
rrdcached_flush_s = 3600
bind = "127.0.0.1"
port = 0
state_flush_s = 5

[board]
port = "{tty}"
baud = 115200

[[sensor]]
name = "pv-inverter"
kind = "ct"
channel = 0
id = "{PV}"
export_id = "{PV_EXP}"

[[sensor]]
name = "grid"
kind = "ct"
channel = 1
id = "{GRID}"
export_id = "{GRID_EXP}"

[[sensor]]
name = "kitchen"
kind = "ct"
channel = 2
id = "{KITCHEN}"

[[sensor]]
name = "pv-meter"
kind = "pulse"
input = 1
id = "{PV_METER}"
meter_constant = 1000

[flukso]
base_url = "{flukso_url}"
key_file = "{tmp / "device.key"}"
interval_s = 300
"""


def wait(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def virtual_board(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`gridtap sim` SPEED times faster than real time, publishing its clock; returns the process and
    its pty. The daemon runs on that clock (as `gridtap demo` runs it), so the graphs have whole
    minutes to show within seconds."""
    exe = Path(sys.executable).parent / "gridtap"
    proc = subprocess.Popen([str(exe), "sim", "--scenario", "household-pv", "--speed", str(SPEED),
                             "--seed", "1", "--batch-max-s", "0.05", "--fw-log", str(tmp / "fw.log"),
                             "--clock-file", str(tmp / "clock")],
                            stdout=subprocess.PIPE, stderr=open(tmp / "sim.log", "wb"))  # noqa: SIM115
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("pty: /"), f"the virtual board said {line!r}: {(tmp / 'sim.log').read_text()}"
    return proc, line[5:].strip()


@pytest.fixture
def live_daemon(short_tmp: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, str, subprocess.Popen[bytes]]]:
    monkeypatch.setattr(daemon_module, "SPOOL_COMMIT_S", 2.0)
    (short_tmp / "device.key").write_text(KEY + "\n")
    proc, tty = virtual_board(short_tmp)
    srv = FluksoServer({sid: KEY for sid in ELECTRIC})
    srv.start()
    daemon = Daemon(parse_config(config(short_tmp, tty, srv.url), short_tmp / "gridtap.toml"),
                    clock=ClockReader(short_tmp / "clock"))
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    try:
        daemon.start()
        thread.start()
        assert daemon.api is not None
        yield daemon, f"http://127.0.0.1:{daemon.api.port}", proc
    finally:
        daemon.request_stop()
        thread.join(timeout=10)
        daemon.close()
        srv.stop()
        stop_process(proc, 20)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian chromium through selenium, a fresh profile (the hub's tests' kit)."""
    with chromium() as drv:
        drv.set_window_size(1200, 1500)
        yield drv


def rest(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def series(base: str, sid: str, query: str) -> list[list[Any]]:
    points: list[list[Any]] = rest(base, f"/sensor/{sid}?version=1.0&unit=watt&{query}")
    return points


def agree(check: Callable[[], str | None], tries: int = 8, pause: float = 2.0) -> None:
    """Run a page-versus-API comparison until it agrees: the page refreshes on its own timers, so a
    value may move between its read and ours; a real disagreement stays."""
    why: str | None = None
    for i in range(tries):
        why = check()
        if why is None:
            return
        if i + 1 < tries:
            time.sleep(pause)
    raise AssertionError(why)


def test_the_page_shows_what_the_rest_api_answers(live_daemon: tuple[Daemon, str, subprocess.Popen[bytes]],
                                                  browser: Any,
                                                  short_tmp: Path) -> None:
    from selenium.webdriver.common.by import By

    daemon, base, board = live_daemon
    assert web.size() <= PAGE_BUDGET, f"the page is {web.size()} bytes"
    wait(lambda: all(any(p[1] != "nan" for p in series(base, sid, "interval=minute"))
                     for sid in ELECTRIC[:5]), 40, "live values of every CT from the virtual board")
    # A whole minute row in the RRDs, so the hour graph has a point to draw. rrdcached writes a file
    # when the API asks it to, at most once a minute of wall time; the test has it written now (and
    # then the page and the test read the same file for that minute).
    def minute_row() -> bool:
        daemon.rrd.flush(GRID)
        return any(p[1] != "nan" for p in series(base, GRID, "interval=hour"))

    wait(minute_row, 60, "a minute row in the RRD")
    for sid in ELECTRIC:
        daemon.rrd.flush(sid)
    browser.get(base + "/")
    try:
        wait(lambda: browser.execute_script("return document.body.dataset.loaded === '1'"), 20,
             "the page loaded")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the browser's console: {browser.get_log('browser')}") from None
    rows = {r.get_attribute("data-id"): r
            for r in browser.find_elements(By.CSS_SELECTOR, "#sensors tbody tr")}
    assert set(rows) == set(ELECTRIC)

    def live() -> str | None:
        for sid, row in rows.items():
            cell = row.find_element(By.CLASS_NAME, "live")
            ts, v = cell.get_attribute("data-ts"), cell.get_attribute("data-v")
            if not ts:
                return f"{sid}: no live value on the page"
            window = dict((p[0], p[1]) for p in series(base, sid, "interval=minute"))
            if int(ts) not in window or float(v) != float(window[int(ts)]):
                return f"{sid}: page {v} W at {ts}, REST {window.get(int(ts))}"
            number, unit = cell.text.split()
            if float(number) != float(window[int(ts)]) or unit != "W":
                return f"{sid}: page shows {cell.text!r}"
        return None

    agree(live)

    def today() -> str | None:
        for sid, row in rows.items():
            cell = row.find_element(By.CLASS_NAME, "today")
            pts = series(base, sid, cell.get_attribute("data-q"))  # the page's own query: its instant
            wh = sum(p[1] for p in pts if p[1] != "nan") / 60
            if abs(float(cell.get_attribute("data-v")) - wh) > 1e-9 or cell.text != f"{wh / 1000:.3f} kWh":
                return f"{sid}: page {cell.text} ({cell.get_attribute('data-v')} Wh), REST {wh} Wh"
        return None

    agree(today)

    def graphs() -> str | None:
        for name in ("hour", "day", "month"):
            paths = browser.find_elements(By.CSS_SELECTOR, f"#g-{name} path")
            got = {p.get_attribute("data-id"): int(p.get_attribute("data-points")) for p in paths}
            want = {}
            for p in paths:
                sid = p.get_attribute("data-id")
                want[sid] = sum(1 for x in series(base, sid, p.get_attribute("data-q")) if x[1] != "nan")
            if (set(got) != set(ELECTRIC) or (name == "hour" and not got[GRID])  # longer rows take longer
                    or "interval=" + name not in paths[0].get_attribute("data-q")):
                return f"{name} graph: series {got}, query {paths[0].get_attribute('data-q')}"
            if got != want:
                return f"{name} graph: page points {got}, REST {want}"
        return None

    agree(graphs)

    def health() -> str | None:
        st = rest(base, "/status")
        b = st["board"]
        errors = sum(v for k, v in st["decoder"].items() if k != "frames_ok")
        page = {k: browser.find_element(By.ID, k).get_attribute("data-v")
                for k in ("link-errors", "last-hello", "reset-cause", "eeprom")}
        page["last-hello"] = float(page["last-hello"] or "nan")  # JavaScript writes 12.0 as "12"
        want = {"link-errors": str(errors), "last-hello": float(b["last_hello"]),
                "reset-cause": b["reset_cause"], "eeprom": str(b["brownout_count"])}
        if page != want:
            return f"board health: page {page}, REST {want}"
        if browser.find_element(By.ID, "reset-cause").text != "power-on":
            return "the virtual board's first boot is a power-on reset"
        fl = st["outputs"]["flukso"]
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-output="flukso"]')
        cells = row.find_elements(By.TAG_NAME, "td")
        shown = (cells[1].get_attribute("data-v"), cells[2].get_attribute("data-v"))
        last = None if shown[1] == "" else float(shown[1])
        if shown[0] != str(fl["backlog"]) or last != fl["last_upload"]:
            return f"flukso destination: page {shown}, REST {fl}"
        return None

    # The spool's backlog moves at every commit (2 s) and the page reads /status every 5 s, so the two
    # agree only by chance while the board streams: the virtual board (and with it the daemon's
    # clock) is paused while they are compared, and the page's next refresh must then match.
    def reactive() -> str | None:
        answer = rest(base, "/reactive")
        if not answer or any(r["var"] is None for r in answer):
            return f"every CT has a reactive power: {answer}"
        for r in answer:
            cell = rows[r["id"]].find_element(By.CLASS_NAME, "q")
            number, _, unit = cell.text.partition(" ")
            # JavaScript writes 12.0 as "12": numbers are compared as numbers
            shown = (float(cell.get_attribute("data-v") or "nan"),
                     float(cell.get_attribute("data-ts") or "nan"), float(number or "nan"), unit)
            want = (float(r["var"]), float(r["t"]), float(r["var"]), "var")
            if shown != want:
                return f"{r['id']} reactive: page {shown}, REST {want}"
        if any(row.find_element(By.CLASS_NAME, "q").text for sid, row in rows.items()
               if sid not in {r["id"] for r in answer}):
            return "a sensor that is not a CT shows a reactive power"
        return None

    board.send_signal(signal.SIGSTOP)
    try:
        agree(health)
        agree(reactive)
    finally:
        board.send_signal(signal.SIGCONT)
    assert rest(base, "/status")["outputs"]["flukso"]["backlog"] > 0  # spooled, not yet due for upload
    shot = short_tmp / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("GRIDTAP_SCREENSHOT"):
        shutil.copy(shot, os.environ["GRIDTAP_SCREENSHOT"])
