"""A throwaway Redis server from Debian's ``redis-server``, on a loopback port.

Started once per test session with persistence off (``--save "" --appendonly no``), as a
strict policy requires, in a temporary directory that is removed at the end. Tests reset it
with ``FLUSHALL`` (``RedisServer.reset``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = "/usr/bin/redis-server"


def why_unavailable() -> str | None:
    if shutil.which(REDIS_SERVER) is None:
        return "redis-server not installed (apt-get install redis-server; `make test` does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *args: str) -> str:
        """One command through a plain socket (RESP), for the fixtures: no client library."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(65536).decode()

    def reset(self) -> None:
        assert self.command("FLUSHALL").startswith("+OK")


@contextlib.contextmanager
def running_redis(*extra: str, config: Path | None = None) -> Iterator[RedisServer]:
    """``config``: a redis.conf to start from (the options here and ``extra`` override it)."""
    root = Path(tempfile.mkdtemp(prefix="burrow-redis-"))
    port = _free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            *([str(config)] if config is not None else []),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
            "--logfile",
            "",
            "--loglevel",
            "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if server.command("PING").startswith("+PONG"):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
