"""A real mosquitto broker on a free 127.0.0.1 port, and a subscriber that records what it sees.

mosquitto is a Debian package installed by `make setup` (APT_PKGS); the tests
fail with a clear message if it is missing rather than skipping.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from gridtap_sim.procs import stop_process


def mosquitto_exe() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and Path(cand).exists():
            return cand
    raise RuntimeError("mosquitto is not installed: run `make setup` (it is in APT_PKGS)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


class Mosquitto:
    """``with Mosquitto(tmp_path) as b:`` runs a broker on ``b.port``; ``restart()`` loses retained state."""

    def __init__(self, workdir: Path, port: int | None = None, extra: str = "") -> None:
        """`extra`: more configuration, e.g. a second listener with TLS (see `tls_listener`)."""
        self.port = port or free_port()
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\nlog_dest none\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([mosquitto_exe(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_until(lambda: self._accepting() or self.proc is None or self.proc.poll() is not None):
            raise RuntimeError("mosquitto did not start listening")
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"mosquitto exited: {err}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)  # and its stderr pipe is read to the end and closed
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Collector:
    """A fresh subscriber: records (topic, payload, retained, monotonic receive time)."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",)) -> None:
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 0) for t in topics])
        self.client.on_subscribe = lambda c, u, mid, rc, p=None: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic()))

    def last(self, topic: str) -> bytes | None:
        with self.lock:
            for t, p, _r, _ts in reversed(self.messages):
                if t == topic:
                    return p
        return None

    def last_json(self, topic: str) -> Any:
        p = self.last(topic)
        return None if p is None else json.loads(p)

    def topics(self, prefix: str = "") -> set[str]:
        with self.lock:
            return {t for t, *_ in self.messages if t.startswith(prefix)}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tls_listener(port: int, ca_file: Path, cert_file: Path, key_file: Path,
                 require_certificate: bool = False) -> str:
    """mosquitto configuration for a TLS listener on 127.0.0.1:port (pass it as Mosquitto(extra=...))."""
    return (f"listener {port} 127.0.0.1\ncafile {ca_file}\ncertfile {cert_file}\nkeyfile {key_file}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n")
