"""The local web page, served by the REST API on its own port: static files, no build step.

    GET /             index.html: live power, today's energy, hour/day/month graphs, health
    GET /gridtap.js   the script: polls the REST API (/sensors, /sensor/<id>, /status) and draws
    GET /gridtap.css

The page reads nothing the API does not answer to anyone else, so what it shows
is what `curl` shows. The files are read from this package's folder at each
request (a router keeps no copy in RAM; they are a few KB) and only these
names are served, so no path from a request ever reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/gridtap.js": ("gridtap.js", "text/javascript; charset=utf-8"),
    "/gridtap.css": ("gridtap.css", "text/css; charset=utf-8"),
}


def page(path: str) -> tuple[str, str] | None:
    """(text, content type) of a page file, None for any other path."""
    entry = FILES.get(path)
    if entry is None:
        return None
    name, ctype = entry
    return (HERE / name).read_text(encoding="utf-8"), ctype


def size() -> int:
    """The page's bytes, all files together (docs and the test hold it to a router's budget)."""
    return sum((HERE / name).stat().st_size for name, _ in set(FILES.values()))
