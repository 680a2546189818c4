"""The OpenVPN driver: one ``openvpn`` 2.6 server process per transport, decided over its
management interface.

Each transport (UDP 1194 and TCP 443 by default; each process uses one core, so more can be
added) runs ``openvpn`` with ``management-client-auth`` on a root-only unix socket. Every
``>CLIENT:CONNECT`` is answered here, from the desired state only (``openvpn_auth.decide``):
``client-auth`` with the device's fleet-wide addresses (``ifconfig-push``), or ``client-deny``
with a reason the client shows. A ``>CLIENT:REAUTH`` of an admitted session is answered
``client-auth-nt`` while its credentials are still desired. When the desired state drops a
device or changes its password, or the control plane reports it over a limit, the session is
cut at once with ``client-kill CID HALT`` (a deny on re-auth alone would leave it alive).

The server's tun interfaces get no pool address (WireGuard's interface holds the gateway);
each admitted client gets a host route to its tun, so WireGuard and OpenVPN share one
address plan. nftables treats the tun interfaces as it treats WireGuard's (``agent``).

Privacy: OpenVPN hands the client's address to the management client and writes it in its
log; neither is kept: ENV lines other than username and password are dropped unread, and the
process's own output is logged only with every address replaced. Byte counts per device live
in this process's memory and go only into status reports.

Imports ``burrow.wire`` and ``burrow.node`` (the pure admission and the UAPI peer type).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from burrow.node.drivers.uapi import WgPeer
from burrow.node.drivers.wireguard import _set_parent_death_signal
from burrow.node.openvpn_auth import (
    BAD_CREDENTIALS,
    OPENVPN,
    Admit,
    CredentialIndex,
    LiveSession,
    Refuse,
    decide,
)
from burrow.node.pki import NodePki
from burrow.node.reconcile import DesiredPeers
from burrow.wire import ConnectionRefusal, NetworkSpec

log = logging.getLogger(__name__)

REVOKED_REASON = "Your credentials for this device were revoked or your access ended."
OVER_LIMIT_REASON = "Over a connection limit of your plan; disconnect another device."
REPLACED_REASON = "This device connected again; the older connection was closed."
# How long a refusal over a limit is held in RAM and listed in every status report (so the
# panel can show the device why); a later admission of the device ends it sooner.
REFUSAL_SECONDS = 60.0
_ADDRESS = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b")
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


class OpenVpnError(Exception):
    """openvpn could not be started or its management interface failed."""


@dataclass(frozen=True, slots=True)
class Transport:
    proto: Literal["udp", "tcp"]
    port: int

    @property
    def label(self) -> str:
        return f"{self.proto}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Transport:
        proto, _, port = text.strip().partition(":")
        if proto not in ("udp", "tcp") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"not a transport (udp:PORT or tcp:PORT): {text!r}")
        return cls("udp" if proto == "udp" else "tcp", int(port))


DEFAULT_TRANSPORTS = (Transport("udp", 1194), Transport("tcp", 443))


def tun_name(wg_interface: str, transport: Transport) -> str:
    """The tun interface of one transport, after the WireGuard interface (15 characters)."""
    return f"{wg_interface[:9]}-o{transport.proto[0]}{transport.port % 10000}"[:15]


def redact(line: str) -> str:
    """openvpn's own log line with every address replaced."""
    return _ADDRESS.sub("<address>", line)


def _quote(text: str) -> str:
    """A management-interface string argument."""
    cleaned = "".join(c for c in text if c.isprintable())
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class PkiFiles:
    ca: Path
    cert: Path
    key: Path
    tls_crypt: Path


