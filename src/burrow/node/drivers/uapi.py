"""A client for WireGuard's userspace configuration protocol (UAPI), in pure Python.

wireguard-go serves the protocol of https://www.wireguard.com/xplatform/ on
the unix socket ``/var/run/wireguard/IFNAME.sock``: ``get=1`` answers
``key=value`` lines about the device and its peers, ``set=1`` takes such
lines, and every answer ends with ``errno=N`` and a blank line. Keys travel
as hex on the wire and as base64 in burrow's models; this module converts at
the edge.

Both directions stream: a set is encoded and written chunk by chunk, a get is
parsed chunk by chunk as it arrives, so 65,536 peers (wireguard-go's ceiling)
cost linear time and no giant string.

Privacy: a peer's ``endpoint`` is the customer's public IP address. It is read
off the socket and dropped at parse time; nothing here stores, returns or logs
it, and no error message quotes a value read from the socket. The device's
private key is dropped the same way.

Imports only the standard library.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SOCKET_DIR = Path("/var/run/wireguard")

_CHUNK_SIZE = 1 << 16
_READ_SIZE = 1 << 18
# A CIDR as text. It only has to make sure no value can smuggle a newline (a
# second command) onto the wire; wireguard-go checks the rest (errno=-22).
_CIDR = re.compile(r"[0-9A-Fa-f.:]{2,45}/[0-9]{1,3}")


def socket_path(interface: str, socket_dir: Path = SOCKET_DIR) -> Path:
    """Where wireguard-go listens for ``interface``; the directory is shared by all namespaces."""
    return socket_dir / f"{interface}.sock"


class UapiError(Exception):
    """Talking to a WireGuard UAPI socket went wrong."""


class UapiErrnoError(UapiError):
    """The daemon refused an operation: it answered ``errno=N`` with N != 0."""

    def __init__(self, errno: int) -> None:
        self.errno = errno
        super().__init__(f"WireGuard UAPI answered errno={errno} ({os.strerror(abs(errno))})")


class UapiProtocolError(UapiError):
    """The answer did not follow the protocol."""


class UapiUnavailable(UapiError):
    """Nobody answers: no socket, a stale one (daemon gone), a hang-up or a timeout."""


def key_to_hex(key: str) -> str:
    """A base64 WireGuard key (as in ``burrow.wire``) as the 64 hex digits the socket wants."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or len(key) != 44:
        raise ValueError("not a WireGuard key (44 characters of base64)")
    return raw.hex()


def key_from_hex(value: str | bytes) -> str:
    """A key as the socket writes it (hex) in base64."""
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        raise UapiProtocolError("a key on the socket is not hex") from None
    if len(raw) != 32:
        raise UapiProtocolError("a key on the socket is not 32 bytes")
    return base64.b64encode(raw).decode("ascii")


# --- what a get returns -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WgPeer:
    """One peer as wireguard-go reports it. There is no endpoint field, on purpose."""

    public_key: str
    allowed_ips: tuple[str, ...] = ()
    last_handshake_sec: int = 0
    last_handshake_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive_interval: int = 0

    @property
    def last_handshake(self) -> float | None:
        """Unix time of the latest handshake, or None when there has been none."""
        if self.last_handshake_sec == 0 and self.last_handshake_nsec == 0:
            return None
        return self.last_handshake_sec + self.last_handshake_nsec / 1e9


@dataclass(frozen=True, slots=True)
class WgDevice:
    """The interface as wireguard-go reports it; whether a private key is set, never the key."""

    has_private_key: bool = False
    listen_port: int | None = None
    fwmark: int = 0
    peers: tuple[WgPeer, ...] = ()


# --- what a set sends ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InterfaceSettings:
    """Device-level lines of a set. ``repr`` leaves the private key out, so no log shows it."""

    private_key: str | None = field(default=None, repr=False)
    listen_port: int | None = None

    def __post_init__(self) -> None:
        if self.private_key is not None:
            key_to_hex(self.private_key)
        if self.listen_port is not None and not 0 <= self.listen_port <= 65535:
            raise ValueError("listen_port must be 0..65535")


@dataclass(frozen=True, slots=True)
class PeerUpsert:
    """Create the peer, or update it. By default its allowed IPs replace the ones it had.

    Validated when built, so a bad value fails before anything reaches the
    socket (wireguard-go applies a set line by line: a late error leaves the
    earlier lines applied).
    """

    public_key: str
    allowed_ips: tuple[str, ...] = ()
    replace_allowed_ips: bool = True
    persistent_keepalive_interval: int | None = None
    _key_hex: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key_hex", key_to_hex(self.public_key))
        for cidr in self.allowed_ips:
            if not _CIDR.fullmatch(cidr):
                raise ValueError(f"not an IP network: {cidr!r}")
        interval = self.persistent_keepalive_interval
        if interval is not None and not 0 <= interval <= 65535:
            raise ValueError("persistent_keepalive_interval must be 0..65535")


