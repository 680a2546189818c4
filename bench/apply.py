"""Adding one peer to a busy node: burrow's delta path against a bare set and `wg syncconf`.

For each size (10,000 and 65,000 peers) this builds a wireguard-go interface
inside a throwaway network namespace, loads it through burrow's driver, then
times adding ONE peer:

  apply     burrow's everyday path, as the agent runs it: ``push_delta`` =
            DesiredPeers.apply_delta + reconcile.plan_changes against the
            driver's record of what it applied + one ``set=1`` on the socket.
  bare      the floor: one hand-built ``set=1`` with just that peer.
  syncconf  ``wg syncconf`` of the whole config (written to a temp file first,
            not timed), i.e. what a wg-tools based agent would do.
  resync    for reference: ``push_full`` (full ``get=1`` + plan + set), what the
            agent does only at start, after a restart or on a revision gap.

Medians over a few repetitions; the ratios compare runs made here, in this
process, against each other. Also reports the wireguard-go process's RSS.
Progress goes to stderr; the last line on stdout is one line of JSON.

The driver is the agent's own ``InterfaceSet``: wireguard-go refuses the
65,537th peer of an interface (MaxPeers = 1 << 16, errno=-22), so 100,000 peers
run over two interfaces (the device at pool index i on interface i // 65,536),
and the one-peer apply goes to the interface its address falls on. ``wg
syncconf`` works on one interface only, so it is measured at sizes one holds.
Memory: every wireguard-go process's RSS, and this process's (it holds what the
agent holds: the desired peers and the driver's record of them).

Run as root:  .venv/bin/python bench/apply.py  [--sizes 10000 100000] [--repeat 11]
Everything runs inside namespaces named ``bwb…``, removed at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import itertools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from burrow.node.drivers.interfaces import InterfaceSet
from burrow.node.drivers.uapi import PeerUpsert, UapiClient
from burrow.node.drivers.wireguard import MAX_PEERS, push_delta, push_full
from burrow.node.reconcile import AddPeer, DesiredPeers
from burrow.wire import DeltaState, NetworkSpec, PeerSpec


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_key() -> str:
    # Any 32 bytes are a usable WireGuard public key.
    return base64.b64encode(os.urandom(32)).decode()


POOL4 = ipaddress.IPv4Address("10.64.0.0")
POOL6 = ipaddress.IPv6Address("fd42:b0::")
NETWORK = NetworkSpec(
    tunnel_ipv4="10.64.0.0/10",
    tunnel_ipv6="fd42:b0::/48",
    gateway_ipv4="10.64.0.1",
    gateway_ipv6="fd42:b0::1",
    peers_per_interface=MAX_PEERS,
)


def peer_spec(index: int) -> PeerSpec:
    """Peer number ``index``, with its own /32 and /128 from the pools."""
    return PeerSpec(
        public_key=random_key(),
        allowed_ips=(f"{POOL4 + index}/32", f"{POOL6 + index}/128"),
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wireguard_go_mb(driver: InterfaceSet) -> float:
    """The resident memory of every wireguard-go process of the interface set."""
    return sum(rss_mb(d.pid) for d in driver.drivers if d.pid is not None)


def write_config(path: Path, private_key: str, peers: list[PeerSpec]) -> None:
    with path.open("w") as out:
        out.write(f"[Interface]\nPrivateKey = {private_key}\nListenPort = 51820\n\n")
        for peer in peers:
            out.write(f"[Peer]\nPublicKey = {peer.public_key}\n")
            out.write(f"AllowedIPs = {', '.join(peer.allowed_ips)}\n\n")


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


def ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 3)


async def measure(netns: str, size: int, repeat: int, syncconf_repeat: int) -> dict[str, float]:
    driver = InterfaceSet(netns, netns=netns, io_timeout=120)
    driver.network = NETWORK
    driver.addresses = ("10.64.0.1/10", "fd42:b0::1/48")
    try:
        await driver.ensure_running()
        private_key = random_key()
        await driver.configure_interface(private_key, 51820)

        log(f"[{size}] generating peers")
        peers = [peer_spec(i) for i in range(2, size + 2)]
        desired = DesiredPeers(1, peers)
        fresh = itertools.count(size + 2)  # indices of peers not yet on the interface

        log(f"[{size}] loading the interface")
        load_s = await timed(lambda: push_full(driver, desired.peers))
        get_s = await timed(driver.get_state)
        rss = wireguard_go_mb(driver)
        log(
            f"[{size}] loaded in {load_s:.2f} s over {len(driver.interfaces)} interface(s); "
            f"full get {get_s:.3f} s; wireguard-go rss {rss:.0f} MB"
        )

        # The newcomers' addresses (past ``size``) fall on the last interface: the bare set
        # goes to the same socket as burrow's path does.
        client = UapiClient(driver.drivers[-1].socket_path, io_timeout=120)
        on_interface = list(peers)
        apply_s: list[float] = []
        bare_s: list[float] = []

        async def burrow_path() -> None:
            newcomer = peer_spec(next(fresh))
            delta = DeltaState(
                from_revision=desired.revision, revision=desired.revision + 1, upserts=(newcomer,)
            )
            start = time.perf_counter()
            actions = await push_delta(driver, desired, delta)
            apply_s.append(time.perf_counter() - start)
            assert actions == [AddPeer(newcomer.public_key, newcomer.allowed_ips)]
            on_interface.append(newcomer)

        async def bare_set() -> None:
            bare = peer_spec(next(fresh))
            start = time.perf_counter()
            await client.set(peers=[PeerUpsert(bare.public_key, bare.allowed_ips)])
            bare_s.append(time.perf_counter() - start)
            on_interface.append(bare)

        for rep in range(repeat):
            # Interleaved, taking turns at going first, so that drift and
            # wireguard-go's after-work on a new peer hit both alike.
            first, second = (burrow_path, bare_set) if rep % 2 == 0 else (bare_set, burrow_path)
            await first()
            await second()

        syncconf_s: list[float] = []
        write_s: list[float] = []
        one_interface = len(driver.interfaces) == 1
        with tempfile.TemporaryDirectory(prefix="bwb") as tmp:
            config = Path(tmp) / "wg.conf"
            for _ in range(syncconf_repeat if one_interface else 0):
                newcomer = peer_spec(next(fresh))
                on_interface.append(newcomer)
                write_s.append(
                    await timed(
                        lambda: asyncio.to_thread(write_config, config, private_key, on_interface)
                    )
                )
                start = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    "wg", "syncconf", driver.interface, str(config)
                )
                if await proc.wait() != 0:
                    raise RuntimeError("wg syncconf failed")
                syncconf_s.append(time.perf_counter() - start)

        # Tell desired about the peers added behind its back, so a resync adds one peer only.
        catch_up = [p for p in on_interface if p.public_key not in desired.peers]
        await push_delta(
            driver,
            desired,
            DeltaState(
                from_revision=desired.revision,
                revision=desired.revision + 1,
                upserts=tuple(catch_up),
            ),
        )
        resync_s: list[float] = []
        for _ in range(syncconf_repeat):
            # The agent's fallback: desired gains a peer, then a full read, plan and set.
            newcomer = peer_spec(next(fresh))
            desired.apply_delta(
                DeltaState(
                    from_revision=desired.revision,
                    revision=desired.revision + 1,
                    upserts=(newcomer,),
                )
            )
            on_interface.append(newcomer)
            start = time.perf_counter()
            actions = await push_full(driver, desired.peers)
            resync_s.append(time.perf_counter() - start)
            assert actions == [AddPeer(newcomer.public_key, newcomer.allowed_ips)]

        present = len(await driver.get_state())
        if present != len(on_interface):
            raise RuntimeError(f"expected {len(on_interface)} peers, found {present}")

        tag = f"{size // 1000}k"
        result: dict[str, float] = {
            f"apply_{tag}_ms": ms(apply_s),
            f"bare_{tag}_ms": ms(bare_s),
            f"resync_{tag}_ms": ms(resync_s),
            f"ratio_apply_vs_bare_{tag}": round(
                statistics.median(apply_s) / statistics.median(bare_s), 3
            ),
            f"interfaces_{tag}": len(driver.interfaces),
            f"initial_load_{tag}_s": round(load_s, 2),
            f"full_get_{tag}_s": round(get_s, 3),
            f"rss_wireguard_go_{tag}_mb": round(wireguard_go_mb(driver), 1),
            f"rss_agent_{tag}_mb": round(rss_mb(os.getpid()), 1),
        }
        if syncconf_s:
            result[f"syncconf_{tag}_ms"] = ms(syncconf_s)
            result[f"syncconf_config_write_{tag}_ms"] = ms(write_s)
            result[f"ratio_syncconf_vs_apply_{tag}"] = round(
                statistics.median(syncconf_s) / statistics.median(apply_s), 1
            )
        log(f"[{size}] " + ", ".join(f"{k}={v}" for k, v in result.items()))
        return result
    finally:
        await driver.stop()


def bench_size(size: int, repeat: int, syncconf_repeat: int) -> dict[str, float]:
    """One size in its own throwaway namespace, removed whatever happens."""
    netns = f"bwb{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        return asyncio.run(measure(netns, size, repeat, syncconf_repeat))
    finally:
        out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        for pid in out.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", netns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--syncconf-repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/apply.py needs root (network namespaces, wireguard-go)")
    started = time.monotonic()
    figures: dict[str, float] = {}
    for size in args.sizes:
        figures |= bench_size(size, args.repeat, args.syncconf_repeat)
    figures["wireguard_go_max_peers"] = MAX_PEERS
    figures["repeat"] = args.repeat
    figures["syncconf_repeat"] = args.syncconf_repeat
    figures["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
