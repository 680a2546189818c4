"""Nodes: the VPN servers, their enrollment, their tokens and their live health.

An operator creates a node and gets a one-time enrollment token. The operator's actions
(``create_by``, ``update_by``, ``retire_by``, ``new_enrollment_token_by``) take the ``actor``
and write their row of the admin audit trail in the caller's unit of work; the plain methods
are for the server's own set-up (the embedded node) and tests. The node's agent enrolls
with it, sends its WireGuard public key and receives a node token, which it then uses as a
bearer token on the node API. Both tokens are stored hashed. The node's reports (connected
devices, throughput) live only in the RAM live store, never on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.audit.service import Actor, admin_audit
from burrow.control.connections.service import connection as connection_service
from burrow.control.db import after_commit
from burrow.control.errors import BurrowError, Conflict, InvalidInput, NotAuthenticated, NotFound
from burrow.control.live import Kind
from burrow.control.models import Node, NodeStatus, utcnow
from burrow.control.nodes.repository import NodeRepository
from burrow.control.nodes.schemas import (
    EnrollmentIssued,
    NodeCreate,
    NodeHealth,
    NodeLive,
    NodeRead,
    NodeUpdate,
    ServerRead,
    check_egress,
    endpoint_text,
)
from burrow.control.nodes.uplink import Credit, clamp, rate_bytes, refill
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token, new_token
from burrow.control.wg_keys import UnusableKey, canonical_public_key
from burrow.wire import (
    EnrollRequest,
    EnrollResponse,
    IkeV2Offer,
    NodeReport,
    OpenVpnOffer,
    ReportAck,
)

log = logging.getLogger(__name__)


class NodeNotFound(NotFound):
    def __init__(self, what: int | str) -> None:
        super().__init__(f"There is no node {what}; `burrow node list` shows them all.")


class NodeNameTaken(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"A node named '{name}' exists already; choose another name.", field="name"
        )


class EgressAddressesInvalid(InvalidInput):
    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The egress addresses do not fit together: {reason}.", field="egress_ipv4_extra"
        )


class NodeRetired(Conflict):
    def __init__(self, name: str) -> None:
        super().__init__(f"Node '{name}' is retired; create a new node instead.")


class NodeKeyInUse(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "Another node already uses this WireGuard public key; give each node its own key.",
            field="public_key",
        )


class NodeKeyOfADevice(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "A customer's device uses this WireGuard public key; give the node a key pair of "
            "its own.",
            field="public_key",
        )


class NodeKeyUnusable(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, field="public_key")


class EnrollmentTokenInvalid(NotAuthenticated):
    title = "Enrollment token not valid"
    type_slug = "enrollment-token-invalid"

    def __init__(self) -> None:
        super().__init__(
            "This enrollment token is not valid: it may have been used already or replaced. "
            "Make a new one on the control plane with `burrow node token NAME`."
        )


class EnrollmentTokenExpired(BurrowError):
    status = 410
    title = "Enrollment token expired"
    type_slug = "enrollment-token-expired"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The enrollment token of node '{name}' has expired. Make a new one on the control "
            f"plane with `burrow node token {name}`."
        )


class NodeTokenInvalid(NotAuthenticated):
    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or "This is not a valid node token. Enroll the node again with a new enrollment "
            "token (`burrow node token NAME` on the control plane)."
        )


# What made customers' configurations of a node out of date (Node.config_change).
CHANGE_ENDPOINT = "endpoint"
CHANGE_KEY = "key"
CHANGE_OPENVPN = "openvpn"
CHANGE_IKEV2 = "ikev2"

# A node that has not reported for this long counts as silent and its load as unknown.
REPORT_FRESH_SECONDS = 60.0
# How long the live store keeps a node's last report.
LIVE_TTL_SECONDS = 24 * 3600.0

# Prefixes that tell a leaked token's kind at a glance (not secrets).
NODE_TOKEN_PREFIX = "bwn_"  # noqa: S105
ENROLLMENT_TOKEN_PREFIX = "bwe_"  # noqa: S105


def _now() -> float:
    """Unix time: reports are compared across replicas, so not a monotonic clock."""
    return utcnow().timestamp()


def interface_name(node: Node) -> str:
    """The node's WireGuard interface: unique per node and within Linux's 15 characters."""
    return f"bw{node.id}"


def _live_suffix(node_id: int) -> str:
    return f"{node_id}:report"


NODE_REPORTS = Kind("node:", NodeLive)

# A stamp per node token (by its hash), renewed after every commit that retires the node,
# replaces its token or changes its row: see ``NodeService.authenticate_trusted``.
NODE_TOKENS = Kind("nodes:token:", int, versioned=True)
NODE_TOKEN_STAMP_SECONDS = 3600.0
# How long a replica trusts a token it checked, at most, even with no stamp renewed. Without a
# shared store a retire made by another process (the command line) renews a stamp this one
# cannot see: 10 s. With one, only a stamp renewal lost with Redis itself could go unseen;
# 120 s outlasts a long poll, so a node that only polls this replica is checked once in six.
TOKEN_TRUST_SECONDS = 10.0
TOKEN_TRUST_SHARED_SECONDS = 120.0
TRUSTED_TOKENS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class _Trusted:
    node: Node
    stamp: int
    until: float  # time.monotonic()


_TRUSTED: dict[str, _Trusted] = {}


def _distrust_after_commit(session: AsyncSession, runtime: Runtime, token_hash: str | None) -> None:
    """Once the change commits, no replica trusts this token from its cache any more."""
    if token_hash is not None:
        after_commit(
            session,
            partial(runtime.live.touch, NODE_TOKENS, [token_hash], ttl=NODE_TOKEN_STAMP_SECONDS),
        )


def _detached_copy(node: Node) -> Node:
    """A copy of ``node``'s columns bound to no session, safe to share between requests."""
    columns = sa_inspect(Node).column_attrs
    return Node(**{column.key: getattr(node, column.key) for column in columns})


