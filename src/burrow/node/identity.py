"""The node's identity: its WireGuard key pair and node token, the one file the node keeps.

``burrow node enroll`` writes ``identity.json`` into the state directory (0700, root's), the
file itself 0600, atomically: a crash never leaves half a file. It holds the private key, the
node token and where the control plane is; nothing about customers ever goes to disk.

Imports the standard library and ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

IDENTITY_FILE = "identity.json"


class IdentityError(Exception):
    """The identity file is missing, unreadable, too open or malformed."""


def new_private_key() -> str:
    """A fresh X25519 private key as 44 characters of base64 (what ``wg genkey`` prints)."""
    return base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode("ascii")


def public_key_of(private_key: str) -> str:
    try:
        raw = base64.b64decode(private_key, validate=True)
        key = X25519PrivateKey.from_private_bytes(raw)
    except (binascii.Error, ValueError):
        raise IdentityError("the private key is not 32 bytes of base64") from None
    return base64.b64encode(key.public_key().public_bytes_raw()).decode("ascii")


@dataclass(frozen=True)
class NodeIdentity:
    """Who this node is to the control plane. ``repr`` leaves both secrets out."""

    control_url: str
    node_id: int
    node_name: str
    interface_name: str
    private_key: str = field(repr=False)
    node_token: str = field(repr=False)

    @property
    def public_key(self) -> str:
        return public_key_of(self.private_key)


def identity_path(state_dir: Path) -> Path:
    return state_dir / IDENTITY_FILE


def _private_dir(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # An existing directory may have been made with a looser mode: tighten it.
    os.chmod(state_dir, 0o700)


def write_private_file(state_dir: Path, name: str, data: bytes) -> Path:
    """Write ``state_dir/name`` atomically (temporary file, fsync, rename, fsync of the
    directory), readable by its owner only, in a directory only its owner may enter."""
    _private_dir(state_dir)
    path = state_dir / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_identity(state_dir: Path, identity: NodeIdentity) -> Path:
    """Write the identity file atomically, readable by its owner only; returns its path."""
    data = json.dumps(asdict(identity), indent=2).encode() + b"\n"
    return write_private_file(state_dir, IDENTITY_FILE, data)


def load_identity(state_dir: Path) -> NodeIdentity:
    """Read the identity file; refuses one that others than its owner can read."""
    path = identity_path(state_dir)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise IdentityError(
            f"{path} does not exist: enroll this node first with "
            "`burrow node enroll --control URL --token TOKEN`"
        ) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise IdentityError(f"{path} is readable by others; run `chmod 600 {path}`")
    try:
        raw = json.loads(path.read_text())
        identity = NodeIdentity(
            control_url=str(raw["control_url"]),
            node_id=int(raw["node_id"]),
            node_name=str(raw["node_name"]),
            interface_name=str(raw["interface_name"]),
            private_key=str(raw["private_key"]),
            node_token=str(raw["node_token"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{path} is not a valid identity file ({type(exc).__name__})") from None
    public_key_of(identity.private_key)  # refuses a damaged key now, not at first use
    return identity
