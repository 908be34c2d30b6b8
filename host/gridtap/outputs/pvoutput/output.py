"""[pvoutput] as a daemon output: counters from the durable spool (`feed.SpoolFeed`), gauges through a
bounded queue, one thread that feeds and ticks the uploader.

The board does not keep gauges (they are not ACKed), so a queue that drops
them when full (counted) loses nothing the board still has; the energy comes
only from the counters, which are durable in the spool.

Series naming (PVOutput's `series:quantity` values): a CT's import register is
the sensor's name, its export register `<name>.export`, a pulse input its name
(`gridtap.config.series_name`).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from gridtap.config import series_name
from gridtap.outputs.pvoutput.feed import SpoolFeed
from gridtap.outputs.pvoutput.settings import PVOutputSettings, parse_settings
from gridtap.outputs.pvoutput.uploader import PVOutputUploader

if TYPE_CHECKING:
    from gridtap.config import Section
    from gridtap.outputs import OutputContext

log = logging.getLogger(__name__)

FEED_PERIOD_S = 5.0  # how often the thread reads the spool and ticks the uploader
GAUGE_QUEUE = 100_000


class PVOutputOutput:
    section = "pvoutput"
    live = False
    spooled = True  # counters reach it through the durable spool (the daemon adds them there)

    @classmethod
    def parse(cls, sec: Section) -> PVOutputSettings:
        settings = parse_settings(sec.data, sec.series)
        for src in settings.values:
            if src.series not in sec.series:
                raise sec.fail(src.field, f"series {src.series!r} is not a sensor here (CT import: <name>, "
                               f"export: <name>.export; known: {', '.join(sorted(sec.series))})")
        return settings

    def __init__(self, settings: PVOutputSettings, ctx: OutputContext) -> None:
        cfg = ctx.cfg
        self.names = {sid: series_name(s, role) for s in cfg.all_sensors for sid, role in s.series}
        self.up = PVOutputUploader(settings, cfg.daemon.state_dir / "pvoutput.sqlite", clock=ctx.clock)
        self.feed = SpoolFeed(self.up, ctx.spool, self.names, ctx.health)  # spool faults: the daemon's
        self.spool = ctx.spool
        self.q: queue.Queue[tuple[str, float, float, str]] = queue.Queue(maxsize=GAUGE_QUEUE)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gridtap-pvoutput", daemon=True)
        self.dropped = 0
        # the uploader's figures as of its last step: its SQLite connection belongs to its thread
        self.snapshot: dict[str, Any] = self._status()

    def _status(self) -> dict[str, Any]:
        st = self.up.status()
        return {"statuses": st["queued"], "last_upload": st["last_upload"], "error": st["alert"],
                "sent": st["sent"], "rejected": st["rejected"]}

    def status(self) -> dict[str, Any]:
        """The spool's backlog for PVOutput (counter points not yet made statuses and sent) and the
        uploader's figures as of its last step (statuses queued, last upload, the alert)."""
        points = self.spool.stats().get("pvoutput", {})
        return {"backlog": sum(int(v["points"] or 0) for v in points.values()), **self.snapshot}

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None:
        """Counters reach PVOutput through the spool, not from here."""

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None:
        if unit in ("W", "V"):
            try:
                self.q.put_nowait((self.names[sensor], float(t), value, unit))
            except queue.Full:
                self.dropped += 1

    def _run(self) -> None:
        while not self.stop_event.wait(FEED_PERIOD_S):
            while True:
                try:
                    series, t, value, unit = self.q.get_nowait()
                except queue.Empty:
                    break
                self.up.observe_gauge(series, t, value, unit)
            try:
                self.feed.step()
                self.snapshot = self._status()
            except Exception:  # an uploader bug or a full disk must not stop the daemon
                log.exception("PVOutput step failed")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=20)
        self.up.close()
