"""A link with bit errors (BER 1e-4 both ways): no corrupted value accepted, resync within a frame."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hil.campaigns import uart_noise

pytestmark = pytest.mark.usefixtures("virtual_only")


def test_noise_never_becomes_a_value(tmp_path: Path, long_run: bool) -> None:
    res = uart_noise(tmp_path, 3600.0 if long_run else 120.0, ber=1e-4)
    assert res.bits_flipped >= 10 and res.rejected >= 10      # the noise really hit frames
    assert res.corrupt_accepted == 0, res.problems[:5]
    assert res.config_answers_wrong == 0
    # one flipped bit costs the frame it hit (two if it hit the delimiter between them)
    assert res.frames_lost <= 2 * res.bits_flipped
    assert res.frames_lost <= res.bits_flipped + res.bits_flipped // 4
