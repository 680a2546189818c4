"""WireGuard public keys the control plane accepts, from a device or a node.

One check for both: 44 characters of standard base64 for 32 bytes, written canonically (two
spellings of one key would slip past a uniqueness check), and a point that a real key pair
makes. A point of small order (the all-zero key among them) gives the all-zero shared secret
with every private key, so nothing sent to or from it is secret; X25519 implementations and
WireGuard refuse it.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from burrow.wire import is_valid_wg_key


class UnusableKey(ValueError):
    """Why a key is refused, in words for the person who sent it."""


def canonical_public_key(value: str) -> str:
    """The canonical base64 of a valid, usable X25519 public key, or UnusableKey."""
    value = value.strip()
    if not is_valid_wg_key(value):
        raise UnusableKey(
            "This is not a WireGuard public key: it must be 44 characters of base64 "
            "(as printed by `wg pubkey`), ending in '='."
        )
    raw = base64.b64decode(value)
    if raw == bytes(32):
        raise UnusableKey("The all-zero key is not a usable public key; make a new key pair.")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise UnusableKey(
            "This key is a weak (low-order) curve point that no real key pair produces; "
            "make a new key pair."
        ) from None
    return base64.b64encode(raw).decode()
