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
    ├── MachineInfoError              an ADE device's MachineInfo that is refused (``pomona.protocol.machineinfo``)
    │   ├── MachineInfoMalformedError         not a SignedData with content, or the content is not a
    │   │                                     MachineInfo plist (a required key missing, a wrong type)
    │   ├── MachineInfoSignatureError         the signature itself fails
    │   │   ├── MachineInfoUnsignedError            the SignedData has no signer
    │   │   ├── MachineInfoMultipleSignersError     more than one signer
    │   │   ├── MachineInfoDigestUnsupportedError   a digest other than SHA-1 or SHA-2 (MD5)
    │   │   ├── MachineInfoSignerCertMissingError   the signer's certificate is not in the message
    │   │   ├── MachineInfoTamperedError            the content does not match the signed messageDigest
    │   │   └── MachineInfoBadSignatureError        the signature does not verify with the signer's key
    │   └── MachineInfoTrustError             the signer is not an Apple device (a trusted device CA key)
    │       ├── MachineInfoSignerUntrustedError     its issuer is neither a trusted device CA nor carried
    │       ├── MachineInfoChainError               it chains through carried CAs that never reach a
    │       │                                       trusted device CA key (another CA under the same root)
    │       └── MachineInfoIssuerNotCaError         a certificate on the chain was issued by a non-CA one
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
    "MachineInfoBadSignatureError",
    "MachineInfoChainError",
    "MachineInfoDigestUnsupportedError",
    "MachineInfoError",
    "MachineInfoIssuerNotCaError",
    "MachineInfoMalformedError",
    "MachineInfoMultipleSignersError",
    "MachineInfoSignatureError",
    "MachineInfoSignerCertMissingError",
    "MachineInfoSignerUntrustedError",
    "MachineInfoTamperedError",
    "MachineInfoTrustError",
    "MachineInfoUnsignedError",
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


class MachineInfoError(ProtocolError):
    """An ADE device's MachineInfo request is refused (see :mod:`pomona.protocol.machineinfo`)."""


class MachineInfoMalformedError(MachineInfoError):
    """Not a SignedData carrying content, or the content is not a MachineInfo plist."""


class MachineInfoSignatureError(MachineInfoError):
    """The CMS signature does not hold: no valid single signature by a supported algorithm."""


class MachineInfoUnsignedError(MachineInfoSignatureError):
    """The SignedData carries no signer at all."""


class MachineInfoMultipleSignersError(MachineInfoSignatureError):
    """The SignedData carries more than one signer; a device signs with its one identity."""


class MachineInfoDigestUnsupportedError(MachineInfoSignatureError):
    """The signer used a digest other than SHA-1 or SHA-2 (MD5, or one we do not know)."""


class MachineInfoSignerCertMissingError(MachineInfoSignatureError):
    """The signer's certificate is not among the certificates the message carries."""


class MachineInfoTamperedError(MachineInfoSignatureError):
    """The content does not match the messageDigest the signer signed: it was changed after signing."""


class MachineInfoBadSignatureError(MachineInfoSignatureError):
    """The signature does not verify with the signer certificate's key (another key signed, or, for a
    signer without signed attributes, the content was changed)."""


class MachineInfoTrustError(MachineInfoError):
    """The signer certificate does not lead to a trusted device CA key (Apple's iPhone Device CA)."""


class MachineInfoSignerUntrustedError(MachineInfoTrustError):
    """The signer was issued by a CA that is neither trusted nor carried in the message."""


class MachineInfoChainError(MachineInfoTrustError):
    """The signer chains through CA certificates carried in the message, up to their root, without ever
    reaching a trusted device CA key."""


class MachineInfoIssuerNotCaError(MachineInfoTrustError):
    """A certificate on the signer's chain was issued by a certificate that is not a CA."""


class DepParseError(ProtocolError):
    """An Apple Business Manager body (a server token, a device list) that is not what Apple documents."""
