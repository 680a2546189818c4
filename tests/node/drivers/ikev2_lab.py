"""Furniture for IKEv2 tests: a CA and server certificate, and strongSwan clients.

``IkeV2Client`` is a second charon (its own /run, its own namespace) configured over vici with
exactly the values a customer's profile carries: server address and identity, the CA, the
EAP-MSCHAPv2 username and secret, the proposals. ``CharonCmd`` is strongSwan's ``charon-cmd``,
the client closest to Windows' built-in one: it sends no IDr, any IKE identity it is given,
and its EAP name only when the server asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import re
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from burrow.node.drivers.ikev2 import PLUGINS, CharonDriver, IkeV2Error

# id-kp-ipsecIKE (RFC 4945): macOS and iOS want it, or serverAuth, on the server certificate.
IPSEC_IKE = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")


@dataclass(frozen=True)
class LabPki:
    ca_pem: str
    certificate_pem: str
    private_key_pem: str


def make_pki(host: str) -> LabPki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "burrow test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, IPSEC_IKE]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return LabPki(
        ca_pem=ca.public_bytes(pem).decode(),
        certificate_pem=cert.public_bytes(pem).decode(),
        private_key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


class IkeV2Client:
    """A strongSwan client in a namespace: ``connect`` brings up one tunnel to a node."""

    def __init__(self, runtime_dir: Path, netns: str) -> None:
        self.charon = CharonDriver(runtime_dir, netns=netns, install_virtual_ip=True)

    async def start(self) -> None:
        await self.charon.start(None)

    async def stop(self) -> None:
        await self.charon.stop()

    async def connect(
        self,
        *,
        name: str,
        server_address: str,
        server_identity: str,
        ca_pem: str,
        username: str,
        secret: str,
        ike_proposal: str = "aes256gcm16-prfsha384-ecp384",
        esp_proposal: str = "aes256gcm16",
        wait_seconds: float = 15.0,
        identity: str | None = None,
    ) -> dict[str, Any]:
        """Load the connection and initiate it; raises IkeV2Error when the node refuses.

        The IKE identity is the username (Apple, the strongSwan app) unless ``identity`` is
        given: Windows' built-in client sends its own IP address and the username only when
        the server asks for the EAP identity, as charon does here with ``eap_id`` set.
        """
        conn = {
            name: {
                "version": "2",
                "remote_addrs": [server_address],
                "vips": ["0.0.0.0", "::"],
                "proposals": [ike_proposal],
                "local": {
                    "auth": "eap-mschapv2",
                    "id": identity or username,
                    "eap_id": username,
                },
                "remote": {"auth": "pubkey", "id": server_identity, "cacerts": [ca_pem]},
                "children": {
                    name: {
                        "remote_ts": ["0.0.0.0/0", "::/0"],
                        "esp_proposals": [esp_proposal],
                    }
                },
            }
        }

        def load(session: Any) -> None:
            session.load_conn(conn)
            session.load_shared({"id": name, "type": "EAP", "data": secret, "owners": [username]})

        def initiate(session: Any) -> None:
            for _ in session.initiate({"child": name, "timeout": str(int(wait_seconds * 1000))}):
                pass

        await self.charon.call(load)
        await asyncio.wait_for(self.charon.call(initiate), wait_seconds + 5)
        return await self.sa(name) or {}

    async def sa(self, name: str) -> dict[str, Any] | None:
        """The client's IKE SA of ``name`` as list-sas shows it, or None."""

        def run(session: Any) -> dict[str, Any] | None:
            for entry in session.list_sas({"ike": name}):
                if name in entry:
                    sa: dict[str, Any] = entry[name]
                    return sa
            return None

        return await self.charon.call(run)

    async def disconnect(self, name: str) -> None:
        def run(session: Any) -> None:
            try:
                for _ in session.terminate({"ike": name, "force": "yes", "timeout": "-1"}):
                    pass
            except Exception as exc:
                if "no matching" not in str(exc):
                    raise

        try:
            await self.charon.call(run)
        except IkeV2Error as exc:
            if "no matching" not in str(exc):
                raise


