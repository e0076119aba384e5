"""Real servers on 127.0.0.1 for the firewall tests (issue 27): a mirror holding files, a server that accepts and
never answers, and a port nothing listens on. Threads in the test process; each stops when its block ends."""
from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from pathlib import Path
from typing import Iterator


class _Quiet(http.server.SimpleHTTPRequestHandler):
    seen: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP mirror serving ``folder``: (its base URL, the request paths it saw)."""
    seen: list[str] = []
    handler = type("Handler", (_Quiet,), {"seen": seen})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel completes the handshake) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released: connecting is refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
