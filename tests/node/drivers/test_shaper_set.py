"""Fair use on every tunnel: the WireGuard interface's shaping repeated on OpenVPN's tuns, with
real tc in a namespace; OpenVPN bytes count towards a device's use."""

from __future__ import annotations

from burrow.node.drivers.tc import ShaperSet, TcShaper
from burrow.node.drivers.uapi import WgPeer
from burrow.node.loop import _with_extra

from ..netns import Lab, needs

PEERS = {"key-a": ("10.64.0.2/32", "fd42:b0::2/128")}


def classes(lab_ns: object, dev: str) -> str:
    done = lab_ns.run("tc", "class", "show", "dev", dev, check=False)  # type: ignore[attr-defined]
    return str(done.stdout)


@needs("tc")
async def test_the_same_peers_are_shaped_on_every_tunnel_and_again_after_a_restart(
    lab: Lab,
) -> None:
    ns = lab.namespace()
    for dev in ("bwsmain", "bwsmain-ou1194"):
        ns.ip("tuntap", "add", "dev", dev, "mode", "tun")
        ns.ip("link", "set", dev, "up")
    generation = [0]
    shapers = ShaperSet(
        TcShaper("bwsmain", netns=ns.name),
        [TcShaper("bwsmain-ou1194", netns=ns.name), TcShaper("bwsmain-ot443", netns=ns.name)],
        generation=lambda: generation[0],
    )
    try:
        # The TCP tun does not exist (its process is still starting): WireGuard's and the UDP
        # tun's shaping are in place all the same.
        assert await shapers.apply(PEERS, 20)
        assert shapers.shaped == frozenset(PEERS)
        for dev in ("bwsmain", "bwsmain-ou1194"):
            assert "rate 20Mbit" in classes(ns, dev), dev
        assert shapers.failures == 1

        # openvpn restarted: its tun is new and bare; the next round puts the shaping back.
        ns.ip("link", "del", "bwsmain-ou1194")
        ns.ip("tuntap", "add", "dev", "bwsmain-ou1194", "mode", "tun")
        ns.ip("link", "set", "bwsmain-ou1194", "up")
        generation[0] += 1
        assert "rate 20Mbit" not in classes(ns, "bwsmain-ou1194")
        await shapers.apply(PEERS, 20)
        assert "rate 20Mbit" in classes(ns, "bwsmain-ou1194")

        await shapers.apply({}, 20)
        for dev in ("bwsmain", "bwsmain-ou1194"):
            assert "rate 20Mbit" not in classes(ns, dev)
    finally:
        await shapers.close()


def test_openvpn_bytes_add_to_the_devices_wireguard_bytes() -> None:
    peers = [WgPeer("a", rx_bytes=10, tx_bytes=20), WgPeer("b", rx_bytes=1, tx_bytes=1)]
    merged = _with_extra(peers, lambda: [WgPeer("a", rx_bytes=5, tx_bytes=7)])
    assert [(p.public_key, p.rx_bytes, p.tx_bytes) for p in merged] == [
        ("a", 15, 27),
        ("b", 1, 1),
    ]
    assert _with_extra(peers, None) is peers