def write_pki_files(pki: NodePki, directory: Path) -> PkiFiles:
    """The PEM files openvpn reads, in a root-only directory of the runtime tmpfs."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files = PkiFiles(
        directory / "ca.crt",
        directory / "server.crt",
        directory / "server.key",
        directory / "tls-crypt.key",
    )
    for path, text in (
        (files.ca, pki.ca_certificate),
        (files.cert, pki.server_certificate),
        (files.key, pki.server_key),
        (files.tls_crypt, pki.tls_crypt_key),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
    return files


def render_server_config(
    transport: Transport,
    *,
    interface: str,
    network: NetworkSpec,
    pki: PkiFiles,
    management: Path,
) -> str:
    """One server process's configuration (no customer data in it)."""
    pool4 = ipaddress.ip_network(network.tunnel_ipv4)
    pool6 = ipaddress.ip_network(network.tunnel_ipv6)
    gateway6 = ipaddress.ip_address(network.gateway_ipv6)
    lines = [
        "mode server",
        "tls-server",
        f"dev {interface}",
        "dev-type tun",
        f"proto {'udp' if transport.proto == 'udp' else 'tcp-server'}",
        f"port {transport.port}",
        "topology subnet",
        # The pool is the fleet's; the agent routes each client's own addresses to this tun.
        f"ifconfig {network.gateway_ipv4} {pool4.netmask}",
        f"ifconfig-ipv6 {gateway6}/{_v6_prefix(pool6)} {gateway6 + 1}",
        "ifconfig-noexec",
        "route-noexec",
        f"tun-mtu {network.mtu}",
        'push "topology subnet"',
        f'push "route-gateway {network.gateway_ipv4}"',
        'push "redirect-gateway def1 ipv6 bypass-dhcp"',
        f'push "dhcp-option DNS {network.gateway_ipv4}"',
        f"ca {pki.ca}",
        f"cert {pki.cert}",
        f"key {pki.key}",
        f"tls-crypt {pki.tls_crypt}",
        "dh none",
        "verify-client-cert none",
        "username-as-common-name",
        "tls-version-min 1.2",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
        "disable-dco",
        "keepalive 10 60",
        "max-clients 65535",
        f"management {management} unix",
        "management-client-auth",
        "management-hold",
        "persist-key",
        "mute-replay-warnings",
        "verb 1",
    ]
    if transport.proto == "udp":
        lines.append("explicit-exit-notify 1")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class DeviceCounters:
    """One device's OpenVPN bytes on this node (all its sessions, ended ones included)."""

    public_key: str
    rx_bytes: int
    tx_bytes: int
    connected: bool


@dataclass
class Session:
    """One admitted connection of one process. Never its client's address."""

    cid: str
    username: str
    public_key: str
    verifier: str
    subscription: str | None
    ipv4: str
    ipv6: str
    rx: int = 0  # cumulative, as the last >BYTECOUNT_CLI said (from the client)
    tx: int = 0


@dataclass
class _Pending:
    kind: str  # CONNECT or REAUTH
    cid: str
    kid: str
    env: dict[str, str] = field(default_factory=dict)


