"""`gridtap control plan`: prices from a local Octopus server, the plan as a table and a PNG (rrdtool)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gridtap.cli import main
from tests.host.control.test_policy import BASE
from tests.host.inputs.test_prices import TARIFF, agile, local
from tests.support.price_servers import OctopusServer

CONFIG = (
    '[daemon]\nstate_dir = "{state}"\n\n'
    + BASE.replace("{", "{{").replace("}", "}}")
    + """
[prices]
tariff = "{tariff}"
base_url = "{url}"

[control]
target_soc = 90
target_time = "07:00"
timezone = "Europe/London"

[control.battery]
capacity_kwh = 10
charge_kw = 3
"""
)


@pytest.mark.skipif(shutil.which("rrdtool") is None, reason="rrdtool not installed (make setup)")
def test_plan_table_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = OctopusServer(agile, local(2026, 12, 8), TARIFF)
    try:
        cfg = tmp_path / "gridtap.toml"
        cfg.write_text(CONFIG.format(state=tmp_path, tariff=TARIFF, url=srv.url))
        now = local(2026, 12, 6, 17, 5)
        png = tmp_path / "plan.png"
        assert (
            main(["control", "plan", "-c", str(cfg), "--soc", "20", "-o", str(png), "--now", str(now)]) == 0
        )
        out = capsys.readouterr().out
        assert "prices known 30.9 h ahead" in out and "target 90 % by 07:00" in out
        rows = [ln for ln in out.splitlines() if ln[:3] in ("Sun", "Mon")]
        assert len(rows) == 48 and rows[0].startswith("Sun 17:05")  # the plan starts now
        soc_at_7 = next(ln for ln in rows if ln.startswith("Mon 06:30")).split()[5]
        assert float(soc_at_7) >= 90
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # a second run with the server down plans from the cache
        srv.fail(500, times=10)
        assert main(["control", "plan", "-c", str(cfg), "--no-fetch", "--now", str(now + 3600)]) == 0
        assert "assumed: pass --soc" in capsys.readouterr().out
        # beyond the cached prices: the safe state, said plainly
        assert main(["control", "plan", "-c", str(cfg), "--no-fetch", "--now", str(local(2026, 12, 9))]) == 1
        assert "no price known for the current slot" in capsys.readouterr().out
    finally:
        srv.close()


def test_plan_uses_the_forecast_the_daemon_learned(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """With grid_sensor, the plan's house load is the daemon's forecast.json, not house_load_w."""
    from gridtap.control.forecast import ProfileForecast

    srv = OctopusServer(agile, local(2026, 12, 8), TARIFF)
    try:
        learned = ProfileForecast()
        now = local(2026, 12, 6, 17, 5)
        for q in range(96):
            learned.observe(now - 86400 + q * 900, -1234.0)
        assert learned.save(tmp_path / "forecast.json")
        cfg = tmp_path / "gridtap.toml"
        text = CONFIG.format(state=tmp_path, tariff=TARIFF, url=srv.url)
        tz = 'timezone = "Europe/London"'
        cfg.write_text(text.replace(tz, tz + '\ngrid_sensor = "grid"'))
        assert main(["control", "plan", "-c", str(cfg), "--soc", "50", "--now", str(now)]) == 0
        rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln[:3] in ("Sun", "Mon")]
        assert rows and all(float(r[4]) - float(r[3]) == pytest.approx(-1234.0, abs=1) for r in rows)
    finally:
        srv.close()


def test_a_slot_shared_in_time_is_shown_with_its_parts(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Around 3 am the price is below zero and export pays 5 p: a full battery exports and charges in
    turns within a slot, and the table says for how long each."""
    srv = OctopusServer(agile, local(2026, 12, 8), TARIFF)
    try:
        cfg = tmp_path / "gridtap.toml"
        text = CONFIG.format(state=tmp_path, tariff=TARIFF, url=srv.url)
        cfg.write_text(text.replace('target_soc = 90\ntarget_time = "07:00"\n', "export_price = 5.0\n"))
        now = local(2026, 12, 7, 1, 0)
        assert main(["control", "plan", "-c", str(cfg), "--soc", "95", "--now", str(now)]) == 0
        shared = [ln for ln in capsys.readouterr().out.splitlines() if ", then " in ln]
        assert shared, "no slot shared in time"
        for ln in shared:
            minutes = [int(m) for m in re.findall(r"(\d+) min", ln)]
            assert sum(minutes) == 30 and min(minutes) >= 5, ln
            assert float(ln.split()[2]) < 5.0  # only where import costs less than export earns
    finally:
        srv.close()
