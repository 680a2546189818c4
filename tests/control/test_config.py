"""Settings: the public address customers' apps are given, and the one-line notice when it
was never set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from burrow.control.config import Settings


@pytest.fixture(autouse=True)
def _no_public_address_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BURROW_PUBLIC_HOST", "BURROW_PUBLIC_URL", "BURROW_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_unset_the_configs_point_at_loopback_and_the_operator_is_told() -> None:
    settings = Settings()
    assert settings.public_endpoint_host == "127.0.0.1"
    notice = settings.loopback_notice()
    assert notice is not None
    assert "\n" not in notice
    assert "point at 127.0.0.1" in notice
    assert "BURROW_PUBLIC_HOST" in notice


@pytest.mark.parametrize(
    ("host", "url", "endpoint"),
    [
        ("vpn.example.net", "http://vpn.example.net:8080", "vpn.example.net"),
        ("203.0.113.7", "http://203.0.113.7:8080", "203.0.113.7"),
        ("2001:db8::7", "http://[2001:db8::7]:8080", "2001:db8::7"),
        ("[2001:db8::7]", "http://[2001:db8::7]:8080", "2001:db8::7"),
    ],
)
def test_the_public_host_names_the_server_everywhere(host: str, url: str, endpoint: str) -> None:
    settings = Settings(public_host=host)
    assert settings.public_url == url
    assert settings.public_endpoint_host == endpoint
    assert settings.loopback_notice() is None


def test_an_explicit_public_url_wins_and_an_asked_for_loopback_is_not_nagged() -> None:
    settings = Settings(public_host="vpn.example.net", public_url="https://panel.example.net")
    assert settings.public_link("/x") == "https://panel.example.net/x"
    assert settings.public_endpoint_host == "vpn.example.net"
    assert Settings(public_host="127.0.0.1").loopback_notice() is None
    assert Settings(public_url="https://panel.example.net").public_endpoint_host == (
        "panel.example.net"
    )


@pytest.mark.parametrize("host", ["https://vpn.example.net", "vpn.example.net:51820", "a b"])
def test_a_public_host_with_more_than_a_host_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="only a DNS name or an IP address"):
        Settings(public_host=host)
