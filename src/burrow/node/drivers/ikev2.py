"""The IKEv2 driver: runs strongSwan's charon and changes its devices over vici.

What runs, and why:

- **charon** (Debian's ``strongswan-charon``) with ``kernel-libipsec``: these machines have
  no ESP in the kernel, so ESP runs in charon over a TUN device (``ipsec0`` in the node's
  namespace). Its plugins are listed explicitly (``load_modular = no``), so an operator's
  ``/etc/strongswan.d`` changes nothing here.
- **A /run of its own.** charon keeps its pid file in ``/run`` and two instances on one host
  (a node beside a hand-made one, or several test nodes) would refuse each other. Each
  instance runs under ``unshare --mount`` with its runtime directory bind-mounted on ``/run``,
  so the pid file and the vici socket are in that directory, seen from the agent too.
- **Nothing is logged.** charon's log lines name clients' addresses: syslog is off, no file
  log, and its output goes to /dev/null.
- **vici** (the ``vici`` package, blocking; called in a worker thread) is the only way the
  agent changes charon. Each device is a connection of its own (``d-<username>``), bound to
  its EAP-MSCHAPv2 name, with two one-address pools holding the device's fleet-wide tunnel
  addresses; its secret is loaded as an ``NTLM`` shared key, i.e. the NT hash the control
  plane sends. The node never holds a device's plain secret. Devices are loaded and unloaded
  one by one as the desired state changes: no restart, no rewrite of the whole set.
  Unloading a device also terminates its IKE SA (and with it every CHILD SA) at once.
- **The EAP name picks the device, whatever the IKE identity.** Windows' built-in client
  sends its own IP address as IKE identity and the username only inside EAP. So no device
  connection asks for an IKE identity, and one connection loaded before every device, the
  gate (``GATE``), is the one charon starts each IKE_AUTH with: it asks for the EAP identity
  and can never be the SA's last connection (it requires a group no client can have). After
  EAP-MSCHAPv2 charon checks the connection's constraints and walks on to the first one whose
  ``eap_id`` equals the name whose secret verified (strongSwan 5.9.8: "switching to peer
  config 'd-<name>'"); that device's connection, pools and children are the SA's. charon
  records the name inside the MSCHAPv2 response as the EAP identity, so a client announcing
  one name and proving another's secret gets only the other's connection. The price: every
  device connection is a candidate for every IKE_AUTH, and charon sorts them one insertion
  at a time (a connect took 35 ms with 1,000 devices, 0.65-0.85 s with 8,000, against 0.38 s
  when the IKE identity picked one); and any identity now reaches EAP, where a wrong secret
  holds one of charon's threads for EAP-MSCHAPv2's 2-second retry delay.

Imports ``burrow.wire`` only (its models, when the agent builds ``IkeV2Device`` values).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import re
import shlex
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import vici

log = logging.getLogger(__name__)

CHARON = "/usr/lib/ipsec/charon"
SOCKET_NAME = "charon.vici"
CONFIG_NAME = "strongswan.conf"
# Explicit and small: crypto (openssl, plus gcrypt for MD4/DES that EAP-MSCHAPv2 needs and
# OpenSSL 3 keeps in its legacy provider), certificates, EAP-MSCHAPv2, vici, userspace ESP.
PLUGINS = (
    "random nonce openssl gcrypt pem pkcs1 pkcs8 x509 revocation constraints pubkey "
    "curve25519 gmp hmac kdf eap-identity eap-mschapv2 vici kernel-libipsec "
    "kernel-netlink socket-default attr"
)
# Strong proposals only, named explicitly (old Apple defaults are 3DES and DH group 2):
# AES-GCM / AES-CBC with SHA-2, DH groups 19, 20, 31 (Curve25519) and 14 (2048-bit MODP, for
# Windows' built-in client, whose strongest default it is).
IKE_PROPOSALS = (
    "aes256gcm16-prfsha384-ecp384",
    "aes256gcm16-prfsha256-ecp256",
    "aes256gcm16-prfsha256-curve25519",
    "aes256-sha384-ecp384",
    "aes256-sha256-ecp256",
    "aes256-sha256-modp2048",
)
# With a DH group for clients that rekey with PFS (Apple's EnablePFS, the strongSwan app),
# without for those that do not; the first CHILD SA never has one.
ESP_PROPOSALS = (
    "aes256gcm16-ecp384",
    "aes256gcm16-ecp256",
    "aes256gcm16-curve25519",
    "aes256-sha256-modp2048",
    "aes256gcm16",
    "aes128gcm16",
    "aes256-sha256",
)
CHILD_NAME = "net"
# The connection each IKE_AUTH starts on (see the module's docstring); never an SA's last one.
GATE = "eap-gate"
# Groups come only from RADIUS or attribute certificates, neither of which this charon loads.
NO_GROUP = "burrow-no-client-has-this-group"
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NT_HASH = re.compile(r"[0-9a-f]{32}")
_START_TIMEOUT = 10.0

T = TypeVar("T")


class IkeV2Error(Exception):
    """charon could not be run, or refused a change."""


class CharonStartError(IkeV2Error):
    """charon did not come up (not installed, or its vici socket never appeared)."""


@dataclass(frozen=True, slots=True)
class IkeV2Device:
    """One device the node serves over IKEv2: what charon needs, never the plain secret.

    ``key`` is the device's name on the wire (its WireGuard public key); ``addresses`` are its
    fleet-wide tunnel addresses (one /32, one /128).
    """

    key: str
    username: str
    nt_hash: str
    addresses: tuple[str, ...]
    subscription: str | None = None
    per_server: int | None = None

    def __post_init__(self) -> None:
        if not _USERNAME.fullmatch(self.username):
            raise ValueError(f"not an IKEv2 username: {self.username!r}")
        if not _NT_HASH.fullmatch(self.nt_hash):
            raise ValueError("an NT hash is 32 lower-case hex digits")
        for cidr in self.addresses:
            network = ipaddress.ip_network(cidr)
            if network.num_addresses != 1:
                raise ValueError(f"a device's address is one address, not {cidr}")

    @property
    def conn(self) -> str:
        return f"d-{self.username}"

    def pool(self, version: int) -> str:
        return f"d{version}-{self.username}"


@dataclass(frozen=True, slots=True)
class IkeV2Server:
    """The node's side of every connection."""

    identity: str  # the node's public host: its certificate's SAN
    certificate_pem: str
    private_key_pem: str
    dns: tuple[str, ...] = ()
    ike_proposals: tuple[str, ...] = IKE_PROPOSALS
    esp_proposals: tuple[str, ...] = ESP_PROPOSALS


