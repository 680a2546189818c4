"""The web foundation: pages out of the API schema, CSRF, auth redirects, error pages, cookies."""

from __future__ import annotations

import httpx

from burrow.control.app import create_app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.deps import SESSION_COOKIE
from burrow.control.models import AccountStatus
from burrow.control.web.cookies import CSRF_COOKIE
from tests.control.web.conftest import MakeWebCustomer
from tests.support.app import running_runtime
from tests.support.factories import DEFAULT_PASSWORD, create_account
from tests.support.web import csrf_token, post_form


async def test_pages_stay_out_of_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/api/openapi.json")).json()["paths"]
    assert all(path.startswith(("/api/", "/node-api/", "/healthz", "/metrics")) for path in paths)
    assert "/login" not in paths


async def test_stylesheet_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/burrow.css")
    assert response.status_code == 200
    assert "text/css" in response.headers["content-type"]
    assert ".notice-error" in response.text


async def test_signed_out_page_redirects_to_login_with_next(client: httpx.AsyncClient) -> None:
    response = await client.get("/account?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/account%3Fx%3D1"
    # An expired or unknown session is treated the same, with a word of why.
    client.cookies.set(SESSION_COOKIE, "not-a-session")
    again = await client.get("/dashboard")
    assert again.headers["location"] == "/login?next=/dashboard"
    login = await client.get(again.headers["location"])
    assert "Your session has ended" in login.text


async def test_signed_out_form_gets_an_httponly_samesite_csrf_cookie(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # public_url is http in tests
    assert response.headers["cache-control"] == "no-store"
    # The same browser keeps the same token.
    assert csrf_token(await client.get("/login")) == csrf_token(response)


async def test_post_without_or_with_a_wrong_token_is_refused(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    missing = await client.post("/logout-everywhere", data={})
    assert missing.status_code == 403
    assert "did not come from this site" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    wrong = await client.post("/logout-everywhere", data={"csrf_token": "forged"})
    assert wrong.status_code == 403
    # Still signed in: nothing happened.
    assert (await client.get("/account")).status_code == 200


async def test_token_is_bound_to_the_session(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    first = await web_customer()
    token_of_first = csrf_token(await client.get("/account"))
    await web_customer()  # the client is now someone else
    response = await client.post("/logout-everywhere", data={"csrf_token": token_of_first})
    assert response.status_code == 403
    assert first.token  # the first customer's session was not touched either


async def test_a_signed_out_token_does_not_work_in_another_browser(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as one,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as two,
    ):
        token = csrf_token(await one.get("/login"))
        await two.get("/login")
        response = await two.post(
            "/login", data={"email": "a@example.com", "password": "x", "csrf_token": token}
        )
        assert response.status_code == 403


async def test_unknown_page_is_an_html_404_and_api_keeps_problem_json(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no page at this address" in page.text
    api = await client.get("/api/v1/no-such-thing")
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"
    signed_out_api = await client.get("/api/v1/accounts/me")
    assert signed_out_api.status_code == 401
    assert signed_out_api.headers["content-type"] == "application/problem+json"


async def test_flash_message_shows_once(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    response = await post_form(client, "/logout", page="/account")
    assert response.status_code == 303
    login = await client.get(response.headers["location"])
    assert "You are logged out." in login.text
    assert "You are logged out." not in (await client.get("/login")).text


async def test_next_never_leaves_the_site(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer()
    for target in ("https://evil.example/", "//evil.example/", "/\\evil", "javascript:x"):
        response = await client.get("/login", params={"next": target})
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard"
    response = await client.get("/login", params={"next": "/billing"})
    assert response.headers["location"] == "/billing"


async def test_a_terminated_accounts_browser_is_signed_out_and_told_why(
    client: httpx.AsyncClient, web_customer: MakeWebCustomer
) -> None:
    await web_customer(status=AccountStatus.terminated)
    response = await client.get("/dashboard")
    assert response.status_code == 303
    login = await client.get(response.headers["location"])
    assert login.status_code == 200
    assert "terminated" in login.text
    assert 'id="login-form"' in login.text


def _cookie_attributes(response: httpx.Response, name: str) -> set[str]:
    """The attributes of the Set-Cookie header for ``name`` (lowercase, values kept)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return {part.strip().lower() for part in header.split(";")[1:]}
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


async def test_cookies_are_secure_when_the_public_url_is_https(settings: Settings) -> None:
    """Behind a TLS proxy the app sees http; the https public URL makes every cookie Secure."""
    https = settings.model_copy(update={"public_url": "https://vpn.example.com"})
    async with running_runtime(https) as runtime:
        async with unit_of_work(runtime.sessionmaker) as session:
            account = await create_account(session)
        transport = httpx.ASGITransport(app=create_app(runtime=runtime))
        # An https client: a cookie jar keeps sending Secure cookies only over https.
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            signed_out = await client.get("/login")
            assert signed_out.status_code == 200, signed_out.text
            nonce = _cookie_attributes(signed_out, CSRF_COOKIE)
            assert {"secure", "httponly", "samesite=lax", "path=/"} <= nonce

            signed_in = await client.post(
                "/login",
                data={
                    "email": account.email,
                    "password": DEFAULT_PASSWORD,
                    "csrf_token": csrf_token(signed_out),
                },
            )
            assert signed_in.status_code == 303, signed_in.text
            assert signed_in.headers["location"] == "/dashboard"
            session_cookie = _cookie_attributes(signed_in, SESSION_COOKIE)
            assert {"secure", "httponly", "samesite=lax", "path=/"} <= session_cookie
            assert (await client.get("/dashboard")).status_code == 200
