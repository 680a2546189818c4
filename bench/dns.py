"""Benchmark: what the node's resolver costs a query, and what a million blocked names cost.

Two measurements, each against a baseline taken in the same run:

  hit    A client resolves ``www.lab.test`` through a real wireguard-go tunnel, asking the
         node's resolver (dnsmasq in front of Unbound, run by burrow's ``NodeResolver``; a
         cache hit after the first query) and, alternately, asking the authoritative server
         (NSD, in a namespace behind the node) directly through the same tunnel. The figure
         is the difference of the medians (``hit_added_p50_ms``) and their ratio.
  1m     One dnsmasq configured as burrow configures it, with a filter list of 1,000,000
         names: seconds from start until it answers (NXDOMAIN for a listed name) and its
         resident memory then. Baseline: Unbound with the same names as local-zones
         (``--no-unbound`` skips it: it needs about half a gigabyte).

All traffic stays inside namespaces the benchmark makes (and removes). Every loop is bounded
in count and time. Run as root: ``.venv/bin/python bench/dns.py [--queries 2000]``. Progress
goes to stderr; the last line on stdout is one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node.netns import Lab, Namespace, unique_name  # noqa: E402
from tests.support.nsd import write_nsd  # noqa: E402

from burrow.control.policy.dns import parse_filter_list  # noqa: E402
from burrow.node.drivers.resolver import (  # noqa: E402
    NodeResolver,
    list_as_dnsmasq,
    render_dnsmasq_conf,
)
from burrow.node.identity import new_private_key, public_key_of  # noqa: E402
from burrow.wire import DnsSpec, ResolverSpec  # noqa: E402

MTU = 1320
NAMES = 1_000_000
LOAD_TIMEOUT = 120.0

# Runs in the client's namespace: N timed queries of one name; latencies in ms and how many
# got no answer (a datagram lost on the busy VM), as JSON.
QUERY_LOOP = """
import json, sys, time
import dns.exception, dns.message, dns.query
server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
query = dns.message.make_query(name, "A")
times, lost = [], 0
deadline = time.monotonic() + 60
for _ in range(count):
    start = time.perf_counter()
    try:
        answer = dns.query.udp(query, server, timeout=1)
    except dns.exception.Timeout:
        lost += 1
        continue
    times.append((time.perf_counter() - start) * 1000)
    assert answer.answer, answer
    if time.monotonic() > deadline:
        break
print(json.dumps({"times": times, "lost": lost}))
"""

# Polls one name until the server answers NXDOMAIN; prints the seconds it took.
WAIT_NXDOMAIN = """
import sys, time
import dns.message, dns.query, dns.rcode
server, name, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
start = float(sys.argv[4])
query = dns.message.make_query(name, "A")
while time.time() - start < limit:
    try:
        if dns.query.udp(query, server, timeout=0.2).rcode() == dns.rcode.NXDOMAIN:
            print(time.time() - start)
            sys.exit(0)
    except Exception:
        time.sleep(0.02)
sys.exit(1)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wg_up(ns: Namespace, interface: str) -> None:
    ns.spawn("wireguard-go", "-f", interface)
    sock = Path(f"/var/run/wireguard/{interface}.sock")
    deadline = time.monotonic() + 5
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"wireguard-go {interface} gave no socket")
        time.sleep(0.01)


def wg_set(ns: Namespace, interface: str, private_key: str, *args: str) -> None:
    argv = ["wg", "set", interface, "private-key", "/dev/stdin", *args]
    ns.run(*argv, input=private_key + "\n")


def queries(client: Namespace, server: str, count: int) -> list[float]:
    out = client.run(
        sys.executable, "-c", QUERY_LOOP, server, "www.lab.test", str(count), timeout=90
    ).stdout
    result = json.loads(out)
    if result["lost"]:
        log(f"{server}: {result['lost']} of {count} queries got no answer")
    if not result["times"]:
        raise RuntimeError(f"{server} answered none of {count} queries")
    return [float(x) for x in result["times"]]


