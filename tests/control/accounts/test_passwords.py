"""Password rules: leaked and guessable passwords are refused with a reason."""

from __future__ import annotations

import httpx
import pytest

from burrow.control.accounts.service import WeakPassword, check_password
from burrow.control.accounts.service.passwords import BREACHED_FILE, breached_passwords
from burrow.control.runtime import Runtime
from tests.support.factories import unique_email

EMAIL = "robin.hood@example.com"


@pytest.mark.parametrize("password", ["password12", "1234567890", "qwertyuiop", "Password12"])
def test_leaked_passwords_are_refused_saying_why(password: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_password(password, EMAIL)
    assert "leaked passwords" in caught.value.message
    assert caught.value.field == "password"


@pytest.mark.parametrize(
    "password", ["abcdefghijk", "robinhood2024", "Robin.Hood!1", "aaaaaaaaaaaa"]
)
def test_guessable_passwords_are_refused_saying_why(password: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_password(password, EMAIL)
    assert caught.value.message.startswith("This password is too easy to guess")


@pytest.mark.parametrize(
    "password", ["correct horse battery", "a long enough password", "Tangerine-Kayak-Nebula"]
)
def test_strong_passwords_pass(password: str) -> None:
    check_password(password, EMAIL)


def test_the_shipped_list_is_the_zxcvbn_breach_list_of_usable_length() -> None:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    shipped = breached_passwords()
    expected = {p for p in FREQUENCY_LISTS["passwords"] if len(p) >= 8}
    assert shipped == expected
    assert BREACHED_FILE.read_text().startswith("# ")


def test_a_very_long_password_is_judged_quickly() -> None:
    import time

    started = time.monotonic()
    check_password("x7$Qa" * 200, EMAIL)
    assert time.monotonic() - started < 2


async def test_the_api_refuses_a_leaked_password_at_sign_up(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await client.post(
        "/api/v1/accounts",
        json={
            "email": unique_email("weak"),
            "password": "1234567890",
            "accept_terms_version": runtime.policy.terms.version,
            "age_attestation": "adult",
        },
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "password"
    assert "leaked passwords" in problem["detail"]
