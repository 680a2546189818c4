"""The WireGuard driver: runs wireguard-go and changes its peers through the UAPI socket.

``WireGuardDriver`` is the seam the agent's loop uses (tests fake it);
``WireGuardGoDriver`` is the real thing. It starts ``wireguard-go -f IFNAME``
(inside a network namespace when asked), waits for its socket, gives the
interface its addresses and MTU with iproute2, notices when the process dies
and stops it cleanly. Per-peer changes only ever go through the socket.

The driver keeps a record of what it applied (public key -> allowed IPs).
Everyday changes are planned against that record (``push_delta``), so adding
one peer to 65,000 costs one small set and no read of the socket; the socket
is read in full only at start, on resync (``push_full``) and for status.

wireguard-go's own log is dropped once it is up: its error lines can carry a
customer's IP address, which must never be kept.

Imports ``burrow.wire``, ``burrow.node.reconcile`` and ``uapi``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from burrow.node.drivers.uapi import (
    SOCKET_DIR,
    InterfaceSettings,
    PeerChange,
    PeerMemo,
    PeerRemoval,
    PeerUpsert,
    UapiClient,
    UapiError,
    UapiUnavailable,
    WgPeer,
    socket_path,
)
from burrow.node.reconcile import (
    Action,
    DesiredPeers,
    RemovePeer,
    plan,
    plan_changes,
)
from burrow.wire import DeltaState, DesiredState, NetworkSpec, PeerSpec

log = logging.getLogger(__name__)

_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# wireguard-go refuses a peer beyond this (device/constants.go, MaxPeers) with
# errno=-22, after applying the lines before it. A node that must serve more
# devices needs more interfaces.
MAX_PEERS = 1 << 16
_STARTUP_LINES = 20


class WireGuardError(Exception):
    """The WireGuard interface could not be run or changed."""


class WireGuardStartError(WireGuardError):
    """wireguard-go did not come up, or its interface could not be set up."""


class InterfaceInUse(WireGuardStartError):
    """A live wireguard-go already serves this name; names are host-wide (one socket directory)."""


class TooManyPeers(WireGuardError):
    """The change would take the interface past wireguard-go's peer limit; nothing was sent."""


class WireGuardNotRunning(WireGuardError):
    """wireguard-go is not running (never started, stopped, or died)."""


class WireGuardDriver(Protocol):
    """What the agent's loop needs from a WireGuard implementation."""

    @property
    def applied(self) -> Mapping[str, tuple[str, ...]]:
        """Public key -> allowed IPs of every peer the driver believes is on the interface."""
        ...

    @property
    def needs_resync(self) -> bool:
        """True while ``applied`` is untrusted (new start, failed apply), until ``get_state``."""
        ...

    async def ensure_running(self) -> bool:
        """(Re)start the interface if it is down; True means it is new and empty."""
        ...

    async def configure_interface(self, private_key: str, listen_port: int) -> None: ...

    async def get_state(self) -> list[WgPeer]:
        """Read every peer off the interface, and make ``applied`` match what was read."""
        ...

    async def apply(self, actions: Sequence[Action]) -> None:
        """Carry out ``actions`` in one set transaction."""
        ...


def interface_addresses(network: NetworkSpec) -> tuple[str, str]:
    """The gateway addresses with the pools' prefix lengths, so the pools route into the tunnel."""
    pool4 = ipaddress.ip_network(network.tunnel_ipv4, strict=False)
    pool6 = ipaddress.ip_network(network.tunnel_ipv6, strict=False)
    return (
        f"{network.gateway_ipv4}/{pool4.prefixlen}",
        f"{network.gateway_ipv6}/{pool6.prefixlen}",
    )


def to_peer_changes(actions: Sequence[Action]) -> list[PeerChange]:
    changes: list[PeerChange] = []
    for action in actions:
        if isinstance(action, RemovePeer):
            changes.append(PeerRemoval(action.public_key))
        else:
            # An add and an update are the same upsert; replacing the allowed
            # IPs makes it correct whatever the peer had before.
            changes.append(PeerUpsert(action.public_key, action.allowed_ips))
    return changes


def _set_parent_death_signal() -> None:
    # Runs in the child before exec: if the agent dies, wireguard-go gets
    # SIGTERM instead of living on as an orphan that holds the interface name.
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


