"""Finding 13.8: the REST API is not open to the world by default, and slow clients cannot starve it.

Real sockets against the daemon's API. Linux routes all of 127.0.0.0/8 to
loopback, so a client can come from 127.0.0.2 to stand for a second machine.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridtap.config import parse_config
from gridtap.outputs import restapi
from tests.support.daemon import IMP, Rig, config_text, running_daemon
from tests.support.fakeboard import FakeBoard

QUERY = f"/sensor/{IMP}?version=1.0&interval=minute&unit=watt"


def _request(port: int, path: str, headers: dict[str, str] | None = None,
             source: str = "127.0.0.1") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


@pytest.fixture
def default_rig(short_tmp: Path) -> Iterator[Rig]:
    """A config whose [daemon] says nothing about bind, CORS or JSONP (the port is the test's)."""
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state").replace('bind = "127.0.0.1"\n', "")
    with running_daemon(board, text, short_tmp) as r:
        yield r


def test_by_default_loopback_only_no_cors_no_jsonp(default_rig: Rig) -> None:
    api = default_rig.daemon.api
    assert api is not None
    assert api.httpd.server_address[0] == "127.0.0.1"
    resp = _request(api.port, QUERY, {"Origin": "http://evil.example"})
    assert resp.status == 200 and resp.getheader("Access-Control-Allow-Origin") is None
    resp = _request(api.port, QUERY + "&callback=leak")
    assert resp.status == 403


def test_cors_and_jsonp_when_the_config_asks(short_tmp: Path) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state").replace(
        'bind = "127.0.0.1"\n', 'bind = "127.0.0.1"\njsonp = true\ncors_origins = ["http://dash.lan:8123"]\n')
    with running_daemon(board, text, short_tmp) as r:
        assert r.daemon.api is not None
        port = r.daemon.api.port
        ok = _request(port, QUERY, {"Origin": "http://dash.lan:8123"})
        assert ok.getheader("Access-Control-Allow-Origin") == "http://dash.lan:8123"
        assert _request(port, QUERY, {"Origin": "http://evil.example"}).getheader(
            "Access-Control-Allow-Origin") is None
        assert _request(port, QUERY + "&callback=show").status == 200


def test_a_bad_origin_is_a_config_error(tmp_path: Path) -> None:
    from gridtap.errors import UserError

    text = config_text(tmp_path / "tty", tmp_path / "state").replace(
        'bind = "127.0.0.1"\n', 'cors_origins = ["dash.lan/x"]\n')
    with pytest.raises(UserError, match="cors_origins.*not an origin"):
        parse_config(text, tmp_path / "gridtap.toml")


def _slowloris(port: int, n: int, stop: threading.Event) -> list[socket.socket]:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]

    def trickle() -> None:
        while not stop.wait(0.3):
            for s in socks:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
    threading.Thread(target=trickle, daemon=True).start()
    return socks


def test_slow_clients_cannot_take_every_slot(default_rig: Rig) -> None:
    api = default_rig.daemon.api
    assert api is not None
    stop = threading.Event()
    socks = _slowloris(api.port, 10, stop)
    try:
        time.sleep(0.3)
        statuses: list[int] = []

        retried: list[int] = []

        def ordinary() -> None:  # a dashboard on another machine, three fetches at a time
            for _ in range(20):
                # A client that has read its answer may ask again before the server's thread has
                # given back its slot (under load, the closing thread is not scheduled at once):
                # a 503 then asks it to come back (Retry-After), as a dashboard does. The slowloris
                # clients holding every slot would refuse every try.
                for attempt in range(4):
                    status = _request(api.port, QUERY, source="127.0.0.2").status
                    if status != 503:
                        break
                    retried.append(attempt)
                    time.sleep(0.2)
                statuses.append(status)
        workers = [threading.Thread(target=ordinary) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
        assert statuses.count(200) == 60, statuses
        assert len(retried) <= 6, f"{len(retried)} of 60 requests had to come back"
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_headers_have_a_deadline(default_rig: Rig) -> None:
    api = default_rig.daemon.api
    assert api is not None
    with socket.create_connection(("127.0.0.1", api.port), timeout=15) as s:
        t0 = time.monotonic()
        try:
            while True:  # a byte every 0.5 s: each one restarts the socket timeout
                s.sendall(b"G")
                s.settimeout(0.5)
                try:
                    if s.recv(100) == b"":
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass
        assert time.monotonic() - t0 < restapi.HEADER_S + 1.5
