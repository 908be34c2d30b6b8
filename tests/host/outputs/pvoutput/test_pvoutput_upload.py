"""The uploader against the PVOutput-compatible server: live, midnight, outage, limits, keys."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap.outputs.pvoutput import PVOutputUploader
from gridtap.outputs.pvoutput.uploader import _Counter
from tests.host.outputs.pvoutput.conftest import KEY, SID, Clock, at, run
from tests.support.pvoutput_server import PVOutputServer
from tests.support.seed_rules import FLM02

Make = Callable[..., PVOutputUploader]


def stored(server: PVOutputServer) -> dict[tuple[str, str], dict[str, str]]:
    return server.statuses[str(SID)]


def test_live_uploads_one_addstatus_per_interval(make: Make, server: PVOutputServer, clock: Clock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    up = make()
    run(up, clock, 16 * 60, solar_w=2000.0, house_w=500.0)
    st_ = stored(server)
    assert sorted(st_) == [("20240615", "12:05"), ("20240615", "12:10"), ("20240615", "12:15")]
    assert all(s["v2"] == "2000" and s["v4"] == "500" and s["v6"] == "231.0" for s in st_.values())
    # energy today counts from the first sample (12:00:11): 2000 W for 889 s at 12:15
    assert st_[("20240615", "12:15")]["v1"] == str(round(2000 * 889 / 3600))
    assert [r.endpoint for r in server.requests] == ["addstatus.jsp"] * 3
    r = server.requests[0]
    assert r.headers["x-rate-limit"] == "1" and r.headers["x-pvoutput-systemid"] == str(SID)
    assert all(KEY not in str(q.params) for q in server.requests)  # the key travels in a header only
    assert up.status()["sent"] == 3 and up.status()["queued"] == 0
    assert up.rate_remaining == 57
    assert KEY not in caplog.text


def test_zeros_are_uploaded_as_zeros(make: Make, server: PVOutputServer, clock: Clock) -> None:
    up = make()
    run(up, clock, 11 * 60, solar_w=0.0, house_w=0.0)
    for s in stored(server).values():
        assert s["v1"] == "0" and s["v2"] == "0" and s["v3"] == "0" and s["v4"] == "0"


def test_seed_rules_applied_last(make: Make, server: PVOutputServer, clock: Clock) -> None:
    # FLM02 at night: the sign-blind inverter clamp reads the 45 W standby draw as "generation"
    up = make(custom_rules=FLM02, v1=None, v3=None)
    run(up, clock, 6 * 60, solar_w=45.0, house_w=500.0)
    [s] = stored(server).values()
    assert s["v2"] == "0" and s["v4"] == "490"
    assert "v11" not in s and "v12" not in s  # donation-only fields are not sent without donation


def test_seed_rules_with_donation_send_extended_values(make: Make, server: PVOutputServer,
                                                       clock: Clock) -> None:
    server.accounts[str(SID)].donation = True
    up = make(custom_rules=FLM02, v1=None, v3=None, donation=True)
    run(up, clock, 6 * 60, solar_w=2000.0, house_w=800.0)
    [s] = stored(server).values()
    assert (s["v2"], s["v4"], s["v11"], s["v12"]) == ("1780", "712", "1068", "0")


def test_midnight_interval_belongs_to_the_day_that_ends(make: Make, server: PVOutputServer,
                                                        clock: Clock) -> None:
    clock.t = at(2024, 6, 15, 23, 50, 1)
    up = make()
    run(up, clock, 21 * 60, house_w=600.0)
    st_ = stored(server)
    assert ("20240615", "23:59") in st_ and ("20240616", "00:05") in st_ and ("20240616", "00:00") not in st_
    assert int(st_[("20240615", "23:59")]["v3"]) == int(st_[("20240615", "23:55")]["v3"]) + 50
    assert st_[("20240616", "00:05")]["v3"] == "50"      # 600 W for 5 min after midnight
    assert st_[("20240616", "00:10")]["v3"] == "100"


def test_three_day_outage_replayed_completely_within_limits(make: Make, server: PVOutputServer,
                                                            clock: Clock) -> None:
    up = make(requests_per_tick=None)
    server.offline = True
    start = clock.t
    counters = run(up, clock, 72 * 3600, step=60.0, solar_w=0.0, house_w=500.0)
    assert stored(server) == {}
    assert up.status()["queued"] == (72 * 3600 - 10) // 300  # the 12:00 interval is still settling
    server.offline = False
    run(up, clock, 2 * 3600, step=60.0, solar_w=0.0, house_w=500.0, counters=counters)
    st_ = stored(server)
    expected = (74 * 3600 - 60) // 300
    assert len(st_) == expected and up.status()["queued"] == 0
    # nothing sent twice: the statuses carried by accepted requests add up to the unique ones
    ok = [r for r in server.requests if r.status == 200]
    assert sum(r.statuses for r in ok) == expected
    assert max(r.statuses for r in ok) <= 30
    per_hour = Counter(int(r.at // 3600) for r in server.requests)
    assert max(per_hour.values()) <= 60
    assert not any("Exceeded" in r.body for r in server.requests)
    # every power value is exact, and the full days carry exactly 12 kWh
    assert {s["v4"] for s in st_.values()} == {"500"}
    assert st_[("20240616", "23:59")]["v3"] == "12000" and st_[("20240617", "23:59")]["v3"] == "12000"
    assert start < clock.t


def test_rate_limit_headers_are_honoured(make: Make, server: PVOutputServer, clock: Clock) -> None:
    up = make()
    up.requests_per_tick = 10
    for i in range(90):  # a backlog of 90 statuses from this morning
        up.backlog.put("20240615", f"{6 + i // 12:02d}:{(i % 12) * 5:02d}", {"v4": 100.0 + i})
    hour = int(clock.t // 3600)
    server._hour[KEY] = (hour, 58)  # another client used 58 of the 60 requests this hour
    up.tick()
    assert [r.statuses for r in server.requests] == [30, 30]      # stopped by X-Rate-Limit-Remaining: 0
    assert up.rate_block_until == (hour + 1) * 3600
    for _ in range(20):
        clock.t += 60
        up.tick()
    assert len(server.requests) == 2 and up.status()["queued"] == 30
    clock.t = (hour + 1) * 3600 + 1
    up.tick()
    assert up.status()["queued"] == 0 and len(stored(server)) == 90
    assert stored(server)[("20240615", "06:05")]["v4"] == "101"


def test_exceeded_reply_waits_for_reset(make: Make, server: PVOutputServer, clock: Clock) -> None:
    up = make()
    up.backlog.put("20240615", "11:00", {"v4": 1.0})
    hour = int(clock.t // 3600)
    server._hour[KEY] = (hour, 60)
    up.tick()
    assert "Exceeded number requests per hour" in server.requests[-1].body
    clock.t += 1800
    up.tick()
    assert len(server.requests) == 1
    clock.t = (hour + 1) * 3600 + 5
    up.tick()
    assert up.status()["queued"] == 0 and up.status()["sent"] == 1


def test_bad_key_stops_and_alerts_without_losing_or_logging(make: Make, server: PVOutputServer,
                                                             clock: Clock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.accounts[str(SID)].key = "some-other-key"
    up = make()
    run(up, clock, 16 * 60, house_w=300.0)
    assert len(server.requests) == 1 and server.requests[0].body == "Unauthorized 401: Invalid API Key"
    alert = up.status()["alert"]
    assert alert is not None and "Invalid API Key" in alert
    assert up.status()["queued"] == 3
    assert "Invalid API Key" in caplog.text and KEY not in caplog.text
    assert KEY not in repr(up.settings) and KEY not in str(up.status())


def test_restart_keeps_backlog_and_energy_today(make: Make, server: PVOutputServer, clock: Clock) -> None:
    server.offline = True
    up = make()
    counters = run(up, clock, 11 * 60, house_w=1200.0)
    assert up.status()["queued"] == 2
    up.close()
    server.offline = False
    up2 = make()
    run(up2, clock, 10 * 60, house_w=1200.0, counters=counters)
    st_ = stored(server)
    assert sorted(st_) == [("20240615", f"12:{m:02d}") for m in (5, 10, 15, 20)]
    # energy today keeps counting from this morning's first sample across the restart
    assert st_[("20240615", "12:20")]["v3"] == str(round(1200 * (20 * 60 - 11) / 3600))


def test_statuses_older_than_14_days_are_dropped_and_counted(make: Make, server: PVOutputServer,
                                                             clock: Clock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    up = make()
    up.backlog.put("20240531", "12:00", {"v4": 1.0})   # 15 days old
    up.backlog.put("20240601", "12:00", {"v4": 2.0})   # 14 days: still accepted
    up.tick()
    assert up.status()["dropped_old"] == 1 and "older than 14 days" in caplog.text
    assert list(stored(server)) == [("20240601", "12:00")]


@pytest.mark.parametrize("body", ["Bad request 400: No statuses added or updated",
                                  "Bad request 400: an error text nobody documented"])
def test_refused_batch_is_retried_status_by_status(make: Make, server: PVOutputServer, clock: Clock,
                                                   body: str) -> None:
    up = make()
    up.requests_per_tick = 10
    for m in (0, 5, 10):
        up.backlog.put("20240615", f"11:{m:02d}", {"v4": 10.0 + m})
    server.fail_next(1, 400, body)
    up.tick()
    clock.t += 120  # past the retry pause an unknown error starts
    up.tick()
    assert [r.endpoint for r in server.requests] == ["addbatchstatus.jsp"] + ["addstatus.jsp"] * 3
    assert len(stored(server)) == 3


def test_net_mode_sends_both_powers_and_n(make: Make, server: PVOutputServer, clock: Clock) -> None:
    up = make(net=True, v1=None, v3=None, v2="grid.export:power", v4="grid:power")
    c = {"grid": 0.0, "grid.export": 0.0}
    for _ in range(40):
        clock.t += 10
        c["grid"] += 300 * 10 / 3600
        up.observe_counter("grid", clock.t, c["grid"])
        up.observe_counter("grid.export", clock.t, 0.0)
        up.tick()
    [s] = stored(server).values()
    assert s["v2"] == "0" and s["v4"] == "300"


def test_counter_reset_and_late_samples() -> None:
    c = _Counter()
    c.add(0.0, 1000.0)
    c.add(100.0, 1010.0)
    c.add(50.0, 999.0)        # older than the last sample: ignored
    c.add(200.0, 5.0)         # register went backwards: a reset; the series continues at 1010
    c.add(250.0, 8.0)         # ... and advances with the new register: 1013
    assert c.close(300.0, "d") is None  # nothing after 300 yet: its value is not known
    assert c.close(250.0, "d")["energy_wh"] == pytest.approx(13.0)  # type: ignore[index]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 120.0), st.floats(0.0, 50.0)), min_size=2, max_size=200))
def test_interval_energies_add_up_to_the_register(steps: list[tuple[float, float]]) -> None:
    c = _Counter()
    t, wh = 1000.0, 123.0
    c.add(t, wh)
    total = 0.0
    boundary = 1300.0
    for dt, dwh in steps:
        t += dt
        wh += dwh
        c.add(t, wh)
        while boundary < t:
            fig = c.close(boundary, "d")
            total += fig["energy_wh"] if fig else 0.0
            boundary += 300.0
    fig = c.close(t, "d")
    total += fig["energy_wh"] if fig else 0.0
    assert total == pytest.approx(wh - 123.0, abs=1e-6)


def test_cfos_rules_gauge_power_and_temperature(make: Make, server: PVOutputServer, clock: Clock) -> None:
    rules = ("# house = grid import + solar, only in daytime\n"
             "v4 = grid.power_w + solar.power_w\n"
             "v2 = date.hour >= 6 && date.hour < 22 ? solar.power_w : 0\n")
    up = make(rules_dialect="cfos", custom_rules=rules, v1=None, v3=None, v6=None,
              v2="solar:power", v4="grid:power", v5="outside:temperature")
    for _ in range(40):
        clock.t += 10
        up.observe_gauge("solar", clock.t, 1500.0, "W")      # no counter: power from the W gauge
        up.observe_gauge("grid", clock.t, 250.0, "W")
        up.observe_gauge("outside", clock.t, 18.25, "°C")
        up.tick()
    [s] = stored(server).values()
    assert (s["v2"], s["v4"], s["v5"]) == ("1500", "1750", "18.2")


def test_energy_today_after_a_downtime_across_midnight(make: Make, server: PVOutputServer,
                                                       clock: Clock) -> None:
    clock.t = at(2024, 6, 15, 23, 40, 1)
    up = make()
    counters = run(up, clock, 6 * 60, house_w=600.0)     # statuses up to 23:45
    up.close()
    # gridtap is down from 23:46:01 to 00:20:01; the register keeps counting at 600 W meanwhile
    gap = at(2024, 6, 16, 0, 20, 1) - clock.t
    counters["house"] += 600.0 * gap / 3600
    counters["solar"] += 0.0
    clock.t += gap
    up2 = make()
    run(up2, clock, 11 * 60, house_w=600.0, counters=counters)
    st_ = stored(server)
    # the first status after the restart counts only today's energy: 600 W from 00:00 to 00:25
    assert st_[("20240616", "00:25")]["v3"] == "250"
    # ... and no power: its energy was measured over 40 minutes, not over its 5 (finding 13.5)
    assert "v4" not in st_[("20240616", "00:25")]
    assert st_[("20240616", "00:30")]["v4"] == "600"
    # the boundaries inside the gap cannot be reconstructed: nothing is made up for them
    assert not [k for k in st_ if ("20240615", "23:50") <= k <= ("20240616", "00:20")]


def test_clock_jump_does_not_invent_statuses(make: Make, server: PVOutputServer, clock: Clock,
                                             caplog: pytest.LogCaptureFixture) -> None:
    boot = clock.t
    clock.t = 86400.0 * 3  # a router without RTC boots in 1970 ...
    up = make()
    up.tick()
    clock.t = boot          # ... and NTP sets the real time
    counters = run(up, clock, 11 * 60, house_w=400.0)
    assert "clock jumped" in caplog.text
    assert up.status()["closed"] == 2 and sorted(stored(server)) == [("20240615", "12:05"),
                                                                       ("20240615", "12:10")]
    clock.t += 365 * 86400  # and a jump forward: one year of silence
    up.tick()
    assert up.status()["closed"] == 2
    run(up, clock, 6 * 60, house_w=400.0, counters=counters)
    assert up.status()["closed"] == 3


def test_cumulative_energy_sets_c1(make: Make, server: PVOutputServer, clock: Clock) -> None:
    up = make(v1="solar:energy_total", v3=None, v4=None)
    counters = {"solar": 150000.0, "house": 0.0}   # the register already holds 150 kWh
    run(up, clock, 6 * 60, solar_w=1200.0, counters=counters)
    [s] = stored(server).values()
    [r] = server.requests
    assert r.params["c1"] == "2" and "n" not in r.params
    # the register at 12:05, 299 s after the run began at 12:00:01
    assert s["v1"] == str(round(150000.0 + 1200.0 * 299 / 3600)) and s["v2"] == "1200"


def test_donation_batches_of_100(make: Make, server: PVOutputServer, clock: Clock) -> None:
    server.accounts[str(SID)].donation = True
    up = make(donation=True)
    up.requests_per_tick = 10
    for i in range(250):
        up.backlog.put("20240614", f"{i // 12:02d}:{(i % 12) * 5:02d}", {"v2": float(i), "v11": 0.5})
    up.tick()
    assert [r.statuses for r in server.requests] == [100, 100, 50]
    assert len(stored(server)) == 250 and stored(server)[("20240614", "00:05")] == {"v2": "1", "v11": "0.5"}


def test_a_failing_rule_does_not_stop_the_upload(make: Make, server: PVOutputServer, clock: Clock,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    rules = 'CUSTOM_RULES = {"v4": ["v4 * 2", "v4 / v2", "v4 + 1"], "v2": ["v2 - 0"]}'
    up = make(custom_rules=rules, v1=None, v3=None)
    run(up, clock, 6 * 60, solar_w=0.0, house_w=300.0)
    [s] = stored(server).values()
    assert s["v4"] == "601" and s["v2"] == "0"     # 300*2 kept through the division by zero, +1
    assert up.status()["rule_errors"] == 1
    assert "rule v4[1], column 1: division by zero" in caplog.text


def _varying(t: float) -> float:
    """House power that changes every 5 minutes, so each interval has its own average.

    The samples come at hh:mm:01, so each boundary mixes 9 s of the next level into an
    interval: the powers are checked to 10 W, the levels are 100 W apart.
    """
    return 200.0 + 100.0 * (int(t // 300) % 4)


def test_restart_resumes_the_grid_and_sends_every_missed_interval(make: Make, server: PVOutputServer,
                                                                  clock: Clock) -> None:
    """Finding 13.5: the boundaries that passed while gridtap was down are sent one by one."""
    up = make()
    counters = run(up, clock, 11 * 60, house_w=_varying)       # statuses 12:05 and 12:10
    up.close()
    # down from 12:11:01 to 12:26:01; the samples of the gap are replayed on restart (the spool
    # and the board's ring hold them) before the first tick
    up2 = make()
    counters = dict(counters)
    t = clock.t
    while t < clock.t + 15 * 60:
        t += 10
        counters["house"] += _varying(t) * 10 / 3600
        counters["solar"] += 0.0
        up2.observe_counter("house", t, counters["house"])
        up2.observe_counter("solar", t, counters["solar"])
    clock.t = t
    up2.tick()
    st_ = stored(server)
    for m in (15, 20, 25):
        end = at(2024, 6, 15, 12, m, 0)
        assert int(st_[("20240615", f"12:{m:02d}")]["v4"]) == pytest.approx(_varying(end - 1), abs=10), m


def test_a_longer_average_is_never_labelled_as_one_interval(make: Make, server: PVOutputServer,
                                                             clock: Clock) -> None:
    """Finding 13.5: without samples across the downtime, no status claims the 15-minute average."""
    up = make()
    counters = run(up, clock, 11 * 60, house_w=_varying)
    up.close()
    clock.t += 15 * 60                                           # down, and nothing replayed
    counters["house"] += 300.0 * 15 * 60 / 3600
    up2 = make()
    run(up2, clock, 11 * 60, house_w=_varying, counters=counters)
    st_ = stored(server)
    assert ("20240615", "12:15") not in st_ and ("20240615", "12:20") not in st_
    first = st_[("20240615", "12:30")]
    assert "v4" not in first      # its energy spans 12:10 .. 12:30
    # energy today still counts every Wh, the downtime's included
    assert int(first["v3"]) - int(st_[("20240615", "12:10")]["v3"]) > 300.0 * 15 * 60 / 3600
    assert int(st_[("20240615", "12:35")]["v4"]) == pytest.approx(_varying(at(2024, 6, 15, 12, 34)), abs=10)


def test_net_mode_sends_no_made_up_zero_after_a_gap(make: Make, server: PVOutputServer, clock: Clock) -> None:
    """Finding 13.5 in net mode: the status after a downtime has no known power, so it sends none."""
    up = make(net=True, v1=None, v3=None, v2="grid.export:power", v4="grid:power")
    c = {"grid": 0.0, "grid.export": 0.0}

    def feed(u: PVOutputUploader, seconds: int) -> None:
        for _ in range(seconds // 10):
            clock.t += 10
            c["grid"] += 300 * 10 / 3600
            u.observe_counter("grid", clock.t, c["grid"])
            u.observe_counter("grid.export", clock.t, 0.0)
            u.tick()
    feed(up, 6 * 60)                        # 12:05 sent
    up.close()
    clock.t += 15 * 60                      # down, nothing replayed
    c["grid"] += 300 * 15 * 60 / 3600
    up2 = make(net=True, v1=None, v3=None, v2="grid.export:power", v4="grid:power")
    feed(up2, 11 * 60)
    st_ = stored(server)
    assert ("20240615", "12:25") not in st_                 # spans the gap: no power known, nothing sent
    assert st_[("20240615", "12:30")]["v4"] == "300"


def test_a_status_a_batch_refused_is_sent_alone_for_the_reason(make: Make, server: PVOutputServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """#15 item 8: addbatchstatus answers only 0 for a status it did not add; addstatus says why."""
    up = make()
    up.requests_per_tick = 10
    up.backlog.put("20240615", "11:00", {"v1": 500.0, "v4": 10.0})
    up.backlog.put("20240615", "11:05", {"v1": 400.0, "v4": 11.0})  # energy lower than at 11:00
    up.backlog.put("20240615", "11:10", {"v1": 600.0, "v4": 12.0})
    with caplog.at_level(logging.WARNING):
        up.tick()
    assert [r.endpoint for r in server.requests] == ["addbatchstatus.jsp", "addstatus.jsp"]
    assert server.requests[0].body == "20240615,11:00,1;20240615,11:05,0;20240615,11:10,1"
    assert server.requests[1].params["t"] == "11:05" and server.requests[1].status == 400
    assert "status 20240615 11:05 skipped: Bad request 400: Energy value [400] lower than previously" \
           in caplog.text
    assert set(stored(server)) == {("20240615", "11:00"), ("20240615", "11:10")}
    assert up.status()["queued"] == 0 and up.status()["skipped"] == 1 and up.solo == set()


def test_m1_travels_with_every_replayed_status(make: Make, server: PVOutputServer, clock: Clock) -> None:
    """#15 item 8: a batch line has no message field, so a backlog with m1 replays through addstatus."""
    server.accounts[str(SID)].donation = True
    up = make(donation=True, m1="gridtap")
    server.offline = True
    counters = run(up, clock, 16 * 60, solar_w=0.0, house_w=500.0)
    assert up.status()["queued"] == 3 and stored(server) == {}
    server.offline = False
    up.requests_per_tick = 10
    run(up, clock, 30 * 60, step=60.0, solar_w=0.0, house_w=500.0, counters=counters)  # past the backoff
    assert up.status()["queued"] == 0 and len(stored(server)) == 9
    assert {s.get("m1") for s in stored(server).values()} == {"gridtap"}
    assert {r.endpoint for r in server.requests if r.status == 200} == {"addstatus.jsp"}
