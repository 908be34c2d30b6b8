"""The PVOutput uploader: intervals in, statuses out, nothing lost.

Interface for the daemon (all times are Unix seconds; pass the clock in tests)::

    up = PVOutputUploader(settings, state_dir / "pvoutput.sqlite")
    up.observe_counter("solar", ts, wh)          # a cumulative energy register, Wh
    up.observe_gauge("grid", ts, 231.4, "V")     # an instantaneous value: W, V or C
    up.tick(now)                                 # call every few seconds
    up.status()                                  # counters and the alert, for the REST API
    up.close()

The uploader is not thread-safe: call all of these from one thread (the
daemon's main loop). A request blocks for at most ``timeout_s``.

*Series names* are the daemon's: by convention a CT sensor's import register
is ``<sensor>`` and its export register ``<sensor>.export``; a pulse input is
``<sensor>``. A counter may be fed at any rate; samples that are not newer
than the last one are ignored (registers are cumulative), and a register that
goes backwards is taken as a reset (the series continues from where it was).

`tick(now)` closes every interval whose end is ``settle_s`` behind `now`
(so that counter samples just after the boundary have arrived), writes its
status to the SQLite backlog *before* sending, then sends: one ``addstatus``
when one status is waiting, ``addbatchstatus`` (30, or 100 with donation)
oldest first when more are; at most `requests_per_tick` requests per call,
60 (300) per hour, and never before ``X-Rate-Limit-Reset`` once the service
says the budget is spent. A status that a batch answered with 0 (not added)
is sent again alone with ``addstatus``, whose answer names PVOutput's reason
(logged; a documented "skip" reason drops it), and a status that carries a
message (``m1``, donation) always goes alone: a batch line has no message field.

Values: a counter's value at an interval end is interpolated between the
samples around it, and that same value starts the next interval, so the
energies telescope and sum exactly to the register's advance. ``power`` is
the energy since the last boundary over the time since it (W); ``energy``
is Wh since local midnight (the interval that ends at midnight still belongs
to the day that ends, sent as 23:59); ``energy_total`` is the register
itself. Gauge quantities are the mean of the samples in the interval; a
gauge with no sample in the interval is not sent (never a made-up 0). Then
the rules run (they see v1..v12, each series name as its power in W, and for
the cFos dialect ``<series>.power_w``, ``.energy_wh``, ``.today_wh``,
``.import_wh``, ``dt`` and ``date.*``). Zeros are sent as zeros.
"""

from __future__ import annotations

import logging
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as dtime
from itertools import takewhile
from pathlib import Path
from typing import Any

from gridtap.backoff import Backoff
from gridtap.outputs.pvoutput import api
from gridtap.outputs.pvoutput.backlog import Backlog
from gridtap.outputs.pvoutput.settings import FIELDS, PVOutputSettings
from gridtap.outputs.pvoutput.timing import label, local_date, next_boundary

log = logging.getLogger("gridtap.outputs.pvoutput")

RESET_TOLERANCE_WH = 0.5
#: A register's value at a boundary is known only when samples at most this far apart bracket it:
#: across a longer gap (the daemon or the board link was down) any split between intervals is a guess.
MAX_GAP_S = 120.0
#: An interval's power is sent only when its energy was measured over (at most) the interval itself.
SPAN_TOLERANCE_S = 1.0
UNKNOWN_400_ATTEMPTS = 3
MAX_CATCH_UP_S = 6 * 3600  # closing more missed intervals than this means the clock jumped
UNITS = {"W": "W", "w": "W", "V": "V", "v": "V", "C": "C", "°C": "C", "degC": "C"}


