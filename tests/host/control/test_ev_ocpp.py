"""The OCPP 1.6J central system against simulated wallboxes over real websockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from gridtap.config import parse_config
from gridtap.control.ev import config as evconfig
from gridtap.control.ev.cs import CentralSystem
from gridtap.errors import UserError
from gridtap_sim import model as m
from gridtap_sim.board import load_board
from gridtap_sim.wallbox import Battery, WallboxState, connect_wallbox, follow_schedule, power_at

PV_W = 3500.0
HOUSE_W = 400.0


def cfg(rule: str = "surplus", password: str | None = None, **box: Any) -> evconfig.EvConfig:
    section: dict[str, Any] = {"port": 0, "max_total_current_a": 25, "min_on_s": 0, "min_off_s": 0,
                               "wallbox": [{"id": "garage", "rule": rule, "switch_phases": True, **box}]}
    c = evconfig.parse_config(section)
    if password is not None:
        c = evconfig.EvConfig(**{**c.__dict__, "password": password})
    return c


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 20))


async def until(cond: Callable[[], bool]) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_surplus_rule_sets_a_profile_and_the_ev_shows_in_the_grid_ct() -> None:
    state = WallboxState(max_a=16, phases=3)

    def grid() -> tuple[float, tuple[float, float, float]]:
        ev = state.currents()
        w = HOUSE_W - PV_W + state.power_w()
        return w, ((HOUSE_W - PV_W) / 230 + ev[0], ev[1], ev[2])

    async def body() -> None:
        cs = CentralSystem(cfg(), grid)
        port = await cs.start()
        cp, task = await connect_wallbox(f"ws://127.0.0.1:{port}", "garage", state)
        assert await cp.boot() == "Accepted"
        await until(lambda: cp.profiles_set == 1)                     # the safe TxDefaultProfile
        assert state.default.amps == 6.0
        await cp.plug(Battery(soc=0.5))
        await cp.meter_values()
        grants = await cs.control_step()
        # 3100 W of surplus: too little for 3 x 6 A, so one phase at 13.4 A
        assert (grants["garage"].amps, grants["garage"].phases) == (13.4, 1)
        await until(lambda: state.tx is not None)
        state.advance(1.0, 60.0)
        await cp.meter_values()
        await until(lambda: cs.boxes["garage"].measure.power_w > 0)
        f = cs.fields()
        assert f["E1.power_w"] == pytest.approx(13.4 * 230, abs=1)
        assert f["E1.current_l1"] == pytest.approx(13400, abs=10) and f["E1.txn_energy"] > 0
        await cp.unplug()
        await until(lambda: not cs.boxes["garage"].measure.connected)
        task.cancel()
        await cs.close()

    run(body)
    # closed loop: the wallbox's draw in the virtual board's grid CT
    mains = m.Mains(np.random.default_rng(1), drift=False, harmonics={1: (1.0, 0.0)}, v_base=230.0)
    ev = m.ev_charger("ev", power_at(state, origin=0.0), {0: 1.0}, 11000.0)
    chunk = m.Model(load_board(), mains, [ev], np.random.default_rng(1), adc=False).chunk(2)
    assert chunk.e_net[0] == pytest.approx(13.4 * 230, rel=0.01)


def test_unknown_ids_and_wrong_passwords_are_refused() -> None:
    async def body() -> None:
        cs = CentralSystem(cfg(password="s3cret-pass"), lambda: (0.0, (0.0, 0.0, 0.0)))
        port = await cs.start()
        url = f"ws://127.0.0.1:{port}"
        with pytest.raises(InvalidStatus) as e1:
            await connect_wallbox(url, "stranger", WallboxState(), password="s3cret-pass")
        assert e1.value.response.status_code == 404
        with pytest.raises(InvalidStatus) as e2:
            await connect_wallbox(url, "garage", WallboxState(), password="wrong-pass")
        assert e2.value.response.status_code == 401
        cp, task = await connect_wallbox(url, "garage", WallboxState(), password="s3cret-pass")
        assert await cp.boot() == "Accepted"
        assert cs.errors == {"unknown charge point": 1, "bad password": 1}
        task.cancel()
        await cs.close()

    run(body)


def test_malformed_and_out_of_order_messages_get_call_errors_not_a_crash() -> None:
    async def body() -> None:
        cs = CentralSystem(cfg(), lambda: (0.0, (0.0, 0.0, 0.0)))
        port = await cs.start()
        async with connect(f"ws://127.0.0.1:{port}/garage", subprotocols=[Subprotocol("ocpp1.6")]) as ws:
            async def ask(raw: str) -> list[Any]:
                await ws.send(raw)
                return list(json.loads(await ws.recv()))
            r = await ask('[2, "m1", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": '
                          '"2026-01-01T00:00:00Z", "sampledValue": [{"value": "1"}]}]}]')
            assert r[0] == 4 and r[1] == "m1" and "BootNotification" in r[3]   # before boot
            r = await ask('[2, "m2", "BootNotification"')                         # not JSON
            assert r[0] == 4 and r[2] == "FormationViolation"
            r = await ask('[2, "m3", "BootNotification", {"chargePointVendor": 7}]')  # wrong type
            assert r[0] == 4 and r[1] == "m3"
            r = await ask('[2, "m4", "BootNotification", '
                          '{"chargePointVendor": "x", "chargePointModel": "y"}]')
            assert r[0] == 3 and r[2]["status"] == "Accepted"
            r = await ask('[2, "m5", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", '
                          '"status": "Available"}]')
            assert r[0] == 3 or r[0] == 2       # the safe default profile may come first
        assert cs.errors["malformed message"] == 1 and cs.errors["message before BootNotification"] == 1
        assert cs.errors["invalid message"] == 1                                  # m3, schema
        await cs.close()

    run(body)


def test_implausible_meter_values_are_counted_and_ignored() -> None:
    state = WallboxState()

    async def body() -> None:
        cs = CentralSystem(cfg(), lambda: (0.0, (0.0, 0.0, 0.0)))
        port = await cs.start()
        cp, task = await connect_wallbox(f"ws://127.0.0.1:{port}", "garage", state)
        await cp.boot()
        await cp.plug(Battery())
        state.energy_wh = 5000.0
        await cp.meter_values()
        state.energy_wh = 100.0                         # a register that runs backwards
        await cp.meter_values()
        await until(lambda: cs.boxes["garage"].bad_values == 1)
        assert cs.boxes["garage"].measure.import_wh == 5000.0
        task.cancel()
        await cs.close()

    run(body)


def test_a_wallbox_that_ignores_its_profile_is_reported_and_counted_at_its_draw() -> None:
    states = {"a": WallboxState(max_a=16, ignore_profile=True), "b": WallboxState(max_a=16)}
    t = [1000.0]

    def grid() -> tuple[float, tuple[float, float, float]]:
        a = [sum(s.currents()[k] for s in states.values()) for k in range(3)]
        return 230.0 * sum(a), (a[0], a[1], a[2])

    async def body() -> None:
        section = {"port": 0, "max_total_current_a": 25, "min_on_s": 0, "min_off_s": 0,
                   "wallbox": [{"id": n, "rule": "full"} for n in states]}
        cs = CentralSystem(evconfig.parse_config(section), grid, clock=lambda: t[0])
        port = await cs.start()
        cps = {}
        for n, st in states.items():
            cps[n], _task = await connect_wallbox(f"ws://127.0.0.1:{port}", n, st, clock=lambda: t[0])
            await cps[n].boot()
        # both plugged in at t = 1000 s, b leaves at t = 1006 s; one step a second
        runs = [follow_schedule(cps[n], [(1000.0, Battery(capacity_wh=1e6))] + ([(1006.0, None)] if n == "b"
                                                                                else []),
                                until=1008.0, clock=lambda: t[0], sleep=lambda s: asyncio.sleep(0.02))
                for n in states]

        seen: list[tuple[bool, float]] = []

        async def steps() -> None:
            for _ in range(8):
                await asyncio.sleep(0.02)
                g = await cs.control_step()
                seen.append((cs.controller.manager.ignoring("a"), g["b"].amps))
                t[0] += 1.0
        await asyncio.gather(*runs, steps())
        assert cs.controller.manager.ignoring("a")
        assert all(b <= 25 - 16 for flagged, b in seen if flagged)
        assert states["b"].battery is None and not cs.boxes["b"].measure.connected
        await cs.close()

    run(body)
    # a draws its 16 A whatever it is told; b got at most what was left of the 25 A
    assert states["a"].amps == 16.0


async def charging_at_full(state: WallboxState, t: list[float]) -> tuple[CentralSystem, Any, Any]:
    """A central system on clock t[0] and a wallbox on rule `full`, booted, plugged and granted."""
    cs = CentralSystem(cfg(rule="full"), lambda: (0.0, (0.0, 0.0, 0.0)), clock=lambda: t[0])
    port = await cs.start()
    cp, task = await connect_wallbox(f"ws://127.0.0.1:{port}", "garage", state, clock=lambda: t[0])
    await cp.boot()
    await cp.plug(Battery())
    await cs.control_step()
    await until(lambda: state.tx is not None)
    return cs, cp, task


def test_remote_stop_and_start_and_the_lease_falls_back_to_the_safe_default() -> None:
    state = WallboxState(max_a=16)
    t = [5000.0]

    async def body() -> None:
        cs, cp, task = await charging_at_full(state, t)
        assert state.limit(t[0]) == (16.0, 3)
        # gridtap stops renewing (link lost, daemon gone): after the lease, the safe default applies
        assert state.limit(t[0] + cs.lease_s + 1) == (6.0, 3)
        assert await cs.remote_stop("garage")
        await until(lambda: cs.boxes["garage"].txn is None)
        await until(lambda: cp.txn is None)
        assert await cs.remote_start("garage")
        await until(lambda: cs.boxes["garage"].txn is not None)
        task.cancel()
        await cs.close()

    run(body)


def test_the_profile_on_the_wire_is_the_one_in_docs_ev_md() -> None:
    """A bare WebSocket client as the charge point: what the central system sends, verbatim."""
    import re

    doc = (Path(__file__).parents[3] / "docs" / "ev.md").read_text(encoding="utf-8")
    block = re.search(r"```json\n(\[2, \"<id>\", \"SetChargingProfile\".*?)```", doc, re.S)
    assert block is not None
    want = json.loads(block.group(1).replace('"<id>"', '"x"'))

    async def body() -> None:
        cs = CentralSystem(cfg(), lambda: (-3100.0, (-13.5, 0.0, 0.0)), clock=lambda: 16.0)
        port = await cs.start()
        async with connect(f"ws://127.0.0.1:{port}/garage", subprotocols=[Subprotocol("ocpp1.6")]) as ws:
            async def ask(raw: str) -> list[Any]:
                await ws.send(raw)
                while True:
                    msg = json.loads(await ws.recv())
                    if msg[0] == 3:
                        return list(msg)
                    await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))   # TxDefaultProfile
            await ask('[2, "1", "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}]')
            r = await ask('[2, "2", "StartTransaction", {"connectorId": 1, "idTag": "car", "meterStart": 0, '
                          '"timestamp": "2026-01-01T00:00:00Z"}]')
            assert r[2]["transactionId"] == 17
            step = asyncio.ensure_future(cs.control_step())
            got = json.loads(await ws.recv())
            await ws.send(json.dumps([3, got[1], {"status": "Accepted"}]))
            await step
        got[1] = "x"
        assert got == want
        await cs.close()

    run(body)


def test_ev_section_errors_name_their_line() -> None:
    head = ('[board]\nport = "/dev/null"\n\n[[sensor]]\nname = "grid"\n'
            'id = "0123456789abcdef0123456789abcdef"\nkind = "ct"\nchannel = 0\n\n')  # 9 lines
    text = head + ('[ev]\nport = 9000\nmax_total_current_a = 25\n\n'
                   '[[ev.wallbox]]\nid = "a"\n\n[[ev.wallbox]]\nid = "b"\nrule = "M9.power_w * 2"\n')
    with pytest.raises(UserError, match=r"line 19: .*wallbox\.1\.rule.*unknown name 'M9.power_w'"):
        parse_config(text)
    with pytest.raises(UserError, match=r"line 16: .*wallbox\.0\.rule.*column"):
        parse_config(text.replace('id = "a"', 'id = "a"\nrule = "16000 +"'))
    ok = parse_config(text.replace("M9.power_w * 2", "E1.current_l1 >= 6500 ? E1.current_l1 : 0"))
    assert ok.outputs["ev"].wallboxes[1].index == 2


def test_the_daemon_output_reads_the_grid_gauges_and_sets_profiles() -> None:
    import time

    from gridtap.control.ev.service import EvService

    c = evconfig.parse_config({"port": 0, "max_total_current_a": 25, "min_on_s": 0, "min_off_s": 0,
                               "interval_s": 1,
                               "wallbox": [{"id": "garage", "rule": "surplus", "switch_phases": True}]})
    svc = EvService(c, grid_id="g1")
    now = int(time.time())
    svc.gauge("g1", "import", now, 0.0, "W")
    svc.gauge("g1", "export", now, 3100.0, "W")
    svc.gauge("g1", "import", now, 230.0, "V")
    svc.start()
    state = WallboxState()
    try:
        assert svc.grid() == (-3100.0, (pytest.approx(-13.48, abs=0.01), 0.0, 0.0))

        async def body() -> None:
            cp, task = await connect_wallbox(f"ws://127.0.0.1:{svc.port}", "garage", state)
            await cp.boot()
            await cp.plug(Battery())
            await until(lambda: svc.cs.boxes["garage"].sent is not None)   # the answer arrived
            await cp._connection.close()
            task.cancel()

        run(body)
        assert state.tx is not None and (state.tx.amps, state.tx.phases) == (13.4, 1)
    finally:
        svc.stop()
    svc.gauge("g1", "import", now - 60, 500.0, "W")
    assert svc.grid() is None                     # a stale reading is no reading


def test_the_daemon_core_does_not_import_ocpp() -> None:
    import subprocess
    import sys

    code = ("import sys, gridtap.daemon, gridtap.config, gridtap.control.ev.config, "
            "gridtap.control.ev.controller, gridtap.control.ev.service, gridtap.outputs; "
            "assert not {'ocpp', 'websockets'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_operators_stop_consumption_pauses_the_wallboxes() -> None:
    from gridtap.control import gridlimits
    from gridtap.control.ev.controller import BoxMeasure, BoxPlan, Controller
    from gridtap.control.ev.loadmgr import BoxSpec
    from gridtap.control.ev.service import EvService

    svc = EvService(cfg(rule="full"), grid_id="g1")      # its default provider: what IEC-104 publishes
    w = svc.cfg.wallboxes[0]
    c = Controller([BoxPlan(w.id, 1, w.rule, BoxSpec(w.id))], 25.0, min_on_s=900, limits=svc.limits)
    box = {"garage": BoxMeasure(connected=True)}
    assert c.step(0, 600, 1, 0.0, (0.0, 0.0, 0.0), box)["garage"].amps == 16.0
    gridlimits.publish(gridlimits.GridLimits(stop_consumption=True))
    try:
        assert c.step(1, 600, 1, 0.0, (0.0, 0.0, 0.0), box)["garage"].amps == 0.0
    finally:
        gridlimits.publish(gridlimits.GridLimits())


def test_a_profile_is_renewed_within_the_lease_it_was_sent_with() -> None:
    """The lease grows on a fast simulated clock (EvService); a profile already on the wallbox keeps
    the lease it was sent with and is renewed by its half, not by half of the new one."""
    state = WallboxState(max_a=16)
    t = [5000.0]

    async def body() -> None:
        cs, _cp, task = await charging_at_full(state, t)
        first = state.tx
        cs.lease_s = 3600
        t[0] += 31.0                                  # past half of the 60 s it was sent with
        await cs.control_step()
        await until(lambda: state.tx is not first)
        assert state.tx is not None and state.tx.until == t[0] + 3600
        task.cancel()
        await cs.close()

    run(body)
