"""Furniture for IKEv2 tests: a CA and server certificate, and a strongSwan client.

The client is a second charon (its own /run, its own namespace) configured over vici with
exactly the values a customer's profile carries: server address and identity, the CA, the
EAP-MSCHAPv2 username and secret, the proposals.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from burrow.node.drivers.ikev2 import CharonDriver, IkeV2Error

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
