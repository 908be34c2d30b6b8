"""A local HTTP API on 127.0.0.1 for the world around gridtap (price servers and their kin): GETs
answered by `answer(path)`, faults queued with `fail(...)` answered first. The demo's Octopus
endpoint (gridtap_sim.demo_battery) and the tests' price servers (tests/support/price_servers.py)
are both made of it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, bytes, dict[str, str]]  # status, body, headers


def send(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """One whole answer: status, headers, Content-Length, body."""
    handler.send_response(status)
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LocalApi:
    """Serves from construction until `close()`; `requests` keeps every path asked for."""

    def __init__(self) -> None:
        self.faults: list[Answer] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.requests.append(self.path)
                    fault = outer.faults.pop(0) if outer.faults else None
                status, body, headers = fault if fault is not None else outer.answer(self.path)
                send(self, status, headers, body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
             times: int = 1) -> None:
        """The next `times` requests get this answer instead of `answer`'s."""
        with self.lock:
            self.faults += [(status, body, headers or {})] * times

    def answer(self, path: str) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
