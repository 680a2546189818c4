"""The tc driver: shapes chosen peers to a rate, both ways, on the WireGuard interface.

Traffic to a client leaves through the WireGuard interface: an HTB qdisc there gives each
shaped peer a class at the rate, and u32 filters send the peer's tunnel addresses (IPv4 and
IPv6 destination) to it. Traffic from a client arrives on the interface's ingress; this
kernel has no ``act_police``, so ingress is redirected to an IFB device whose own HTB does
the same by source address. Unmatched traffic goes through HTB's direct queue, unshaped.

The filters sit in u32 hash tables of 256 buckets keyed by the address's last byte: a long
linear list of u32 filters costs every packet a walk (10,000 of them halved throughput on
these machines), a hash table does not.

Changes are whole: ``render_shaping`` writes burrow's complete tc setup (first removing
whatever is there, in a way that also works when nothing is) and ``tc -batch`` loads it. tc
has no transactions, so when a batch fails part-way the driver removes everything it set up,
leaving every peer unshaped, and raises: a failure never leaves half the peers shaped. With
no peer to shape, nothing of burrow's stays on the interface (and the redirect through the
IFB, which costs a little CPU per packet, is gone).

Imports nothing of burrow.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence

_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# u32 offsets in the IP header of an address's last 4-byte word (hashed on its last byte).
_V4_DST, _V4_SRC = 16, 12
_V6_DST, _V6_SRC = 36, 20
# Hash tables of our own (hex handles), one per family; u32 numbers the root tables of the
# two priorities 800: and 801: on a freshly made qdisc.
_HT_V4, _HT_V6 = "10", "11"
_ROOT_V4, _ROOT_V6 = "800", "801"
MAX_SHAPED = 0xFFFF - 2  # class ids 1:2 .. 1:ffff
DIRECT_QLEN = 1000


class TcError(Exception):
    """tc or ip refused a command."""


def ifb_name(interface: str) -> str:
    """The IFB device of ``interface`` (names are per namespace; 15 characters at most)."""
    return f"{interface[:12]}ifb"


def _hosts(addresses: Sequence[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    hosts = []
    for address in addresses:
        network = ipaddress.ip_network(address, strict=False)
        if network.num_addresses != 1:
            raise ValueError(f"a shaped peer's address is one host, not {address}")
        hosts.append(network.network_address)
    return hosts


def _device(dev: str, peers: Mapping[str, Sequence[str]], rate_mbit: int, *, to: bool) -> list[str]:
    """HTB, a class per peer and hashed u32 filters on ``dev``, by destination or source."""
    lines = [f"qdisc add dev {dev} root handle 1: htb default 0 direct_qlen {DIRECT_QLEN}"]
    filters4: list[str] = []
    filters6: list[str] = []
    for n, key in enumerate(sorted(peers), start=2):
        classid = f"1:{n:x}"
        lines.append(
            f"class add dev {dev} parent 1: classid {classid} "
            f"htb rate {rate_mbit}mbit ceil {rate_mbit}mbit quantum 1514"
        )
        for host in _hosts(peers[key]):
            bucket = f"{host.packed[-1]:x}"
            if host.version == 4:
                direction = "dst" if to else "src"
                filters4.append(
                    f"filter add dev {dev} parent 1: prio 1 protocol ip u32 ht {_HT_V4}:{bucket}: "
                    f"match ip {direction} {host}/32 flowid {classid}"
                )
            else:
                direction = "dst" if to else "src"
                filters6.append(
                    f"filter add dev {dev} parent 1: prio 2 protocol ipv6 u32 "
                    f"ht {_HT_V6}:{bucket}: match ip6 {direction} {host}/128 flowid {classid}"
                )
    at4, at6 = (_V4_DST, _V6_DST) if to else (_V4_SRC, _V6_SRC)
    lines += [
        f"filter add dev {dev} parent 1: prio 1 handle {_HT_V4}: protocol ip u32 divisor 256",
        f"filter add dev {dev} parent 1: prio 1 protocol ip u32 ht {_ROOT_V4}:: "
        f"match u8 0 0 hashkey mask 0x000000ff at {at4} link {_HT_V4}:",
        *filters4,
        f"filter add dev {dev} parent 1: prio 2 handle {_HT_V6}: protocol ipv6 u32 divisor 256",
        f"filter add dev {dev} parent 1: prio 2 protocol ipv6 u32 ht {_ROOT_V6}:: "
        f"match u8 0 0 hashkey mask 0x000000ff at {at6} link {_HT_V6}:",
        *filters6,
    ]
    return lines


def render_clear(interface: str, ifb: str) -> str:
    """Remove burrow's qdiscs (and so every class and filter) from both devices.

    Replacing first makes each delete succeed whether or not there was anything to delete.
    """
    lines = [
        f"qdisc replace dev {interface} ingress",
        f"qdisc del dev {interface} ingress",
        f"qdisc replace dev {interface} root pfifo",
        f"qdisc del dev {interface} root",
        f"qdisc replace dev {ifb} root pfifo",
        f"qdisc del dev {ifb} root",
    ]
    return "".join(f"{line}\n" for line in lines)


def render_shaping(
    interface: str, ifb: str, peers: Mapping[str, Sequence[str]], rate_mbit: int
) -> str:
    """burrow's whole tc setup for ``peers`` (public key -> tunnel addresses), as a batch."""
    for name in (interface, ifb):
        if not _INTERFACE_NAME.fullmatch(name):
            raise ValueError(f"not an interface name: {name!r}")
    if rate_mbit < 1:
        raise ValueError("the shaped rate is at least 1 Mbit/s")
    if len(peers) > MAX_SHAPED:
        raise ValueError(f"at most {MAX_SHAPED} peers can be shaped at once")
    text = render_clear(interface, ifb)
    if not peers:
        return text
    lines = [
        *_device(interface, peers, rate_mbit, to=True),
        *_device(ifb, peers, rate_mbit, to=False),
        # The redirect last: uploads reach the IFB only once it shapes.
        f"qdisc add dev {interface} handle ffff: ingress",
        f"filter add dev {interface} parent ffff: prio 1 protocol all u32 match u32 0 0 "
        f"action mirred egress redirect dev {ifb}",
    ]
    return text + "".join(f"{line}\n" for line in lines)


