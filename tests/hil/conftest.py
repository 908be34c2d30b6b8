"""HIL fixtures: campaign sizes (short in `make test`, long with --long) and the board under test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridtap.board.client import BoardClient
from tests.support.hil.rig import IDEAL, VirtualRig


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


@pytest.fixture
def real_port(request: pytest.FixtureRequest) -> str | None:
    port: str | None = request.config.getoption("--port")
    return port


@pytest.fixture
def virtual_only(real_port: str | None) -> None:
    """Campaigns whose inputs and ground truth come from the simulator."""
    if real_port is not None:
        pytest.skip("drives pins from the virtual board's simulator; on a real rig see hardware/hil-rig.md")


@pytest.fixture
def ref_meter(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    path = request.config.getoption("--ref-meter")
    if path is None:
        return None
    data: dict[str, Any] = json.loads(Path(path).read_text())
    missing = {"channel", "volts", "amps", "watts"} - set(data)
    if missing:
        raise pytest.UsageError(f"--ref-meter {path}: missing {', '.join(sorted(missing))}")
    return data


@pytest.fixture
def board(request: pytest.FixtureRequest, real_port: str | None, tmp_path: Path) -> Iterator[BoardClient]:
    """A BoardClient on the board under test: the real one on --port, else the virtual steady bench.

    The virtual board runs paced at 20x real time for at most an hour of simulated time.
    """
    if real_port is not None:
        client = BoardClient.open(real_port, int(request.config.getoption("--baud")))
        try:
            yield client
        finally:
            client.close()
        return
    rig = VirtualRig(tmp_path, "steady", 1, sim=IDEAL, speed=20.0)
    rig.start(3600.0)
    client = rig.client()
    try:
        yield client
    finally:
        client.close()
        rig.stop()
        rig.close()
