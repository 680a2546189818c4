"""What the local stand-ins for providers' APIs share: a handler that answers JSON and logs
nothing, served on a loopback port in a thread for as long as a test needs it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    def send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    # Room for a test's burst of concurrent calls (the default backlog of 5 resets some).
    request_queue_size = 128


@contextmanager
def running_http(handler: type[BaseHTTPRequestHandler], name: str) -> Iterator[str]:
    """Serves ``handler`` on a free loopback port; yields the base URL; stops it after."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