class OpenVpnProcess:
    """One openvpn server process and its management connection."""

    def __init__(
        self,
        node: OpenVpnNode,
        transport: Transport,
        *,
        interface: str,
        workdir: Path,
    ) -> None:
        self.node = node
        self.transport = transport
        self.interface = interface
        self.workdir = workdir
        self.management = workdir / f"{transport.proto}{transport.port}.sock"
        self.sessions: dict[str, Session] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._output_task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.failures = 0
        self.next_start = 0.0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._writer is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, network: NetworkSpec, pki: PkiFiles) -> None:
        config = self.workdir / f"{self.transport.proto}{self.transport.port}.conf"
        config.write_text(
            render_server_config(
                self.transport,
                interface=self.interface,
                network=network,
                pki=pki,
                management=self.management,
            )
        )
        with contextlib.suppress(FileNotFoundError):
            self.management.unlink()
        argv = [self.node.openvpn, "--config", str(config)]
        if self.node.netns is not None:
            argv = ["ip", "netns", "exec", self.node.netns, *argv]
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # An agent that dies takes its openvpn processes along (they would hold the ports).
            preexec_fn=_set_parent_death_signal,
        )
        self._output_task = asyncio.create_task(self._drain(self._proc))
        try:
            reader, writer = await self._connect()
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read(reader))
            await self.send("bytecount 2")
            await self.send("hold release")
            await self.node.prepare_tun(self.interface, network)
        except BaseException:
            await self.stop()
            raise
        log.info("openvpn serves %s (pid %s)", self.transport.label, self.pid)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        deadline = time.monotonic() + 10
        while True:
            if self._proc is not None and self._proc.returncode is not None:
                raise OpenVpnError(f"openvpn {self.transport.label} exited at start")
            try:
                return await asyncio.open_unix_connection(str(self.management))
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise OpenVpnError(
                        f"openvpn {self.transport.label}: no management socket"
                    ) from None
                await asyncio.sleep(0.02)

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = redact(line.decode(errors="replace").rstrip())
            if "ERROR" in text or "FATAL" in text or "error" in text:
                log.warning("openvpn %s: %s", self.transport.label, text)
            else:
                log.debug("openvpn %s: %s", self.transport.label, text)

    async def stop(self) -> None:
        for task in (self._reader_task, self._output_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reader_task = self._output_task = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for session in list(self.sessions.values()):
            await self._forget(session)
        self.sessions.clear()

    async def send(self, command: str) -> None:
        if self._writer is None:
            raise OpenVpnError(f"openvpn {self.transport.label}: not connected")
        self._writer.write(command.encode() + b"\n")
        await self._writer.drain()

    async def kill(self, cid: str, reason: str) -> None:
        """Cut a session now; the client stops rather than reconnecting (HALT)."""
        session = self.sessions.pop(cid, None)
        with contextlib.suppress(OpenVpnError, ConnectionError):
            await self.send(f"client-kill {cid} HALT,{reason.replace(',', ';')}"[:250])
        if session is not None:
            await self._forget(session)

    async def _forget(self, session: Session) -> None:
        await self.node.session_ended(self, session)

    # --- the management interface -----------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader) -> None:
        pending: _Pending | None = None
        ending: str | None = None  # a disconnecting CID whose ENV lines follow
        while raw := await reader.readline():
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith(">CLIENT:ENV,"):
                item = line[len(">CLIENT:ENV,") :]
                if item == "END":
                    if pending is not None:
                        current, pending = pending, None
                        await self._answer(current)
                    elif ending is not None:
                        cid, ending = ending, None
                        session = self.sessions.pop(cid, None)
                        if session is not None:
                            await self._forget(session)
                elif pending is not None:
                    key, _, value = item.partition("=")
                    # Only what the decision needs; the client's address is dropped unread.
                    if key in ("username", "password"):
                        pending.env[key] = value
                continue
            if line.startswith(">CLIENT:CONNECT,") or line.startswith(">CLIENT:REAUTH,"):
                head, _, rest = line[1:].partition(",")
                parts = rest.split(",")
                pending = _Pending(
                    head.split(":")[1], parts[0], parts[1] if len(parts) > 1 else "0"
                )
            elif line.startswith(">CLIENT:DISCONNECT,"):
                ending = line.split(",")[1]
            elif line.startswith(">BYTECOUNT_CLI:"):
                cid, _, counts = line[len(">BYTECOUNT_CLI:") :].partition(",")
                session = self.sessions.get(cid)
                rx, _, tx = counts.partition(",")
                if session is not None and rx.isdigit() and tx.isdigit():
                    self.node.count(session, int(rx), int(tx))
            elif line.startswith("ERROR:"):
                log.warning("openvpn %s refused a command", self.transport.label)
        log.warning("openvpn %s closed its management interface", self.transport.label)
        self._writer = None

    async def _answer(self, pending: _Pending) -> None:
        try:
            await self.node.answer(self, pending.kind, pending.cid, pending.kid, pending.env)
        except (OpenVpnError, ConnectionError) as exc:
            log.warning("openvpn %s: could not answer a client (%s)", self.transport.label, exc)

    async def admit(self, cid: str, kid: str, session: Session, network: NetworkSpec) -> None:
        pool4 = ipaddress.ip_network(network.tunnel_ipv4)
        pool6 = ipaddress.ip_network(network.tunnel_ipv6)
        lines = [
            f"client-auth {cid} {kid}",
            f"ifconfig-push {session.ipv4} {pool4.netmask}",
        ]
        if session.ipv6:
            lines.append(
                f"ifconfig-ipv6-push {session.ipv6}/{_v6_prefix(pool6)} {network.gateway_ipv6}"
            )
        lines.append("END")
        self.sessions[cid] = session
        await self.send("\n".join(lines))

    async def deny(self, cid: str, kid: str, reason: str) -> None:
        await self.send(f"client-deny {cid} {kid} {_quote('refused')} {_quote(reason)}")


class OpenVpnNode:
    """Every OpenVPN process of this node, the routes of their clients, and the decisions."""

    def __init__(
        self,
        pki: NodePki,
        desired: Callable[[], DesiredPeers | None],
        network: Callable[[], NetworkSpec | None],
        *,
        wg_interface: str,
        runtime_dir: Path,
        transports: Sequence[Transport] = DEFAULT_TRANSPORTS,
        netns: str | None = None,
        openvpn: str = "openvpn",
        supervise_interval: float = 0.5,
    ) -> None:
        self.pki = pki
        self._desired = desired
        self._network = network
        self.netns = netns
        self.openvpn = openvpn
        self.runtime_dir = runtime_dir
        self.supervise_interval = supervise_interval
        self.processes = [
            OpenVpnProcess(self, t, interface=tun_name(wg_interface, t), workdir=runtime_dir)
            for t in transports
        ]
        self._index: CredentialIndex | None = None
        self._index_revision: int | None = None
        self._index_source: object = None
        self._blocked: dict[str, str] = {}
        # Per device refused over a limit: the reason it was shown, and until when (monotonic)
        # to report it. Never the client's address or the time of the attempt.
        self._refused: dict[str, tuple[str, float]] = {}
        # Per device: bytes of ended sessions plus the live ones' last counts (never decreases).
        self._ended: dict[str, list[int]] = {}
        self._started_network: NetworkSpec | None = None
        self._pki_files: PkiFiles | None = None
        self._route_queue: asyncio.Queue[str] = asyncio.Queue()
        self._route_worker: asyncio.Task[None] | None = None
        self.decisions = 0

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(p.interface for p in self.processes)

    @property
    def transports(self) -> tuple[Transport, ...]:
        return tuple(p.transport for p in self.processes)

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the processes once the first desired state is in; supervise until cancelled."""
        try:
            while True:
                try:
                    await self.supervise_once()
                except Exception as exc:
                    log.error("openvpn supervision failed (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(self.supervise_interval)
        finally:
            await self.stop()

    async def supervise_once(self) -> None:
        network = self._network()
        if network is None or self._desired() is None:
            return
        if self._pki_files is None:
            self._pki_files = write_pki_files(self.pki, self.runtime_dir / "pki")
        restart = self._started_network is not None and _process_view(network) != _process_view(
            self._started_network
        )
        now = time.monotonic()
        for process in self.processes:
            if not (restart or not process.running) or now < process.next_start:
                continue
            if process.pid is not None:
                if not restart:
                    log.warning("openvpn %s stopped; restarting it", process.transport.label)
                process.restarts += 1
                await process.stop()
            try:
                await process.start(network, self._pki_files)
                process.failures = 0
            except Exception as exc:
                # One transport failing does not hold up the others; it is retried later.
                process.failures += 1
                process.next_start = time.monotonic() + min(30.0, 0.5 * 2**process.failures)
                log.error(
                    "openvpn %s could not start (%s: %s)",
                    process.transport.label,
                    type(exc).__name__,
                    exc,
                )
        self._started_network = network
        await self.enforce()

    async def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                await process.stop()

    # --- deciding -------------------------------------------------------------------------

    def index(self) -> CredentialIndex:
        desired = self._desired()
        if desired is None:
            return CredentialIndex(())
        if (
            self._index is None
            or self._index_revision != desired.revision
            or self._index_source is not desired
        ):
            self._index = CredentialIndex(desired.peers)
            self._index_revision = desired.revision
            self._index_source = desired
        return self._index

    def live_sessions(self) -> list[LiveSession]:
        return [
            LiveSession(f"{p.transport.label}/{cid}", s.public_key, s.subscription)
            for p in self.processes
            for cid, s in p.sessions.items()
        ]

    async def answer(
        self, process: OpenVpnProcess, kind: str, cid: str, kid: str, env: Mapping[str, str]
    ) -> None:
        self.decisions += 1
        username = env.get("username", "")
        index = self.index()
        network = self._network()
        if kind == "REAUTH":
            session = process.sessions.get(cid)
            if (
                session is not None
                and session.public_key not in self._blocked
                and index.still_valid(session.username, session.public_key, session.verifier)
            ):
                await process.send(f"client-auth-nt {cid} {kid}")
                return
            if session is None:
                # Not admitted here (the agent restarted under it): decide afresh.
                kind = "CONNECT"
            else:
                await process.kill(cid, REVOKED_REASON)
                return
        decision = decide(
            index, username, env.get("password", ""), self.live_sessions(), blocked=self._blocked
        )
        if not isinstance(decision, Admit) or network is None:
            reason = decision.reason if not isinstance(decision, Admit) else BAD_CREDENTIALS
            log.info("openvpn: a connection was refused (%s)", getattr(decision, "log_reason", "-"))
            if isinstance(decision, Refuse) and decision.public_key is not None:
                self._refused[decision.public_key] = (reason, time.monotonic() + REFUSAL_SECONDS)
            await process.deny(cid, kid, reason)
            return
        account = decision.account
        self._refused.pop(account.public_key, None)
        # A device holds one address: its older session (on any transport) makes way.
        for other in self.processes:
            for other_cid, session in list(other.sessions.items()):
                if session.public_key == account.public_key:
                    await other.kill(other_cid, REPLACED_REASON)
        session = Session(
            cid=cid,
            username=username,
            public_key=account.public_key,
            verifier=account.verifier,
            subscription=account.subscription,
            ipv4=account.ipv4,
            ipv6=account.ipv6,
        )
        # Answer first: the client sends nothing through the tunnel before its push reply,
        # which comes a round trip later; its host routes are in place well before that.
        await process.admit(cid, kid, session, network)
        await self.route(process.interface, session, add=True)

    async def enforce(self) -> None:
        """Cut every session whose credentials are no longer desired, or that is blocked."""
        index = self.index()
        for process in self.processes:
            for cid, session in list(process.sessions.items()):
                if session.public_key in self._blocked:
                    await process.kill(cid, self._blocked[session.public_key] or REVOKED_REASON)
                elif not index.still_valid(session.username, session.public_key, session.verifier):
                    await process.kill(cid, REVOKED_REASON)

    @property
    def protocol(self) -> str:
        return OPENVPN

    async def cut(self, keys: Collection[str]) -> None:
        """The control plane's answer to a report: these devices are over a limit here."""
        wanted = {key: OVER_LIMIT_REASON for key in keys}
        if wanted == self._blocked:
            return
        self._blocked = wanted
        await self.enforce()

    # --- routes and counters --------------------------------------------------------------

    async def prepare_tun(self, interface: str, network: NetworkSpec) -> None:
        """Bring the tun up once openvpn made it (it configures nothing itself)."""
        deadline = time.monotonic() + 10
        while True:
            if await self._ip("link", "set", "dev", interface, "mtu", str(network.mtu), "up"):
                return
            if time.monotonic() > deadline:
                raise OpenVpnError(f"{interface} did not appear")
            await asyncio.sleep(0.05)

    async def route(self, interface: str, session: Session, *, add: bool) -> None:
        """The device's host routes to this tun (one ``ip -batch`` for both families)."""
        verb = "replace" if add else "delete"
        commands = []
        if session.ipv4:
            commands.append(f"route {verb} {session.ipv4}/32 dev {interface}")
        if session.ipv6:
            commands.append(f"route {verb} {session.ipv6}/128 dev {interface}")
        if not commands:
            return
        # One worker applies route changes in order, so that a decision never waits for the
        # previous client's routes (each is an `ip` process).
        self._route_queue.put_nowait("\n".join(commands) + "\n")
        if self._route_worker is None or self._route_worker.done():
            self._route_worker = asyncio.create_task(self._apply_routes())

    async def _apply_routes(self) -> None:
        while not self._route_queue.empty():
            batch = [self._route_queue.get_nowait()]
            while not self._route_queue.empty() and len(batch) < 256:
                batch.append(self._route_queue.get_nowait())
            if not await self._ip("-force", "-batch", "-", stdin="".join(batch)):
                log.warning("openvpn: a client route could not be changed")

    async def routes_settled(self) -> None:
        """Wait until every queued route change is applied (tests and benchmarks)."""
        worker = self._route_worker
        if worker is not None:
            await asyncio.shield(worker)

    async def session_ended(self, process: OpenVpnProcess, session: Session) -> None:
        totals = self._ended.setdefault(session.public_key, [0, 0])
        totals[0] += session.rx
        totals[1] += session.tx
        # Another session of the device may hold the route now (it replaced this one).
        if not any(
            s.public_key == session.public_key for p in self.processes for s in p.sessions.values()
        ):
            await self.route(process.interface, session, add=False)

    def count(self, session: Session, rx: int, tx: int) -> None:
        session.rx = max(session.rx, rx)
        session.tx = max(session.tx, tx)

    def traffic(self) -> list[WgPeer]:
        """Each device's cumulative OpenVPN bytes, for fair use (kept in RAM only)."""
        totals: dict[str, list[int]] = {k: list(v) for k, v in self._ended.items()}
        for process in self.processes:
            for session in process.sessions.values():
                entry = totals.setdefault(session.public_key, [0, 0])
                entry[0] += session.rx
                entry[1] += session.tx
        return [WgPeer(public_key=k, rx_bytes=rx, tx_bytes=tx) for k, (rx, tx) in totals.items()]

    def refusals(self) -> list[ConnectionRefusal]:
        """The devices refused over a limit lately, for the status report (and what they were
        shown); the lapsed ones are forgotten here."""
        now = time.monotonic()
        for key in [k for k, (_reason, until) in self._refused.items() if until <= now]:
            del self._refused[key]
        return [
            ConnectionRefusal(public_key=key, protocol=OPENVPN, reason=reason[:300])
            for key, (reason, _until) in sorted(self._refused.items())
        ]

    async def read_sessions(self) -> list[DeviceCounters]:
        """Each device's OpenVPN traffic on this node, as cumulative counters (never lower)."""
        totals: dict[str, list[int]] = {k: list(v) for k, v in self._ended.items()}
        connected: set[str] = set()
        for process in self.processes:
            for session in process.sessions.values():
                entry = totals.setdefault(session.public_key, [0, 0])
                entry[0] += session.rx
                entry[1] += session.tx
                connected.add(session.public_key)
        desired = self._desired()
        known = desired.peers if desired is not None else {}
        # Devices no longer desired and not connected are forgotten after one more report.
        for key in [k for k in self._ended if k not in known and k not in connected]:
            del self._ended[key]
        return [DeviceCounters(key, rx, tx, key in connected) for key, (rx, tx) in totals.items()]

    async def _ip(self, *args: str, stdin: str | None = None) -> bool:
        argv = ["ip"]
        if self.netns is not None:
            argv += ["-n", self.netns]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await proc.communicate(stdin.encode() if stdin is not None else None)
        return proc.returncode == 0


def _v6_prefix(pool: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    """openvpn takes /64 to /124 on a tun; a wider pool is announced as /64 (the client only
    needs its own address and the gateway, both within the pool's first /64)."""
    return min(max(pool.prefixlen, 64), 124)


def _process_view(network: NetworkSpec) -> tuple[object, ...]:
    """What the processes' configurations depend on: a change restarts them."""
    return (
        network.tunnel_ipv4,
        network.tunnel_ipv6,
        network.gateway_ipv4,
        network.gateway_ipv6,
        network.mtu,
    )
