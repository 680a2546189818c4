"""The node's OpenVPN PKI: a CA of its own, a server certificate and a tls-crypt key.

Made once at enrollment (or the first start of a node enrolled before OpenVPN) and kept with
the node's identity in the state directory: ``openvpn-pki.json``, 0600 in a 0700 directory,
written atomically. The CA certificate and the tls-crypt key go to the control plane, which
writes them into every ``.ovpn`` for this node; the keys never leave the node (the tls-crypt
key excepted: OpenVPN needs it on both ends). Each node has its own CA, so a client configured
for one node cannot be pointed at another node's certificate.

IKEv2 uses the same CA. Its server certificate must name the host IKEv2 clients dial
(``ikev2_host``), which may not be the name the PKI was first made for; ``ensure_server_for``
then has the CA sign one for that name, kept beside the PKI in ``ikev2-server.json``.

Clients connect with username and password (checked by the agent); they present no
certificate of their own (``verify-client-cert none`` on the server).

Imports the standard library and ``cryptography``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from burrow.node.identity import write_private_file

PKI_FILE = "openvpn-pki.json"
TLS_CRYPT_HEADER = "-----BEGIN OpenVPN Static key V1-----"
TLS_CRYPT_FOOTER = "-----END OpenVPN Static key V1-----"
# Long enough that no node outlives its CA; a node re-made with a new CA re-issues configs.
CA_DAYS = 3650
SERVER_DAYS = 3650


class PkiError(Exception):
    """The PKI file is missing, too open or malformed."""


@dataclass(frozen=True)
class NodePki:
    """PEM texts; ``repr`` leaves the private keys and the tls-crypt key out."""

    ca_certificate: str
    server_certificate: str
    ca_key: str = field(repr=False)
    server_key: str = field(repr=False)
    tls_crypt_key: str = field(repr=False)

    @property
    def server_names(self) -> list[str]:
        """The DNS names and addresses of the server certificate's SAN."""
        return certificate_names(self.server_certificate)


def certificate_names(certificate_pem: str) -> list[str]:
    """The DNS names and addresses of a certificate's SAN."""
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return names


def new_tls_crypt_key() -> str:
    """A 2048-bit OpenVPN static key, as ``openvpn --genkey tls-crypt`` writes it."""
    raw = secrets.token_bytes(256).hex()
    lines = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    return "\n".join([TLS_CRYPT_HEADER, *lines, TLS_CRYPT_FOOTER]) + "\n"


def is_tls_crypt_key(text: str) -> bool:
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 18 or lines[0] != TLS_CRYPT_HEADER or lines[-1] != TLS_CRYPT_FOOTER:
        return False
    body = "".join(lines[1:-1])
    return len(body) == 512 and all(c in "0123456789abcdef" for c in body)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _san(server_name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        return x509.DNSName(server_name)


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    server_key: ec.EllipticCurvePrivateKey,
    server_name: str,
    start: dt.datetime,
    now: dt.datetime,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # What `remote-cert-tls server` checks on the client.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(server_name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def make_pki(node_name: str, server_name: str, *, now: dt.datetime | None = None) -> NodePki:
    """A CA named after the node and a server certificate for ``server_name`` (a DNS name or
    an address, as clients dial it), both P-256 with SHA-256, plus a tls-crypt key."""
    now = now or dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=5)  # tolerate a client clock a little behind
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"burrow {node_name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_certificate(ca_key, ca_name, server_key, server_name, start, now)
    pem = serialization.Encoding.PEM
    return NodePki(
        ca_certificate=ca_cert.public_bytes(pem).decode(),
        server_certificate=server_cert.public_bytes(pem).decode(),
        ca_key=_pem_key(ca_key),
        server_key=_pem_key(server_key),
        tls_crypt_key=new_tls_crypt_key(),
    )


def pki_path(state_dir: Path) -> Path:
    return state_dir / PKI_FILE


def save_pki(state_dir: Path, pki: NodePki) -> Path:
    """Write the PKI file atomically, readable by its owner only; returns its path."""
    data = json.dumps(asdict(pki), indent=2).encode() + b"\n"
    return write_private_file(state_dir, PKI_FILE, data)


def load_pki(state_dir: Path) -> NodePki:
    """Read the PKI file; refuses one that others than its owner can read."""
    path = pki_path(state_dir)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PkiError(f"{path} does not exist") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise PkiError(f"{path} is readable by others; run `chmod 600 {path}`")
    try:
        raw = json.loads(path.read_text())
        pki = NodePki(**{k: str(raw[k]) for k in NodePki.__dataclass_fields__})
        x509.load_pem_x509_certificate(pki.ca_certificate.encode())
        x509.load_pem_x509_certificate(pki.server_certificate.encode())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"{path} is not a valid OpenVPN PKI file ({type(exc).__name__})") from None
    if not is_tls_crypt_key(pki.tls_crypt_key):
        raise PkiError(f"{path} holds no valid tls-crypt key")
    return pki


def ensure_pki(state_dir: Path, node_name: str, server_name: str) -> NodePki:
    """The node's PKI, made and saved the first time."""
    if pki_path(state_dir).exists():
        return load_pki(state_dir)
    pki = make_pki(node_name, server_name)
    save_pki(state_dir, pki)
    return pki


SERVER_FILE = "ikev2-server.json"


def _same_name(name: str) -> str:
    """A name as certificates compare it: DNS names without case, addresses in one spelling."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().removesuffix(".")


def _names(certificate_pem: str) -> set[str]:
    return {_same_name(name) for name in certificate_names(certificate_pem)}


def _issued_by(certificate_pem: str, pki: NodePki) -> bool:
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.encode())
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ensure_server_for(state_dir: Path, pki: NodePki, server_name: str) -> NodePki:
    """``pki`` with a server certificate that names ``server_name``, signed by the same CA.

    The PKI is made once, for the name known at enrollment (the node's endpoint); a node that
    serves IKEv2 under another name needs a certificate with that name, since IKEv2 clients
    check the server's identity against it. Such a certificate is kept in ``ikev2-server.json``
    beside the PKI and made again only when the name changes. The CA stays, so the profiles
    customers installed keep working.
    """
    wanted = _same_name(server_name)
    if wanted in _names(pki.server_certificate):
        return pki
    try:
        raw = json.loads((state_dir / SERVER_FILE).read_text())
        kept = replace(pki, server_certificate=str(raw["certificate"]), server_key=str(raw["key"]))
        if wanted in _names(kept.server_certificate) and _issued_by(kept.server_certificate, pki):
            return kept
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unusable: make one
    ca_key = serialization.load_pem_private_key(pki.ca_key.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pki_path(state_dir)} holds a CA key of an unexpected kind")
    ca_name = x509.load_pem_x509_certificate(pki.ca_certificate.encode()).subject
    now = dt.datetime.now(dt.UTC)
    server_key = ec.generate_private_key(ec.SECP256R1())
    certificate = _server_certificate(
        ca_key, ca_name, server_key, server_name, now - dt.timedelta(minutes=5), now
    )
    made = replace(
        pki,
        server_certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        server_key=_pem_key(server_key),
    )
    body = {"certificate": made.server_certificate, "key": made.server_key}
    write_private_file(state_dir, SERVER_FILE, json.dumps(body, indent=2).encode() + b"\n")
    return made
