"""The OpenVPN admission decision, table-tested: credentials, revocation, per-server limits."""

from __future__ import annotations

import pytest

from burrow.control.devices.service import new_key_pair
from burrow.node.openvpn_auth import (
    BAD_CREDENTIALS,
    Admit,
    CredentialIndex,
    LiveSession,
    Refuse,
    decide,
    per_server_reason,
)
from burrow.wire import CredentialSpec, PeerSpec, ProtocolLimit, openvpn_verifier

SECRET = "s" * 43


def peer(
    n: int,
    username: str | None,
    *,
    subscription: str = "sub-a",
    limit: int | None = None,
    secret: str = SECRET,
) -> PeerSpec:
    credentials = (
        (CredentialSpec(protocol="openvpn", username=username, verifier=openvpn_verifier(secret)),)
        if username
        else ()
    )
    return PeerSpec(
        public_key=new_key_pair()[1],
        allowed_ips=(f"10.64.0.{n}/32", f"fd42:b0::{n}/128"),
        credentials=credentials,
        subscription=subscription,
        per_server=(ProtocolLimit(protocol="openvpn", per_server=limit),) if limit else (),
    )


def test_right_credentials_admit_with_the_devices_own_addresses() -> None:
    laptop = peer(2, "laptop")
    decision = decide(CredentialIndex([laptop]), "laptop", SECRET, [])
    assert isinstance(decision, Admit)
    assert decision.account.public_key == laptop.public_key
    assert (decision.account.ipv4, decision.account.ipv6) == ("10.64.0.2", "fd42:b0::2")


@pytest.mark.parametrize(
    ("username", "password"),
    [("laptop", "wrong"), ("nobody", SECRET), ("", ""), ("laptop", SECRET + "x"), ("laptop", "")],
)
def test_wrong_or_unknown_credentials_are_refused_alike(username: str, password: str) -> None:
    decision = decide(CredentialIndex([peer(2, "laptop")]), username, password, [])
    assert decision == Refuse(BAD_CREDENTIALS, "credentials")


def test_a_device_without_openvpn_credentials_cannot_sign_in() -> None:
    index = CredentialIndex([peer(2, None)])
    assert len(index) == 0
    assert isinstance(decide(index, "", "", []), Refuse)


def test_revocation_and_rotation_end_validity() -> None:
    laptop = peer(2, "laptop")
    before = CredentialIndex([laptop])
    account = before.get("laptop")
    assert account is not None
    assert before.still_valid("laptop", laptop.public_key, account.verifier)
    assert not CredentialIndex([]).still_valid("laptop", laptop.public_key, account.verifier)
    rotated = CredentialIndex([peer(2, "laptop", secret="t" * 43)])
    assert not rotated.still_valid("laptop", laptop.public_key, account.verifier)


def test_per_server_limit_counts_other_devices_of_the_subscription_on_this_node() -> None:
    one, two, three = (peer(n, f"dev{n}", limit=2) for n in (2, 3, 4))
    stranger = peer(5, "stranger", subscription="sub-b", limit=2)
    index = CredentialIndex([one, two, three, stranger])
    sessions = [
        LiveSession("udp/1", one.public_key, "sub-a"),
        LiveSession("tcp/1", two.public_key, "sub-a"),
        LiveSession("udp/2", stranger.public_key, "sub-b"),
    ]
    assert decide(index, "dev4", SECRET, sessions) == Refuse(
        per_server_reason(2), "per-server limit", three.public_key
    )
    # The same device again replaces its own session: not counted against itself.
    assert isinstance(decide(index, "dev2", SECRET, sessions), Admit)
    # Another subscription's sessions do not count.
    assert isinstance(decide(index, "stranger", SECRET, sessions), Admit)


def test_unlimited_when_the_plan_names_no_openvpn_limit() -> None:
    devices = [peer(n, f"dev{n}") for n in range(2, 12)]
    index = CredentialIndex(devices)
    sessions = [LiveSession(f"udp/{n}", d.public_key, "sub-a") for n, d in enumerate(devices[:-1])]
    assert isinstance(decide(index, "dev11", SECRET, sessions), Admit)


def test_a_device_the_control_plane_blocks_here_is_refused_with_its_reason() -> None:
    laptop = peer(2, "laptop")
    decision = decide(
        CredentialIndex([laptop]), "laptop", SECRET, [], blocked={laptop.public_key: "Over."}
    )
    assert decision == Refuse("Over.", "limit", laptop.public_key)
