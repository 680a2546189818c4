"""Reading forms into the API's own request bodies, and showing what went wrong.

A page validates a posted form with the same pydantic schema as the API operation it mirrors,
so a customer reads the same message in both places. Errors are kept per field (shown next to
the field), the typed values are kept to fill the form again, and secret fields (passwords,
codes) are never sent back.

The whole read -> validate -> call -> re-render-or-redirect round is ``submit``; the call runs
in a savepoint, so a refusal undoes only the action and the request's unit of work goes on:

    def page(form: Form, status: int) -> Response:
        return render(request, "signup.html", {"form": form}, status_code=status)

    return await submit(
        request, session, AccountCreate,
        lambda body: account_service.sign_up(session, runtime, body),
        page=page,                                      # invalid (422) or refused: again
        done=lambda body, _: redirect(request, "/login"),  # accepted: on to the next page
    )

``press`` is the same for a button without fields, ``attempt`` the savepoint alone for a page
that reads its form its own way. Pages show the signed-in person from ``auth.Person`` (frozen
at sign-in), never from a row the savepoint's rollback may have expired.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.db import savepoint
from burrow.control.errors import BurrowError
from burrow.control.plain_words import field_message
from burrow.control.web.csrf import FIELD as CSRF_FIELD
from burrow.control.web.templating import redirect

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

# Never written back into a page, whatever the form.
ALWAYS_SECRET = frozenset(
    {"password", "new_password", "current_password", "code", "totp_code", CSRF_FIELD}
)


def api_message(model: type[BaseModel] | None, name: str, error: dict[str, Any]) -> str:
    """The wording the API's validation handler uses too: the provider's, never pydantic's."""
    return field_message(model, name, error)


@dataclass
class Form:
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    secret: frozenset[str] = ALWAYS_SECRET

    @classmethod
    def empty(cls, **values: str) -> Form:
        return cls(values=dict(values))

    @classmethod
    async def read(cls, request: Request, *, secret: Iterable[str] = ()) -> Form:
        """The posted text fields (files are ignored); the CSRF token is checked already."""
        data = await request.form()
        values: dict[str, str] = {}
        for key, value in data.multi_items():
            if isinstance(value, str) and key != CSRF_FIELD and key not in values:
                values[key] = value
        return cls(values=values, secret=ALWAYS_SECRET | frozenset(secret))

    # What templates read.

    def value(self, name: str, default: str = "") -> str:
        if name in self.secret:
            return ""
        return self.values.get(name, default)

    def checked(self, name: str) -> bool:
        return name in self.values

    def error(self, name: str) -> str | None:
        return self.errors.get(name)

    @property
    def failed(self) -> bool:
        return bool(self.errors or self.message)

    # What handlers use.

    def raw(self, name: str) -> str | None:
        """The submitted value even of a secret field (for the handler, never the page)."""
        return self.values.get(name)

    def validate(self, model: type[M], **overrides: Any) -> M | None:
        """The form as ``model``, or None with ``errors`` filled in the API's words.

        Only the model's fields are read. An empty optional field counts as not sent, so its
        default applies; ``overrides`` replace or add values (checkboxes, fixed values).
        """
        data: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            if name not in self.values:
                continue
            text = self.values[name]
            if text == "" and not info.is_required():
                continue
            data[name] = text
        data.update(overrides)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = [str(p) for p in error.get("loc", ())]
                name = loc[0] if loc else "__root__"
                message = api_message(model, name, dict(error))
                if name in model.model_fields:
                    self.errors.setdefault(name, message)
                else:
                    self.message = self.message or message
            if not self.errors and self.message is None:
                self.message = "Check the form and try again."
            return None

    def fail(self, exc: BurrowError, *, fields: Iterable[str] = ()) -> None:
        """Show a service's refusal: next to its field when the form has that field.

        ``fields`` names fields the page shows that may be absent from the post (an unticked
        box, an unchosen radio button).
        """
        known = exc.field is not None and (
            exc.field in self.values or exc.field in self.errors or exc.field in set(fields)
        )
        if exc.field and known:
            self.errors[exc.field] = exc.message
        else:
            self.message = exc.message


Page = Callable[[Form, int], Awaitable[Response] | Response]


async def attempt(session: AsyncSession, call: Callable[[], Awaitable[T]]) -> T:
    """Run one form action in a savepoint: refused, it leaves no trace and the request goes on.

    A ``BurrowError`` (or any error) undoes only what ``call`` changed, and the callbacks it
    registered to run after commit; what the request did before still commits.
    """
    async with savepoint(session):
        return await call()


async def _show(page: Page, form: Form, status: int) -> Response:
    answer = page(form, status)
    return answer if isinstance(answer, Response) else await answer


async def submit(
    request: Request,
    session: AsyncSession,
    schema: type[M],
    action: Callable[[M], Awaitable[T]],
    *,
    page: Page,
    done: Callable[[M, T], Response | Awaitable[Response]],
    secret: Iterable[str] = (),
    fields: Iterable[str] = (),
    renamed: Mapping[str, str] | None = None,
    fixed: Callable[[Form], dict[str, Any]] | None = None,
    check: Callable[[Form], None] | None = None,
) -> Response:
    """Read, validate, call, then redirect (``done``) or show the form again (``page``).

    ``page(form, status)`` draws the page with the form's errors: 422 when the form is not
    valid, the refusal's status when ``action`` refused it. ``action`` runs in a savepoint
    (``attempt``). ``fixed`` gives values that do not come from the typed text (checkboxes,
    fixed values); ``check`` adds the page's own errors after validation; ``renamed`` maps a
    service's field name to the form's (``password`` -> ``new_password``); ``fields`` names
    fields the page shows that a post may leave out.
    """
    form = await Form.read(request, secret=secret)
    body = form.validate(schema, **(fixed(form) if fixed else {}))
    if check is not None:
        check(form)
    if body is None or form.errors:
        return await _show(page, form, 422)
    try:
        result = await attempt(session, lambda: action(body))
    except BurrowError as exc:
        if renamed and exc.field is not None and exc.field in renamed:
            exc.field = renamed[exc.field]
        form.fail(exc, fields=[*fields, *(renamed or {}).values()])
        return await _show(page, form, exc.status)
    answer = done(body, result)
    return answer if isinstance(answer, Response) else await answer


async def press(
    request: Request,
    session: AsyncSession,
    action: Callable[[], Awaitable[T]],
    *,
    back: str,
    done: Callable[[T], Response],
) -> Response:
    """A button without fields: run ``action``; refused, back to ``back`` saying why."""
    try:
        result = await attempt(session, action)
    except BurrowError as exc:
        return redirect(request, back, flash=exc.message, kind="error")
    return done(result)
