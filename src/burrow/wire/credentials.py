"""How a device's secret for another protocol is turned into what nodes keep, and checked.

Shared by the control plane (which makes verifiers) and the node agent (which checks a
client's answer against one). The secret is made by the server with 256 bits of entropy, so a
single salted SHA-256 is as strong as a slow hash would be, and a node decides in microseconds.
Standard library only, but for IKEv2's NT hash: MD4, which hashlib lacks under OpenSSL 3
(pycryptodome's).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

OPENVPN_SCHEME = "sha256"


def openvpn_verifier(secret: str, salt: bytes | None = None) -> str:
    """``sha256$<salt hex>$<hex of SHA-256(salt + secret)>``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"{OPENVPN_SCHEME}${salt.hex()}${digest}"


def check_openvpn_secret(verifier: str, secret: str) -> bool:
    """Does ``secret`` match ``verifier``? False for a verifier of another scheme."""
    scheme, _, rest = verifier.partition("$")
    salt_hex, _, digest = rest.partition("$")
    if scheme != OPENVPN_SCHEME or not digest:
        return False
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    # Bounded work whatever a client sends: OpenVPN passes at most a few hundred bytes anyway.
    candidate = hashlib.sha256(salt + secret.encode()[:1024]).hexdigest()
    return hmac.compare_digest(candidate, digest)


IKEV2_SCHEME = "nt"
_NT_HASH = re.compile(r"[0-9a-f]{32}")


def ikev2_verifier(secret: str) -> str:
    """``nt$<hex of the NT hash>``: MD4 of the secret's UTF-16LE, what EAP-MSCHAPv2 checks.

    The node loads only this into charon (an NTLM secret over vici), never the secret itself.
    MD4 is what MSCHAPv2 defines; the secret is server-made with 256 bits, so nobody guesses it.
    """
    from Crypto.Hash import MD4

    digest = MD4.new(secret.encode("utf-16-le")).hexdigest()  # noqa: S303
    return f"{IKEV2_SCHEME}${digest}"


def ikev2_nt_hash(verifier: str) -> str | None:
    """The NT hash (32 lower-case hex digits) inside an IKEv2 verifier; None for any other."""
    scheme, _, digest = verifier.partition("$")
    if scheme != IKEV2_SCHEME or not _NT_HASH.fullmatch(digest):
        return None
    return digest
