"""The one place that turns rows into what every node must serve.

Domains call ``desired_state_service.refresh_account(session, runtime, account_id)`` after any
change that may alter which of an account's devices may use the VPN (device added, removed or
re-keyed; subscription started, expired or cancelled; account suspended, unsuspended,
terminated or deleted). It compares the account's devices with the account's rows in
``served_peers`` (the materialised desired state), appends the difference to the change log
``peer_changes`` (whose primary key is the revision) and wakes node long polls after commit.

A node reads the full state once (one scan of ``served_peers``), then asks for the changes
since its revision: a primary-key range of the change log, so a one-device change costs the
same with a thousand devices as with a hundred thousand.

May import: models, db, runtime, the wire models. Nothing of other domains.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from functools import partial
from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import after_commit, unit_of_work
from burrow.control.desired_state.repository import DesiredStateRepository
from burrow.control.desired_state.schemas import Change, PeerAccess, PeerAddresses
from burrow.control.errors import NotFound
from burrow.control.live import Kind
from burrow.control.models import Node, PeerChangeOp, utcnow
from burrow.control.policy.dns import FilterList, filter_lists, resolver_addresses
from burrow.control.policy.schemas import NAT_FIRST_PORT, Policy
from burrow.control.runtime import Runtime
from burrow.wire import (
    CredentialSpec,
    DeltaState,
    DesiredState,
    DnsSpec,
    FairUseSpec,
    FilterListSpec,
    FullState,
    NatSpec,
    NetworkSpec,
    PeerSpec,
    ProtocolLimit,
    ResolverSpec,
)


class FilterListNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No filter list of the current policy has this hash; fetch the state.")


# Stamps only (no value): each account's is renewed after every commit that changed what
# its devices are served, so that whoever computed something from the account's access (the
# connections' steady reports) can tell, with one small read, that it must compute it again.
ACCESS_STAMPS = Kind("access:account:", int, versioned=True)
ACCESS_STAMP_SECONDS = 3600.0

# Without a running watcher, a waiting long poll re-reads the revision this often, so that a
# change committed by another process (the CLI), which cannot wake this process's notifier,
# is seen within a second.
RECHECK_SECONDS = 0.5
# Nodes whose network spec is kept built (``DesiredStateService.network``): more than a fleet.
CACHED_NETWORKS_MAX = 10_000


def collapse(changes: Iterable[Change]) -> tuple[list[Change], list[Change]]:
    """The newest change per public key, split into (upserts, removals), oldest first.

    ``changes`` must be in revision order. An upsert followed by a removal is a removal;
    a removal followed by an upsert is an upsert (with the newest addresses).
    """
    newest: dict[str, Change] = {}
    for change in changes:
        # Pop first, so that the dict's order follows each key's newest revision.
        newest.pop(change.peer.public_key, None)
        newest[change.peer.public_key] = change
    upserts = [c for c in newest.values() if c.op == PeerChangeOp.upsert]
    removals = [c for c in newest.values() if c.op == PeerChangeOp.remove]
    return upserts, removals


def _peer_spec(public_key: str, ipv4: str, ipv6: str, access: str = "") -> PeerSpec:
    # Rows written by this module from validated devices: skip re-validating each one, which
    # would cost ten times more than the rest of a full state of a hundred thousand peers.
    allowed_ips = (f"{ipv4}/32", f"{ipv6}/128")
    if not access:
        return PeerSpec.model_construct(public_key=public_key, allowed_ips=allowed_ips)
    parsed = PeerAccess.loads(access)
    return PeerSpec.model_construct(
        public_key=public_key,
        allowed_ips=allowed_ips,
        credentials=tuple(
            CredentialSpec.model_construct(protocol=p, username=u, verifier=v)
            for p, u, v in parsed.credentials
        ),
        subscription=parsed.subscription,
        per_server=tuple(
            ProtocolLimit.model_construct(protocol=p, per_server=n) for p, n in parsed.per_server
        ),
    )


def subscription_key(runtime: Runtime, subscription_id: int) -> str:
    """The opaque key nodes group a subscription's devices by: nothing a node can look up."""
    secret = runtime.settings.secret_key.get_secret_value().encode()
    digest = hmac.new(secret, f"subscription:{subscription_id}".encode(), hashlib.sha256)
    return digest.hexdigest()[:24]


