"""The resolver driver: its configurations, and real Unbound + dnsmasq in namespaces.

An NSD (Debian's) in a second namespace is authoritative for the lab zone; the node's
resolver asks it through a stub zone, as the e2e lab does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

from burrow.control.policy.resolver_audit import check_resolvers
from burrow.node.drivers.resolver import (
    ROOT_TRUST_ANCHOR,
    NodeResolver,
    list_as_dnsmasq,
    render_dnsmasq_conf,
    render_unbound_conf,
)
from burrow.wire import DnsSpec, FilterListSpec, ResolverSpec
from tests.support.nsd import write_nsd

from ..netns import Lab, Namespace, needs

GATEWAY = ResolverSpec(ipv4="10.64.0.1", ipv6="fd42:b0::1")
ADS = ResolverSpec(ipv4="10.127.255.254", ipv6="fd42:b0::3f:fffe", lists=("ads",))
ADS_BODY = b"ads.lab.test\nother.example\n"
ADS_HASH = hashlib.sha256(ADS_BODY).hexdigest()
SPEC = DnsSpec(
    resolvers=(GATEWAY, ADS),
    lists=(FilterListSpec(name="ads", sha256=ADS_HASH, names=2),),
)


def test_unbound_resolves_validates_and_records_nothing(tmp_path: Path) -> None:
    text = render_unbound_conf(SPEC, port=5335, directory=tmp_path)
    lines = [line.strip() for line in text.splitlines()]
    assert "interface: 127.0.0.1@5335" in lines
    assert "access-control: 127.0.0.0/8 allow" in lines
    assert 'module-config: "validator iterator"' in lines
    assert f'trust-anchor: "{ROOT_TRUST_ANCHOR}"' in lines
    for quiet in ("verbosity: 0", "log-queries: no", "log-replies: no", "control-enable: no"):
        assert quiet in lines
    assert "statistics-interval: 0" in lines
    assert "forward-zone:" not in lines  # recursive by default
    forwarding = SPEC.model_copy(update={"forwarders": ("192.0.2.53",), "dnssec": False})
    text = render_unbound_conf(forwarding, directory=tmp_path)
    assert "forward-addr: 192.0.2.53" in text
    assert 'module-config: "iterator"' in text


def test_dnsmasq_listens_on_its_addresses_only_and_logs_nothing(tmp_path: Path) -> None:
    text = render_dnsmasq_conf(ADS, upstream_port=5335, list_files=[tmp_path / "ads.conf"])
    lines = text.splitlines()
    assert "listen-address=10.127.255.254" in lines
    assert "listen-address=fd42:b0::3f:fffe" in lines
    assert "bind-dynamic" in lines
    assert "server=127.0.0.1#5335" in lines
    assert f"conf-file={tmp_path / 'ads.conf'}" in lines
    assert not [line for line in lines if line.startswith(("log-queries", "interface="))]


def test_a_list_becomes_nxdomain_for_the_name_and_below() -> None:
    assert list_as_dnsmasq(ADS_BODY) == b"local=/ads.lab.test/\nlocal=/other.example/\n"
    assert list_as_dnsmasq(b"") == b""


def dig(ns: Namespace, server: str, name: str, kind: str = "A", tcp: bool = False) -> str:
    """``STATUS answer`` of one query, e.g. ``NOERROR 192.0.2.80`` or ``NXDOMAIN``."""
    argv = ["dig", "+time=2", "+tries=2", "+noall", "+answer", "+comments", f"@{server}"]
    argv += ["+tcp"] if tcp else []
    out = ns.run(*argv, name, kind, check=False).stdout
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), "NO ANSWER")  # fmt: skip
    answers = [line.split()[-1] for line in out.splitlines() if line and not line.startswith(";")]
    return " ".join([status, *answers])


def build(lab: Lab, tmp_path: Path) -> tuple[Namespace, str]:
    node, auth = lab.namespace(), lab.namespace()
    lab.link(
        node, auth, ["198.18.0.1/30", "2001:db8:9::1/64"], ["198.18.0.2/30", "2001:db8:9::2/64"]
    )
    # The gateway addresses are the WireGuard interface's; lo stands in for it here.
    node.add_address("lo", "10.64.0.1/32")
    node.add_address("lo", "fd42:b0::1/128")
    auth.spawn(*write_nsd(tmp_path / "nsd", ["198.18.0.2", "2001:db8:9::2"]))
    return node, "198.18.0.2"


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@needs("unbound", "dnsmasq", "nsd", "dig")
async def test_the_resolver_answers_filters_and_comes_back(lab: Lab, tmp_path: Path) -> None:
    node, auth_address = build(lab, tmp_path)
    fetched: list[str] = []

    async def fetch(sha256: str) -> bytes:
        fetched.append(sha256)
        return ADS_BODY

    resolver = NodeResolver(
        tmp_path / "run",
        fetch,
        netns=node.name,
        stub_zones={"lab.test.": [auth_address]},
        supervise_interval=0.2,
    )
    task = asyncio.create_task(resolver.run())
    try:
        resolver.want(SPEC)
        await asyncio.wait_for(resolver.ready.wait(), 10)
        for process in resolver.processes.values():
            assert process.pid is not None
            lab.track(process.pid)

        def answers(server: str, name: str, **kw: object) -> str:
            return dig(node, server, name, **kw)  # type: ignore[arg-type]

        await asyncio.to_thread(
            wait_until, lambda: answers("10.64.0.1", "www.lab.test") == "NOERROR 192.0.2.80"
        )
        assert answers("fd42:b0::1", "www.lab.test", kind="AAAA") == "NOERROR 2001:db8:ff::80"
        assert answers("10.64.0.1", "x.ads.lab.test", tcp=True) == "NOERROR 192.0.2.83"
        # The ads address blocks the listed name and every name below it, nothing else.
        await asyncio.to_thread(
            wait_until, lambda: answers(ADS.ipv4, "www.lab.test") == "NOERROR 192.0.2.80"
        )
        for name in ("ads.lab.test", "x.ads.lab.test", "deep.x.ads.lab.test"):
            assert answers(ADS.ipv4, name) == "NXDOMAIN"
            assert answers(ADS.ipv6, name) == "NXDOMAIN"
        assert answers(ADS.ipv4, "adsnot.lab.test") == "NOERROR 192.0.2.85"
        # Nothing answers outside the resolver addresses (Unbound only on loopback).
        assert answers("198.18.0.1", "www.lab.test").startswith("NO ANSWER")

        # The same spec again downloads nothing; a dead dnsmasq is started again.
        resolver.want(SPEC.model_copy(update={"dnssec": True}))
        assert fetched == [ADS_HASH]
        victim = resolver.processes["dnsmasq-1"]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.to_thread(
            wait_until, lambda: victim.pid not in (None, old_pid) and victim.restarts == 1
        )
        assert victim.pid is not None
        lab.track(victim.pid)
        await asyncio.to_thread(wait_until, lambda: answers(ADS.ipv4, "ads.lab.test") == "NXDOMAIN")

        # burrow audit's check reads the running processes' configurations.
        count, problems, _ = check_resolvers()
        assert count >= 3
        assert problems == []
        conf = resolver.directory / "dnsmasq-1.conf"
        conf.write_text(conf.read_text() + "log-queries\n")
        count, problems, _ = check_resolvers()
        assert [p.what for p in problems] == ["query logging: log-queries"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Stopped: nothing left running, no extra address on lo, no files.
    assert not resolver.processes
    assert "10.127.255.254" not in node.ip("address", "show", "dev", "lo").stdout
    assert not resolver.directory.exists()


@needs("unbound", "dnsmasq")
async def test_resolvers_left_by_a_killed_agent_are_stopped(lab: Lab, tmp_path: Path) -> None:
    node = lab.namespace()
    node.add_address("lo", "10.64.0.1/32")
    node.add_address("lo", "fd42:b0::1/128")
    directory = tmp_path / "run"
    directory.mkdir()
    conf = directory / "dnsmasq-0.conf"
    conf.write_text(render_dnsmasq_conf(GATEWAY, upstream_port=5335, list_files=[]))
    stray = node.spawn("dnsmasq", "-k", f"--conf-file={conf}")
    # Until `ip netns exec` has exec'd it, the process is not dnsmasq yet.
    cmdline = Path(f"/proc/{stray.pid}/cmdline")
    wait_until(lambda: cmdline.read_bytes().split(b"\0")[0].endswith(b"dnsmasq"), 5)

    async def fetch(_sha256: str) -> bytes:
        return b""

    resolver = NodeResolver(directory, fetch, netns=node.name)
    try:
        await resolver.apply(DnsSpec(resolvers=(GATEWAY,)))
        for process in resolver.processes.values():
            assert process.pid is not None
            lab.track(process.pid)
        assert await asyncio.to_thread(stray.wait, 5) is not None
        await asyncio.sleep(1)
        assert all(process.running for process in resolver.processes.values())
    finally:
        await resolver.close()
