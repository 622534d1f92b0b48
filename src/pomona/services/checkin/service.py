"""The entry of both device endpoints: find the tenant, decode the body, dispatch into the chain.

    CheckinService.checkin / .connect    the tenant the URL names (cached), the body size, decoding
      └─ RecordRefusals                  every refusal leaves one event, in its own transaction
           └─ CertAuth                   Mdm-Signature verifies; the signer is this tenant's and valid
                └─ CheckinCore           enrollment state and the command queue

A body that does not decode is refused here (MALFORMED_REQUEST; MESSAGE_TYPE_UNSUPPORTED for a
``MessageType`` Pomona does not know), with its event. An unknown tenant is refused with no event: there
is no tenant to file it under. The hot path (an idle check-in) costs one cache hit, one plist parse, one
signature verification and one read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pomona.domain.errors import (
    BodyTooLargeError,
    MalformedRequestError,
    MessageTypeUnsupportedError,
    PomonaError,
    UnknownTenantError,
)
from pomona.domain.models import Step, Tenant
from pomona.ports import Pki
from pomona.protocol.checkin import CheckinMessage, decode_checkin
from pomona.protocol.command import CommandReport, decode_report
from pomona.protocol.errors import ProtocolError, UnrecognizedMessageTypeError
from pomona.services.base import ServiceBase
from pomona.services.checkin.certauth import CertAuth, Lru
from pomona.services.checkin.core import CheckinCore, CheckinDatabase, CheckinStores
from pomona.services.checkin.events import RecordRefusals
from pomona.services.checkin.handler import MAX_BODY, CheckinHandler, Request, dispatch_checkin
from pomona.services.policy import PolicyService

TENANT_TTL = 30.0
"""Seconds a process trusts its cached copy of a tenant row (Authenticate re-reads it)."""

D = TypeVar("D", CheckinMessage, CommandReport)


@dataclass
class CheckinService(ServiceBase[CheckinStores]):
    db: CheckinDatabase  # the whole chain's: the core's stores and the command channel's read
    pki: Pki
    policy: PolicyService
    handler: CheckinHandler = field(init=False, repr=False)
    """The chain every decoded message goes to."""
    refusals: RecordRefusals = field(init=False, repr=False)
    _tenants: Lru = field(init=False, repr=False)

    def __post_init__(self) -> None:
        core = CheckinCore(self.db, self.clock, self.policy, metrics=self.metrics)
        self.refusals = RecordRefusals(
            CertAuth(core, self.pki, self.clock), self.db, self.clock, self.metrics
        )
        self.handler = self.refusals
        self._tenants = Lru(1024)

    # --- the tenant the URL names -----------------------------------------------------------------
    def _tenant(self, tenant_id: str) -> Tenant:
        """The tenant, cached for TENANT_TTL: its CA never changes, its push topic rarely. Authenticate
        re-reads the tenant inside its transaction, so policy decisions never use a stale copy. A Tenant
        carries its CA's certificate, never the CA's private key: the cache holds no key."""
        hit = self._tenants.get(tenant_id)
        now = time.monotonic()
        if isinstance(hit, tuple) and now - hit[0] < TENANT_TTL:
            tenant: Tenant = hit[1]
            return tenant
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.tenants.get(tenant_id)
        if found is None:
            raise UnknownTenantError("no such tenant")
        self._tenants.put(tenant_id, (now, found))
        return found

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop this process's cached tenant facts (the push topic changed)."""
        self._tenants.drop(tenant_id)

    # --- the two endpoints ------------------------------------------------------------------------
    def checkin(self, tenant_id: str, body: bytes, signature: str | None) -> bytes:
        """Handle one check-in message. Returns the response body (empty for none)."""
        req = Request(self._tenant(tenant_id), body, signature)
        msg = self._decode(req, Step.AUTHENTICATE, decode_checkin)
        self.metrics.checkin("checkin", msg.message_type)
        return dispatch_checkin(self.handler, req, msg)

    def connect(self, tenant_id: str, body: bytes, signature: str | None) -> bytes:
        """Handle one command-channel request: store the reported result, return the next command."""
        req = Request(self._tenant(tenant_id), body, signature)
        report = self._decode(req, Step.COMMAND, decode_report)
        self.metrics.checkin("connect", report.status.value)
        return self.handler.command_and_report_results(req, report)

    def refuse_oversized(self, tenant_id: str, channel: str) -> tuple[int, bytes, str | None]:
        """A body over MAX_BODY was cut off at the HTTP layer: record the refusal (for a known tenant)."""
        tenant = self._tenant(tenant_id)  # an unknown tenant is refused as such, with no event
        step = Step.COMMAND if channel == "connect" else Step.AUTHENTICATE
        exc = BodyTooLargeError(f"body larger than {MAX_BODY} bytes")
        self.record_failure(tenant.id, step, exc.reason, detail={"error": "body too large"})
        raise exc

    def _decode(self, req: Request, step: Step, decode: Callable[..., D]) -> D:
        """The decoded body, or its refusal, recorded under ``step``."""
        try:
            if len(req.body) > MAX_BODY:
                raise BodyTooLargeError("body too large")
            return decode(req.body, max_size=MAX_BODY)
        except BodyTooLargeError as too_large:
            self.refusals.record(req, step, too_large)
            raise
        except ProtocolError as cause:
            refused, step, detail = _decode_refusal(cause, step)
            self.refusals.record(req, step, refused, detail=detail)
            raise refused from cause


def _decode_refusal(cause: ProtocolError, step: Step) -> tuple[PomonaError, Step, dict[str, object]]:
    """A body that does not decode is MALFORMED_REQUEST, or MESSAGE_TYPE_UNSUPPORTED (under the step
    ``checkin``) when it is a check-in of a ``MessageType`` Pomona does not know."""
    if isinstance(cause, UnrecognizedMessageTypeError) and cause.message_type is not None:
        exc = MessageTypeUnsupportedError(f"unknown MessageType {cause.message_type[:64]!r}")
        return exc, Step.CHECKIN, {"message_type": cause.message_type[:64]}
    return MalformedRequestError(str(cause)), step, {}