def _in_netns(argv: list[str], netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


async def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise TcError(f"{argv[0]} is not installed (Debian: apt install iproute2)") from exc
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise TcError(f"{' '.join(argv[:6])} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


class TcShaper:
    """Shaping of one WireGuard interface (in ``netns``), with the peers it shapes now."""

    def __init__(self, interface: str, *, netns: str | None = None) -> None:
        if not _INTERFACE_NAME.fullmatch(interface):
            raise ValueError(f"not an interface name: {interface!r}")
        self.interface = interface
        self.ifb = ifb_name(interface)
        self.netns = netns
        self._shaped: dict[str, tuple[str, ...]] = {}
        self._rate: int | None = None

    @property
    def shaped(self) -> frozenset[str]:
        return frozenset(self._shaped)

    async def _batch(self, script: str) -> None:
        await _run(_in_netns(["tc", "-batch", "-"], self.netns), stdin=script)

    async def _ensure_ifb(self) -> None:
        show = _in_netns(["ip", "link", "show", "dev", self.ifb], self.netns)
        try:
            await _run(show)
        except TcError:
            await _run(_in_netns(["ip", "link", "add", self.ifb, "type", "ifb"], self.netns))
        await _run(_in_netns(["ip", "link", "set", "dev", self.ifb, "up"], self.netns))

    async def apply(
        self, peers: Mapping[str, Sequence[str]], rate_mbit: int, *, force: bool = False
    ) -> bool:
        """Shape exactly ``peers`` (public key -> tunnel addresses) at ``rate_mbit``.

        Does nothing when that is already so, unless ``force`` (the interface was made anew
        and lost its qdiscs). Returns whether tc was run. On failure everything is removed
        and ``TcError`` raised.
        """
        wanted = {key: tuple(addresses) for key, addresses in peers.items()}
        if not force and wanted == self._shaped and (rate_mbit == self._rate or not wanted):
            return False
        script = render_shaping(self.interface, self.ifb, wanted, rate_mbit)
        try:
            if wanted:
                await self._ensure_ifb()
            await self._batch(script)
        except TcError:
            self._shaped = {}
            await self.clear()
            raise
        self._shaped = wanted
        self._rate = rate_mbit
        return True

    async def clear(self) -> None:
        """Remove every qdisc of burrow's (no peer is shaped any more)."""
        self._shaped = {}
        try:
            await self._batch(render_clear(self.interface, self.ifb))
        except TcError:
            # Without its interface (wireguard-go stopped) nothing is left there to remove;
            # the IFB's qdisc still goes (the device itself with ``close``).
            if await self._ifb_exists():
                ifb = self.ifb
                await self._batch(f"qdisc replace dev {ifb} root pfifo\nqdisc del dev {ifb} root\n")

    async def _ifb_exists(self) -> bool:
        try:
            await _run(_in_netns(["ip", "link", "show", "dev", self.ifb], self.netns))
        except TcError:
            return False
        return True

    async def close(self) -> None:
        """Remove burrow's qdiscs and the IFB device (the agent stops)."""
        try:
            await self.clear()
        finally:
            if await self._ifb_exists():
                await _run(_in_netns(["ip", "link", "del", "dev", self.ifb], self.netns))


class ShaperSet:
    """The WireGuard interface's shaper plus one per other tunnel (OpenVPN's tuns).

    The same peers are shaped at the same rate on every tunnel, so a device is slowed whichever
    protocol it uses. WireGuard's shaper is the one that counts: a failure there is raised as
    before. Another tunnel may not exist right now (its process is starting or restarting):
    its failure is logged by the caller's next round and retried; ``generation`` (e.g. the
    number of process restarts) tells when a tunnel was made anew and lost its qdiscs.
    """

    def __init__(
        self,
        main: TcShaper,
        others: Sequence[TcShaper],
        generation: Callable[[], int] = lambda: 0,
    ) -> None:
        self.main = main
        self.others = list(others)
        self._generation = generation
        self._applied_generation = -1
        self.failures = 0

    @property
    def shaped(self) -> frozenset[str]:
        return self.main.shaped

    async def apply(
        self, peers: Mapping[str, Sequence[str]], rate_mbit: int, *, force: bool = False
    ) -> bool:
        changed = await self.main.apply(peers, rate_mbit, force=force)
        generation = self._generation()
        renew = force or generation != self._applied_generation
        self._applied_generation = generation
        for shaper in self.others:
            try:
                if await shaper.apply(peers, rate_mbit, force=renew and bool(peers)):
                    changed = True
            except TcError:
                self.failures += 1
                self._applied_generation = -1  # try again, in full, next round
        return changed

    async def clear(self) -> None:
        await self.main.clear()
        for shaper in self.others:
            with contextlib.suppress(TcError):
                await shaper.clear()

    async def close(self) -> None:
        await self.main.close()
        for shaper in self.others:
            with contextlib.suppress(TcError):
                await shaper.close()
