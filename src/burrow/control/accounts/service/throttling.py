"""Failed sign-in attempts, counted in the live store (RAM) per account and per client.

The client's address is turned into a keyed digest at once and never stored or logged.
"""

from __future__ import annotations

from burrow.control.accounts.service.errors import LoginThrottled
from burrow.control.runtime import Runtime
from burrow.control.security import keyed_digest


class LoginThrottle:
    """Failure counters and lockouts in the live store, per account and per client.

    After ``max`` failures within the window a key is locked for the lockout time, which
    doubles with every further lockout of the same key (up to the cap) and is forgotten a day
    later. Keys are keyed digests: neither an address nor an IP is ever a key.
    """

    STRIKE_MEMORY_SECONDS = 24 * 3600.0

    def __init__(self, runtime: Runtime) -> None:
        self.live = runtime.live
        self.settings = runtime.settings
        self._secret = runtime.settings.secret_key.get_secret_value()

    def account_key(self, email: str) -> tuple[str, int]:
        digest = keyed_digest(self._secret, f"login-account:{email}")
        return f"login:a:{digest}", self.settings.login_max_failures

    def client_key(self, address: str | None) -> tuple[str, int]:
        digest = keyed_digest(self._secret, f"login-client:{address or 'unknown'}")
        return f"login:c:{digest}", self.settings.login_client_max_failures

    def check(self, keys: list[tuple[str, int]]) -> None:
        waits = [self.live.ttl(f"{key}:lock") for key, _limit in keys]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None and wait > 0:
            seconds = max(1, round(wait))
            raise LoginThrottled(
                f"Too many failed sign-in attempts; wait {seconds} seconds and try again.",
                retry_after=wait,
                retry_after_seconds=seconds,
            )

    def failed(self, keys: list[tuple[str, int]]) -> None:
        settings = self.settings
        for key, limit in keys:
            failures = self.live.incr(f"{key}:fails", ttl=settings.login_failure_window_seconds)
            if failures < limit:
                continue
            strikes = int(self.live.get(f"{key}:strikes") or 0) + 1
            self.live.set(f"{key}:strikes", strikes, ttl=self.STRIKE_MEMORY_SECONDS)
            lockout = min(
                settings.login_lockout_seconds * 2 ** min(strikes - 1, 32),
                max(settings.login_lockout_max_seconds, settings.login_lockout_seconds),
            )
            self.live.set(f"{key}:lock", True, ttl=lockout)
            self.live.delete(f"{key}:fails")

    def succeeded(self, account_key: tuple[str, int]) -> None:
        # Only the account is cleared: one good password must not reset a client's count.
        key, _limit = account_key
        self.live.delete(f"{key}:fails")
        self.live.delete(f"{key}:strikes")
