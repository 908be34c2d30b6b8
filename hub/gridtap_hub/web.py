"""The dashboard's HTML: server-rendered pages with the chart drawn as inline SVG (no script, no build).

What the Flukso dashboard showed (seed flukso-community-metering-slides.txt):
intervals hour | day | month | year | night, units watt | kWh/year |
euro/year, the user's stream overlaid with subscribed Fluksonians' and a
min/max/avg/last table; plus the rank among comparable homes.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from zoneinfo import ZoneInfo

from gridtap_hub.peers import Points, Rank, Stats, Stream

TABS = ("hour", "day", "month", "year", "night")
UNIT_LABELS = {"watt": "watt", "kwhperyear": "kWh/year", "eurperyear": "euro/year"}
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
W, H, PAD_L, PAD_B, PAD_T = 760, 320, 60, 30, 26

STYLE = """
body{font-family:sans-serif;margin:0;color:#222}header{background:#234;color:#fff;padding:8px 16px}
header a,header span{color:#fff;margin-right:12px}main{display:flex;gap:24px;padding:16px}
nav a{margin-right:8px}nav a.on{font-weight:bold;text-decoration:none;color:#000}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}td:first-child{text-align:left}
aside{min-width:220px}.err{color:#b00}svg text{font-size:11px;fill:#444}
"""


def page(title: str, body: str, user: str | None = None) -> str:
    who = (f'<span id="who">{escape(user)}</span><form method="post" action="/logout" style="display:inline">'
           '<button id="logout">log out</button></form>') if user else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)} | gridtap hub"
            f"</title><style>{STYLE}</style></head><body><header><b>gridtap hub</b> {who}</header>"
            f"{body}</body></html>")


def login_page(error: str = "") -> str:
    err = f'<p class="err" id="error">{escape(error)}</p>' if error else ""
    return page("log in", f"""<main><form method="post" action="/login" id="login">
<h2>log in</h2>{err}<p><label>user <input name="name" id="name" autocomplete="username"></label></p>
<p><label>password <input name="password" id="password" type="password" autocomplete="current-password">
</label></p><p><button type="submit" id="submit">log in</button></p></form></main>""")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _time_label(t: int, interval: str, tz: ZoneInfo) -> str:
    d = dt.datetime.fromtimestamp(t, tz)
    return d.strftime("%H:%M") if interval in ("hour", "day") else d.strftime("%d %b")


def chart(series: list[tuple[Stream, list[tuple[int, float | None]]]], interval: str, unit: str,
          tz: ZoneInfo) -> str:
    """An SVG line per stream; gaps (no data) break the line."""
    ts = sorted({t for _, pts in series for t, _ in pts})
    vals = [v for _, pts in series for _, v in pts if v is not None]
    peak = max(vals) if vals else 0.0
    top = peak * 1.1 if peak > 0 else 1.0
    lo_t, hi_t = (ts[0], ts[-1]) if ts else (0, 1)
    span = max(hi_t - lo_t, 1)

    def x(t: int) -> float:
        return PAD_L + (W - PAD_L - 10) * (t - lo_t) / span

    def y(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - max(v, 0.0) / top)

    parts = [f'<svg id="chart" width="{W}" height="{H}" data-unit="{unit}" data-interval="{interval}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="4" y="14">{escape(UNIT_LABELS.get(unit, unit))}</text>']
    for i in range(5):  # y grid
        v = top * i / 4
        parts.append(f'<line x1="{PAD_L}" x2="{W - 10}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="4" y="{y(v) + 4:.1f}">{v:.0f}</text>')
    for i in range(6):  # time labels
        t = lo_t + span * i // 5
        label = _time_label(t, interval, tz)
        parts.append(f'<text x="{min(x(t), W - 40) - 16:.1f}" y="{H - 8}">{label}</text>')
    for n, (s, pts) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        runs: list[list[str]] = [[]]
        for t, val in pts:
            if val is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(t):.1f},{y(val):.1f}")
        drawn = sum(len(r) for r in runs)
        parts.append(f'<g class="stream" data-user="{escape(s.user)}" data-points="{drawn}" '
                     f'stroke="{colour}">')
        for r in runs:
            if len(r) == 1:
                xy = r[0].split(",")
                parts.append(f'<circle cx="{xy[0]}" cy="{xy[1]}" r="2" fill="{colour}"/>')
            elif r:
                parts.append(f'<polyline fill="none" stroke-width="1.5" points="{" ".join(r)}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def table(rows: list[tuple[Stream, Stats]]) -> str:
    out = ['<table id="stats"><tr><th>User</th><th>min:</th><th>max:</th><th>avg:</th><th>last:</th></tr>']
    for n, (s, st) in enumerate(rows):
        colour = COLOURS[n % len(COLOURS)]
        out.append(f'<tr data-user="{escape(s.user)}"><td style="color:{colour}">{escape(s.user)}</td>'
                   f'<td class="min">{_fmt(st.min)}</td><td class="max">{_fmt(st.max)}</td>'
                   f'<td class="avg">{_fmt(st.avg)}</td><td class="last">{_fmt(st.last)}</td></tr>')
    out.append("</table>")
    return "".join(out)


def rank_text(r: Rank | None) -> str:
    if r is None:
        return '<p id="rank">No rank yet: it needs a day of your main sensor and the hourly refresh.</p>'
    pv = "with PV" if r.has_pv else "without PV"
    band = f"{r.size_band}+" if r.size_band == 5 else str(r.size_band)
    return (f'<p id="rank">Your home uses <b>{r.kwh_per_year:.0f} kWh/year</b> (last 30 days): '
            f'rank <b id="rank-n">{r.rank}</b> of <b id="rank-of">{r.of}</b> homes of {band} '
            f'{"person" if band == "1" else "people"} {pv} (1 = least).</p>')



def dashboard(user: str, interval: str, unit: str, series: list[tuple[Stream, Points]],
              stats: list[tuple[Stream, Stats]], fluksonians: list[tuple[str, bool]], shares: bool,
              rank: Rank | None, tz: ZoneInfo, message: str = "") -> str:
    tabs = " | ".join(f'<a href="/dashboard?interval={t}&amp;unit={unit}" id="tab-{t}"'
                      f'{" class=on" if t == interval else ""}>{t}</a>' for t in TABS)
    units = "<br>".join(f'<a href="/dashboard?interval={interval}&amp;unit={u}" id="unit-{u}"'
                        f'{" class=on" if u == unit else ""}>{label}</a>' for u, label in UNIT_LABELS.items())
    subs = "".join(
        f'<form method="post" action="/{"unsubscribe" if on else "subscribe"}">'
        f'<input type="hidden" name="peer" value="{escape(n)}"><input type="hidden" name="back" '
        f'value="/dashboard?interval={interval}&amp;unit={unit}">'
        f'<button class="peer" data-peer="{escape(n)}" '
        f'data-subscribed="{"1" if on else "0"}">[{"x" if on else "+"}] {escape(n)}</button></form>'
        for n, on in fluksonians) or "<p>Nobody shares yet.</p>"
    share = (f'<form method="post" action="/share"><input type="hidden" name="on" '
             f'value="{"0" if shares else "1"}"><button id="share">'
             f'{"stop sharing my stream" if shares else "share my stream"}</button></form>')
    msg = f'<p class="err" id="message">{escape(message)}</p>' if message else ""
    body = (f'<main><section>{msg}<h2>your dashboard</h2><p>electricity</p><nav id="tabs">{tabs}</nav>'
            f'{chart(series, interval, unit, tz)}{table(stats)}{rank_text(rank)}</section>'
            f'<aside><h3>Fluksonians</h3><div id="fluksonians">{subs}</div><h3>Unit</h3>'
            f'<div id="units">{units}</div><h3>Sharing</h3>{share}'
            f'<h3>Claim a device</h3><form method="post" action="/claim" id="claim">'
            f'<input name="device" placeholder="device id (32 hex)"><br>'
            f'<input name="key" placeholder="device key" type="password"><br>'
            f'<input name="sensors" placeholder="sensor ids, comma-separated"><br>'
            f'<button>claim</button></form></aside></main>')
    return page("your dashboard", body, user)
