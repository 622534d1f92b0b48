"""Errors raised by the wire-format codecs in :mod:`pomona.protocol`.

The tree (every class is also a :class:`ValueError`, so a codec failure is "a bad value")::

    ProtocolError                     any body we could not decode or build
    ├── PlistError                    not a well-formed, safe plist with a dict at the top
    │   └── PlistTooLargeError        larger than the size limit; nothing was parsed
    ├── CheckinParseError             a check-in body that is not a valid check-in message (keeps ``raw``)
    ├── UnrecognizedMessageTypeError  a well-formed check-in with a missing or unknown ``MessageType`` (keeps ``raw``)
    ├── CommandBuildError             admin-API parameters that do not make a valid command
    ├── CommandParseError             a command body (device side) that is not a valid command
    ├── ReportParseError              a command report (connect endpoint) that is not valid (keeps ``raw``)
    ├── ProfileError                  an enrollment profile that cannot be built or read
    ├── CmsError                      a CMS structure that is malformed, unsupported, or fails its signature
    │                                 or decryption check (``pomona.protocol.cms``)
    ├── ScepMalformedError            not a well-formed, correctly signed SCEP message or PKCS#10 request
    │   └── CsrSignatureError         a PKCS#10 request that parses but whose self-signature does not verify
    └── DepParseError                 an Apple Business Manager body (server token, device list) that is not
                                      what Apple documents (``pomona.protocol.dep``)

They live here, not beside their codecs, so that ``pomona.domain.errors`` can map every one of them to a
reason-coded error without importing the (heavy) CMS and SCEP codecs.

This module is part of the protocol leaf: it imports nothing else from Pomona. Higher layers wrap these
errors into their own reason-coded errors; messages here are for logs, never for end users.
"""

from __future__ import annotations

__all__ = [
    "CheckinParseError",
    "CmsError",
    "CommandBuildError",
    "CommandParseError",
    "CsrSignatureError",
    "DepParseError",
    "PlistError",
    "PlistTooLargeError",
    "ProfileError",
    "ProtocolError",
    "ReportParseError",
    "ScepMalformedError",
    "UnrecognizedMessageTypeError",
]


class ProtocolError(ValueError):
    """Base class of every error raised by the protocol codecs."""


class PlistError(ProtocolError):
    """The body is not a well-formed, safe property list whose top level is a dictionary."""


class PlistTooLargeError(PlistError):
    """The body is larger than the allowed size; it was not parsed."""

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(f"plist body of {size} bytes exceeds the limit of {max_size} bytes")
        self.size = size
        self.max_size = max_size


class CheckinParseError(ProtocolError):
    """A check-in body could not be decoded into a check-in message; ``raw`` keeps the body."""

    def __init__(self, detail: str, *, raw: bytes) -> None:
        super().__init__(detail)
        self.detail = detail
        self.raw = raw


class UnrecognizedMessageTypeError(ProtocolError):
    """A well-formed check-in whose ``MessageType`` is missing or unknown; ``raw`` keeps the body."""

    def __init__(self, message_type: str | None, *, raw: bytes) -> None:
        super().__init__(f"unrecognized MessageType: {message_type!r}")
        self.message_type = message_type
        self.raw = raw


class CommandBuildError(ProtocolError):
    """Admin-API parameters do not describe a valid command of the requested type."""

    def __init__(self, detail: str, *, request_type: str | None = None, key: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.request_type = request_type
        self.key = key


class CommandParseError(ProtocolError):
    """A command body (as the device receives it) is not a valid MDM command."""

    def __init__(self, detail: str, *, raw: bytes) -> None:
        super().__init__(detail)
        self.detail = detail
        self.raw = raw


class ReportParseError(ProtocolError):
    """A command report sent by the device is not valid; ``raw`` keeps the body."""

    def __init__(self, detail: str, *, raw: bytes) -> None:
        super().__init__(detail)
        self.detail = detail
        self.raw = raw


class ProfileError(ProtocolError):
    """An enrollment profile cannot be built from the given values, or read from a body."""


class CmsError(ProtocolError):
    """A CMS structure is malformed, unsupported, or its signature/decryption check failed."""


class ScepMalformedError(ProtocolError):
    """The bytes are not a well-formed, correctly signed SCEP message (or PKCS#10 request)."""


class CsrSignatureError(ScepMalformedError):
    """The PKCS#10 request parses but its self-signature does not verify."""


class DepParseError(ProtocolError):
    """An Apple Business Manager body (a server token, a device list) that is not what Apple documents."""