@dataclass(frozen=True, slots=True)
class PeerRemoval:
    """Remove the peer (``remove=true``); removing an absent peer is not an error."""

    public_key: str
    _key_hex: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key_hex", key_to_hex(self.public_key))


PeerChange = PeerUpsert | PeerRemoval


def encode_set(
    interface: InterfaceSettings | None = None,
    peers: Iterable[PeerChange] = (),
    *,
    chunk_size: int = _CHUNK_SIZE,
) -> Iterator[bytes]:
    """Yield one ``set=1`` transaction in chunks of about ``chunk_size`` bytes.

    There is no way to ask for ``replace_peers=true``: on a live interface it
    drops every peer's session (a 15 s outage was measured). Leavers get
    ``remove=true`` instead, everyone else a plain upsert.
    """
    parts: list[str] = ["set=1\n"]
    size = 6
    if interface is not None:
        if interface.private_key is not None:
            parts.append(f"private_key={key_to_hex(interface.private_key)}\n")
        if interface.listen_port is not None:
            parts.append(f"listen_port={interface.listen_port}\n")
    for change in peers:
        if isinstance(change, PeerRemoval):
            block = f"public_key={change._key_hex}\nremove=true\n"
        else:
            lines = [f"public_key={change._key_hex}\n"]
            if change.persistent_keepalive_interval is not None:
                lines.append(
                    f"persistent_keepalive_interval={change.persistent_keepalive_interval}\n"
                )
            if change.replace_allowed_ips:
                lines.append("replace_allowed_ips=true\n")
            lines.extend(f"allowed_ip={cidr}\n" for cidr in change.allowed_ips)
            block = "".join(lines)
        parts.append(block)
        size += len(block)
        if size >= chunk_size:
            yield "".join(parts).encode("ascii")
            parts.clear()
            size = 0
    parts.append("\n")
    yield "".join(parts).encode("ascii")


# --- parsing an answer --------------------------------------------------------------------------


# Numeric peer keys -> index in a draft's counters; anything else about a peer
# (preshared_key, protocol_version, keys of newer daemons) is skipped.
_PEER_NUMBERS = {
    b"last_handshake_time_sec": 0,
    b"last_handshake_time_nsec": 1,
    b"rx_bytes": 2,
    b"tx_bytes": 3,
    b"persistent_keepalive_interval": 4,
}


class _PeerDraft:
    __slots__ = ("allowed_ips", "numbers", "public_key")

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.allowed_ips: list[str] = []
        self.numbers = [0, 0, 0, 0, 0]

    def build(self) -> WgPeer:
        sec, nsec, rx, tx, keepalive = self.numbers
        return WgPeer(
            public_key=self.public_key,
            allowed_ips=tuple(self.allowed_ips),
            last_handshake_sec=sec,
            last_handshake_nsec=nsec,
            rx_bytes=rx,
            tx_bytes=tx,
            persistent_keepalive_interval=keepalive,
        )


