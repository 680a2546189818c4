"""A simulated node's HTTP/1.1 connection to a control plane, spoken by hand.

The benchmarks that simulate hundreds of nodes run them in one process on the same cores as
the server they measure. httpx spent about 7 ms of CPU per request there (15 s of a round at
a thousand nodes, more than the replicas themselves), so the figures measured the client.
This keeps one keep-alive connection per use (a long poll, the reports), writes the request
line and headers itself and reads a ``Content-Length`` answer: a few dozen microseconds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class NodeConnection:
    """One keep-alive connection to ``url`` (``http://host:port``), authenticated as a node."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.host, self.port = host, int(port)
        self.headers = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, target: str, payload: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        """Status, headers (lower-case names) and the JSON body; ConnectionError if the server
        closed the connection or answered what this cannot read."""
        if self.streams is None:
            try:
                self.streams = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise ConnectionError(str(exc)) from None
        reader, writer = self.streams
        body = b"" if payload is None else json.dumps(payload).encode()
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""
        try:
            writer.write(f"{method} {target} HTTP/1.1\r\n{self.headers}{extra}\r\n".encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            answer = await reader.readexactly(int(headers["content-length"]))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, KeyError,
                ValueError):  # fmt: skip
            self.close()
            raise ConnectionError("the server closed the connection") from None
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, json.loads(answer) if answer else None

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None