def virtual_ips(sa: dict[str, Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in sa.get("local-vips", [])]


_CHARON_CMD_CONF = f"""charon-cmd {{
  load_modular = no
  load = {PLUGINS}
  filelog {{
    stderr {{
      default = 1
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
"""
_VIRTUAL_IP = re.compile(r"installing new virtual IP (\S+)")
_FAILED = ("method failed", "AUTHENTICATION_FAILED", "establishing connection 'cmd' failed")


class CharonCmd:
    """``charon-cmd`` in a namespace with its own /run, for one connection at a time.

    It asks for the EAP password on a terminal only, so it runs under ``script``, which gives
    it one; the password is typed when the prompt shows. Its log (stderr, kept in memory)
    says which virtual IP the server assigned.
    """

    def __init__(
        self, runtime_dir: Path, netns: str, track: Callable[[int], None] | None = None
    ) -> None:
        self.runtime_dir = runtime_dir
        self.netns = netns
        self._track = track  # told each process's id (a Lab stops it if the test does not)
        self.proc: asyncio.subprocess.Process | None = None
        self.output = ""
        self.address: str | None = None

    async def connect(
        self,
        *,
        server_address: str,
        server_identity: str,
        ca_pem: str,
        identity: str,
        eap_identity: str,
        secret: str,
        ike_proposal: str = "aes256gcm16-prfsha384-ecp384",
        esp_proposal: str = "aes256gcm16",
        wait_seconds: float = 15.0,
    ) -> str | None:
        """Connect; the virtual IPv4 address the server assigned, or None when refused."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        run = self.runtime_dir / "run"
        run.mkdir(exist_ok=True, mode=0o700)
        ca = self.runtime_dir / "ca.pem"
        ca.write_text(ca_pem)
        conf = self.runtime_dir / "strongswan.conf"
        conf.write_text(_CHARON_CMD_CONF)
        command = shlex.join(
            [
                "charon-cmd",
                "--host", server_address,
                "--remote-identity", server_identity,
                "--cert", str(ca),
                "--identity", identity,
                "--eap-identity", eap_identity,
                "--profile", "ikev2-eap",
                "--ike-proposal", ike_proposal,
                "--esp-proposal", esp_proposal,
            ]
        )  # fmt: skip
        inner = f"mount --bind {shlex.quote(str(run))} /run && exec {command}"
        self.proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.netns,
            "unshare", "--mount", "--propagation", "private",
            "script", "--quiet", "--flush", "--command", f"sh -c {shlex.quote(inner)}",
            "/dev/null",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "STRONGSWAN_CONF": str(conf)},
        )  # fmt: skip
        if self._track is not None:
            self._track(self.proc.pid)
        self.output = ""
        typed = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(self.proc.stdout.read(4096), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                return None
            self.output += chunk.decode(errors="replace")
            if not typed and "EAP password:" in self.output:
                self.proc.stdin.write(secret.encode() + b"\n")
                await self.proc.stdin.drain()
                typed = True
            if "CHILD_SA cmd{1} established" in self.output:
                found = _VIRTUAL_IP.search(self.output)
                self.address = found.group(1) if found else None
                return self.address
            if any(marker in self.output for marker in _FAILED):
                return None
        raise IkeV2Error("charon-cmd neither connected nor failed in time")

    async def closed(self, seconds: float) -> bool:
        """Whether the server ended the SA (charon-cmd saw its DELETE) within ``seconds``."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if "deleting IKE_SA" in self.output or "received DELETE" in self.output:
                return True
            try:
                chunk = await asyncio.wait_for(self.proc.stdout.read(4096), 0.2)
            except TimeoutError:
                continue
            if not chunk:
                return True
            self.output += chunk.decode(errors="replace")
        return False

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        # charon-cmd (``script``'s child) first, and ``script`` follows it: ``script`` told to
        # end first waits two seconds before it ends its child.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            for child in (await asyncio.to_thread(children.read_text)).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(child), signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 1)
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
