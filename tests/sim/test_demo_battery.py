"""The demo's battery scenario: its price server answers like Octopus and the daemon's feed reads it."""

from __future__ import annotations

from gridtap.inputs.prices import parse_config
from gridtap_sim.demo_battery import PriceServer, Tracker, demo_prices

T0 = 1796641200.0  # 2026-12-07 11:00 UTC


def test_prices_go_negative_in_the_middle_of_the_window_only() -> None:
    prices = demo_prices(T0, 7200.0)
    neg = [(a, p) for a, _b, p in prices if p < 0]
    assert [a for a, _ in neg] == [T0 + 1800, T0 + 3600]
    assert len(prices) == 96 and all(b - a == 1800 for a, b, _ in prices)
    assert max(p for *_, p in prices) > 35  # the evening peak the battery is kept for


def test_the_daemons_octopus_feed_reads_the_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prices = demo_prices(T0, 7200.0)
    server = PriceServer(prices)
    try:
        settings = parse_config({"source": "octopus", "tariff": "E-1R-AGILE-24-10-01-C",
                                 "base_url": server.url})
        feed = settings.feed(tmp_path / "prices.sqlite")
        try:
            assert feed.poll(T0)
            got = feed.series()
        finally:
            feed.close()
        half, hour, peak = got.at(T0 + 1800), got.at(T0 + 3600), got.at(T0 + 5 * 3600)
        assert half is not None and hour is not None and peak is not None
        assert half.price == -4.5 and hour.price == -2.8
        assert peak.price == prices[32][2] == 38.5  # 16:00, the peak
        wrong = "/v1/products/AGILE-24-10-01/electricity-tariffs/E-1R-X/standard-unit-rates/"
        status, _, _ = server.answer(wrong)
        assert status == 404
    finally:
        server.close()


def test_tracker_means_by_slot() -> None:
    tr = Tracker(demo_prices(T0, 7200.0))
    tr.add(T0 + 1900, 3000.0, 500.0)
    tr.add(T0 + 2000, 2000.0, None)
    tr.add(T0 + 10, None, 100.0)
    rows = tr.slots()
    assert rows == [{"start": "2026-12-07T11:30:00Z", "price": -4.5, "samples": 2, "battery_w": 2500,
                     "grid_w": 500}]
    assert any("cheapest" in line for line in tr.report())
