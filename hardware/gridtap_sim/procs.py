"""Child processes: stop one politely (SIGTERM, a grace period, then SIGKILL), or a demo's set of them.

`stop_process` is how `gridtap demo` and the test kit and benches that start a
daemon, a broker or a hub stop a child. `Procs` holds the processes the demo
(and the bench's virtual-board hour) start, each in its own session, and ends
whatever each left in its process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from gridtap.errors import UserError


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """Ask `proc` to stop (SIGTERM) and reap it; SIGKILL it if it is still there after `timeout` seconds.

    Its pipes are drained meanwhile (communicate), so a chatty child cannot block on a full pipe
    and hold up its own exit. The exit code, or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return proc.returncode


class Procs:
    """Every process the demo starts, each in its own session (a terminal's Ctrl-C reaches only the
    demo, which then stops them in order); `close()` ends whatever is left, also on errors."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[Any] = []

    def start(self, name: str, argv: list[str], log: Path,
              stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
        f = open(log, "ab")
        self.files.append(f)
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE if stdout_pipe else f, stderr=f,
                                 start_new_session=True)
        except OSError as exc:
            raise UserError(f"cannot start {name} ({argv[0]}): {exc.strerror or exc}") from exc
        self.procs[name] = p
        return p

    def stop(self, name: str, timeout: float = 60.0) -> int | None:
        """stop_process; then whatever it left in its process group (the daemon's rrdcached, should
        the daemon die without stopping it) is ended too. Its exit code (negative: the signal)."""
        p = self.procs.pop(name, None)
        if p is None:
            return None
        stop_process(p, timeout)
        _end_group(p.pid)
        return p.returncode

    def close(self) -> None:
        for name in list(reversed(self.procs)):
            self.stop(name, timeout=30.0)
        for f in self.files:
            f.close()
        self.files.clear()


def _end_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)
