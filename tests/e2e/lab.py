"""The end-to-end lab: a small internet of namespaces with burrow running on it.

::

    ctl (burrow serve) ---+                    +--- cust1 (wireguard-go, the real client)
    node1 (burrow node) --+--- wan (router) ---+--- cust2
    node2 (burrow node) --+                    |
    inet (web server) ----+--------------------+

Every host has a /30 of 203.0.113.0/24 (servers) or 198.51.100.0/24 (customers) and a /64 of
2001:db8::/32 towards ``wan``, which routes between them. Nothing is added to the host's own
namespace: the test talks to the control plane from a thread that entered ``ctl``'s namespace
(``NetnsHttp``), and runs everything else with ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.node.netns import Lab, Namespace, unique_name

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BURROW = str(Path(sys.executable).with_name("burrow"))
PYTHON = sys.executable
HERE = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
API_PORT = 8080
SECRET = "e2e-secret-key-that-is-long-enough-0123456789"


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll until ``condition`` holds; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- talking HTTP from inside a namespace -------------------------------------------------------


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


class NetnsHttp:
    """An ``httpx.Client`` whose connections are made inside a network namespace.

    ``setns`` moves only the calling thread, so one worker thread enters the namespace and
    makes every request; the rest of the test process stays where it was.
    """

    def __init__(self, netns: str, base_url: str) -> None:
        self._pool = ThreadPoolExecutor(1, initializer=_enter_netns, initargs=(netns,))
        self._client = self._pool.submit(
            lambda: httpx.Client(base_url=base_url, timeout=10)
        ).result()
        self.token: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        def call() -> httpx.Response:
            try:
                return self._client.request(method, path, **kwargs)
            except httpx.RemoteProtocolError:
                # The server closed an idle keep-alive connection just as the request went
                # out on it (uvicorn's 5 s timeout): the request was not handled; send it again.
                return self._client.request(method, path, **kwargs)

        return self._pool.submit(call).result()

    def call(
        self, method: str, path: str, *, token: str | None = None, expect: int = 200, **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.request(method, path, headers=headers, **kw)
        assert response.status_code == expect, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.submit(self._client.close).result()
        self._pool.shutdown()


# --- the database, from the test process ---------------------------------------------------------


def run_db(settings: Any, work: Callable[[Any, Any], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(session, runtime)`` in one unit of work against the lab's database."""
    from burrow.control.db import unit_of_work
    from burrow.control.runtime import Runtime

    async def main() -> T:
        runtime = Runtime.build(settings)
        try:
            async with unit_of_work(runtime.sessionmaker) as session:
                return await work(session, runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


# --- hosts -------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A process the lab started; stopped by PID at teardown."""

    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Host:
    ns: Namespace
    ipv4: str
    ipv6: str
    gateway4: str
    gateway6: str
    link: str

    def cut_off(self, other: Host, cut: bool = True) -> None:
        """A network partition: this host's answers to ``other`` go nowhere (or again)."""
        verb = "add" if cut else "del"
        self.ns.ip("route", verb, "prohibit", f"{other.ipv4}/32")
        self.ns.ip("-6", "route", verb, "prohibit", f"{other.ipv6}/128")


@dataclass
class World:
    lab: Lab
    tmp: Path
    wan: Namespace
    ctl: Host
    node_hosts: list[Host]
    inet: Host
    customers: list[Host]
    processes: list[Proc] = field(default_factory=list)
    settings: Any = None
    api: NetnsHttp | None = None
    admin_token: str = ""
    web_file: bytes = b""
    web_log: Path = Path()
    serve: Proc | None = None
    nodes: list[NodeRun] = field(default_factory=list)
    # Settings added to every start of the control plane / of a node agent.
    control_extra: dict[str, str] = field(default_factory=dict)
    node_extra: dict[str, str] = field(default_factory=dict)
    policy: Any = None
    # Nodes serve IKEv2 too, each named by its own address (its certificate's SAN).
    ikev2: bool = False

    # --- processes ---------------------------------------------------------------------------

    def spawn(
        self, ns: Namespace, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> Proc:
        log = self.tmp / f"{name}.log"
        out = log.open("ab")
        popen = subprocess.Popen(
            ns.argv(*argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        out.close()
        proc = Proc(popen, log)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(grace=3)
        if self.api is not None:
            self.api.close()
        self.lab.close()

    # --- the control plane --------------------------------------------------------------------

    @property
    def control_url(self) -> str:
        return f"http://{self.ctl.ipv4}:{API_PORT}"

    def control_env(self) -> dict[str, str]:
        return {
            "BURROW_ENVIRONMENT": "test",
            "BURROW_DATABASE_URL": self.settings.database_url,
            "BURROW_POLICY_PATH": str(self.settings.policy_path),
            "BURROW_SECRET_KEY": SECRET,
            "BURROW_EMAIL_ENABLED": "false",
            "BURROW_SCHEDULER_INTERVAL_SECONDS": "1",
            "BURROW_LONG_POLL_TIMEOUT_SECONDS": "20",
            "BURROW_PUBLIC_URL": self.control_url,
            **self.control_extra,
        }

    def start_control_plane(self, bind: str = "0.0.0.0", **env: str) -> None:
        """``bind``: 127.0.0.1 keeps it reachable only from ``ctl`` itself (behind a proxy)."""
        self.serve = self.spawn(
            self.ctl.ns,
            "serve",
            BURROW, "serve", "--host", bind, "--port", str(API_PORT),
            env={**self.control_env(), **env},
        )  # fmt: skip
        assert self.api is not None

        def up() -> bool:
            assert self.serve is not None
            if not self.serve.alive():
                raise AssertionError(f"burrow serve exited:\n{self.serve.output()[-3000:]}")
            try:
                return self.api.request("GET", "/healthz").status_code == 200  # type: ignore[union-attr]
            except httpx.TransportError:
                return False

        wait_for(up, 30, "the control plane to answer")

    def stop_control_plane(self) -> None:
        assert self.serve is not None
        self.serve.stop()

    # --- nodes -------------------------------------------------------------------------------

    def create_node(self, index: int, name: str, country: str, city: str) -> dict[str, Any]:
        host = self.node_hosts[index]
        assert self.api is not None
        created: dict[str, Any] = self.api.call(
            "POST",
            "/api/v1/admin/nodes",
            token=self.admin_token,
            expect=201,
            json={
                "name": name,
                "country": country,
                "city": city,
                "endpoint_host": host.ipv4,
                "endpoint_port": 51820,
                "egress_ipv4": host.ipv4,
                "egress_ipv6": host.ipv6,
            },
        ).json()
        return created

    def enroll_and_run(self, tokens: list[tuple[int, str, int]]) -> None:
        """Enroll nodes (in parallel: each CLI start takes a while) and start their agents."""
        enrolls = []
        for index, token, _node_id in tokens:
            host = self.node_hosts[index]
            state_dir = self.tmp / f"node{index}"
            argv = host.ns.argv(
                BURROW, "node", "enroll", "--control", self.control_url,
                "--token", token, "--state-dir", str(state_dir),
            )  # fmt: skip
            enrolls.append(
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        for (index, _token, node_id), popen in zip(tokens, enrolls, strict=True):
            out, _ = popen.communicate(timeout=60)
            assert popen.returncode == 0, out
            node = NodeRun(
                self, index, self.node_hosts[index], self.tmp / f"node{index}",
                unique_name("bwn"), node_id=node_id,
            )  # fmt: skip
            node.start()
            self.nodes.append(node)

    def desired_peers(self, node: NodeRun) -> dict[str, tuple[str, ...]]:
        """What the control plane says ``node`` must serve, asked with the node's own token."""
        assert self.api is not None
        token = json.loads((node.state_dir / "identity.json").read_text())["node_token"]
        state = self.api.call("GET", "/node-api/v1/state", token=token).json()["state"]
        return {p["public_key"]: tuple(sorted(p["allowed_ips"])) for p in state["peers"]}

    # --- customers ---------------------------------------------------------------------------

    def new_customer(self) -> str:
        """Register through the API (verified in the database: no mail in the lab); a token.

        The customer gets the policy's trial or, where the policy offers none, a month of
        ``personal-monthly`` written to the database (there is no payment in the lab).
        """
        from sqlalchemy import select, update

        from burrow.control.models import Account, utcnow
        from tests.support.factories import create_subscription

        assert self.api is not None
        email = f"c{secrets.token_hex(4)}@example.com"
        password = "correct horse battery staple"
        body: dict[str, Any] = {
            "email": email,
            "password": password,
            "accept_terms_version": "2026-11",
        }
        if self.policy is not None and self.policy.age.attestation_required:
            body["age_attestation"] = "adult"
        self.api.call("POST", "/api/v1/accounts", expect=202, json=body)
        trial = self.policy is None or self.policy.trial.enabled

        async def verify(session: Any, _runtime: Any) -> None:
            await session.execute(
                update(Account).where(Account.email == email).values(email_verified_at=utcnow())
            )
            if not trial:
                account = (
                    await session.execute(select(Account).where(Account.email == email))
                ).scalar_one()
                await create_subscription(session, account, plan_code="personal-monthly")

        run_db(self.settings, verify)
        token: str = self.api.call(
            "POST", "/api/v1/sessions", expect=201, json={"email": email, "password": password}
        ).json()["token"]
        if trial:
            self.api.call("POST", "/api/v1/subscriptions/trial", token=token, expect=201)
        return token

    def add_device(self, token: str, node_id: int, name: str = "laptop") -> dict[str, Any]:
        assert self.api is not None
        device: dict[str, Any] = self.api.call(
            "POST",
            "/api/v1/devices",
            token=token,
            expect=201,
            json={"name": name, "node_id": node_id},
        ).json()
        return device

    def config(self, token: str, device_id: int, node_id: int) -> str:
        assert self.api is not None
        return self.api.call(
            "GET", f"/api/v1/devices/{device_id}/config", token=token, params={"node_id": node_id}
        ).text

    # --- the internet ------------------------------------------------------------------------

    def web_clients(self) -> list[str]:
        if not self.web_log.exists():
            return []
        return [line.split()[0] for line in self.web_log.read_text().splitlines() if line]


@dataclass
class NodeRun:
    world: World
    index: int
    host: Host
    state_dir: Path
    interface: str
    proc: Proc | None = None
    node_id: int = 0

    def env(self) -> dict[str, str]:
        return {
            "BURROW_NODE_INTERFACE": self.interface,
            "BURROW_NODE_REPORT_INTERVAL_SECONDS": "1",
            "BURROW_NODE_BACKOFF_INITIAL_SECONDS": "0.2",
            "BURROW_NODE_BACKOFF_MAX_SECONDS": "1.5",
            "BURROW_NODE_REQUEST_TIMEOUT_SECONDS": "3",
            "BURROW_NODE_LONG_POLL_SECONDS": "20",
            "BURROW_NODE_SUPERVISE_INTERVAL_SECONDS": "0.5",
            **({"BURROW_NODE_IKEV2_HOST": self.host.ipv4} if self.world.ikev2 else {}),
            **self.world.node_extra,
        }

    def start(self) -> None:
        self.proc = self.world.spawn(
            self.host.ns,
            f"agent{self.index}",
            BURROW, "node", "run", "--state-dir", str(self.state_dir),
            env=self.env(),
        )  # fmt: skip

    def peers(self) -> dict[str, tuple[str, ...]]:
        """What the interface serves, read with ``wg`` (independent of the agent's own code)."""
        out = subprocess.run(
            ["wg", "show", self.interface, "allowed-ips"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            return {}
        peers: dict[str, tuple[str, ...]] = {}
        for line in out.stdout.splitlines():
            key, _, ips = line.partition("\t")
            peers[key] = tuple(sorted(ips.split()))
        return peers

    def handshakes(self) -> dict[str, int]:
        """Each peer's last handshake (Unix seconds, 0 for never), read with ``wg``."""
        out = subprocess.run(
            ["wg", "show", self.interface, "latest-handshakes"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        found: dict[str, int] = {}
        for line in out.stdout.splitlines():
            key, _, when = line.partition("\t")
            found[key] = int(when or 0)
        return found

    def wireguard_go_pid(self) -> int | None:
        for pid in self.host.ns.pids():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"wireguard-go" in cmdline[0] and self.interface.encode() in cmdline:
                    return pid
        return None

    def serving(self, expected: dict[str, tuple[str, ...]]) -> bool:
        return self.peers() == expected


@dataclass
class Tunnel:
    """A customer's WireGuard tunnel, made from the downloaded config as a real client would."""

    world: World
    host: Host
    interface: str
    endpoint: str
    proc: Proc | None = None
    private_key: str = ""

    @staticmethod
    def setconf_text(config: str, private_key: str | None) -> tuple[str, list[str]]:
        """The config without wg-quick's keys (``wg setconf`` does not know them); addresses."""
        lines = []
        addresses: list[str] = []
        for line in config.splitlines():
            key = line.split("=", 1)[0].strip().lower()
            if key == "address":
                addresses = [a.strip() for a in line.split("=", 1)[1].split(",")]
                continue
            if key in ("dns", "mtu"):
                continue
            if line.startswith("# PrivateKey") or line.startswith("#PrivateKey"):
                assert private_key is not None, "the config has no private key and none was kept"
                line = f"PrivateKey = {private_key}"
            lines.append(line)
        return "\n".join(lines) + "\n", addresses

    def up(self, config: str, private_key: str | None = None) -> None:
        text, addresses = self.setconf_text(config, private_key)
        assert "PrivateKey = " in text
        found = re.search(r"^PrivateKey = (\S+)$", text, re.MULTILINE)
        assert found is not None
        self.private_key = found.group(1)
        match = re.search(r"^Endpoint = (.+):(\d+)$", config, re.MULTILINE)
        assert match is not None
        self.endpoint = match.group(1)
        ns = self.host.ns
        self.proc = self.world.spawn(
            ns, f"client-{self.interface}", "wireguard-go", "-f", self.interface
        )
        sock = Path(f"/var/run/wireguard/{self.interface}.sock")
        wait_for(sock.exists, 5, "the client's wireguard-go socket")
        conf = self.world.tmp / f"{self.interface}.conf"
        conf.write_text(text)
        conf.chmod(0o600)
        ns.run("wg", "setconf", self.interface, str(conf))
        for address in addresses:
            ns.ip("address", "add", address, "dev", self.interface)
        ns.ip("link", "set", self.interface, "mtu", "1320", "up")
        # What wg-quick does for AllowedIPs = 0.0.0.0/0, ::/0, in two halves, and a route to
        # the server itself around the tunnel.
        ns.ip("route", "replace", f"{self.endpoint}/32", "via", self.host.gateway4)
        for net in ("0.0.0.0/1", "128.0.0.0/1"):
            ns.ip("route", "replace", net, "dev", self.interface)
        for net in ("::/1", "8000::/1"):
            ns.ip("-6", "route", "replace", net, "dev", self.interface)

    @property
    def up_now(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def handshake_again(self) -> None:
        """Make the client's next packet start a new handshake, as it does every 2 minutes.

        wireguard-go drops its session keys whenever its private key changes, so the key is
        changed and put back in one UAPI request. Used where a test shortens the idle
        threshold below WireGuard's own rekey interval.
        """
        own = base64.b64decode(self.private_key).hex()
        other = secrets.token_bytes(32).hex()
        uapi_set(self.interface, f"private_key={other}\nprivate_key={own}\n")

    def down(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        self.host.ns.ip("route", "del", f"{self.endpoint}/32", check=False)


def uapi_set(interface: str, body: str) -> None:
    """One ``set`` request on a wireguard-go UAPI socket; fails unless it answers errno=0."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3)
        sock.connect(f"/var/run/wireguard/{interface}.sock")
        sock.sendall(f"set=1\n{body}\n".encode())
        answer = b""
        while not answer.endswith(b"\n\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if b"errno=0" not in answer:
        raise AssertionError(f"UAPI set on {interface} answered {answer!r}")


class NetnsSockets:
    """Plain sockets opened inside a host's namespace, from worker threads that entered it.

    Cheaper than a process per probe, so a test can probe several hosts many times a second.
    """

    def __init__(self, host: Host, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(workers, initializer=_enter_netns, initargs=(host.ns.name,))

    def banner(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection to ``address:port`` gets the lab's ``220`` banner."""

        def probe() -> bool:
            try:
                with socket.create_connection((address, port), timeout=timeout) as sock:
                    return sock.recv(3) == b"220"
            except OSError:
                return False

        return self._pool.submit(probe).result()

    def datagram(self, address: str, port: int = 9) -> None:
        """Send one UDP datagram (through the tunnel, where the routes say so)."""

        def send() -> None:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
                sock.sendto(b"lab", (address, port))

        self._pool.submit(send).result()

    def close(self) -> None:
        self._pool.shutdown()


# --- what a customer does on the internet -------------------------------------------------------


def fetch(host: Host, url: str, timeout: float = 5.0) -> bytes | None:
    done = subprocess.run(
        host.ns.argv("curl", "-sS", "-g", "--max-time", str(timeout), url),
        capture_output=True, timeout=timeout + 10, check=False,
    )  # fmt: skip
    return done.stdout if done.returncode == 0 else None


def upload(host: Host, url: str, path: Path, timeout: float = 10.0) -> str | None:
    done = subprocess.run(
        host.ns.argv("curl", "-sS", "-g", "--max-time", str(timeout), "-T", str(path), url),
        capture_output=True, text=True, timeout=timeout + 10, check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def tcp_open(host: Host, address: str, port: int, timeout: float = 1.5) -> bool:
    """Whether a TCP connection to ``address:port`` gets the banner."""
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(({address!r},{port}),timeout={timeout})\n"
        "sys.exit(0 if s.recv(3)==b'220' else 1)\n"
    )
    done = subprocess.run(
        host.ns.argv(PYTHON, "-I", "-S", "-c", code),
        capture_output=True, timeout=timeout + 10, check=False,
    )  # fmt: skip
    return done.returncode == 0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- building it ----------------------------------------------------------------------------------


def _host(lab: Lab, wan: Namespace, v4_net: str, v4_last: int, v6_net: str) -> Host:
    ns = lab.namespace()
    prefix4 = v4_net.rsplit(".", 1)[0]
    router4, addr4 = f"{prefix4}.{v4_last - 1}", f"{prefix4}.{v4_last}"
    router6, addr6 = f"{v6_net}::1", f"{v6_net}::2"
    end, _ = lab.link(ns, wan, [f"{addr4}/30", f"{addr6}/64"], [f"{router4}/30", f"{router6}/64"])
    ns.ip("route", "add", "default", "via", router4)
    ns.ip("-6", "route", "add", "default", "via", router6)
    return Host(ns, addr4, addr6, router4, router6, end)


@contextlib.contextmanager
def build_world(tmp: Path, customers: int = 2) -> Iterator[World]:
    lab = Lab(prefix="bwe")
    world: World | None = None
    try:
        wan = lab.namespace()
        wan.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        ctl = _host(lab, wan, "203.0.113.0", 2, "2001:db8:0:1")
        nodes = [
            _host(lab, wan, "203.0.113.4", 6, "2001:db8:0:2"),
            _host(lab, wan, "203.0.113.8", 10, "2001:db8:0:3"),
        ]
        inet = _host(lab, wan, "203.0.113.12", 14, "2001:db8:0:4")
        hosts = [
            _host(lab, wan, f"198.51.100.{4 * n}", 4 * n + 2, f"2001:db8:1:{n + 1:x}")
            for n in range(customers)
        ]
        world = World(lab, tmp, wan, ctl, nodes, inet, hosts)
        yield world
    finally:
        if world is not None:
            world.close()
        else:
            lab.close()


def prepare_world(world: World, policy_path: Path | None = None) -> None:
    """The database (from the migrations), an admin, the internet's servers, the API client."""
    from alembic import command
    from alembic.config import Config

    from burrow.control.config import Settings
    from burrow.control.policy.service import check_file
    from tests.support.factories import create_account, create_session_token

    tmp = world.tmp
    settings = Settings(
        environment="test",
        database_url=f"sqlite+aiosqlite:///{tmp / 'burrow.db'}",
        policy_path=policy_path or ROOT / "examples" / "policies" / "strict-no-logs.toml",
        secret_key=SECRET,  # type: ignore[arg-type]
    )
    world.settings = settings
    world.policy, problems = check_file(settings.policy_path)
    assert world.policy is not None, problems
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = settings.database_url
    cfg.attributes["skip_logging"] = True
    command.upgrade(cfg, "head")

    async def admin(session: Any, _runtime: Any) -> str:
        account = await create_account(session, admin=True)
        return await create_session_token(session, account)

    world.admin_token = run_db(settings, admin)

    world.web_file = os.urandom(3 * 1024 * 1024 + 17)
    (tmp / "file").write_bytes(world.web_file)
    world.web_log = tmp / "web.log"
    world.spawn(
        world.inet.ns,
        "internet",
        PYTHON, str(HERE / "internet.py"), "--file", str(tmp / "file"),
        "--log", str(world.web_log), "--http", "80", "--banner", "25", "587",
    )  # fmt: skip
    for customer in world.customers:
        world.spawn(customer.ns, "listener", PYTHON, str(HERE / "internet.py"), "--banner", "8000")
    world.api = NetnsHttp(world.ctl.ns.name, f"http://127.0.0.1:{API_PORT}")


NODES = [("ams-1", "NL", "Amsterdam"), ("fra-1", "DE", "Frankfurt")]


def start_nodes(world: World) -> None:
    """Create, enroll and run the lab's two nodes; returns once both serve."""
    tokens = []
    for index, (name, country, city) in enumerate(NODES):
        created = world.create_node(index, name, country, city)
        tokens.append((index, created["enrollment"]["token"], created["node"]["id"]))
    world.enroll_and_run(tokens)
    for node in world.nodes:
        wait_for(
            lambda node=node: node.wireguard_go_pid() is not None,  # type: ignore[misc]
            30,
            f"node {node.index} to serve",
        )


# Connection limits in the lab: a device counts as disconnected this long after its last
# handshake (180 s in production), on the agents and in what the control plane says.
SHORT_IDLE_SECONDS = 10


@contextlib.contextmanager
def policy_world(tmp: Path, policy_path: Path, customers: int = 3) -> Iterator[World]:
    """A whole lab running ``policy_path``, with a short idle threshold and a log file.

    The control plane logs to ``logs/control.log`` (``BURROW_LOG_FILE``), so that ``burrow
    audit`` has a real log to scan; metered records are brought up to date every 2 s.
    """
    with build_world(tmp, customers=customers) as world:
        world.control_extra = {
            "BURROW_LOG_FILE": str(tmp / "logs" / "control.log"),
            "BURROW_CONNECTION_IDLE_SECONDS": str(SHORT_IDLE_SECONDS),
            "BURROW_CONNECTION_LEASE_TTL_SECONDS": "5",
            "BURROW_CONNECTION_RECORD_FLUSH_SECONDS": "2",
        }
        world.node_extra = {"BURROW_NODE_IDLE_THRESHOLD_SECONDS": str(SHORT_IDLE_SECONDS)}
        prepare_world(world, policy_path)
        world.start_control_plane()
        start_nodes(world)
        yield world