@dataclass(frozen=True, slots=True)
class IkeV2Session:
    """One established IKE SA, as ``list-sas`` shows it (never the client's address)."""

    username: str
    ike_id: int
    established: bool
    rx_bytes: int
    tx_bytes: int


def render_strongswan_conf(socket_path: str, *, install_virtual_ip: bool = False) -> str:
    """charon's whole configuration: plugins, the vici socket, and no logging anywhere.

    ``install_virtual_ip`` is for a client (tests, benchmarks): a node assigns addresses.
    """
    return "\n".join(
        [
            "# Written by burrow's node agent; charon reads nothing else.",
            "charon {",
            "  load_modular = no",
            f"  load = {PLUGINS}",
            f"  install_virtual_ip = {'yes' if install_virtual_ip else 'no'}",
            "  plugins {",
            "    vici {",
            f"      socket = unix://{socket_path}",
            "    }",
            "  }",
            "  syslog {",
            "    daemon {",
            "      default = -1",
            "    }",
            "    auth {",
            "      default = -1",
            "    }",
            "  }",
            "}",
            "",
        ]
    )


def _ike_settings(server: IkeV2Server) -> dict[str, Any]:
    """What the gate and every device connection share: charon answers IKE_SA_INIT and the
    first IKE_AUTH from the gate, and the rest from the device's connection."""
    return {
        "version": "2",
        "proposals": list(server.ike_proposals),
        "send_cert": "always",
        "mobike": "yes",
        "fragmentation": "yes",
        "local": {"auth": "pubkey", "id": server.identity},
    }


def gate_message(server: IkeV2Server) -> dict[str, Any]:
    """The vici ``load-conn`` message for the gate: any IKE identity, any EAP name (charon
    asks for it), and a group no client has, so after EAP charon always moves the SA on to
    the device connection bound to the verified name, or ends it."""
    return {
        GATE: {
            **_ike_settings(server),
            "remote": {
                "auth": "eap-mschapv2",
                "id": "%any",
                "eap_id": "%any",
                "groups": [NO_GROUP],
            },
        }
    }


