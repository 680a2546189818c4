"""A logging filter that removes IP addresses from every log record the policy does not allow.

Under ``privacy.mode = "strict"`` (and in metered mode unless ``privacy.client_ips_in_logs``)
every IP address in a record's message, arguments, traceback and stack becomes
``[ip removed]``; loopback, "any address" and the tunnel pools (a device's tunnel address is
not where the customer is) stay readable.

``install`` puts the filter on the root logger and its handlers, and also runs it on every
record as it is made: a filter on the root logger alone never sees records of child loggers
that propagate to it, nor those of loggers with their own handlers (uvicorn's).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from burrow.control.config import Settings
from burrow.control.policy.addresses import ALWAYS_ALLOWED, IPNetwork, redact
from burrow.control.policy.schemas import Policy

_DONE = "_burrow_ips_removed"


class IPAddressFilter(logging.Filter):
    """Rewrites IP addresses outside ``allowed`` to ``[ip removed]``; never drops a record."""

    def __init__(
        self, *, allow_client_ips: bool = False, allowed: Iterable[IPNetwork] = ALWAYS_ALLOWED
    ) -> None:
        super().__init__()
        self.allow_client_ips = allow_client_ips
        self.allowed = tuple(allowed)

    def _clean(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        text = value if isinstance(value, str) else str(value)
        cleaned = redact(text, self.allowed)
        if cleaned == text:
            return value
        return cleaned

    def filter(self, record: logging.LogRecord) -> bool:
        if self.allow_client_ips or getattr(record, _DONE, False):
            return True
        record.msg = self._clean(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {key: self._clean(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(self._clean(arg) for arg in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.allowed)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.allowed)
        setattr(record, _DONE, True)
        return True


def filter_for_policy(policy: Policy, settings: Settings | None = None) -> IPAddressFilter:
    """The filter the policy asks for: client addresses stay only where the policy allows them."""
    privacy = policy.privacy
    allow = privacy.mode == "metered" and privacy.client_ips_in_logs
    allowed: list[IPNetwork] = list(ALWAYS_ALLOWED)
    if settings is not None:
        allowed.append(ipaddress.ip_network(settings.tunnel_ipv4_pool))
        allowed.append(ipaddress.ip_network(settings.tunnel_ipv6_pool))
    return IPAddressFilter(allow_client_ips=allow, allowed=allowed)


def install(ip_filter: IPAddressFilter) -> Callable[[], None]:
    """Apply ``ip_filter`` to every log record of the process; returns a function that undoes it."""
    root = logging.getLogger()
    root.addFilter(ip_filter)
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(ip_filter)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ip_filter.filter(record)
        return record

    logging.setLogRecordFactory(factory)

    def uninstall() -> None:
        logging.setLogRecordFactory(previous)
        root.removeFilter(ip_filter)
        for handler in handlers:
            handler.removeFilter(ip_filter)

    return uninstall