class _Counter:
    """One cumulative register: samples since the last boundary and the state that must persist.

    The persisted state describes the register *at its last boundary* (``base_ts``),
    never beyond it: the samples after that boundary are still in the spool (they
    are acknowledged there only once a later boundary is closed), so after a restart
    they are replayed and must not be mistaken for duplicates.
    """

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        st = state or {}
        self.base_ts: float | None = st.get("base_ts")
        self.base: float | None = st.get("base")
        self.day: str | None = st.get("day")
        self.day_base: float | None = st.get("day_base")
        self.offset: float = float(st.get("offset", 0.0))
        self.last_raw: float | None = st.get("last_raw")
        self.last_ts: float | None = st.get("last_ts")
        self.samples: list[tuple[float, float]] = []
        self.resets: list[tuple[float, float]] = []  # (ts, offset added) since the base

    def state(self) -> dict[str, Any]:
        offset = self.offset - sum(d for ts, d in self.resets)
        last_raw = self.last_raw if self.base is None else self.base - offset
        return {"base_ts": self.base_ts, "base": self.base, "day": self.day, "day_base": self.day_base,
                "offset": offset, "last_raw": last_raw,
                "last_ts": self.base_ts if self.base_ts is not None else self.last_ts}

    def add(self, ts: float, wh: float) -> None:
        if self.last_ts is not None and ts <= self.last_ts:
            return
        if self.last_raw is not None and wh < self.last_raw - RESET_TOLERANCE_WH:
            self.offset += self.last_raw - wh
            self.resets.append((ts, self.last_raw - wh))
        self.last_raw, self.last_ts = wh, ts
        value = wh + self.offset
        if self.base is None or self.base_ts is None:
            self.base, self.base_ts = value, ts
            self.resets.clear()
            return
        self.samples.append((max(ts, self.base_ts + 1e-3), value))

    def value_at(self, end: float) -> float | None:
        """The register at `end`, interpolated between the samples around it; None if none bracket it.

        Samples further apart than MAX_GAP_S do not bracket anything: the
        energy between them is known, how it split over time is not.
        """
        if self.base is None or self.base_ts is None:
            return None
        pts = [(self.base_ts, self.base), *self.samples]
        i = bisect_right(pts, (end, float("inf")))
        if i == 0:
            return None
        t0, v0 = pts[i - 1]
        if t0 == end:
            return v0
        if i == len(pts):
            return None  # nothing after `end` yet
        t1, v1 = pts[i]
        if t1 - t0 > MAX_GAP_S:
            return None
        return v0 + (v1 - v0) * (end - t0) / (t1 - t0)

    def close(self, end: float, day: str, day_start: float | None = None,
              start: float | None = None) -> dict[str, float] | None:
        """Fix the value at `end`; return power/energy figures and start the next interval there.

        None when the value at `end` cannot be reconstructed (no samples bracket
        it): the base stays where it was and the energy is carried into the
        first interval whose end is known. `power_w` (and `energy_wh`) are
        given only when the energy was measured over no more than the interval
        that `start` opens: a longer average is never labelled as one interval.
        `day_start` is the local midnight that opens `day`; when the series was
        silent across it (daemon down), the midnight value is interpolated.
        """
        value = self.value_at(end)
        if value is None or self.base is None or self.base_ts is None:
            return None
        if end <= self.base_ts:  # the first sample came after this interval: nothing to say yet
            return None
        if self.day != day:
            start_value = self.base
            if day_start is not None and self.base_ts < day_start < end:
                pts = [(self.base_ts, self.base), *self.samples]
                start_value = _interpolate(pts, day_start)
            self.day, self.day_base = day, start_value
        energy = value - self.base
        span = end - self.base_ts
        out = {"today_wh": value - (self.day_base if self.day_base is not None else self.base),
               "import_wh": value}
        if start is None or self.base_ts >= start - SPAN_TOLERANCE_S:
            out["power_w"] = energy * 3600.0 / span
            out["energy_wh"] = energy
        self.base, self.base_ts = value, end
        self.samples = [s for s in self.samples if s[0] > end]
        self.resets = [r for r in self.resets if r[0] > end]
        return out


def _interpolate(pts: list[tuple[float, float]], t: float) -> float:
    """The value at t on the straight lines through pts (sorted, t inside their span)."""
    i = bisect_right(pts, (t, float("inf")))
    t0, v0 = pts[i - 1]
    if i == len(pts):
        return v0
    t1, v1 = pts[i]
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1