def conn_message(server: IkeV2Server, device: IkeV2Device) -> dict[str, Any]:
    """The vici ``load-conn`` message for one device."""
    local_ts = ["0.0.0.0/0", "::/0"]
    return {
        device.conn: {
            **_ike_settings(server),
            "pools": [device.pool(ipaddress.ip_network(a).version) for a in device.addresses],
            # One device, one IKE SA: its second connection replaces the first.
            "unique": "replace",
            "dpd_delay": "30s",
            # Any IKE identity (Windows sends its IP address); the EAP-MSCHAPv2 name whose
            # secret verified must be this device's, so one device's secret never opens
            # another device's connection.
            "remote": {"auth": "eap-mschapv2", "id": "%any", "eap_id": device.username},
            "children": {
                CHILD_NAME: {
                    "local_ts": local_ts,
                    "esp_proposals": list(server.esp_proposals),
                    "dpd_action": "clear",
                }
            },
        }
    }


def pool_messages(server: IkeV2Server, device: IkeV2Device) -> list[dict[str, Any]]:
    """One ``load-pool`` per address: a pool of exactly the device's own address."""
    messages = []
    for cidr in device.addresses:
        network = ipaddress.ip_network(cidr)
        dns = [d for d in server.dns if ipaddress.ip_address(d).version == network.version]
        body: dict[str, Any] = {"addrs": str(network)}
        if dns:
            body["dns"] = dns
        messages.append({device.pool(network.version): body})
    return messages