def _forget(_previous: NodeLive | None) -> tuple[NodeLive | None, None]:
    return None, None


@dataclass(frozen=True)
class AcceptedReport:
    """What a report step decided: ``report`` (its bytes cut to the uplink) or None when it
    repeats a sequence number already seen."""

    report: NodeReport | None
    last_seq: int
    dropped: int = 0


def _accept_report(
    report: NodeReport, now: float, rate: float, window: float
) -> Callable[[NodeLive | None], tuple[NodeLive | None, AcceptedReport]]:
    """The pure step of one report on the node's live record (``LiveStore.update``).

    A repeated sequence number in the same boot changes nothing. Otherwise the node's uplink
    credit fills for the time since its last report and the report spends it: what the uplink
    could not have carried is dropped and added to the node's count of dropped bytes.
    """

    def step(previous: NodeLive | None) -> tuple[NodeLive | None, AcceptedReport]:
        same_boot = previous is not None and previous.boot_id == report.boot_id
        if previous is not None and same_boot and report.seq <= previous.last_seq:
            return previous, AcceptedReport(None, previous.last_seq)
        credit = None
        if previous is not None and previous.credit_rx is not None:
            credit = Credit(previous.credit_rx, previous.credit_tx or 0.0)
        elapsed = 0.0 if previous is None else now - previous.reported_at
        peers, credit, dropped = clamp(report.peers, refill(credit, elapsed, rate, window))
        kept = report.model_copy(update={"peers": peers}) if dropped else report
        throughput = None
        if previous is not None and same_boot and now > previous.reported_at:
            total = sum(peer.rx_bytes + peer.tx_bytes for peer in kept.peers)
            throughput = total * 8 / (now - previous.reported_at)
        live = NodeLive(
            boot_id=report.boot_id,
            last_seq=report.seq,
            reported_at=now,
            connected_devices=sum(1 for peer in report.peers if peer.connected),
            throughput_bps=throughput,
            applied_revision=report.revision,
            credit_rx=credit.rx,
            credit_tx=credit.tx,
            dropped_bytes=(0 if previous is None else previous.dropped_bytes) + dropped,
            dropped_at=now if dropped else (None if previous is None else previous.dropped_at),
        )
        return live, AcceptedReport(kept, report.seq, dropped)

    return step


