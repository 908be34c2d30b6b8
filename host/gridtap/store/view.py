"""The store's read-only view: what a reader of the daemon's data may see, and nothing it could change.

The REST API answers from it (and the IEC-104 server and the hub are to): the
series the config defines, the live window of per-second rates, and RRD
fetches. It holds no reference to the daemon, the board session or the
outputs, so a reader cannot reach the link or the counter state, and the
reader's module does not import the daemon's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gridtap.config import Config, SensorConfig
    from gridtap.store.live import LiveStore
    from gridtap.store.rrd import Fetched, NightStore, RrdStore

log = logging.getLogger(__name__)

FLUSH_MIN_AGE_S = 60.0  # a fetch first has rrdcached write out updates older than this


class StoreView:
    def __init__(self, cfg: Config, live: LiveStore, rrd: RrdStore, nights: NightStore,
                 status: Callable[[], dict[str, Any]], now: Callable[[], float] = time.time) -> None:
        self._series = cfg.series()
        self.price_per_kwh = cfg.daemon.price_per_kwh
        self._live = live
        self._rrd = rrd
        self._nights = nights
        self._status = status
        self.now = now

    def series(self) -> dict[str, tuple[SensorConfig, str]]:
        """sensor id -> (its sensor's config, role: import, export or pulse)."""
        return dict(self._series)

    def live_window(self, sensor: str, end: int, seconds: int = 60) -> list[tuple[int, float | None]]:
        """The last `seconds` of per-second rates up to `end`, None where there is none; [] if never seen."""
        if not self._live.has(sensor):
            return []
        return self._live.window(sensor, end, seconds)

    def _flush(self, sensor: str) -> None:
        """Have rrdcached (or the batched store) write out what it held of that series (best effort)."""
        try:
            self._rrd.flush(sensor, min_age_s=FLUSH_MIN_AGE_S)
        except (OSError, ConnectionError) as exc:
            log.debug("flush before reading failed: %s", exc)

    def fetch(self, sensor: str, cf: str, start: int, end: int, resolution: int) -> Fetched:
        """An RRD fetch, after the series' held updates are written out."""
        self._flush(sensor)
        return self._rrd.fetch(sensor, cf, start, end, resolution)

    def last_value(self, sensor: str) -> tuple[int, int] | None:
        """(time, counter in thousandths) of the series' newest RRD update, after the same flush."""
        self._flush(sensor)
        return self._rrd.last_value(sensor)

    def nights(self, sensor: str, start: int, end: int) -> list[tuple[int, float | None]]:
        """The daily night values (02:00-05:00 mean) between start and end."""
        return self._nights.fetch(sensor, start, end)

    def status(self) -> dict[str, Any]:
        return self._status()
