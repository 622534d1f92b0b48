"""Event recording as a middleware: every refusal of the next handler leaves exactly one event.

The event is written in its own transaction (``ServiceBase.record_failure``), so it survives the rollback
of the refused work. Its step, UDID and serial come from the refused message; a handler that knows more
(the user, the policy's facts) raises :class:`~pomona.services.checkin.handler.Refused` with the event's
facts, and this middleware records those instead. A message that names no device (or a body that did not
decode) is filed under the UDID its signer is bound to, when there is one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Protocol

from cryptography.hazmat.primitives import hashes

from pomona.domain.errors import PomonaError
from pomona.domain.models import Step
from pomona.ports import Clock, EnrollmentStore, HasEvents, Metrics, NoMetrics, Transactions
from pomona.protocol import cms, plist
from pomona.protocol.checkin import Authenticate, CheckOut, TokenUpdate
from pomona.protocol.command import CommandReport
from pomona.services.base import ServiceBase
from pomona.services.checkin.handler import (
    MAX_BODY,
    CheckinHandler,
    DeviceMessage,
    M,
    Middleware,
    Refused,
    Request,
)


def subject(msg: DeviceMessage) -> tuple[Step, str | None, str | None, dict[str, object]]:
    """The event facts of a refused message: its step, the UDID and serial it claims, extra detail."""
    match msg:
        case Authenticate():
            return Step.AUTHENTICATE, msg.udid, msg.serial_number, {}
        case TokenUpdate():
            return Step.TOKENUPDATE, msg.udid, None, {}
        case CheckOut():
            return Step.CHECKOUT, msg.udid, None, {}
        case CommandReport():
            return Step.COMMAND, msg.udid, None, {}
        case _:
            return Step.CHECKIN, msg.udid, None, {"message_type": msg.message_type}


class RefusalStores(HasEvents, Protocol):
    """What recording a refusal uses: the event log, and the enrollment a signer is bound to."""

    @property
    def enrollments(self) -> EnrollmentStore: ...


class RecordRefusals(Middleware):
    def __init__(
        self,
        next: CheckinHandler,
        db: Transactions[RefusalStores],
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(next)
        self.db = db
        self._events = ServiceBase(db, clock, metrics=metrics or NoMetrics())

    def around(self, req: Request, msg: M, call: Callable[[Request, M], bytes]) -> bytes:
        try:
            return call(req, msg)
        except Refused as described:
            step, udid, serial, _ = subject(msg)
            self.record(
                req,
                step,
                described.error,
                udid=udid,
                serial=serial,
                user_id=described.user_id,
                upn=described.upn,
                detail=described.detail,
            )
            raise described.error from None
        except PomonaError as exc:
            step, udid, serial, detail = subject(msg)
            self.record(req, step, exc, udid=udid, serial=serial, detail=detail)
            raise

    def record(
        self,
        req: Request,
        step: Step,
        exc: PomonaError,
        *,
        udid: str | None = None,
        serial: str | None = None,
        user_id: str | None = None,
        upn: str | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Record the refusal ``exc`` of ``req`` (its ``detail`` first, then the given facts)."""
        self._events.record_failure(
            req.tenant.id,
            step,
            exc.reason,
            user_id=user_id,
            upn=upn,
            serial=serial,
            udid=udid or self._claimed_udid(req),
            detail={"error": exc.detail, **(detail or {})},
        )

    def _claimed_udid(self, req: Request) -> str | None:
        """The UDID the body claims, or the one its signer is bound to: best effort, for the event only."""
        try:
            claimed = plist.loads(req.body, max_size=MAX_BODY).get("UDID")
            if isinstance(claimed, str) and claimed:
                return claimed[:64]
        except ValueError:
            pass
        try:
            cert = cms.verify_detached(base64.b64decode(req.signature or ""), req.body)
        except (ValueError, binascii.Error):
            return None
        with self.db.unit_of_work(readonly=True) as uow:
            e = uow.enrollments.by_fingerprint(cert.fingerprint(hashes.SHA256()).hex())
        return None if e is None else e.udid