class WireGuardGoDriver:
    """Runs and supervises one ``wireguard-go`` interface.

    ``addresses`` are CIDRs such as ``10.64.0.1/10`` (see
    ``interface_addresses``). With ``netns`` the interface lives in that
    network namespace; its socket is still in the host's socket directory, so
    ``interface`` must be unique host-wide.
    """

    def __init__(
        self,
        interface: str,
        *,
        addresses: Sequence[str] = (),
        mtu: int = 1320,
        netns: str | None = None,
        wireguard_go: str = "wireguard-go",
        ip: str = "ip",
        socket_dir: Path = SOCKET_DIR,
        start_timeout: float = 5.0,
        io_timeout: float = 10.0,
        max_peers: int = MAX_PEERS,
        routes: Sequence[str] = (),
    ) -> None:
        if not _INTERFACE_NAME.fullmatch(interface):
            raise ValueError("interface names are 1-15 characters of A-Z a-z 0-9 _ . -")
        for address in addresses:
            ipaddress.ip_interface(address)
        self.interface = interface
        self.addresses = tuple(addresses)
        # Networks routed into this interface besides its addresses' own (``InterfaceSet``).
        self.routes = tuple(str(ipaddress.ip_network(r)) for r in routes)
        self.mtu = mtu
        self.netns = netns
        self.socket_path = socket_path(interface, socket_dir)
        self._wireguard_go = wireguard_go
        self._ip = ip
        self._start_timeout = start_timeout
        self.max_peers = max_peers
        self._client = UapiClient(self.socket_path, io_timeout=io_timeout)
        # Status reads every few seconds parse only the peers that changed since the last.
        self._memo = PeerMemo()
        self._proc: asyncio.subprocess.Process | None = None
        self._output: asyncio.Task[None] | None = None
        self._startup_lines: deque[str] | None = None
        self._lock = asyncio.Lock()
        self._applied: dict[str, tuple[str, ...]] = {}
        self._needs_resync = True
        self.restarts = 0

    # --- supervision ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start wireguard-go, wait for its socket, set addresses and MTU and bring the link up."""
        if self.running:
            raise WireGuardError(f"{self.interface} is already running")
        await self._reap()
        await self._clear_stale_socket()
        argv = [self._wireguard_go, "-f", self.interface]
        if self.netns is not None:
            # `ip netns exec` execs the command, so the PID we keep is wireguard-go's own.
            argv = [self._ip, "netns", "exec", self.netns, *argv]
        env = {**os.environ, "LOG_LEVEL": "error", "WG_PROCESS_FOREGROUND": "1"}
        self._startup_lines = deque(maxlen=_STARTUP_LINES)
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            preexec_fn=_set_parent_death_signal,
        )
        self._output = asyncio.create_task(self._drain_output(self._proc))
        self._memo.clear()
        self._applied = {}
        self._needs_resync = True
        try:
            await self._wait_for_socket()
            await self._setup_link()
        except BaseException:
            await self.stop()
            raise
        finally:
            self._startup_lines = None
        log.info("wireguard-go serves %s (pid %s)", self.interface, self.pid)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the socket is removed either way."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await self._reap()
        # Whoever answers on the socket now is not ours: leave it alone.
        with contextlib.suppress(InterfaceInUse):
            await self._clear_stale_socket()
        self._proc = None
        self._applied = {}
        self._needs_resync = True

    async def ensure_running(self) -> bool:
        if self.running:
            return False
        if self._proc is not None:
            log.warning(
                "wireguard-go for %s exited (status %s); restarting",
                self.interface,
                self._proc.returncode,
            )
            self.restarts += 1
        await self.start()
        return True

    async def wait_exited(self) -> int:
        """Wait until wireguard-go exits, and return its status."""
        if self._proc is None:
            raise WireGuardNotRunning(f"{self.interface} was never started")
        return await self._proc.wait()

    async def _reap(self) -> None:
        if self._output is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._output
            self._output = None
        if self._proc is not None:
            await self._proc.wait()

    async def _drain_output(self, proc: asyncio.subprocess.Process) -> None:
        # The pipe must be read or wireguard-go blocks on a full one. Lines are
        # kept only until the socket is up (to explain a failed start): once
        # peers exist, a line may carry a customer's IP address.
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines = self._startup_lines
            if lines is not None:
                lines.append(raw.decode("utf-8", "replace").rstrip())

    async def _clear_stale_socket(self) -> None:
        if not self.socket_path.exists():
            return
        if await self._client.reachable():
            raise InterfaceInUse(f"a live wireguard-go already serves {self.interface}")
        # A SIGKILLed wireguard-go leaves its socket behind; nobody answers on it.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _wait_for_socket(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if not self.running:
                await self._reap()
                output = "; ".join(self._startup_lines or ()) or "no output"
                raise WireGuardStartError(
                    f"wireguard-go for {self.interface} exited with status "
                    f"{self.returncode}: {output}"
                )
            try:
                await self._client.get()
                return
            except UapiUnavailable:
                pass
            if loop.time() > deadline:
                raise WireGuardStartError(
                    f"wireguard-go for {self.interface} gave no socket in {self._start_timeout} s"
                )
            await asyncio.sleep(0.005)

    async def _setup_link(self) -> None:
        commands = [f"address replace {address} dev {self.interface}" for address in self.addresses]
        commands.append(f"link set dev {self.interface} mtu {self.mtu} up")
        commands += [f"route replace {route} dev {self.interface}" for route in self.routes]
        argv = [self._ip]
        if self.netns is not None:
            argv += ["-n", self.netns]
        argv += ["-batch", "-"]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate("\n".join(commands).encode() + b"\n")
        if proc.returncode != 0:
            raise WireGuardStartError(
                f"setting up {self.interface} failed: {stderr.decode(errors='replace').strip()}"
            )

    # --- the socket -----------------------------------------------------------------------------

    @property
    def applied(self) -> Mapping[str, tuple[str, ...]]:
        return self._applied

    @property
    def needs_resync(self) -> bool:
        return self._needs_resync

    def _check_running(self) -> None:
        if not self.running:
            raise WireGuardNotRunning(f"wireguard-go for {self.interface} is not running")

    def _check_peer_limit(self, actions: Sequence[Action]) -> None:
        applied = self._applied
        count = len(applied)
        for action in actions:
            if isinstance(action, RemovePeer):
                count -= action.public_key in applied
            elif action.public_key not in applied:
                count += 1
        if count > self.max_peers:
            raise TooManyPeers(
                f"{self.interface} would hold {count} peers; wireguard-go takes {self.max_peers}"
            )

    async def configure_interface(self, private_key: str, listen_port: int) -> None:
        self._check_running()
        async with self._lock:
            await self._client.set(InterfaceSettings(private_key, listen_port))

    async def get_state(self) -> list[WgPeer]:
        self._check_running()
        async with self._lock:
            device = await self._client.get(self._memo)
            self._applied = {peer.public_key: peer.allowed_ips for peer in device.peers}
            self._needs_resync = False
        return list(device.peers)

    async def apply(self, actions: Sequence[Action]) -> None:
        if not actions:
            return
        changes = to_peer_changes(actions)
        self._check_peer_limit(actions)
        self._check_running()
        async with self._lock:
            try:
                await self._client.set(peers=changes)
            except UapiError:
                # wireguard-go applies a set line by line: part of it may have
                # landed. Only a fresh read can tell what the interface holds.
                self._needs_resync = True
                if not self.running:
                    raise WireGuardNotRunning(
                        f"wireguard-go for {self.interface} died during a change"
                    ) from None
                raise
            applied = self._applied
            for action in actions:
                if isinstance(action, RemovePeer):
                    applied.pop(action.public_key, None)
                else:
                    applied[action.public_key] = action.allowed_ips


async def push_full(
    driver: WireGuardDriver, desired: DesiredState | Mapping[str, PeerSpec]
) -> list[Action]:
    """Resync: read every peer off the interface and apply the full diff."""
    actual = await driver.get_state()
    actions = plan(desired, actual)
    await driver.apply(actions)
    return actions


async def push_delta(
    driver: WireGuardDriver, desired: DesiredPeers, delta: DeltaState
) -> list[Action]:
    """The everyday path: apply ``delta`` to ``desired`` and push only what it touched.

    Raises ``reconcile.DeltaRejected`` (nothing changed: fetch a full state) or
    a driver error (``desired`` moved on but the interface may not have:
    ``driver.needs_resync`` is then True and the caller runs ``push_full``).
    """
    touched = desired.apply_delta(delta)
    actions = plan_changes(desired.peers, driver.applied, touched)
    await driver.apply(actions)
    return actions
