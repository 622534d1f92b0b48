"""The check-in refusals that have no class in ``domain/errors.py`` yet; each class decides its status.

    PomonaError
    ├── MalformedRequestError
    │   └── BodyTooLargeError            MALFORMED_REQUEST, 413: a body over MAX_BODY
    └── MessageTypeUnsupportedError      MESSAGE_TYPE_UNSUPPORTED, 400: a MessageType Pomona does not know
        └── UserChannelDeclinedError     MESSAGE_TYPE_UNSUPPORTED, 410: UserAuthenticate, declined as Apple
                                         documents for a server that does not manage the user

They belong in the tree of ``domain/errors.py``; they live here until that tree is rewritten.
"""

from __future__ import annotations

from pomona.domain.errors import MalformedRequestError, PomonaError
from pomona.domain.reasons import ReasonCode


class BodyTooLargeError(MalformedRequestError):
    http_status = 413


class MessageTypeUnsupportedError(PomonaError):
    """A check-in message Pomona does not know, or knows and does not implement."""

    reason = ReasonCode.MESSAGE_TYPE_UNSUPPORTED
    http_status = 400


class UserChannelDeclinedError(MessageTypeUnsupportedError):
    """410 to UserAuthenticate: the Mac makes no more requests for this user during the login session.

    https://developer.apple.com/documentation/devicemanagement/userauthenticate
    """

    http_status = 410