async def measure_hits(lab: Lab, tmp: Path, count: int, rounds: int) -> dict[str, float]:
    client, node, auth = lab.namespace(), lab.namespace(), lab.namespace()
    lab.link(client, node, ["198.51.100.1/30"], ["198.51.100.2/30"])
    lab.link(node, auth, ["203.0.113.1/30"], ["203.0.113.2/30"])
    node.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    auth.ip("route", "add", "10.64.0.0/10", "via", "203.0.113.1")
    auth.spawn(*write_nsd(tmp / "nsd", ["203.0.113.2"]))

    node_if, client_if = unique_name("bwn"), unique_name("bwc")
    node_key, client_key = new_private_key(), new_private_key()
    wg_up(node, node_if)
    wg_set(node, node_if, node_key, "listen-port", "51820",
           "peer", public_key_of(client_key), "allowed-ips", "10.64.0.2/32")  # fmt: skip
    node.ip("address", "add", "10.64.0.1/10", "dev", node_if)
    node.ip("link", "set", node_if, "mtu", str(MTU), "up")
    wg_up(client, client_if)
    wg_set(client, client_if, client_key, "peer", public_key_of(node_key),
           "endpoint", "198.51.100.2:51820", "allowed-ips", "0.0.0.0/0")  # fmt: skip
    client.ip("address", "add", "10.64.0.2/32", "dev", client_if)
    client.ip("link", "set", client_if, "mtu", str(MTU), "up")
    for net in ("10.64.0.0/10", "203.0.113.0/30"):
        client.ip("route", "add", net, "dev", client_if)

    async def no_lists(_sha256: str) -> bytes:
        raise AssertionError("no lists in this measurement")

    resolver = NodeResolver(
        tmp / "run", no_lists, netns=node.name, stub_zones={"lab.test.": ["203.0.113.2"]}
    )
    spec = DnsSpec(resolvers=(ResolverSpec(ipv4="10.64.0.1", ipv6="fd42:b0::1"),))
    await resolver.apply(spec)
    try:
        for process in resolver.processes.values():
            if process.pid is not None:
                lab.track(process.pid)
        deadline = time.monotonic() + 20
        while True:  # until both answer through the tunnel (the first query fills the cache)
            try:
                queries(client, "10.64.0.1", 1)
                queries(client, "203.0.113.2", 1)
                break
            except (subprocess.CalledProcessError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        via_node: list[float] = []
        direct: list[float] = []
        for n in range(rounds):
            log(f"round {n + 1}/{rounds}: {count} queries each way")
            via_node += queries(client, "10.64.0.1", count)
            direct += queries(client, "203.0.113.2", count)
    finally:
        await resolver.close()
    node_p50, direct_p50 = statistics.median(via_node), statistics.median(direct)
    return {
        "hit_p50_ms": round(node_p50, 3),
        "authoritative_p50_ms": round(direct_p50, 3),
        "hit_added_p50_ms": round(node_p50 - direct_p50, 3),
        "hit_vs_authoritative_ratio": round(node_p50 / direct_p50, 3),
    }


def big_list(tmp: Path) -> tuple[bytes, float]:
    names = "".join(f"host{n}.block{n % 997}.example\n" for n in range(NAMES))
    start = time.perf_counter()
    parsed = parse_filter_list(names)
    parse_s = time.perf_counter() - start
    assert len(parsed.names) == NAMES
    return parsed.body, parse_s


def load(lab: Lab, argv: list[str], server: str) -> tuple[float, float]:
    """Start a resolver in a fresh namespace; (seconds until it answers, RSS in MB then)."""
    ns = lab.namespace()
    ns.add_address("lo", f"{server}/32")
    ns.add_address("lo", "fd00:53::1/128")
    start = time.time()
    proc = ns.spawn(*argv)
    try:
        waited = ns.run(
            sys.executable, "-c", WAIT_NXDOMAIN, server, f"host12345.block{12345 % 997}.example",
            str(LOAD_TIMEOUT), str(start), timeout=LOAD_TIMEOUT + 10, check=False,
        )  # fmt: skip
        if waited.returncode != 0:
            raise RuntimeError(f"{argv[0]} did not answer within {LOAD_TIMEOUT} s")
        return float(waited.stdout), rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def measure_blocklist(lab: Lab, tmp: Path, unbound: bool) -> dict[str, float]:
    body, parse_s = big_list(tmp)
    assert hashlib.sha256(body).hexdigest()
    listed = tmp / "list.conf"
    listed.write_bytes(list_as_dnsmasq(body))
    conf = tmp / "dnsmasq.conf"
    resolver = ResolverSpec(ipv4="10.53.0.1", ipv6="fd00:53::1", lists=("big",))
    conf.write_text(render_dnsmasq_conf(resolver, upstream_port=5335, list_files=[listed]))
    log("dnsmasq with 1,000,000 names")
    load_s, rss = load(lab, ["dnsmasq", "-k", f"--conf-file={conf}"], "10.53.0.1")
    figures = {
        "blocklist_1m_load_s": round(load_s, 2),
        "blocklist_1m_rss_mb": round(rss, 1),
        "list_parse_1m_s": round(parse_s, 2),
    }
    if unbound:
        log("baseline: Unbound with 1,000,000 local-zones")
        zones = tmp / "unbound.conf"
        lines = [
            "server:", "\tinterface: 10.53.0.1", "\taccess-control: 10.53.0.0/24 allow",
            "\tdo-daemonize: no", '\tchroot: ""',
            '\tusername: ""', '\tpidfile: ""', "\tuse-syslog: no", "\tverbosity: 0",
            "\tnum-threads: 1", '\tmodule-config: "iterator"',
        ]  # fmt: skip
        with zones.open("w") as out:
            out.write("\n".join(lines) + "\n")
            for name in body.split():
                out.write(f'\tlocal-zone: "{name.decode()}." always_nxdomain\n')
        u_load, u_rss = load(lab, ["unbound", "-d", "-c", str(zones)], "10.53.0.1")
        figures |= {
            "unbound_1m_load_s": round(u_load, 2),
            "unbound_1m_rss_mb": round(u_rss, 1),
            "blocklist_load_vs_unbound_ratio": round(load_s / u_load, 3),
            "blocklist_rss_vs_unbound_ratio": round(rss / u_rss, 3),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-unbound", action="store_true", help="skip Unbound's baseline")
    args = parser.parse_args()
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="burrow-dns-") as tmp, Lab(prefix="bdn") as lab:
        result |= asyncio.run(measure_hits(lab, Path(tmp), args.queries, args.rounds))
        result |= measure_blocklist(lab, Path(tmp), not args.no_unbound)
    for key, value in result.items():
        log(f"{key:>34}: {value}")
    goals = (
        result["hit_added_p50_ms"] < 1
        and result["blocklist_1m_rss_mb"] < 150
        and result["blocklist_1m_load_s"] < 10
    )
    log(f"goals (< 1 ms added, < 150 MB, < 10 s): {'met' if goals else 'NOT met'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