def shared_message(device: IkeV2Device) -> dict[str, Any]:
    """The ``load-shared`` message: the NT hash as an NTLM secret, owned by the username."""
    return {
        "id": device.conn,
        "type": "NTLM",
        "data": bytes.fromhex(device.nt_hash),
        "owners": [device.username],
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(_text(value))
    except ValueError:
        return 0


def parse_sas(entries: Iterable[Mapping[str, Any]]) -> list[IkeV2Session]:
    """``list-sas`` answers -> sessions of burrow's device connections."""
    sessions = []
    for entry in entries:
        for name, sa in entry.items():
            if not name.startswith("d-"):
                continue
            rx = tx = 0
            for child in (sa.get("child-sas") or {}).values():
                rx += _int(child.get("bytes-in", 0))
                tx += _int(child.get("bytes-out", 0))
            sessions.append(
                IkeV2Session(
                    username=name[2:],
                    ike_id=_int(sa.get("uniqueid", 0)),
                    established=_text(sa.get("state", "")) == "ESTABLISHED",
                    rx_bytes=rx,
                    tx_bytes=tx,
                )
            )
    return sessions


def _set_parent_death_signal() -> None:
    # If the agent dies, charon gets SIGTERM instead of serving on as an orphan.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)


class CharonDriver:
    """Runs and supervises one charon, and keeps its devices equal to what it is given.

    ``runtime_dir`` becomes charon's ``/run`` (pid file, vici socket); with ``netns`` charon
    runs in that network namespace. The driver remembers what it loaded (``applied``): a
    restarted charon gets everything again from that memory, without the control plane
    (fail-static).
    """

    def __init__(
        self,
        runtime_dir: Path,
        *,
        netns: str | None = None,
        charon: str = CHARON,
        ip: str = "ip",
        start_timeout: float = _START_TIMEOUT,
        install_virtual_ip: bool = False,
    ) -> None:
        self._install_virtual_ip = install_virtual_ip
        self.runtime_dir = runtime_dir
        self.netns = netns
        self._charon = charon
        self._ip = ip
        self._start_timeout = start_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._server: IkeV2Server | None = None
        self._applied: dict[str, IkeV2Device] = {}
        self._session: Any = None
        self._vici_lock = threading.Lock()
        self.restarts = 0

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / SOCKET_NAME

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def applied(self) -> Mapping[str, IkeV2Device]:
        """Username -> device, for every device loaded into charon."""
        return dict(self._applied)

    # --- the process -------------------------------------------------------------------

    def argv(self) -> list[str]:
        """charon under a private mount namespace whose /run is ``runtime_dir``."""
        script = 'mount --bind "$0" /run && exec "$1"'
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(self.runtime_dir),
            self._charon,
        ]
        if self.netns is not None:
            argv = [self._ip, "netns", "exec", self.netns, *argv]
        return argv

    async def start(self, server: IkeV2Server | None) -> None:
        """Start charon, wait for vici, load the server's certificate and key.

        Without ``server`` charon starts bare: a client, driven through ``call``.
        """
        if self.running:
            raise IkeV2Error("charon is already running")
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.runtime_dir, 0o700)
        for stale in ("charon.pid", SOCKET_NAME, "charon.ctl"):
            with contextlib.suppress(FileNotFoundError):
                (self.runtime_dir / stale).unlink()
        config = self.runtime_dir / CONFIG_NAME
        # Inside charon's mount namespace the directory is /run.
        config.write_text(
            render_strongswan_conf(
                f"/run/{SOCKET_NAME}", install_virtual_ip=self._install_virtual_ip
            )
        )
        env = {**os.environ, "STRONGSWAN_CONF": f"/run/{CONFIG_NAME}"}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
                preexec_fn=_set_parent_death_signal,
            )
        except FileNotFoundError as exc:
            raise CharonStartError(f"cannot run charon: {exc}") from None
        self._server = server
        self._applied = {}
        try:
            await self._wait_for_socket()
            if server is not None:
                await self._call(lambda s: self._load_server(s, server))
        except BaseException:
            await self.stop()
            raise
        log.info("charon serves IKEv2 (pid %s)", self.pid)

    async def ensure_running(self) -> bool:
        """Restart a dead charon and load every device again; True when it was restarted."""
        if self.running or self._server is None:
            return False
        log.warning("charon exited (status %s); restarting", self._proc and self._proc.returncode)
        self.restarts += 1
        devices = list(self._applied.values())
        await self.start(self._server)
        await self.apply(devices)
        return True

    async def stop(self, grace: float = 3.0) -> None:
        proc = self._proc
        self._close_session()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._proc = None
        self._applied = {}
        # A stopped charon leaves nothing behind: its socket, pid file and configuration.
        for leftover in ("charon.pid", SOCKET_NAME, "charon.ctl", CONFIG_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.runtime_dir / leftover).unlink()
        with contextlib.suppress(OSError):
            self.runtime_dir.rmdir()

    async def _wait_for_socket(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if not self.running:
                code = self._proc.returncode if self._proc else None
                raise CharonStartError(f"charon exited at start (status {code})")
            if self.socket_path.exists():
                try:
                    await self._call(lambda s: s.version())
                    return
                except (OSError, IkeV2Error):
                    pass
            if loop.time() > deadline:
                raise CharonStartError("charon's vici socket did not appear")
            await asyncio.sleep(0.05)

    # --- vici --------------------------------------------------------------------------

    def _open_session(self) -> Any:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10.0)
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        return vici.Session(sock)

    def _close_session(self) -> None:
        with self._vici_lock:
            if self._session is not None:
                with contextlib.suppress(Exception):
                    self._session.transport.socket.close()
                self._session = None

    def _with_session(self, fn: Callable[[Any], T]) -> T:
        with self._vici_lock:
            if self._session is None:
                self._session = self._open_session()
            try:
                return fn(self._session)
            except vici.exception.CommandException as exc:
                raise IkeV2Error(f"charon refused: {exc}") from None
            except (OSError, vici.exception.SessionException) as exc:
                # The connection is unusable (charon restarted?): open a new one next time.
                with contextlib.suppress(Exception):
                    self._session.transport.socket.close()
                self._session = None
                raise IkeV2Error(f"vici: {exc}") from None

    async def _call(self, fn: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self._with_session, fn)

    @staticmethod
    def _load_server(session: Any, server: IkeV2Server) -> None:
        session.load_cert({"type": "X509", "flag": "NONE", "data": server.certificate_pem})
        session.load_key({"type": "any", "data": server.private_key_pem})
        # Before any device: among connections that match a peer equally well charon starts
        # with the one loaded first, and that must be the gate.
        session.load_conn(gate_message(server))

    @staticmethod
    def _load_device(session: Any, server: IkeV2Server, device: IkeV2Device) -> None:
        session.load_shared(shared_message(device))
        for pool in pool_messages(server, device):
            session.load_pool(pool)
        session.load_conn(conn_message(server, device))

    @staticmethod
    def _terminate(session: Any, conn: str) -> None:
        # force: no waiting for the client's answer; the SA is gone when this returns.
        try:
            for _ in session.terminate({"ike": conn, "force": "yes", "timeout": "-1"}):
                pass
        except vici.exception.CommandException as exc:
            if "no matching SAs" not in str(exc):
                raise

    @classmethod
    def _unload_device(cls, session: Any, device: IkeV2Device) -> None:
        # The connection first, so the device cannot start a new SA while the old one ends.
        with contextlib.suppress(vici.exception.CommandException):
            session.unload_conn({"name": device.conn})
        with contextlib.suppress(vici.exception.CommandException):
            session.unload_shared({"id": device.conn})
        cls._terminate(session, device.conn)
        for cidr in device.addresses:
            with contextlib.suppress(vici.exception.CommandException):
                session.unload_pool({"name": device.pool(ipaddress.ip_network(cidr).version)})

    # --- what the agent calls ------------------------------------------------------------

    async def apply(self, devices: Iterable[IkeV2Device]) -> tuple[int, int]:
        """Make charon serve exactly ``devices``; returns (loaded, unloaded) counts.

        Only differences go to charon: a device that is unchanged is not touched (its SA
        lives on), a changed one is unloaded and loaded again, a leaver is unloaded and its
        SAs terminated.
        """
        server = self._require_server()
        wanted = {device.username: device for device in devices}
        leavers = [d for name, d in self._applied.items() if wanted.get(name) != d]
        comers = [d for name, d in wanted.items() if self._applied.get(name) != d]
        for leaver in leavers:
            await self._call(partial(self._unload_device, device=leaver))
            self._applied.pop(leaver.username, None)
        for comer in comers:
            await self._call(partial(self._load_device, server=server, device=comer))
            self._applied[comer.username] = comer
        return len(comers), len(leavers)

    async def upsert(self, device: IkeV2Device) -> None:
        server = self._require_server()
        old = self._applied.get(device.username)
        if old == device:
            return
        if old is not None:
            await self._call(lambda s: self._unload_device(s, old))
        await self._call(lambda s: self._load_device(s, server, device))
        self._applied[device.username] = device

    async def remove(self, username: str) -> None:
        device = self._applied.pop(username, None)
        if device is not None:
            await self._call(lambda s: self._unload_device(s, device))

    async def terminate(self, username: str) -> None:
        """End the device's IKE SA (its secret stays loaded: it may connect again)."""
        await self._call(lambda s: self._terminate(s, f"d-{username}"))

    async def terminate_sa(self, ike_id: int) -> None:
        """End one IKE SA by its unique id (a connection refused over a limit)."""

        def run(session: Any) -> None:
            try:
                for _ in session.terminate(
                    {"ike-id": str(ike_id), "force": "yes", "timeout": "-1"}
                ):
                    pass
            except vici.exception.CommandException as exc:
                if "no matching SAs" not in str(exc):
                    raise

        await self._call(run)

    async def sessions(self) -> list[IkeV2Session]:
        """Every IKE SA of a device, with its CHILD SAs' byte counts."""
        return await self._call(lambda s: parse_sas(list(s.list_sas())))

    def _require_server(self) -> IkeV2Server:
        if self._server is None or not self.running:
            raise IkeV2Error("charon is not running")
        return self._server

    async def set_dns(self, dns: tuple[str, ...]) -> None:
        """The resolver addresses devices are given; a change reloads every device (rare)."""
        server = self._require_server()
        if server.dns == dns:
            return
        self._server = replace(server, dns=dns)
        devices = list(self._applied.values())
        for device in devices:
            await self._call(partial(self._unload_device, device=device))
            await self._call(partial(self._load_device, server=self._server, device=device))

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)`` on charon's vici session in a worker thread."""
        return await self._call(fn)

    def describe(self) -> str:
        return shlex.join(self.argv())


def over_limit(
    sessions: Sequence[IkeV2Session], devices: Mapping[str, IkeV2Device]
) -> list[IkeV2Session]:
    """The sessions to refuse: per subscription, those beyond its per-server limit, newest first.

    ``ike_id`` grows with each new SA, so the ones kept are the oldest: a second connection
    is refused, the first one keeps working.
    """
    by_subscription: dict[str, list[IkeV2Session]] = {}
    limits: dict[str, int] = {}
    for session in sessions:
        device = devices.get(session.username)
        if device is None or device.subscription is None or device.per_server is None:
            continue
        by_subscription.setdefault(device.subscription, []).append(session)
        limits[device.subscription] = device.per_server
    refused = []
    for subscription, group in by_subscription.items():
        group.sort(key=lambda s: s.ike_id)
        refused.extend(group[limits[subscription] :])
    return refused
