"""FastAPI dependencies: the unit of work, the runtime, and who is calling.

A customer authenticates with a session token (cookie ``burrow_session`` for browsers,
``Authorization: Bearer`` for the API); a node with its node token (bearer) on the node API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.service import AdminSecondFactor
from burrow.control.accounts.service import account as account_service
from burrow.control.db import unit_of_work
from burrow.control.errors import CrossSiteRequest, Forbidden, NotAuthenticated
from burrow.control.models import Account, Node
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.control.security import SAFE_METHODS, from_origin
from burrow.wire import API_PREFIX

SESSION_COOKIE = "burrow_session"

_bearer = HTTPBearer(auto_error=False, description="A session token, or a node token.")


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop on
    # every request for one attribute read.
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


# Requests that only read by their method take no write lock until they write (db.py).
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that mostly read, likewise: a node's status report decides leases in the live store and
# writes the database only for a metered policy's connection records (the lock is taken at
# that first write), so a thousand nodes' reports do not queue behind one another.
MOSTLY_READING_PATHS = frozenset({f"{API_PREFIX}/report"})


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    writes = request.method not in READING_METHODS and (
        request.url.path not in MOSTLY_READING_PATHS
    )
    async with unit_of_work(runtime.sessionmaker, writes=writes) as session:
        yield session


# scope="function": commit before the response is sent, so that a 2xx means "stored".
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token_from(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials
    return request.cookies.get(SESSION_COOKIE)


async def get_session_token(request: Request, bearer: BearerDep) -> str:
    token = _token_from(request, bearer)
    if not token:
        raise NotAuthenticated("Sign in first: send your session token as a bearer token.")
    by_cookie = bearer is None or not bearer.credentials
    # The browser sends the cookie whichever site makes the request (SameSite=Lax still lets a
    # sibling subdomain through): a state-changing call it authenticates must come from us.
    if by_cookie and request.method not in SAFE_METHODS:
        public_url = runtime_of(request).settings.public_url
        if not from_origin(request.headers, public_url):
            raise CrossSiteRequest()
    return token


async def current_account(
    session: SessionDep, runtime: RuntimeDep, token: Annotated[str, Depends(get_session_token)]
) -> Account:
    return await account_service.authenticate(session, runtime, token)


CurrentAccount = Annotated[Account, Depends(current_account)]


async def current_admin(
    account: CurrentAccount,
    session: SessionDep,
    token: Annotated[str, Depends(get_session_token)],
) -> Account:
    """An administrator whose session proved the second factor, as the admin panel demands."""
    if not account.is_admin:
        raise Forbidden("This needs an administrator account.")
    match await account_service.admin_second_factor(session, account, token):
        case AdminSecondFactor.not_enrolled:
            raise Forbidden(
                "The admin API needs two-factor sign-in. Turn it on for this account (POST "
                "/api/v1/accounts/me/totp, then POST /api/v1/accounts/me/totp/confirm with a "
                "code), then sign in again with POST /api/v1/sessions and a totp_code.",
                second_factor="not_enrolled",
            )
        case AdminSecondFactor.not_proved:
            raise Forbidden(
                "This session was opened without a two-factor code: sign in again with POST "
                "/api/v1/sessions and a totp_code to use the admin API.",
                second_factor="not_proved",
            )
    return account


CurrentAdmin = Annotated[Account, Depends(current_admin)]


async def current_node(session: SessionDep, bearer: BearerDep) -> Node:
    if bearer is None or not bearer.credentials:
        raise NotAuthenticated("The node API needs the node token as a bearer token.")
    return await node_service.authenticate(session, bearer.credentials)


CurrentNode = Annotated[Node, Depends(current_node)]
