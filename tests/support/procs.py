"""Stopping a child process the tests started: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Ask `proc` to stop and reap it; kill it if it is still there after `timeout` seconds.
    Pipes are drained (communicate), so a chatty child cannot block on a full pipe meanwhile."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
