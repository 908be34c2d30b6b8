"""Command-line options for the hardware-in-the-loop tests (tests/hil, hardware/hil-rig.md).

They live here, at the rootdir, so that `pytest tests/hil --port /dev/ttyACM0`
works from the command line.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop (tests/hil)")
    group.addoption("--port", default=None, metavar="DEVICE",
                    help="run the HIL link tests against a real board on this serial port "
                         "(default: the virtual board)")
    group.addoption("--baud", type=int, default=115200, help="baud rate of --port (default 115200)")
    group.addoption("--ref-meter", default=None, metavar="FILE.json",
                    help="reference meter readings of a steady load on a real board: "
                         '{"channel": 0, "volts": 231.2, "amps": 8.61, "watts": 1985.0}')
    group.addoption("--long", action="store_true",
                    help="run the long HIL campaigns (make soak): 100,000 pulses, 200 brownouts, "
                         "an hour per accuracy scenario")
