"""The log filter: IP addresses leave every log record unless the policy allows them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from burrow.control.config import Settings
from burrow.control.logfilter import IPAddressFilter, filter_for_policy, install
from burrow.control.policy.schemas import Policy
from burrow.control.policy.service import load_policy
from tests.conftest import ROOT

POLICIES = ROOT / "examples" / "policies"
CLIENT = "192.0.2.44"


@pytest.fixture
def strict() -> Policy:
    return load_policy(POLICIES / "strict-no-logs.toml")


@pytest.fixture
def installed(strict: Policy) -> Iterator[IPAddressFilter]:
    ip_filter = filter_for_policy(strict, Settings(environment="test"))
    uninstall = install(ip_filter)
    try:
        yield ip_filter
    finally:
        uninstall()


def test_strict_mode_removes_addresses_from_every_logger(
    installed: IPAddressFilter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("burrow.control.accounts").info("sign-in from %s", CLIENT)
    logging.getLogger("uvicorn.error").warning("client %s sent %d bytes", (CLIENT, 5555), 12)
    logging.getLogger("some.library").info("peer %(peer)s", {"peer": "2001:db8::44"})
    logging.getLogger("burrow").info(f"inline {CLIENT} and local 127.0.0.1 and tunnel 10.64.0.7")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "sign-in from [ip removed]",
        "client ('[ip removed]', 5555) sent 12 bytes",
        "peer [ip removed]",
        "inline [ip removed] and local 127.0.0.1 and tunnel 10.64.0.7",
    ]
    assert CLIENT not in caplog.text
    assert "2001:db8::44" not in caplog.text


def test_tracebacks_lose_their_addresses_too(
    installed: IPAddressFilter, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        raise ConnectionError(f"connection to {CLIENT} refused")
    except ConnectionError:
        logging.getLogger("burrow.test").exception("lost a client")
    assert "connection to [ip removed] refused" in caplog.text
    assert CLIENT not in caplog.text


def test_a_log_file_written_through_the_root_logger_holds_no_address(
    installed: IPAddressFilter, tmp_path: Path
) -> None:
    path = tmp_path / "burrow.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("burrow.x").info("device added from %s", CLIENT)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    assert path.read_text() == "device added from [ip removed]\n"


def test_uninstall_restores_the_record_factory(
    strict: Policy, caplog: pytest.LogCaptureFixture
) -> None:
    uninstall = install(filter_for_policy(strict))
    uninstall()
    logging.getLogger("burrow.test").warning("from %s", CLIENT)
    assert caplog.records[-1].getMessage() == f"from {CLIENT}"


def test_metered_mode_keeps_addresses_only_when_the_policy_allows_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metered = load_policy(POLICIES / "metered.toml")
    assert filter_for_policy(metered).allow_client_ips is False
    allowing = metered.model_copy(
        update={"privacy": metered.privacy.model_copy(update={"client_ips_in_logs": True})}
    )
    ip_filter = filter_for_policy(allowing)
    assert ip_filter.allow_client_ips is True
    uninstall = install(ip_filter)
    try:
        logging.getLogger("burrow.test").warning("login from %s", CLIENT)
    finally:
        uninstall()
    assert caplog.records[-1].getMessage() == f"login from {CLIENT}"


def test_the_filter_works_on_a_handler_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", (CLIENT,), None)
    assert IPAddressFilter().filter(record) is True
    assert record.getMessage() == "to [ip removed]"