class PVOutputUploader:
    def __init__(self, settings: PVOutputSettings, backlog_path: Path | str | None = None,
                 clock: Callable[[], float] = time.time, client: api.Client | None = None,
                 requests_per_tick: int = 1, rng: random.Random | None = None) -> None:
        path = backlog_path if backlog_path is not None else settings.backlog
        if path is None:
            raise ValueError("PVOutputUploader needs a backlog path (settings.backlog or backlog_path)")
        self.settings = settings
        self.clock = clock
        self.tz = settings.tz
        self.step = settings.interval_min * 60
        self.backlog = Backlog(path)
        self.client = client or api.Client(settings.base_url, settings.system_id, settings.api_key,
                                           settings.timeout_s)
        self.requests_per_tick = requests_per_tick
        self.backoff = Backoff(base=60.0, cap=3600.0, rng=rng)
        self.sent_times: deque[float] = deque()
        self.rate_block_until = 0.0
        self.rate_remaining: int | None = None
        self.alert: str | None = None
        # statuses to send alone with addstatus: PVOutput refused them in a batch (its batch answer
        # says only 0, addstatus says why), or a whole batch was refused
        self.solo: set[tuple[str, str]] = set()
        self.stats = {"closed": 0, "sent": 0, "skipped": 0, "rejected": 0, "dropped_old": 0,
                      "rule_errors": 0, "requests": 0, "retries": 0}
        self.counters = {n: _Counter(s) for n, s in self.backlog.load_states().items()}
        self.gauges: dict[tuple[str, str], list[tuple[float, float]]] = {}
        # Resume the interval grid where the last run left it, so the boundaries that passed while
        # the daemon was down are closed one by one (from the replayed samples) instead of being
        # folded into one long interval.
        last_end = self.backlog.get_meta("last_end")
        self.end: float | None = (next_boundary(float(last_end), self.step, self.tz)
                                  if last_end is not None else None)
        #: the newest interval end closed and saved (the spool feed acknowledges up to it)
        self.closed_end: float | None = float(last_end) if last_end is not None else None
        self.last_body = ""
        self.last_upload: float | None = None  # Unix time PVOutput last accepted a status

    # ---- input ---------------------------------------------------------------------------
    def observe_counter(self, series: str, ts: float, wh: float) -> None:
        """A cumulative energy register of `series` read `wh` at `ts`."""
        if not (wh == wh and abs(wh) < 1e15):
            return
        c = self.counters.get(series)
        if c is None:
            c = self.counters[series] = _Counter()
        c.add(float(ts), float(wh))

    def observe_gauge(self, series: str, ts: float, value: float, unit: str) -> None:
        """An instantaneous value of `series` (unit W, V or °C) at `ts`."""
        u = UNITS.get(unit)
        if u is None or not (value == value and abs(value) < 1e12):
            return
        samples = self.gauges.setdefault((series, u), [])
        samples.append((float(ts), float(value)))
        if len(samples) > 20000:  # a stuck clock must not grow memory without bound
            del samples[:10000]

    # ---- the clock -----------------------------------------------------------------------
    def due(self, now: float | None = None) -> bool:
        """True when tick(now) would close an interval (the feed then makes its counters durable first)."""
        now = self.clock() if now is None else now
        return self.end is not None and now >= self.end + self.settings.settle_s

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self.end is None:
            self.end = next_boundary(now, self.step, self.tz)
        elif now > self.end + MAX_CATCH_UP_S or self.end > now + 2 * self.step:
            # the wall clock jumped (a router without RTC syncing NTP, a suspend): do not invent
            # hundreds of statuses; the counters carry the energy into the next interval
            log.warning("pvoutput: the clock jumped by %.0f s; restarting the interval grid", now - self.end)
            self.end = next_boundary(now, self.step, self.tz)
        while now >= self.end + self.settings.settle_s:
            start = self._start_of(self.end)
            self._close(start, self.end)
            self.end = next_boundary(self.end, self.step, self.tz)
        for _ in range(self.requests_per_tick):
            if not self._send_one(now):
                break

    def _start_of(self, end: float) -> float:
        return end - self.step

    def _close(self, start: float, end: float) -> None:
        d, t, day = label(end, self.tz)
        dkey = day.isoformat()
        per_series: dict[str, dict[str, float]] = {}
        wanted = {s.series for s in self.settings.values}
        day_start = datetime.combine(day, dtime(0), self.tz).timestamp()
        for name, c in self.counters.items():
            figures = c.close(end, dkey, day_start, start)
            if figures is not None:
                per_series[name] = figures
        means: dict[tuple[str, str], float] = {}
        for key, samples in self.gauges.items():
            inside = [v for ts, v in samples if start <= ts < end]
            if inside:
                means[key] = sum(inside) / len(inside)
            samples[:] = [(ts, v) for ts, v in samples if ts >= end]
        values: dict[str, float] = {}
        for src in self.settings.values:
            v = self._quantity(src.series, src.quantity, per_series, means)
            if v is not None:
                values[src.field] = v
        values = self._apply_rules(values, per_series, means, wanted, end)
        fields: dict[str, Any] = {k: values[k] for k in self.settings.sent_fields if k in values}
        if self.settings.net and ("v2" in fields or "v4" in fields):
            # net statuses carry both powers; none at all when neither is known (a gap), never a made-up 0
            fields.setdefault("v2", 0.0)
            fields.setdefault("v4", 0.0)
        self.stats["closed"] += 1
        progress = {"last_end": str(end)}
        if not any(k in fields for k in ("v1", "v2", "v3", "v4")):
            log.info("pvoutput: no generation or consumption value for %s %s; nothing to send", d, t)
            self.backlog.save_progress({n: c.state() for n, c in self.counters.items()}, progress)
            self.closed_end = end
            return
        if self.settings.c1:
            fields["c1"] = self.settings.c1
        if self.settings.net:
            fields["n"] = 1
        if self.settings.donation and self.settings.m1:
            fields["m1"] = self.settings.m1
        self.backlog.commit_interval(d, t, fields, {n: c.state() for n, c in self.counters.items()},
                                     progress)
        self.closed_end = end

    def _quantity(self, series: str, quantity: str, per_series: dict[str, dict[str, float]],
                  means: dict[tuple[str, str], float]) -> float | None:
        fig = per_series.get(series)
        if quantity == "power":
            if fig is not None and "power_w" in fig:
                return fig["power_w"]
            return means.get((series, "W"))
        if quantity == "energy":
            return fig["today_wh"] if fig is not None else None
        if quantity == "energy_total":
            return fig["import_wh"] if fig is not None else None
        if quantity == "voltage":
            return means.get((series, "V"))
        return means.get((series, "C"))

    def _apply_rules(self, values: dict[str, float], per_series: dict[str, dict[str, float]],
                     means: dict[tuple[str, str], float], wanted: set[str], end: float) -> dict[str, float]:
        rules = self.settings.rules
        if rules is None:
            return values
        env: dict[str, float] = {}
        if rules.dialect == "cfos":
            from gridtap.rules.cfos import date_env  # the rule compiler is loaded only with rules

            for name, fig in per_series.items():
                for k, v in fig.items():
                    env[f"{name}.{k}"] = v
            for (name, unit), v in means.items():
                env.setdefault(f"{name}.power_w" if unit == "W" else f"{name}.{unit.lower()}", v)
            env["dt"] = float(self.step)
            env.update(date_env(end, self.tz))
        else:
            for name in wanted | set(per_series):
                if name.isidentifier():
                    p = self._quantity(name, "power", per_series, means)
                    if p is not None:
                        env[name] = p
        env.update(values)
        ev = rules.evaluate(env)
        for err in ev.errors:
            self.stats["rule_errors"] += 1
            log.warning("pvoutput: %s (value kept)", err)
        return {k: v for k, v in ev.values.items() if k in FIELDS}

    # ---- sending -------------------------------------------------------------------------
    def _budget_ok(self, now: float) -> bool:
        while self.sent_times and self.sent_times[0] <= now - 3600:
            self.sent_times.popleft()
        return len(self.sent_times) < self.settings.requests_per_hour and now >= self.rate_block_until

    def _expire(self, now: float) -> None:
        cutoff = (local_date(now, self.tz) - timedelta(days=self.settings.max_age_days)).strftime("%Y%m%d")
        old = self.backlog.older_than(cutoff)
        if old:
            self.backlog.delete(old)
            self.stats["dropped_old"] += len(old)
            log.warning("pvoutput: dropped %d status(es) older than %d days (%s %s .. %s %s); "
                        "PVOutput no longer accepts them", len(old), self.settings.max_age_days,
                        *old[0], *old[-1])

    def _send_one(self, now: float) -> bool:
        """Send one request if allowed; return True if a request was made."""
        if self.alert is not None or not self.backoff.ready(now) or not self._budget_ok(now):
            return False
        self._expire(now)
        batch = self.backlog.pending(self.settings.batch_max)
        if not batch:
            return False
        if self.settings.net:
            batch = [b for b in batch if b[0] == batch[0][0]]
        batch = list(takewhile(self._batchable, batch)) or batch[:1]
        self.sent_times.append(now)
        self.stats["requests"] += 1
        if len(batch) == 1:
            self._single(now, batch[0])
        else:
            self._batch(now, batch)
        return True

    def _batchable(self, item: tuple[str, str, dict[str, Any], int]) -> bool:
        """A status may go in a batch unless it is to go alone: a batch line has no m1 (the
        message would be lost), and a status a batch refused goes alone for PVOutput's reason."""
        d, t, fields, _ = item
        return "m1" not in fields and (d, t) not in self.solo

    def _after(self, now: float, resp: api.Response) -> str:
        verdict = api.classify(resp)
        self.last_body = resp.body[:200]
        remaining, reset = resp.header_int("X-Rate-Limit-Remaining"), resp.header_int("X-Rate-Limit-Reset")
        if remaining is not None:
            self.rate_remaining = remaining
        if verdict == api.RATE or (remaining is not None and remaining <= 0):
            until = float(reset) if reset is not None and reset > now else now + 3600.0
            self.rate_block_until = max(self.rate_block_until, until)
            if verdict == api.RATE:
                log.warning("pvoutput: request limit reached; next request after %s",
                            datetime.fromtimestamp(self.rate_block_until, self.tz).strftime("%H:%M:%S"))
        if verdict == api.STOP:
            self.alert = (f"PVOutput refused system {self.settings.system_id}: {resp.body[:120]} "
                          "- fix the API key, system id or donation setting and restart gridtap")
            log.error("pvoutput: %s", self.alert)
        elif verdict == api.RETRY:
            delay = self.backoff.failure(now)
            self.stats["retries"] += 1
            log.warning("pvoutput: upload failed (%s %s); retry in %.0f s",
                        resp.status or "network", resp.body[:120], delay)
        elif verdict == api.OK:
            self.backoff.success()
            self.last_upload = now
        return verdict

    def _single(self, now: float, item: tuple[str, str, dict[str, Any], int]) -> None:
        d, t, fields, attempts = item
        params = {"d": d, "t": t, **{k: fmt(k, v) for k, v in fields.items()}}
        resp = self.client.post("addstatus.jsp", params)
        verdict = self._after(now, resp)
        if verdict == api.OK:
            self.backlog.delete([(d, t)])
            self.solo.discard((d, t))
            self.stats["sent"] += 1
        elif verdict == api.SKIP or (verdict == api.RETRY and resp.status == 400
                                     and attempts + 1 >= UNKNOWN_400_ATTEMPTS):
            self.backlog.delete([(d, t)])
            self.solo.discard((d, t))
            self.stats["skipped"] += 1
            log.warning("pvoutput: status %s %s skipped: %s", d, t, resp.body[:160])
        elif verdict == api.RETRY and resp.status == 400:
            self.backlog.attempt([(d, t)])

    def _batch(self, now: float, batch: list[tuple[str, str, dict[str, Any], int]]) -> None:
        width = 12 if self.settings.donation else 6
        lines = []
        for d, t, fields, _ in batch:
            vals = [fmt(f"v{i}", fields[f"v{i}"]) if f"v{i}" in fields else "" for i in range(1, width + 1)]
            lines.append(",".join([d, t, *vals]))
        params = {"data": ";".join(lines)}
        first = batch[0][2]
        if "c1" in first:
            params["c1"] = str(first["c1"])
        if "n" in first:
            params["n"] = "1"
        resp = self.client.post("addbatchstatus.jsp", params)
        verdict = self._after(now, resp)
        if verdict == api.OK:
            results: dict[tuple[str, str], str] = {}
            for part in resp.body.split(";"):
                bits = part.strip().split(",")
                if len(bits) >= 3:
                    results[(bits[0], bits[1])] = bits[2]
            done, rejected = [], []
            for d, t, _, _ in batch:
                r = results.get((d, t))
                if r == "1":
                    done.append((d, t))
                elif r == "0":
                    rejected.append((d, t))
            self.backlog.delete(done)
            self.stats["sent"] += len(done)
            self.stats["rejected"] += len(rejected)
            self.solo.update(rejected)
            if rejected:
                log.warning("pvoutput: PVOutput did not add %d status(es) of a batch (first %s %s); "
                            "sending each alone for PVOutput's reason", len(rejected), *rejected[0])
        elif verdict == api.SKIP or (verdict == api.RETRY and resp.status == 400):
            self.solo.update((d, t) for d, t, _, _ in batch)  # let each status get its own answer
            log.warning("pvoutput: batch refused (%s); sending its statuses one by one", resp.body[:120])

    # ---- reporting -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {**self.stats, "queued": self.backlog.count(), "alert": self.alert,
                "rate_remaining": self.rate_remaining, "last_upload": self.last_upload,
                "rate_blocked_until": self.rate_block_until or None}

    def close(self) -> None:
        self.backlog.close()


def fmt(key: str, v: Any) -> str:
    """PVOutput number formats: whole W/Wh for v1..v4, 0.1 for v5/v6, up to 3 decimals for v7..v12."""
    if key in ("c1", "n") or not isinstance(v, int | float):
        return str(v)
    if key in ("v1", "v2", "v3", "v4"):
        r = round(v)
        return "0" if r == 0 else str(int(r))
    if key in ("v5", "v6"):
        s = f"{v:.1f}"
    else:
        s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "-0.0", "0.0", "") else s
