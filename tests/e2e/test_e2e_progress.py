"""`make test` says how far the e2e day has come instead of sitting silent for minutes (issue #15,
item 10): a line on the real stderr, past pytest's capture, every two simulated hours."""

from __future__ import annotations

import io

from tests.support.e2e.harness import Progress


def test_progress_lines_every_twelfth_of_the_day() -> None:
    out = io.StringIO()
    p = Progress(86400.0, out)
    for t in range(0, 86401, 50):
        p.tick(float(t))
    lines = out.getvalue().split()
    text = out.getvalue()
    assert text.count("e2e:") == 12 and "02:00 of 24 h simulated (8%)" in text, text
    assert "24:00 of 24 h simulated (100%)" in text and lines
    short = io.StringIO()
    q = Progress(600.0, short)  # a short run (the findings tests): no line at all
    for t in range(0, 601, 10):
        q.tick(float(t))
    assert short.getvalue() == ""