@dataclass(frozen=True)
class NodeWithEnrollment:
    node: Node
    enrollment: EnrollmentIssued


def _date_change(node: Node, change: str) -> None:
    """Customers' devices pages tell them what changed on ``node`` and when (``CHANGE_*``)."""
    node.config_changed_at = utcnow()
    node.config_change = change


def serves_ikev2(node: Node) -> bool:
    """Whether the node announced IKEv2: without its host and CA no profile can be made."""
    return bool(node.ikev2_host and node.ikev2_ca)


def served_protocols(node: Node) -> list[str]:
    """The protocols ``node`` serves now: WireGuard once enrolled, OpenVPN and IKEv2 once it
    offered them."""
    protocols = ["wireguard"] if node.wg_public_key else []
    if node.openvpn_ca and node.openvpn_tls_crypt and node.openvpn_transports:
        protocols.append("openvpn")
    if serves_ikev2(node):
        protocols.append("ikev2")
    return protocols


class NodeService:
    # --- the operator's side --------------------------------------------------------------

    async def create(
        self, session: AsyncSession, runtime: Runtime, data: NodeCreate
    ) -> NodeWithEnrollment:
        repository = NodeRepository(session)
        if await repository.get_by_name(data.name) is not None:
            raise NodeNameTaken(data.name)
        node = Node(**data.model_dump(), status=NodeStatus.pending)
        token = self._arm_enrollment(runtime, node)
        if not await repository.save(node):
            raise NodeNameTaken(data.name)  # the one unique column a new node can clash on
        return NodeWithEnrollment(node, self._issued(runtime, node, token))

    async def create_by(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, data: NodeCreate
    ) -> NodeWithEnrollment:
        created = await self.create(session, runtime, data)
        await admin_audit.record(
            session, actor, "node.create", "node", created.node.id, None, data.model_dump()
        )
        return created

    async def list_all(self, session: AsyncSession) -> list[Node]:
        return list(await NodeRepository(session).list_all())

    async def get(self, session: AsyncSession, node_id: int) -> Node:
        node = await NodeRepository(session).get(node_id)
        if node is None:
            raise NodeNotFound(node_id)
        return node

    async def get_by_name(self, session: AsyncSession, name: str) -> Node:
        node = await NodeRepository(session).get_by_name(name.strip().lower())
        if node is None:
            raise NodeNotFound(f"named '{name}'")
        return node

    async def update(
        self, session: AsyncSession, runtime: Runtime, node_id: int, data: NodeUpdate
    ) -> Node:
        """Change a node's row; once committed, no replica answers its node from a copy
        checked before (``authenticate_trusted``)."""
        repository = NodeRepository(session)
        node = await self.get(session, node_id)
        changes = data.model_dump(exclude_unset=True)
        for required in ("name", "country", "city", "endpoint_host", "endpoint_port", "capacity"):
            if required in changes and changes[required] is None:
                del changes[required]  # null means "no change" for a field that must have a value
        name = changes.get("name")
        if name is not None and name != node.name:
            other = await repository.get_by_name(name)
            if other is not None:
                raise NodeNameTaken(name)
        before = (node.endpoint_host, node.endpoint_port)
        first = changes.get("egress_ipv4", node.egress_ipv4)
        more = changes.get("egress_ipv4_extra", node.egress_ipv4_extra).split()
        try:
            check_egress(first, more)
        except ValueError as exc:
            raise EgressAddressesInvalid(str(exc)) from None
        for field, value in changes.items():
            setattr(node, field, value)
        if (node.endpoint_host, node.endpoint_port) != before and node.wg_public_key:
            # Configurations customers downloaded name the old endpoint: tell them.
            _date_change(node, CHANGE_ENDPOINT)
        if not await repository.save(node):
            raise NodeNameTaken(node.name)
        _distrust_after_commit(session, runtime, node.node_token_hash)
        return node

    async def update_by(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, node_id: int, data: NodeUpdate
    ) -> Node:
        """``update``, recorded with what each changed field was before."""
        node = await self.get(session, node_id)
        changes = data.model_dump(exclude_unset=True)
        before = {field: getattr(node, field) for field in changes}
        node = await self.update(session, runtime, node_id, data)
        await admin_audit.record(
            session, actor, "node.update", "node", node_id, None, {"before": before, **changes}
        )
        return node

    async def retire_by(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, node_id: int
    ) -> Node:
        node = await self.retire(session, runtime, node_id)
        await admin_audit.record(session, actor, "node.retire", "node", node_id)
        return node

    async def new_enrollment_token_by(
        self, session: AsyncSession, runtime: Runtime, actor: Actor, node: Node
    ) -> EnrollmentIssued:
        issued = await self.new_enrollment_token(session, runtime, node)
        # The token itself stays out of the trail: only its expiry is recorded.
        await admin_audit.record(
            session,
            actor,
            "node.enrollment_token",
            "node",
            node.id,
            None,
            {"expires_at": issued.expires_at},
        )
        return issued

    async def retire(self, session: AsyncSession, runtime: Runtime, node_id: int) -> Node:
        """Take a node out of service for good: its token stops working at once."""
        node = await self.get(session, node_id)
        if node.status != NodeStatus.retired:
            _distrust_after_commit(session, runtime, node.node_token_hash)
            node.status = NodeStatus.retired
            node.retired_at = utcnow()
            node.enrollment_token_hash = None
            node.enrollment_expires_at = None
            await NodeRepository(session).save(node)
        return node

    async def new_enrollment_token(
        self, session: AsyncSession, runtime: Runtime, node: Node
    ) -> EnrollmentIssued:
        """A fresh one-time token; any earlier one is void. Enrolling replaces the node token."""
        if node.status == NodeStatus.retired:
            raise NodeRetired(node.name)
        token = self._arm_enrollment(runtime, node)
        await NodeRepository(session).save(node)
        return self._issued(runtime, node, token)

    async def void_expired_enrollments(self, session: AsyncSession) -> int:
        """Forget the hashes of enrollment tokens that expired unused; returns how many."""
        return await NodeRepository(session).clear_enrollments_expired_before(utcnow())

    @staticmethod
    def _arm_enrollment(runtime: Runtime, node: Node) -> str:
        token = new_token(ENROLLMENT_TOKEN_PREFIX)
        node.enrollment_token_hash = hash_token(token)
        node.enrollment_expires_at = utcnow() + timedelta(
            hours=runtime.settings.enrollment_ttl_hours
        )
        return token

    @staticmethod
    def _issued(runtime: Runtime, node: Node, token: str) -> EnrollmentIssued:
        assert node.enrollment_expires_at is not None
        control = runtime.settings.public_link()
        return EnrollmentIssued(
            token=token,
            expires_at=node.enrollment_expires_at,
            command=f"burrow node enroll --control {control} --token {token}",
        )

    # --- the node's side ------------------------------------------------------------------

    async def enroll(
        self, session: AsyncSession, runtime: Runtime, request: EnrollRequest
    ) -> EnrollResponse:
        """Trade a one-time enrollment token for a node token; the enrollment token is void."""
        repository = NodeRepository(session)
        node = await repository.get_by_enrollment_hash(hash_token(request.token))
        if node is None or node.status == NodeStatus.retired:
            raise EnrollmentTokenInvalid()
        expires_at = node.enrollment_expires_at
        if expires_at is None or expires_at <= utcnow():
            raise EnrollmentTokenExpired(node.name)
        try:
            public_key = canonical_public_key(request.public_key)
        except UnusableKey as exc:
            raise NodeKeyUnusable(str(exc)) from None
        holder = await repository.get_by_public_key(public_key)
        if holder is not None and holder.id != node.id:
            raise NodeKeyInUse()
        if await repository.device_holds_key(public_key):
            raise NodeKeyOfADevice()
        token = new_token(NODE_TOKEN_PREFIX)
        _distrust_after_commit(session, runtime, node.node_token_hash)
        if node.wg_public_key is not None and node.wg_public_key != public_key:
            _date_change(node, CHANGE_KEY)
        node.wg_public_key = public_key
        node.node_token_hash = hash_token(token)
        node.enrollment_token_hash = None
        node.enrollment_expires_at = None
        node.enrolled_at = utcnow()
        node.status = NodeStatus.active
        if not await repository.save(node):
            raise NodeKeyInUse()  # a concurrent enrollment took the key a moment ago
        # A new agent starts a new report series.
        await runtime.live.update(NODE_REPORTS, _live_suffix(node.id), _forget, ttl=None)
        return EnrollResponse(
            node_id=node.id,
            node_name=node.name,
            node_token=token,
            interface_name=interface_name(node),
            endpoint_host=node.endpoint_host,
        )

    async def offer_openvpn(self, session: AsyncSession, node: Node, offer: OpenVpnOffer) -> None:
        """Keep what the node says about its OpenVPN; a new CA or key dates its .ovpn files."""
        repository = NodeRepository(session)
        node = await repository.get(node.id) or node
        transports = " ".join(offer.transports)
        changed = node.openvpn_ca is not None and (
            node.openvpn_ca != offer.ca_certificate or node.openvpn_tls_crypt != offer.tls_crypt_key
        )
        if changed:
            _date_change(node, CHANGE_OPENVPN)
        node.openvpn_ca = offer.ca_certificate
        node.openvpn_tls_crypt = offer.tls_crypt_key
        node.openvpn_transports = transports
        await repository.save(node)

    async def offer_ikev2(self, session: AsyncSession, node: Node, offer: IkeV2Offer) -> None:
        """Keep the host and CA the node serves IKEv2 with; a new one dates its profiles.

        Profiles installed on phones and laptops name the host and trust the CA, so a change
        of either means downloading them again, as for the other configurations.
        """
        repository = NodeRepository(session)
        node = await repository.get(node.id) or node
        changed = node.ikev2_ca is not None and (
            node.ikev2_ca != offer.ca_certificate or node.ikev2_host != offer.host
        )
        if changed:
            _date_change(node, CHANGE_IKEV2)
        node.ikev2_host = offer.host
        node.ikev2_ca = offer.ca_certificate
        await repository.save(node)

    async def authenticate_trusted(
        self, runtime: Runtime, token: str, check: Callable[[str], Awaitable[Node]]
    ) -> Node:
        """``authenticate``, for the calls every node makes all the time (its reports every few
        seconds, its long polls): a token this replica checked in the last
        ``TOKEN_TRUST_SECONDS`` (``TOKEN_TRUST_SHARED_SECONDS`` with a shared store) is trusted
        while its stamp in the live store stands (one small read instead of a query). Retiring
        the node, enrolling it anew or changing its row renews that stamp after commit, so the
        change reaches every replica sharing the store at once. Otherwise ``check``
        (``authenticate`` in the caller's session) decides. The node returned is a detached
        copy."""
        token_hash = hash_token(token)
        # Read before the database: a change committed after this read renews the stamp, so
        # what the database says now is never trusted past that change.
        [stamp] = await runtime.live.stamps(NODE_TOKENS, [token_hash])
        trusted = _TRUSTED.get(token_hash)
        if trusted is not None and trusted.stamp == stamp and trusted.until > time.monotonic():
            return trusted.node
        node = await check(token)
        if len(_TRUSTED) >= TRUSTED_TOKENS_MAX:
            _TRUSTED.clear()
        copy = _detached_copy(node)
        trust = TOKEN_TRUST_SHARED_SECONDS if runtime.live.shared else TOKEN_TRUST_SECONDS
        _TRUSTED[token_hash] = _Trusted(copy, stamp, time.monotonic() + trust)
        return copy

    async def authenticate(self, session: AsyncSession, token: str) -> Node:
        """The node whose token this is; refused once the node is retired."""
        node = await NodeRepository(session).get_by_node_token_hash(hash_token(token))
        if node is None:
            raise NodeTokenInvalid()
        if node.status == NodeStatus.retired:
            raise NodeTokenInvalid(
                f"Node '{node.name}' was retired by an operator; its token no longer works."
            )
        return node

    async def record_report(
        self, session: AsyncSession, runtime: Runtime, node: Node, report: NodeReport
    ) -> ReportAck:
        """Keep the node's latest status in the live store (RAM only); apply the limits.

        A report repeating a sequence number already seen in this boot is ignored (its answer
        still carries the blocked keys); a new ``boot_id`` starts a new series. Only node-wide
        totals are kept here; the connections service renews the devices' leases and answers
        which keys the node must block.
        """
        step = _accept_report(
            report,
            _now(),
            rate_bytes(node.uplink_mbit),
            runtime.settings.connection_lease_ttl_seconds,
        )
        accepted = await runtime.live.update(
            NODE_REPORTS, _live_suffix(node.id), step, ttl=LIVE_TTL_SECONDS
        )
        if accepted.report is None:
            return ReportAck(
                accepted=False,
                last_seq=accepted.last_seq,
                blocked=await connection_service.blocked_on(runtime, node.id),
                blocked_connections=await connection_service.blocked_connections_on(
                    runtime, node.id
                ),
            )
        if accepted.dropped:
            # Node-wide figures only: nothing of which customer it named.
            log.warning(
                "node.report_over_uplink node=%s dropped_bytes=%d", node.name, accepted.dropped
            )
        report = accepted.report
        answer = await connection_service.observe_report(session, runtime, node, report)
        return ReportAck(
            accepted=True,
            last_seq=report.seq,
            blocked=answer.keys,
            blocked_connections=answer.connections,
        )

    # --- health and the customers' server list ----------------------------------------------

    async def health(self, runtime: Runtime, node: Node) -> NodeHealth:
        live = await runtime.live.read(NODE_REPORTS, _live_suffix(node.id))
        if live is None:
            return NodeHealth(state="never-reported")
        age = max(0.0, _now() - live.reported_at)
        return NodeHealth(
            state="online" if age <= REPORT_FRESH_SECONDS else "silent",
            last_report_age_seconds=round(age, 3),
            connected_devices=live.connected_devices,
            throughput_bps=live.throughput_bps,
            applied_revision=live.applied_revision,
            dropped_bytes=live.dropped_bytes,
        )

    async def read(self, runtime: Runtime, node: Node) -> NodeRead:
        """The operator's view of a node, with its health from the live store."""
        return NodeRead(
            id=node.id,
            name=node.name,
            country=node.country,
            city=node.city,
            endpoint_host=node.endpoint_host,
            endpoint_port=node.endpoint_port,
            endpoint=endpoint_text(node.endpoint_host, node.endpoint_port),
            egress_ipv4=node.egress_ipv4,
            egress_ipv6=node.egress_ipv6,
            egress_ipv4_extra=list(node.egress_ipv4_addresses[1:]),
            capacity=node.capacity,
            uplink_mbit=node.uplink_mbit,
            status=node.status,
            wg_public_key=node.wg_public_key,
            created_at=node.created_at,
            enrolled_at=node.enrolled_at,
            retired_at=node.retired_at,
            enrollment_expires_at=node.enrollment_expires_at,
            health=await self.health(runtime, node),
        )

    async def server_list(self, session: AsyncSession, runtime: Runtime) -> list[ServerRead]:
        """Active nodes by country and city, with their load; the least loaded is recommended.

        Load is connected devices over capacity from a recent report, 0 when unknown. Nodes
        that reported lately are preferred for the recommendation over silent ones.
        """
        nodes = await NodeRepository(session).list_active()
        servers: list[ServerRead] = []
        ranking: list[tuple[bool, float, int, int]] = []
        for index, node in enumerate(nodes):
            health = await self.health(runtime, node)
            fresh = health.state == "online"
            load = (health.connected_devices or 0) / node.capacity if fresh else 0.0
            ranking.append((not fresh, load, node.id, index))
            servers.append(
                ServerRead(
                    id=node.id,
                    name=node.name,
                    country=node.country,
                    city=node.city,
                    endpoint=endpoint_text(node.endpoint_host, node.endpoint_port),
                    public_key=node.wg_public_key,
                    load=round(load, 4),
                    recommended=False,
                    protocols=served_protocols(node),
                )
            )
        if ranking:
            best = min(ranking)[3]
            servers[best] = servers[best].model_copy(update={"recommended": True})
        return servers


node = NodeService()
