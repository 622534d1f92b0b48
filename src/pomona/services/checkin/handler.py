"""The vocabulary of the check-in chain: the request, the handler protocol, dispatch and middleware.

A handler has one method per check-in ``MessageType`` and one for the command channel, as NanoMDM's
``service.Checkin`` and ``service.CommandAndReportResults``. Each method takes the :class:`Request` and the
decoded message and returns the response body (empty for none); a refusal is a raised ``PomonaError``,
whose class decides the HTTP status. A middleware is a handler that wraps the next one
(:class:`Middleware`). :func:`dispatch_checkin` picks the method from the decoded message; nothing here
knows about HTTP.

Adding a check-in message: its class and decoder in ``protocol/checkin.py``, then here a method on
:class:`CheckinHandler`, a case in :func:`dispatch_checkin` (mypy fails until there is one) and a method on
:class:`Middleware`, then its behaviour in ``core.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar, assert_never

from cryptography import x509

from pomona.domain.errors import PomonaError
from pomona.domain.models import Tenant
from pomona.protocol.checkin import (
    Authenticate,
    CheckinMessage,
    CheckOut,
    DeclarativeManagement,
    GetBootstrapToken,
    GetToken,
    SetBootstrapToken,
    TokenUpdate,
    UserAuthenticate,
)
from pomona.protocol.command import CommandReport

MAX_BODY = 2 * 1024 * 1024
"""The largest device message read (the HTTP layer stops reading there too)."""

DeviceMessage = CheckinMessage | CommandReport
"""Anything a handler method receives: a check-in message or a command-channel report."""

M = TypeVar("M", bound=DeviceMessage)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who signed a message: the certificate of its ``Mdm-Signature`` and that certificate's SHA-256
    fingerprint (hex), which binds it to an enrollment."""

    cert: x509.Certificate
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Request:
    """One device message as the handlers see it (NanoMDM's ``mdm.Request``).

    ``tenant`` is the tenant the URL names, ``body`` the raw bytes that were signed, ``signature`` the
    ``Mdm-Signature`` header. ``identity`` is set by :class:`~pomona.services.checkin.certauth.CertAuth`
    once the signature verifies; the handlers behind it read it through :attr:`signer`.
    """

    tenant: Tenant
    body: bytes
    signature: str | None
    identity: Identity | None = None

    @property
    def signer(self) -> Identity:
        """The verified signer. Only a chain without CertAuth in front lacks it: a wiring fault."""
        if self.identity is None:
            raise RuntimeError("no CertAuth in front of this handler: the message is not authenticated")
        return self.identity


class Refused(Exception):
    """A refusal whose event the handler describes itself: the user it concerns and the facts to keep.

    RecordRefusals writes that event (and no other) and raises :attr:`error` in its place; any other
    ``PomonaError`` gets the event RecordRefusals can describe on its own.
    """

    def __init__(
        self,
        error: PomonaError,
        *,
        user_id: str | None = None,
        upn: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(error.detail or type(error).__name__)
        self.error = error
        self.user_id = user_id
        self.upn = upn
        self.detail: Mapping[str, object] = detail or {}


class CheckinHandler(Protocol):
    """One method per check-in message type, and the command channel. Each returns the response body."""

    def authenticate(self, req: Request, msg: Authenticate) -> bytes: ...
    def token_update(self, req: Request, msg: TokenUpdate) -> bytes: ...
    def check_out(self, req: Request, msg: CheckOut) -> bytes: ...
    def user_authenticate(self, req: Request, msg: UserAuthenticate) -> bytes: ...
    def get_bootstrap_token(self, req: Request, msg: GetBootstrapToken) -> bytes: ...
    def set_bootstrap_token(self, req: Request, msg: SetBootstrapToken) -> bytes: ...
    def declarative_management(self, req: Request, msg: DeclarativeManagement) -> bytes: ...
    def get_token(self, req: Request, msg: GetToken) -> bytes: ...
    def command_and_report_results(self, req: Request, report: CommandReport) -> bytes:
        """Store the reported result (unless Idle) and answer the next command (empty for none)."""
        ...


def dispatch_checkin(handler: CheckinHandler, req: Request, msg: CheckinMessage) -> bytes:
    """Call the handler's method for this message type (NanoMDM's ``service.CheckinRequest``)."""
    match msg:
        case Authenticate():
            return handler.authenticate(req, msg)
        case TokenUpdate():
            return handler.token_update(req, msg)
        case CheckOut():
            return handler.check_out(req, msg)
        case UserAuthenticate():
            return handler.user_authenticate(req, msg)
        case GetBootstrapToken():
            return handler.get_bootstrap_token(req, msg)
        case SetBootstrapToken():
            return handler.set_bootstrap_token(req, msg)
        case DeclarativeManagement():
            return handler.declarative_management(req, msg)
        case GetToken():
            return handler.get_token(req, msg)
        case _:
            assert_never(msg)


class Middleware:
    """A handler around the next one: every method goes through :meth:`around` with the next method.

    A middleware overrides :meth:`around` (and a single method where one message needs more).
    """

    def __init__(self, next: CheckinHandler) -> None:
        self.next = next

    def around(self, req: Request, msg: M, call: Callable[[Request, M], bytes]) -> bytes:
        """Do this middleware's part and call ``call(req, msg)``; the base passes through."""
        return call(req, msg)

    def authenticate(self, req: Request, msg: Authenticate) -> bytes:
        return self.around(req, msg, self.next.authenticate)

    def token_update(self, req: Request, msg: TokenUpdate) -> bytes:
        return self.around(req, msg, self.next.token_update)

    def check_out(self, req: Request, msg: CheckOut) -> bytes:
        return self.around(req, msg, self.next.check_out)

    def user_authenticate(self, req: Request, msg: UserAuthenticate) -> bytes:
        return self.around(req, msg, self.next.user_authenticate)

    def get_bootstrap_token(self, req: Request, msg: GetBootstrapToken) -> bytes:
        return self.around(req, msg, self.next.get_bootstrap_token)

    def set_bootstrap_token(self, req: Request, msg: SetBootstrapToken) -> bytes:
        return self.around(req, msg, self.next.set_bootstrap_token)

    def declarative_management(self, req: Request, msg: DeclarativeManagement) -> bytes:
        return self.around(req, msg, self.next.declarative_management)

    def get_token(self, req: Request, msg: GetToken) -> bytes:
        return self.around(req, msg, self.next.get_token)

    def command_and_report_results(self, req: Request, report: CommandReport) -> bytes:
        return self.around(req, report, self.next.command_and_report_results)