def _int(key: bytes, value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        # The message names the key only: values from the socket are never quoted.
        raise UapiProtocolError(f"{key.decode('ascii', 'replace')} is not a number") from None


class AnswerParser:
    """Parses one answer (of a get or a set) from chunks of bytes as they arrive."""

    def __init__(self) -> None:
        self._tail = b""
        self._peers: list[WgPeer] = []
        self._peer: _PeerDraft | None = None
        self._has_private_key = False
        self._listen_port: int | None = None
        self._fwmark = 0
        self._errno: int | None = None
        self.done = False

    def feed(self, data: bytes) -> None:
        if self.done:
            if data:
                raise UapiProtocolError("data after the end of the answer")
            return
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        # One loop with everything in locals: a get of 65,536 peers is some
        # 650,000 lines, and this is where the time goes.
        peers = self._peers
        peer = self._peer
        numbers = _PEER_NUMBERS
        try:
            for index, line in enumerate(lines):
                if not line:
                    self._end(has_more=index + 1 < len(lines) or bool(self._tail))
                    return
                key, sep, value = line.partition(b"=")
                if not sep:
                    raise UapiProtocolError("a line without '='")
                if self._errno is not None:
                    raise UapiProtocolError("a line after the errno line")
                if peer is not None:
                    if key == b"allowed_ip":
                        peer.allowed_ips.append(value.decode("ascii"))
                        continue
                    slot = numbers.get(key)
                    if slot is not None:
                        peer.numbers[slot] = _int(key, value)
                        continue
                if key == b"public_key":
                    if peer is not None:
                        peers.append(peer.build())
                    peer = _PeerDraft(key_from_hex(value))
                elif key == b"endpoint":
                    pass  # The customer's IP address: dropped here, before anything keeps it.
                elif key == b"errno":
                    self._errno = _int(key, value)
                    if peer is not None:
                        peers.append(peer.build())
                        peer = None
                elif peer is not None:
                    pass  # preshared_key, protocol_version, newer keys: not needed.
                elif key == b"allowed_ip":
                    raise UapiProtocolError("allowed_ip before any public_key")
                elif key == b"private_key":
                    self._has_private_key = True  # The key itself is dropped.
                elif key == b"listen_port":
                    self._listen_port = _int(key, value)
                elif key == b"fwmark":
                    self._fwmark = _int(key, value)
        finally:
            self._peer = peer

    def _end(self, *, has_more: bool) -> None:
        if self._errno is None:
            raise UapiProtocolError("the answer ended without an errno line")
        if has_more:
            raise UapiProtocolError("data after the end of the answer")
        self.done = True

    def result(self) -> WgDevice:
        """The device, once the answer is complete; raises UapiErrnoError when errno != 0."""
        if not self.done:
            raise UapiProtocolError("the answer is incomplete")
        if self._errno:
            raise UapiErrnoError(self._errno)
        return WgDevice(
            has_private_key=self._has_private_key,
            listen_port=self._listen_port,
            fwmark=self._fwmark,
            peers=tuple(self._peers),
        )


def parse_answer(data: bytes) -> WgDevice:
    """Parse a complete answer held in memory (the client streams instead)."""
    parser = AnswerParser()
    parser.feed(data)
    return parser.result()


# --- status reads: parse only what changed ------------------------------------------------------

_PEER_START = b"\npublic_key="
_ERRNO_START = b"\nerrno="
_ENDPOINT = b"endpoint="


def _peer_lines(public_key: str, lines: bytes) -> WgPeer:
    """One peer from its lines after ``public_key=`` (the endpoint already cut out)."""
    draft = _PeerDraft(public_key)
    numbers = _PEER_NUMBERS
    for line in lines.split(b"\n"):
        if not line:
            continue
        key, sep, value = line.partition(b"=")
        if not sep:
            raise UapiProtocolError("a line without '='")
        if key == b"allowed_ip":
            draft.allowed_ips.append(value.decode("ascii"))
            continue
        slot = numbers.get(key)
        if slot is not None:
            draft.numbers[slot] = _int(key, value)
    return draft.build()


class PeerMemo:
    """What the previous read of one interface saw, so that the next one parses only the
    peers whose lines changed (an idle peer's handshake time and counters stay the same) and
    converts each key from hex once while it stays on the interface.

    It keeps, per peer, a hash of its lines with the endpoint cut out and the parsed
    ``WgPeer``: never the lines themselves, so no customer's address stays in memory.
    ``parsed`` is how many peers the latest read had to parse.
    """

    def __init__(self) -> None:
        # Two flat dicts rather than one of pairs: no small tuple per peer for the garbage
        # collector to walk on every read.
        self._digests: dict[bytes, int] = {}
        self._peers: dict[bytes, WgPeer] = {}
        self.parsed = 0

    def clear(self) -> None:
        self._digests, self._peers = {}, {}

    def read(self, answer: bytes) -> WgDevice:
        """A complete ``get=1`` answer (ending in a blank line) as a device."""
        if not answer.endswith(b"\n\n"):
            raise UapiProtocolError("the answer is incomplete")
        body, found, errno_line = (b"\n" + answer[:-2]).rpartition(_ERRNO_START)
        if not found:
            raise UapiProtocolError("the answer ended without an errno line")
        if b"\n" in errno_line:
            raise UapiProtocolError("a line after the errno line")
        if b"\n\n" in body or body.endswith(b"\n"):
            raise UapiProtocolError("data after the end of the answer")
        errno = _int(b"errno", errno_line)
        if errno:
            raise UapiErrnoError(errno)
        head, *blocks = body.split(_PEER_START)
        # The device's own lines go through the full parser (they are few).
        device = parse_answer(head[1:] + b"\nerrno=0\n\n" if head else b"errno=0\n\n")
        old_digests, old_peers = self._digests, self._peers
        digests: dict[bytes, int] = {}
        by_key: dict[bytes, WgPeer] = {}
        parsed = 0
        for block in blocks:
            hex_key, newline, lines = block[:64], block[64:65], block[65:]
            if len(hex_key) != 64 or newline not in (b"\n", b""):
                raise UapiProtocolError("a key on the socket is not 32 bytes")
            # The customer's IP address is cut out before anything is compared or kept.
            start = lines.find(_ENDPOINT)
            if start >= 0 and (start == 0 or lines[start - 1] == 0x0A):
                end = lines.find(b"\n", start)
                lines = lines[:start] + (lines[end + 1 :] if end >= 0 else b"")
            digest = digests[hex_key] = hash(lines)
            known = old_peers.get(hex_key)
            if known is None or old_digests[hex_key] != digest:
                public_key = known.public_key if known is not None else key_from_hex(hex_key)
                known = _peer_lines(public_key, lines)
                parsed += 1
            by_key[hex_key] = known
        self._digests, self._peers = digests, by_key
        self.parsed = parsed
        return WgDevice(
            has_private_key=device.has_private_key,
            listen_port=device.listen_port,
            fwmark=device.fwmark,
            peers=tuple(by_key.values()),
        )


# --- the client ---------------------------------------------------------------------------------


class UapiClient:
    """Talks to one interface's UAPI socket, one connection per operation.

    A fresh connection costs tens of microseconds and means a restarted
    wireguard-go never leaves us holding a dead one. ``io_timeout`` bounds
    each wait for progress, not the whole operation, so a set of 65,536
    peers may take as long as it needs while a hung daemon is still noticed.

    Plain non-blocking sockets rather than asyncio streams: when wireguard-go
    refuses a line it answers at once and hangs up on the rest of the set;
    a stream would then report the broken pipe and lose the answer (the
    errno) still waiting in the socket.
    """

    def __init__(self, path: Path | str, *, io_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.io_timeout = io_timeout

    @classmethod
    def for_interface(
        cls, interface: str, *, socket_dir: Path = SOCKET_DIR, io_timeout: float = 10.0
    ) -> UapiClient:
        return cls(socket_path(interface, socket_dir), io_timeout=io_timeout)

    async def reachable(self) -> bool:
        """Whether a daemon accepts connections (False for a missing or stale socket)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.io_timeout):
                await self._connect(asyncio.get_running_loop(), sock)
        except (UapiUnavailable, TimeoutError):
            return False
        finally:
            sock.close()
        return True

    async def get(self, memo: PeerMemo | None = None) -> WgDevice:
        """``get=1``: the device and all its peers, parsed as the answer streams in.

        With a ``memo`` (a status read, repeated every few seconds) the answer is read whole
        and only the peers that changed since the memo's last read are parsed.
        """
        if memo is None:
            return await self._exchange([b"get=1\n\n"])
        return memo.read(await self._exchange_raw(b"get=1\n\n"))

    async def _exchange_raw(self, request: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        answer = bytearray()
        try:
            async with asyncio.timeout(self.io_timeout) as deadline:
                await self._connect(loop, sock)
                await loop.sock_sendall(sock, request)
                # A blank line ends an answer and can appear nowhere else in it.
                while not answer.endswith(b"\n\n"):
                    try:
                        data = await loop.sock_recv(sock, _READ_SIZE)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        raise UapiUnavailable(f"{self.path} hung up before the answer ended")
                    answer += data
                    deadline.reschedule(loop.time() + self.io_timeout)
                return bytes(answer)
        except TimeoutError:
            raise UapiUnavailable(f"{self.path} gave no answer in {self.io_timeout} s") from None
        finally:
            sock.close()

    async def set(
        self, interface: InterfaceSettings | None = None, peers: Iterable[PeerChange] = ()
    ) -> None:
        """``set=1``: stream one transaction; raises UapiErrnoError if the daemon refuses it."""
        await self._exchange(encode_set(interface, peers))

    async def _exchange(self, request: Iterable[bytes]) -> WgDevice:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(self.io_timeout) as deadline:
                await self._connect(loop, sock)
                for chunk in request:
                    try:
                        await loop.sock_sendall(sock, chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        break  # The daemon answered early (an error) or died: read on.
                    deadline.reschedule(loop.time() + self.io_timeout)
                parser = AnswerParser()
                while not parser.done:
                    try:
                        data = await loop.sock_recv(sock, _READ_SIZE)
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        raise UapiUnavailable(f"{self.path} hung up before the answer ended")
                    parser.feed(data)
                    deadline.reschedule(loop.time() + self.io_timeout)
                return parser.result()
        except TimeoutError:
            raise UapiUnavailable(f"{self.path} gave no answer in {self.io_timeout} s") from None
        finally:
            sock.close()

    async def _connect(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        try:
            await loop.sock_connect(sock, str(self.path))
        except FileNotFoundError:
            raise UapiUnavailable(f"no WireGuard socket at {self.path}") from None
        except ConnectionRefusedError:
            raise UapiUnavailable(f"stale WireGuard socket at {self.path}") from None
