"""The connection-limit decision, as a table: leases in, admitted and refused out."""

from __future__ import annotations

import pytest

from burrow.control.connections.limits import (
    UNLIMITED,
    LeaseView,
    Limits,
    decide,
    per_server_reason,
    simultaneous_reason,
)

TWO = Limits(simultaneous=2)  # the metered seed: two at once across the fleet
STRICT_PERSONAL = Limits(simultaneous=None, per_server={"wireguard": 1})
BUSINESS = Limits(simultaneous=1, per_server={"wireguard": 1})


def lease(
    name: str,
    start: float,
    node: int = 1,
    *,
    admitted: bool = False,
    sub: int = 7,
    device: int | None = None,
) -> LeaseView:
    return LeaseView(
        device_id=device,
        id=name,
        order=(start, int(start)),
        node_id=node,
        node_name=f"node-{node}",
        protocol="wireguard",
        subscription_id=sub,
        admitted_before=admitted,
    )


CASES = [
    pytest.param(
        [lease("a", 1, 1), lease("b", 2, 2), lease("c", 3, 3)],
        TWO,
        {"a", "b"},
        {"c": "simultaneous_connections"},
        id="two-connection plan: the third device is refused",
    ),
    pytest.param(
        [lease("b", 2, 2, admitted=True), lease("c", 3, 3)],
        TWO,
        {"b", "c"},
        {},
        id="the first disconnected: the third is admitted",
    ),
    pytest.param(
        [lease("b", 2, 2, admitted=True), lease("c", 3, 3), lease("d", 4, 4)],
        TWO,
        {"b", "c"},
        {"d": "simultaneous_connections"},
        id="a slot frees: the oldest refused gets it, the newer stays refused",
    ),
    pytest.param(
        [lease("new", 1, 1, admitted=True), lease("old", 0, 2)],
        Limits(simultaneous=1),
        {"new"},
        {"old": "simultaneous_connections"},
        id="an admitted connection is never cut for a refused one",
    ),
    pytest.param(
        [lease("a", 1, 1, admitted=True), lease("b", 2, 1, admitted=True)],
        Limits(simultaneous=1),
        {"a"},
        {"b": "simultaneous_connections"},
        id="a lower limit cuts the newest admitted",
    ),
    pytest.param(
        [lease("a", 1, 1), lease("b", 2, 1)],
        STRICT_PERSONAL,
        {"a"},
        {"b": "connections_per_server"},
        id="WireGuard one per server: a second device on the same node is refused",
    ),
    pytest.param(
        [lease("a", 1, 1), lease("b", 2, 2), lease("c", 3, 3), lease("d", 4, 4)],
        STRICT_PERSONAL,
        {"a", "b", "c", "d"},
        {},
        id="WireGuard one per server: other nodes take the other devices",
    ),
    pytest.param(
        [lease("a", 1, 1, sub=7), lease("b", 2, 1, sub=8)],
        STRICT_PERSONAL,
        {"a", "b"},
        {},
        id="per server counts per subscription",
    ),
    pytest.param(
        [lease("a", 1, 1), lease("b", 2, 2)],
        BUSINESS,
        {"a"},
        {"b": "simultaneous_connections"},
        id="business plan: one connection in all",
    ),
    pytest.param(
        [lease(str(n), n, 1) for n in range(50)],
        UNLIMITED,
        {str(n) for n in range(50)},
        {},
        id="unlimited plan",
    ),
    pytest.param([], TWO, set(), {}, id="no connections"),
    pytest.param(
        [lease("evil", 1, 9, device=1), lease("real", 2, 1, device=1)],
        BUSINESS,
        {"evil", "real"},
        {},
        id="a device claimed first on another node shares its slot: the real one passes",
    ),
    pytest.param(
        [lease("real", 1, 1, admitted=True, device=1), lease("evil", 2, 9, device=1)],
        BUSINESS,
        {"real", "evil"},
        {},
        id="a device moving to another server is not refused while the old one counts it",
    ),
    pytest.param(
        [
            lease("real", 1, 1, admitted=True, device=1),
            lease("evil-1", 2, 9, device=1),
            lease("evil-2", 3, 9, device=2),
        ],
        BUSINESS,
        {"real", "evil-1"},
        {"evil-2": "simultaneous_connections"},
        id="a claim of another device is refused, on its own node only",
    ),
    pytest.param(
        [lease("a", 1, 1, device=1), lease("b", 2, 1, device=1)],
        STRICT_PERSONAL,
        {"a"},
        {"b": "connections_per_server"},
        id="per server counts each node's leases even of one device",
    ),
]


@pytest.mark.parametrize(("leases", "limits", "admitted", "refused"), CASES)
def test_decide(
    leases: list[LeaseView], limits: Limits, admitted: set[str], refused: dict[str, str]
) -> None:
    decision = decide(leases, limits)

    assert decision.admitted == admitted
    assert {k: r.rule for k, r in decision.refused.items()} == refused


def test_the_reasons_tell_the_customer_what_to_do() -> None:
    decision = decide([lease("a", 1), lease("b", 2, 2), lease("c", 3, 3)], TWO)
    assert (
        decision.refused["c"].reason
        == simultaneous_reason(2)
        == ("Your plan allows 2 simultaneous connections; disconnect another device.")
    )
    assert simultaneous_reason(1) == (
        "Your plan allows 1 simultaneous connection; disconnect another device."
    )
    decision = decide([lease("a", 1), lease("b", 2)], STRICT_PERSONAL)
    assert (
        decision.refused["b"].reason
        == per_server_reason(1, "wireguard", "node-1")
        == (
            "Your plan allows 1 WireGuard connection per server; connect this device to another "
            "server, or disconnect your other device from node-1."
        )
    )
