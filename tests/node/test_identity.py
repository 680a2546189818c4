"""The identity file: the one file a node keeps, root's only, written atomically."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from burrow.node.agent import enroll
from burrow.node.client import NodeTokenRejected
from burrow.node.identity import (
    IdentityError,
    NodeIdentity,
    identity_path,
    load_identity,
    new_private_key,
    public_key_of,
    save_identity,
)

from .fakes import ENROLLMENT_TOKEN, NODE_TOKEN, FakeControlPlane


def identity(**changes: object) -> NodeIdentity:
    values: dict[str, object] = {
        "control_url": "https://control.example.net",
        "node_id": 3,
        "node_name": "ams-1",
        "interface_name": "bw3",
        "private_key": new_private_key(),
        "node_token": NODE_TOKEN,
    }
    values.update(changes)
    return NodeIdentity(**values)  # type: ignore[arg-type]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_identity_is_private_and_reads_back(tmp_path: Path) -> None:
    state = tmp_path / "state"
    saved = identity()
    path = save_identity(state, saved)
    assert mode(state) == 0o700
    assert mode(path) == 0o600
    assert load_identity(state) == saved
    assert list(state.iterdir()) == [path]  # no temporary file left behind


def test_a_loose_state_directory_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    save_identity(state, identity())
    assert mode(state) == 0o700


def test_secrets_stay_out_of_repr() -> None:
    shown = repr(identity(private_key=new_private_key()))
    assert NODE_TOKEN not in shown
    assert "private_key" not in shown


def test_a_missing_file_says_how_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="burrow node enroll"):
        load_identity(tmp_path)


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = save_identity(tmp_path, identity())
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(tmp_path)


@pytest.mark.parametrize(
    "content",
    ["not json", "{}", json.dumps({"control_url": "x", "node_id": "seven"})],
)
def test_a_damaged_file_is_refused_without_quoting_it(tmp_path: Path, content: str) -> None:
    path = identity_path(tmp_path)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a valid identity file"):
        load_identity(tmp_path)


def test_a_damaged_key_is_refused(tmp_path: Path) -> None:
    save_identity(tmp_path, identity(private_key="too short"))
    with pytest.raises(IdentityError, match="private key"):
        load_identity(tmp_path)


def test_public_key_matches_wg_pubkey() -> None:
    # The key pair of WireGuard's own documentation (wg genkey | wg pubkey).
    private = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
    assert public_key_of(private) == "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="


async def test_enroll_writes_the_identity_only_when_it_succeeds(tmp_path: Path) -> None:
    cp = FakeControlPlane()
    with pytest.raises(NodeTokenRejected):
        await enroll("http://c", "bwe_wrong-token-123", tmp_path / "s", transport=cp.transport())
    assert not (tmp_path / "s").exists()

    enrolled = await enroll("http://c/", ENROLLMENT_TOKEN, tmp_path / "s", transport=cp.transport())
    assert enrolled.node_token == NODE_TOKEN
    assert enrolled.control_url == "http://c"
    assert cp.enrolled_key == enrolled.public_key
    assert load_identity(tmp_path / "s") == enrolled


async def test_enrolling_again_can_keep_the_key(tmp_path: Path) -> None:
    cp = FakeControlPlane()
    first = await enroll("http://c", ENROLLMENT_TOKEN, tmp_path, transport=cp.transport())
    again = await enroll(
        "http://c",
        ENROLLMENT_TOKEN,
        tmp_path,
        private_key=first.private_key,
        transport=cp.transport(),
    )
    assert again.public_key == first.public_key
