"""What a device's OpenVPN and IKEv2 pages share: the page with the device's sign-in for one
protocol and the servers it has profiles for, and the make / new password / revoke actions.

The secret is shown once, on the page that made it (sent ``no-store``), never stored. Each
protocol's page module mounts the routes and says which servers offer it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.credentials.schemas import CredentialCreate
from burrow.control.credentials.service import IssuedCredential
from burrow.control.credentials.service import credential as credential_service
from burrow.control.devices.service import device as device_service
from burrow.control.errors import BurrowError
from burrow.control.models import Account
from burrow.control.nodes.schemas import ServerRead
from burrow.control.runtime import Runtime
from burrow.control.web.forms import Form, attempt, press, submit
from burrow.control.web.templating import redirect, render

Servers = Callable[[AsyncSession, Runtime], Awaitable[Sequence[ServerRead]]]


@dataclass(frozen=True)
class CredentialPages:
    protocol: str  # "openvpn", "ikev2"
    template: str
    servers: Servers  # the servers this protocol has profiles for
    revoked: str  # the flash after a revoke

    def url(self, device_id: int) -> str:
        return f"/devices/{device_id}/{self.protocol}"

    async def show(
        self,
        request: Request,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
        *,
        issued: IssuedCredential | None = None,
        form: Form | None = None,
        status_code: int = 200,
    ) -> Response:
        # Read afresh: a refused action's savepoint expires the rows it touched.
        device = await device_service.get(session, account, device_id)
        credentials = await credential_service.list(session, account, device.id)
        credential = next((c for c in credentials if c.protocol == self.protocol), None)
        response = render(
            request,
            self.template,
            {
                "device": device,
                "credential": credential,
                "issued": issued,
                "servers": list(await self.servers(session, runtime)),
                "form": form or Form.empty(),
            },
            status_code=status_code,
        )
        if issued is not None:
            response.headers["Cache-Control"] = "no-store"
        return response

    async def make(
        self,
        request: Request,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
    ) -> Response:
        await device_service.get(session, account, device_id)

        async def page(
            form: Form | None, status: int, issued: IssuedCredential | None = None
        ) -> Response:
            return await self.show(
                request,
                session,
                runtime,
                account,
                device_id,
                form=form,
                issued=issued,
                status_code=status,
            )

        return await submit(
            request,
            session,
            CredentialCreate,
            lambda body: credential_service.issue(session, runtime, account, device_id, body),
            page=page,
            done=lambda _body, issued: page(None, 200, issued),
            fields=("username",),
            fixed=lambda _form: {"protocol": self.protocol},
        )

    async def rotate(
        self,
        request: Request,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
    ) -> Response:
        await device_service.get(session, account, device_id)
        try:
            issued = await attempt(
                session,
                lambda: credential_service.rotate(
                    session, runtime, account, device_id, self.protocol
                ),
            )
        except BurrowError as exc:
            return redirect(request, self.url(device_id), flash=exc.message, kind="error")
        return await self.show(request, session, runtime, account, device_id, issued=issued)

    async def revoke(
        self,
        request: Request,
        session: AsyncSession,
        runtime: Runtime,
        account: Account,
        device_id: int,
    ) -> Response:
        back = self.url(device_id)
        return await press(
            request,
            session,
            lambda: credential_service.revoke(session, runtime, account, device_id, self.protocol),
            back=back,
            done=lambda _none: redirect(request, back, flash=self.revoked),
        )
