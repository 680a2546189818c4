"""The lab's "internet" host: a web server that logs who asked, and TCP ports with a banner.

Run inside a namespace: ``python internet.py --file F --log L --http 80 --banner 25 587``.
``GET /file`` answers the file; ``PUT /upload`` answers the SHA-256 of what it received. Each
request appends the peer's address to the log, one line per request, which is how the tests
see which address the internet sees. Standard library only: it runs in a bare namespace.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _client(address: str) -> str:
    return address.removeprefix("::ffff:")


class DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class BannerServer(socketserver.ThreadingTCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Banner(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"220 lab ready\r\n")


def make_handler(payload: bytes, log: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _note(self) -> None:
            with lock, log.open("a") as out:
                out.write(f"{_client(self.client_address[0])} {self.command} {self.path}\n")

        def do_GET(self) -> None:
            self._note()
            if self.path != "/file":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_PUT(self) -> None:
            self._note()
            length = int(self.headers.get("Content-Length", "0"))
            digest = hashlib.sha256()
            while length:
                chunk = self.rfile.read(min(length, 1 << 16))
                if not chunk:
                    break
                digest.update(chunk)
                length -= len(chunk)
            body = digest.hexdigest().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--http", type=int)
    parser.add_argument("--banner", type=int, nargs="*", default=[])
    args = parser.parse_args()
    servers: list[socketserver.BaseServer] = [
        BannerServer(("::", port), Banner) for port in args.banner
    ]
    if args.http:
        handler = make_handler(args.file.read_bytes(), args.log)
        servers.append(DualStackHTTPServer(("::", args.http), handler))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
