"""Check-in and the command channel, as a chain of handlers modelled on NanoMDM.

    CheckinService.checkin / .connect    service.py: the tenant, the body size, decoding
      └─ RecordRefusals                  events.py: every refusal leaves one event
           └─ CertAuth                   certauth.py: the Mdm-Signature and its signer
                └─ CheckinCore           core.py: enrollment state and the command queue

handler.py holds the vocabulary (Request, the CheckinHandler protocol with one method per message type,
dispatch_checkin, Middleware); results.py the side effects of acknowledged commands, by command class.
"""

from pomona.domain.errors import (
    BodyTooLargeError,
    MessageTypeUnsupportedError,
    UnknownTenantError,
    UserChannelDeclinedError,
)
from pomona.services.checkin.certauth import CertAuth
from pomona.services.checkin.core import TOUCH_EVERY, CheckinCore
from pomona.services.checkin.events import RecordRefusals
from pomona.services.checkin.handler import (
    MAX_BODY,
    CheckinHandler,
    Identity,
    Middleware,
    Refused,
    Request,
    dispatch_checkin,
)
from pomona.services.checkin.results import RESULT_HOOKS
from pomona.services.checkin.service import TENANT_TTL, CheckinService

__all__ = [
    "MAX_BODY",
    "RESULT_HOOKS",
    "TENANT_TTL",
    "TOUCH_EVERY",
    "BodyTooLargeError",
    "CertAuth",
    "CheckinCore",
    "CheckinHandler",
    "CheckinService",
    "Identity",
    "MessageTypeUnsupportedError",
    "Middleware",
    "RecordRefusals",
    "Refused",
    "Request",
    "UnknownTenantError",
    "UserChannelDeclinedError",
    "dispatch_checkin",
]
