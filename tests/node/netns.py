"""A small lab of network namespaces for tests that need real networking.

    with Lab() as lab:
        node = lab.namespace()
        wan = lab.namespace()
        node_if, wan_if = lab.link(node, wan, ["10.200.0.1/30"], ["10.200.0.2/30"])
        wan.run("python3", "-c", "...")

Each namespace and veth end is named ``bwt`` plus random hex, so runs in
parallel never collide. ``close()`` (run by ``with`` also when the body
raises) stops every process started through the lab, and every process still
inside one of its namespaces, by PID, then deletes the namespaces. Traffic
stays inside namespaces the lab created: nothing is added to the host's own
namespace.

Mark tests with ``@needs("wireguard-go", ...)``: it adds the ``netns`` marker
and skips, with a one-line reason, when not root or a tool is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

PREFIX = "bwt"

T = TypeVar("T", bound=Callable[..., Any] | type)


def missing_requirements(*tools: str) -> str | None:
    """Why real-network tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    missing = [tool for tool in ("ip", *tools) if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} on PATH"
    return None


def needs(*tools: str) -> Callable[[T], T]:
    """Mark a test (or class) ``netns`` and skip it when it cannot run here."""
    reason = missing_requirements(*tools)

    def decorate(test: T) -> T:
        marked: T = pytest.mark.netns(test)
        skipped: T = pytest.mark.skipif(reason is not None, reason=reason or "")(marked)
        return skipped

    return decorate


def unique_name(prefix: str = PREFIX) -> str:
    """``bwt`` + 8 hex digits: 11 characters, so a 4-character suffix still fits IFNAMSIZ."""
    return f"{prefix}{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_pid(pid: int, grace: float = 2.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Namespace:
    """One network namespace of a lab."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def argv(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace (``ip netns exec`` execs it: the PID is its own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, check: bool = True, input: str | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*argv),
            check=check,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME args``."""
        return subprocess.run(
            ["ip", "-n", self.name, *args], check=check, capture_output=True, text=True, timeout=30
        )

    def spawn(self, *argv: str) -> subprocess.Popen[str]:
        """Start a long-running process in this namespace; the lab stops it at close."""
        return self.lab.spawn(self, *argv)

    def add_address(self, interface: str, cidr: str) -> None:
        # nodad: an IPv6 address is usable at once, not after duplicate detection.
        extra = ["nodad"] if ":" in cidr else []
        self.ip("address", "add", cidr, "dev", interface, *extra)

    def pids(self) -> list[int]:
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(pid) for pid in out.split()]


class Lab:
    """Namespaces, veth links and processes that all go away at ``close()``."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        self.namespaces: list[Namespace] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._pids: list[int] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self) -> Namespace:
        """A fresh namespace with ``lo`` up."""
        name = unique_name(self.prefix)
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        ns = Namespace(self, name)
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(
        self,
        a: Namespace,
        b: Namespace,
        a_addresses: Sequence[str] = (),
        b_addresses: Sequence[str] = (),
        *,
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b``, addressed and up; returns the two ends' names."""
        a_end, b_end = unique_name(self.prefix), unique_name(self.prefix)
        # Both ends are born inside their namespaces: nothing touches the host's.
        subprocess.run(
            ["ip", "link", "add", a_end, "netns", a.name, "type", "veth",
             "peer", "name", b_end, "netns", b.name],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for ns, end, addresses in ((a, a_end, a_addresses), (b, b_end, b_addresses)):
            for cidr in addresses:
                ns.add_address(end, cidr)
            if mtu is not None:
                ns.ip("link", "set", end, "mtu", str(mtu))
            ns.ip("link", "set", end, "up")
        return a_end, b_end

    def spawn(self, ns: Namespace, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ns.argv(*argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._processes.append(proc)
        return proc

    def track(self, pid: int) -> None:
        """Stop this PID at close too (for processes started elsewhere, e.g. by a driver)."""
        self._pids.append(pid)

    def close(self) -> None:
        """Stop our processes by PID, then delete our namespaces. Safe to call twice."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        for pid in self._pids:
            _stop_pid(pid)
        self._pids.clear()
        failures = []
        for ns in self.namespaces:
            # Whatever still runs inside a lab namespace was started by the test.
            for pid in ns.pids():
                _stop_pid(pid, grace=0.5)
            done = subprocess.run(
                ["ip", "netns", "del", ns.name], capture_output=True, text=True, timeout=30
            )
            if done.returncode != 0:
                failures.append(f"{ns.name}: {done.stderr.strip()}")
        self.namespaces.clear()
        if failures:
            raise RuntimeError(f"could not delete namespaces: {'; '.join(failures)}")
