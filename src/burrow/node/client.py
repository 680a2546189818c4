"""The node API client: what the agent asks the control plane, over one ``httpx.AsyncClient``.

Four calls, all under ``burrow.wire.API_PREFIX``: ``enroll`` (with the one-time enrollment
token), ``full_state``, ``changes`` (the long poll) and ``report``. Answers are parsed into the
``burrow.wire`` models, so a control plane that speaks another contract is noticed at once.

Failures come in two kinds, because the loop treats them differently:
``ControlPlaneUnavailable`` (no connection, timeout, 5xx, a garbled answer: keep serving and
retry later) and ``NodeApiRefused`` (a 4xx: the request itself is wrong; ``NodeTokenRejected``
for a 401, the node is no longer one of the fleet).

The transport is injectable (``httpx.MockTransport`` in tests, STYLE.md rule 10). Nothing
here logs a request or an answer body.

Imports ``burrow.wire`` and httpx.
"""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from burrow.wire import (
    API_PREFIX,
    DeltaState,
    DesiredState,
    EnrollRequest,
    EnrollResponse,
    FullState,
    IkeV2Offer,
    NodeReport,
    OpenVpnOffer,
    ReportAck,
    StateUpdate,
)

M = TypeVar("M", bound=BaseModel)

_STATE_UPDATE: TypeAdapter[FullState | DeltaState] = TypeAdapter(StateUpdate)
# How much longer than the long poll itself a changes request may take before it counts as hung.
_POLL_MARGIN_SECONDS = 10.0


class NodeApiError(Exception):
    """A node API call failed."""


class ControlPlaneUnavailable(NodeApiError):
    """The control plane could not be reached or did not answer properly; try again later."""


class NodeApiRefused(NodeApiError):
    """The control plane refused the request (a 4xx); ``detail`` is its explanation."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"the control plane refused the request ({status}): {detail}")


class NodeTokenRejected(NodeApiRefused):
    """401: the node token (or enrollment token) is not, or no longer, valid."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])[:500]
    return response.reason_phrase or "no explanation given"


def _transport_failure(exc: httpx.TransportError) -> str:
    """What went wrong, in words an operator can act on when it is the TLS certificate."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"its TLS certificate is not trusted here ({cause.verify_message}); if it comes "
                "from your own CA, name the CA's certificate file in SSL_CERT_FILE"
            )
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


class NodeApiClient:
    """One control plane, one node. ``token`` is the node token (not needed to enroll)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        headers = {"User-Agent": "burrow-node"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        limits: httpx.Timeout | None = None,
    ) -> httpx.Response:
        content = body.model_dump_json().encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                headers=headers,
                params=params,
                timeout=limits if limits is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as exc:
            # Connection refused, reset, DNS, timeouts: the control plane is away.
            raise ControlPlaneUnavailable(f"{method} {path}: {_transport_failure(exc)}") from None
        if response.status_code == 401:
            raise NodeTokenRejected(401, _detail(response))
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise NodeApiRefused(response.status_code, _detail(response))
        if response.status_code not in (200, 204):
            raise ControlPlaneUnavailable(f"{method} {path}: HTTP {response.status_code}")
        return response

    @staticmethod
    def _parse(model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            raise ControlPlaneUnavailable(
                f"the control plane's answer is not a valid {model.__name__}"
            ) from None

    async def enroll(self, enrollment_token: str, public_key: str) -> EnrollResponse:
        """Trade the one-time enrollment token for a node token."""
        request = EnrollRequest(token=enrollment_token, public_key=public_key)
        response = await self._call("POST", "/enroll", body=request)
        return self._parse(EnrollResponse, response)

    async def full_state(self) -> DesiredState:
        response = await self._call("GET", "/state")
        return self._parse(FullState, response).state

    async def changes(self, since: int, wait_seconds: float) -> FullState | DeltaState:
        """The long poll: what changed after ``since``, waiting up to ``wait_seconds``."""
        timeout = httpx.Timeout(self.timeout, read=wait_seconds + _POLL_MARGIN_SECONDS)
        response = await self._call(
            "GET",
            "/state/changes",
            params={"since": since, "timeout": wait_seconds},
            limits=timeout,
        )
        try:
            return _STATE_UPDATE.validate_json(response.content)
        except ValidationError:
            raise ControlPlaneUnavailable(
                "the control plane's answer is not a state update"
            ) from None

    async def filter_list(self, sha256: str) -> bytes:
        """A DNS filter list by its content hash: one domain name a line."""
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 60.0))
        response = await self._call("GET", f"/dns/lists/{sha256}", limits=timeout)
        return response.content

    async def offer_openvpn(self, offer: OpenVpnOffer) -> None:
        """Tell the control plane this node's OpenVPN CA, tls-crypt key and transports."""
        await self._call("PUT", "/openvpn", body=offer)

    async def offer_ikev2(self, offer: IkeV2Offer) -> None:
        """Tell the control plane the host IKEv2 clients dial and the CA its certificate
        chains to."""
        await self._call("PUT", "/ikev2", body=offer)

    async def report(self, report: NodeReport) -> ReportAck:
        response = await self._call("POST", "/report", body=report)
        return self._parse(ReportAck, response)
