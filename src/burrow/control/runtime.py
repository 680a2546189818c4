"""What one control-plane process holds: settings, stores, policy, notifier.

Built once in the app's lifespan (or by the CLI) and reached by services through
arguments, never through globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from burrow.control.config import Settings
from burrow.control.db import create_engine, make_sessionmaker
from burrow.control.desired_state.notifier import RevisionNotifier
from burrow.control.live import LiveStore, MemoryLiveStore, RedisLiveStore
from burrow.control.mail import Mailer
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import load_policy
from burrow.control.ratelimit import RateLimits


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    policy: Policy
    live: LiveStore
    mailer: Mailer
    notifier: RevisionNotifier = field(default_factory=RevisionNotifier)
    rate_limits: RateLimits = field(default_factory=RateLimits)

    @classmethod
    def build(cls, settings: Settings, *, policy: Policy | None = None) -> Runtime:
        engine = create_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            policy=policy if policy is not None else load_policy(settings.policy_path),
            live=live_store(settings),
            mailer=Mailer(settings),
            rate_limits=RateLimits(settings.rate_limit_storage_uri),
        )

    async def close(self) -> None:
        if isinstance(self.live, RedisLiveStore):
            await self.live.close()
        await self.engine.dispose()


def live_store(settings: Settings) -> LiveStore:
    """Redis when ``BURROW_REDIS_URL`` names one (replicas share it), else this process's RAM."""
    if settings.redis_url:
        return RedisLiveStore.from_url(settings.redis_url)
    return MemoryLiveStore()