class DesiredStateService:
    def __init__(self) -> None:
        # What ``dns`` and ``network`` built last, with what they were built from: every long
        # poll's answer carries the node's network, and a thousand polls answering at once
        # must not each build the same one. The policy is held, not just compared by ``id``.
        self._dns: tuple[Policy, tuple[object, ...], DnsSpec] | None = None
        self._networks: dict[int, tuple[Policy, DnsSpec, tuple[object, ...], NetworkSpec]] = {}

    async def refresh_account(
        self, session: AsyncSession, runtime: Runtime, account_id: int
    ) -> int:
        """Bring the account's served peers in line with its devices; returns changes made.

        An account may use the VPN while it is active and has a trialing or active
        subscription whose period has not ended; then every device of it is served, else
        none. Costs O(devices of this account). Does not commit.
        """
        repository = DesiredStateRepository(session)
        await repository.lock_writers()
        access = await repository.access_subscription(account_id, utcnow())
        desired = await repository.devices_of(account_id) if access is not None else {}
        if access is not None and desired:
            desired = await self._with_access(repository, runtime, account_id, desired, *access)
        served = await repository.served_of(account_id)

        removals: list[Change] = []
        for device_id, peer in sorted(served.items()):
            wanted = desired.get(device_id)
            # A re-keyed device is the old key leaving and the new key arriving.
            if wanted is None or wanted.public_key != peer.public_key:
                removals.append(Change(PeerChangeOp.remove, peer, device_id))
        upserts = [
            Change(PeerChangeOp.upsert, peer, device_id)
            for device_id, peer in sorted(desired.items())
            if served.get(device_id) != peer
        ]
        if not removals and not upserts:
            return 0

        revisions = await repository.record_changes([*removals, *upserts])
        upsert_revisions = revisions[len(removals) :]
        await repository.unserve(
            {c.device_id for c in removals} | {c.device_id for c in upserts},
            {c.peer.public_key for c in upserts},
        )
        await repository.serve(
            account_id,
            [(c.device_id, c.peer, rev) for c, rev in zip(upserts, upsert_revisions, strict=True)],
        )
        after_commit(session, runtime.notifier.notify)
        after_commit(
            session,
            partial(runtime.live.touch, ACCESS_STAMPS, [str(account_id)], ttl=ACCESS_STAMP_SECONDS),
        )
        return len(removals) + len(upserts)

    @staticmethod
    async def _with_access(
        repository: DesiredStateRepository,
        runtime: Runtime,
        account_id: int,
        devices: dict[int, PeerAddresses],
        subscription_id: int,
        plan_code: str,
    ) -> dict[int, PeerAddresses]:
        """The devices with their credentials, subscription key and per-server limits."""
        credentials = await repository.credentials_of(account_id)
        plan = runtime.policy.plans.get(plan_code)
        limits = tuple(sorted(plan.connections_per_server.items())) if plan is not None else ()
        key = subscription_key(runtime, subscription_id)
        return {
            device_id: peer._replace(
                access=PeerAccess(
                    credentials=tuple(sorted(credentials.get(device_id, ()))),
                    subscription=key,
                    per_server=limits,
                ).dumps()
            )
            for device_id, peer in devices.items()
        }

    async def current_revision(self, session: AsyncSession) -> int:
        """The newest revision; 0 before the first change."""
        return await DesiredStateRepository(session).current_revision()

    def network(self, runtime: Runtime, node: Node) -> NetworkSpec:
        """How ``node`` sets up its interface and firewall, from the settings and the policy;
        built again only when the policy, the settings it uses or the node's row changed."""
        settings = runtime.settings
        dns = self.dns(runtime)
        made_of = (
            settings.tunnel_ipv4_pool,
            settings.tunnel_ipv6_pool,
            settings.tunnel_mtu,
            settings.peers_per_interface,
            node.endpoint_port,
            node.egress_ipv4,
            node.egress_ipv6,
            node.egress_ipv4_extra,
            node.uplink_mbit,
        )
        cached = self._networks.get(node.id) if node.id is not None else None
        if cached is not None:
            policy, built_dns, built_of, spec = cached
            if policy is runtime.policy and built_dns is dns and built_of == made_of:
                return spec
        spec = self._network(runtime, node, dns)
        if node.id is not None:
            if len(self._networks) >= CACHED_NETWORKS_MAX:
                self._networks.clear()
            self._networks[node.id] = (runtime.policy, dns, made_of, spec)
        return spec

    def _network(self, runtime: Runtime, node: Node, dns: DnsSpec) -> NetworkSpec:
        settings = runtime.settings
        pool4 = ipaddress.ip_network(settings.tunnel_ipv4_pool)
        pool6 = ipaddress.ip_network(settings.tunnel_ipv6_pool)
        rules = runtime.policy.network
        fair = runtime.policy.fair_use
        fair_use = None
        if fair.shaping and fair.shaped_rate_mbit is not None:
            fair_use = FairUseSpec(
                shaped_rate_mbit=fair.shaped_rate_mbit,
                trigger_utilisation_percent=fair.trigger_utilisation_percent,
                window_minutes=fair.window_minutes,
                uplink_mbit=node.uplink_mbit,
            )
        return NetworkSpec(
            listen_port=node.endpoint_port,
            mtu=settings.tunnel_mtu,
            tunnel_ipv4=str(pool4),
            tunnel_ipv6=str(pool6),
            gateway_ipv4=str(pool4.network_address + 1),
            gateway_ipv6=str(pool6.network_address + 1),
            egress_ipv4=node.egress_ipv4,
            egress_ipv6=node.egress_ipv6,
            egress_ipv4_extra=node.egress_ipv4_addresses[1:],
            blocked_egress_tcp_ports=tuple(rules.blocked_egress_tcp_ports),
            blocked_egress_udp_ports=tuple(rules.blocked_egress_udp_ports),
            isolate_clients=rules.isolate_clients,
            fair_use=fair_use,
            dns=dns,
            peers_per_interface=settings.peers_per_interface,
            nat=NatSpec(
                mode=rules.nat,
                ports_per_device=rules.nat_ports_per_device,
                devices_per_egress_ip=rules.nat_devices_per_egress_ip,
                first_port=NAT_FIRST_PORT,
            ),
        )

    def dns(self, runtime: Runtime) -> DnsSpec:
        """The node's resolver: the gateway unfiltered, one address pair per offered combination.

        Lists are named by content hash; a node downloads a list only when its hash is new.
        """
        settings = runtime.settings
        section = runtime.policy.dns
        lists = filter_lists.lists(section, settings.policy_path.parent)
        pools = (settings.tunnel_ipv4_pool, settings.tunnel_ipv6_pool)
        made_of = (*pools, tuple((entry.name, entry.sha256, entry.count) for entry in lists))
        if self._dns is not None:
            policy, built_of, spec = self._dns
            if policy is runtime.policy and built_of == made_of:
                return spec
        spec = self._dns_spec(runtime, lists)
        self._dns = (runtime.policy, made_of, spec)
        return spec

    def _dns_spec(self, runtime: Runtime, lists: Sequence[FilterList]) -> DnsSpec:
        settings = runtime.settings
        section = runtime.policy.dns
        pools = (settings.tunnel_ipv4_pool, settings.tunnel_ipv6_pool)
        v4, v6 = resolver_addresses(*pools, 0)
        resolvers = [ResolverSpec(ipv4=v4, ipv6=v6)]
        for combination in section.offered:
            v4, v6 = resolver_addresses(*pools, section.mask(combination))
            resolvers.append(ResolverSpec(ipv4=v4, ipv6=v6, lists=combination))
        return DnsSpec(
            resolvers=tuple(resolvers),
            lists=tuple(
                FilterListSpec(name=entry.name, sha256=entry.sha256, names=entry.count)
                for entry in lists
            ),
            forwarders=tuple(section.forwarders),
            dnssec=section.dnssec,
        )

    async def load_filter_lists(self, runtime: Runtime) -> None:
        """Parse changed filter lists off the event loop (a million names take seconds).

        The store caches by file version, so ``dns`` afterwards only looks at file sizes and
        times. Called before answering a node.
        """
        base = runtime.settings.policy_path.parent
        if not filter_lists.fresh(runtime.policy.dns, base):
            await asyncio.to_thread(filter_lists.lists, runtime.policy.dns, base)

    def filter_list_body(self, runtime: Runtime, sha256: str) -> bytes:
        """The body of the policy's list with this hash; FilterListNotFound if none has it."""
        section = runtime.policy.dns
        for entry in filter_lists.lists(section, runtime.settings.policy_path.parent):
            if entry.sha256 == sha256:
                return entry.body
        raise FilterListNotFound()

    async def full_state(self, session: AsyncSession, runtime: Runtime, node: Node) -> DesiredState:
        """Everything ``node`` must serve: one scan of the served peers."""
        repository = DesiredStateRepository(session)
        # The revision first: peers read afterwards are at least that new, and a delta a node
        # then asks for may repeat a change it already has, which is harmless.
        revision = await repository.current_revision()
        rows = await repository.served_peers_all()
        return DesiredState(
            revision=revision,
            network=self.network(runtime, node),
            peers=tuple(_peer_spec(*row) for row in rows),
        )

    async def changes_since(
        self, session: AsyncSession, runtime: Runtime, node: Node, revision: int
    ) -> FullState | DeltaState:
        """What changed after ``revision``, newest per peer; the full state if that is unknown.

        A revision older than the log keeps (pruned) or newer than the newest (a restored
        database) gets the full state.
        """
        repository = DesiredStateRepository(session)
        current = await repository.current_revision()
        if revision > current:
            return FullState(state=await self.full_state(session, runtime, node))
        network = self.network(runtime, node)
        if revision == current:
            return DeltaState(from_revision=revision, revision=current, network=network)
        changes = await repository.changes_between(revision, current)
        # Checked after reading the range: a prune racing the read makes this answer the
        # full state, never a delta with a hole in it.
        oldest = await repository.oldest_revision()
        if oldest is None or revision < oldest - 1:
            return FullState(state=await self.full_state(session, runtime, node))
        upserts, removals = collapse(changes)
        return DeltaState(
            from_revision=revision,
            revision=current,
            upserts=tuple(_peer_spec(*c.peer) for c in upserts),
            removals=tuple(c.peer.public_key for c in removals),
            network=network,
        )

    async def prune_change_log(self, session: AsyncSession, runtime: Runtime) -> int:
        """Delete all but the newest ``change_log_keep`` revisions; returns rows deleted.

        A node whose revision is older than what is kept gets the full state instead.
        """
        repository = DesiredStateRepository(session)
        horizon = await repository.current_revision() - runtime.settings.change_log_keep
        if horizon <= 0:
            return 0
        return await repository.prune_changes_up_to(horizon)

    async def read_revision(self, runtime: Runtime) -> int:
        """The current revision, in a short unit of work of its own (the watcher's one read)."""
        async with unit_of_work(runtime.sessionmaker, writes=False) as session:
            return await self.current_revision(session)

    async def _shared_delta(
        self, runtime: Runtime, since: int, revision: int
    ) -> tuple[tuple[PeerSpec, ...], tuple[str, ...]] | None:
        """What changed in (since, revision], the same for every node; None: send the full state.

        Built once per replica for all the polls woken at ``since`` (the notifier keeps it), in
        one short unit of work.
        """
        key = (since, revision)
        known = runtime.notifier.deltas.get(key)
        if known is None:
            known = asyncio.ensure_future(self._read_delta(runtime, since, revision))
            runtime.notifier.remember(key, known)
        try:
            return cast(
                "tuple[tuple[PeerSpec, ...], tuple[str, ...]] | None", await asyncio.shield(known)
            )
        except Exception:
            runtime.notifier.deltas.pop(key, None)  # the next poll tries again
            raise

    async def _read_delta(
        self, runtime: Runtime, since: int, revision: int
    ) -> tuple[tuple[PeerSpec, ...], tuple[str, ...]] | None:
        async with unit_of_work(runtime.sessionmaker, writes=False) as session:
            repository = DesiredStateRepository(session)
            changes = await repository.changes_between(since, revision)
            # Checked after reading the range, as in ``changes_since``.
            oldest = await repository.oldest_revision()
        if oldest is None or since < oldest - 1:
            return None
        upserts, removals = collapse(changes)
        return (
            tuple(_peer_spec(*c.peer) for c in upserts),
            tuple(c.peer.public_key for c in removals),
        )

    async def _answer(
        self, runtime: Runtime, node: Node, since: int, revision: int
    ) -> FullState | DeltaState:
        if since < revision:
            shared = await self._shared_delta(runtime, since, revision)
            if shared is not None:
                upserts, removals = shared
                return DeltaState(
                    from_revision=since,
                    revision=revision,
                    upserts=upserts,
                    removals=removals,
                    network=self.network(runtime, node),
                )
        # Unknown to the log (pruned) or ahead of it (a restored database).
        async with unit_of_work(runtime.sessionmaker, writes=False) as session:
            return FullState(state=await self.full_state(session, runtime, node))

    async def wait_for_changes(
        self, runtime: Runtime, node: Node, since: int, wait_seconds: float
    ) -> FullState | DeltaState:
        """The long poll: answer as soon as there is something after ``since``.

        Holds no database connection while waiting. Where the replica's watcher runs
        (``notifier.revision`` is known), the poll reads nothing while nothing moves, and a
        woken poll answers from the delta its replica built once for all polls at ``since``.
        Without a watcher it looks itself, on every wake-up of this process's notifier and
        every ``RECHECK_SECONDS``. After ``wait_seconds``: an empty delta.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait_seconds)
        notifier = runtime.notifier
        while True:
            # Read the generation before looking, so a change committed in between wakes us.
            generation = notifier.generation
            watched = notifier.revision
            if watched is not None and since > watched:
                # The node is ahead of what this replica's watcher has read (it was served by
                # a replica that saw a newer revision first): read once and tell the watcher.
                current = await self.read_revision(runtime)
                notifier.advance(max(current, watched))
                if current < since:
                    return await self._answer(runtime, node, since, current)  # a restored db
                continue
            if watched is not None:
                if watched != since:
                    return await self._answer(runtime, node, since, watched)
            else:
                async with unit_of_work(runtime.sessionmaker, writes=False) as session:
                    current = await self.current_revision(session)
                    if current != since:
                        return await self.changes_since(session, runtime, node, since)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return DeltaState(
                    from_revision=since, revision=since, network=self.network(runtime, node)
                )
            step = remaining if watched is not None else min(RECHECK_SECONDS, remaining)
            await notifier.wait(step, after=generation)


desired_state = DesiredStateService()
