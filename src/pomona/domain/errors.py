"""The error tree. Every refusal Pomona makes is one of these, and each carries a ReasonCode.

The CLASS decides the HTTP status and the reason; a raise site says only what happened (``detail``, for
logs and events) and the ids involved (``context``). The one exception is a policy refusal, whose reason
is the decision's: :class:`PolicyError` takes it per instance, its status is still the class's.

    PomonaError                          INTERNAL_ERROR, 500 (reason, http_status, apple_code; detail + context)
    ├── MalformedRequestError            MALFORMED_REQUEST, 400
    │   ├── AdeMachineInfoMalformedError MACHINEINFO_MALFORMED: an ADE device's MachineInfo is not a
    │   │                                SignedData, or its content is not a MachineInfo plist
    │   ├── BodyTooLargeError            MALFORMED_REQUEST, 413: a body over the endpoint's size limit
    │   └── HeadersTooLargeError         MALFORMED_REQUEST, 431: a request line and headers over the limit
    ├── AuthError                        device authentication of check-in / command-loop messages, 401
    │   ├── SignatureInvalidError        SIGNATURE_INVALID
    │   ├── CertNotTrustedError          CERT_NOT_TRUSTED
    │   ├── CertDeviceMismatchError      CERT_DEVICE_MISMATCH
    │   ├── TopicMismatchError           TOPIC_MISMATCH
    │   ├── AdeSignatureInvalidError     MACHINEINFO_SIGNATURE_INVALID: an ADE device's MachineInfo does
    │   │                                not carry one valid signature (no signer, two, MD5, tampered ...)
    │   ├── AdeSignerUntrustedError      MACHINEINFO_SIGNER_UNTRUSTED: its signer does not chain to the
    │   │                                trusted device CA key (Apple's iPhone Device CA)
    │   └── IdentityEndedError           IDENTITY_ENDED: the identity's enrollment ended (CheckOut,
    │                                    re-enrollment, retire, block); a certificate serves one enrollment
    ├── UnknownEnrollmentError           UNKNOWN_ENROLLMENT, 401 (as for any device we cannot authenticate)
    │   └── UnknownTenantError           the URL names no tenant: refused the same way, with no event
    ├── UnenrollDeviceError              UNKNOWN_ENROLLMENT, 403 with Apple's com.apple.unrecognized.device
    │   │                                body, so the device unenrolls: a retired enrollment
    │   └── DeviceBlockedError           DEVICE_BLOCKED: an admin blocked the device
    ├── MessageTypeUnsupportedError      MESSAGE_TYPE_UNSUPPORTED, 400: a check-in MessageType not served
    │   └── UserChannelDeclinedError     410 to UserAuthenticate: the server does not manage the user
    ├── EnrollmentTokenError             ENROLLMENT_TOKEN_INVALID, 403: unknown or used up
    │   └── EnrollmentTokenExpiredError  ENROLLMENT_TOKEN_EXPIRED
    ├── PolicyError                      the decision's reason (APNS_CERT_*, USER_*, restrictions ...), 403
    ├── NotFoundError                    NOT_FOUND, 404: no such object in this tenant (also another tenant's)
    ├── ConflictError                    ALREADY_EXISTS, 409: a name already taken
    │   ├── LicensesExhaustedError       LICENSES_EXHAUSTED: no licence seat is free to assign
    │   └── PushTopicChangedError        APNS_TOPIC_CHANGED: a replacement certificate with another topic
    ├── ForbiddenError                   API_AUTH_FAILED, 401: missing or unknown admin token, or not allowed
    │   ├── ApiTokenExpiredError         API_TOKEN_EXPIRED: the admin token is past its expiry
    │   └── ApiTokenRevokedError         API_TOKEN_REVOKED: the admin token was revoked
    ├── InvalidInputError                INVALID_INPUT, 422: a bad argument to the admin API or CLI
    │   ├── TenantNameInvalidError       TENANT_NAME_INVALID: a tenant name of the form of a tenant id
    │   ├── PushCertInvalidError         APNS_CERT_INVALID: not a usable MDM push certificate (and key)
    │   ├── PushCertExpiredError         APNS_CERT_EXPIRED: an uploaded certificate that has expired
    │   ├── WebhookTargetError           WEBHOOK_TARGET_REFUSED: a webhook URL at a non-public address
    │   └── AdeProfileInvalidError       DEP_PROFILE_REJECTED: an ADE profile the linter refuses (Apple
    │                                    would reject it): nothing is sent
    ├── ServerKeyError                   SERVER_KEY_MISMATCH, 500: the server key does not open a sealed
    │                                    secret (the server refuses to start)
    ├── StartupError                     a process cannot start with what it was given (CLI exit 2, before
    │   │                                `serve` says it is serving); never an HTTP answer
    │   ├── CertFileError                CERT_FILE_INVALID: a TLS or signing certificate/key file unusable
    │   ├── DatabaseUnavailableError     DATABASE_UNAVAILABLE: the database URL is malformed or unreachable
    │   ├── DataDirError                 DATA_DIR_UNUSABLE: the data folder cannot be created or written
    │   └── PortUnavailableError         PORT_UNAVAILABLE: the address to listen on is taken or not allowed
    ├── BackupError                      `pomona backup` / `pomona restore` refused (CLI exit 2); never HTTP
    │   ├── BackupNotSqliteError         BACKUP_NOT_SQLITE: PostgreSQL is backed up with pg_dump
    │   ├── BackupInvalidError           BACKUP_INVALID: not a readable Pomona backup
    │   ├── BackupTooNewError            BACKUP_TOO_NEW: made by a newer Pomona (an unknown migration)
    │   └── RestoreTargetNotEmptyError   RESTORE_TARGET_NOT_EMPTY: the database has tenants (no --force)
    ├── WebhookDeliveryError             WEBHOOK_DELIVERY_FAILED, 502: a webhook test was not delivered
    ├── UpstreamError                    INTERNAL_ERROR, 502: a service we call answered what we cannot use
    ├── AbmTokenFileError                DEP_TOKEN_INVALID, 422: an uploaded server token that does not
    │   │                                decrypt with the tenant's ABM key, or holds no credentials
    │   └── AbmTokenFileExpiredError     DEP_TOKEN_EXPIRED: an uploaded server token already past its expiry
    └── AbmError                         INTERNAL_ERROR, 502: Apple Business Manager answered an error
        ├── AbmTokenInvalidError         DEP_TOKEN_INVALID: Apple refuses the token (revoked, unknown)
        ├── AbmTokenExpiredError         DEP_TOKEN_EXPIRED: the server token is past its expiry
        ├── AbmTermsNotAcceptedError     DEP_TERMS_NOT_ACCEPTED: T_C_NOT_SIGNED, accept ABM's new terms
        ├── AbmCursorExpiredError        DEP_CURSOR_EXPIRED: EXPIRED_CURSOR / INVALID_CURSOR (full fetch)
        ├── AbmProfileNotFoundError      DEP_PROFILE_NOT_FOUND: PROFILE_NOT_FOUND
        ├── AbmProfileRejectedError      DEP_PROFILE_REJECTED: a field error of POST /profile
        └── AbmThrottledError            INTERNAL_ERROR, 503: THROTTLED past the retries

Faults of the storage layer are not refusals (no event is recorded for them, they have no reason of their
own) and stand beside the tree; :func:`describe` answers them as internal errors:

    StorageError                         INTERNAL_ERROR, 500: a store could not do what was asked
    ├── StorageBusyError                 INTERNAL_ERROR, 503: a lock wait on the event loop hit its bound
    │                                    (the transaction rolled back; the device adapter runs it again
    │                                    in a worker thread)
    └── StorageUnavailableError          DATABASE_UNAVAILABLE, 503: the database did not answer (down,
                                         dropped, unreachable, refusing logins); its text is the driver's
                                         first line, never a statement or its parameters

A uniqueness conflict in a store is a refusal: ConflictError (ALREADY_EXISTS, 409).

Errors of the lower layers join the tree at one place each: a wire-format failure
(``pomona.protocol.errors.ProtocolError``, which includes ``CmsError`` and ``ScepMalformedError``)
becomes a refusal through :func:`from_protocol`; anything else that escapes is an internal error.

:func:`describe` turns ANY exception into an :class:`ErrorResponse` (status, reason, public message,
internal detail, and the message's catalogue key and values when the raise site gave a
``pomona.i18n.Msg``). Each surface has one thin mapper over it: device endpoints (``http.root``: Apple's
statuses and 403 bodies), the admin API (``http.api``: ``{reason, message, request_id}``), the portal
(``http.portal``: the refusal page) and the CLI (``cli.main``: one line and an exit code). An unknown
exception is INTERNAL_ERROR, 500, and its cause never reaches the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from pomona.domain.reasons import ReasonCode
from pomona.protocol.errors import (
    CmsError,
    CsrSignatureError,
    MachineInfoError,
    MachineInfoSignatureError,
    MachineInfoTrustError,
    PlistTooLargeError,
    ProtocolError,
)

__all__ = [
    "AdeMachineInfoMalformedError",
    "AdeSignatureInvalidError",
    "AdeSignerUntrustedError",
    "AuthError",
    "BodyTooLargeError",
    "HeadersTooLargeError",
    "StorageBusyError",
    "StorageError",
    "StorageUnavailableError",
    "MessageTypeUnsupportedError",
    "UserChannelDeclinedError",
    "CertDeviceMismatchError",
    "CertNotTrustedError",
    "ConflictError",
    "DeviceBlockedError",
    "EnrollmentTokenError",
    "EnrollmentTokenExpiredError",
    "ErrorResponse",
    "ForbiddenError",
    "ApiTokenExpiredError",
    "ApiTokenRevokedError",
    "IdentityEndedError",
    "TenantNameInvalidError",
    "InvalidInputError",
    "LicensesExhaustedError",
    "MalformedRequestError",
    "NotFoundError",
    "PolicyError",
    "PomonaError",
    "PushCertExpiredError",
    "ServerKeyError",
    "StartupError",
    "CertFileError",
    "DatabaseUnavailableError",
    "DataDirError",
    "PortUnavailableError",
    "BackupError",
    "BackupNotSqliteError",
    "BackupInvalidError",
    "BackupTooNewError",
    "RestoreTargetNotEmptyError",
    "WebhookDeliveryError",
    "WebhookTargetError",
    "PushCertInvalidError",
    "PushTopicChangedError",
    "SignatureInvalidError",
    "TopicMismatchError",
    "Translatable",
    "UnenrollDeviceError",
    "UnknownEnrollmentError",
    "UnknownTenantError",
    "UpstreamError",
    "AbmError",
    "AbmTokenFileError",
    "AbmTokenInvalidError",
    "AbmTokenExpiredError",
    "AbmTermsNotAcceptedError",
    "AbmCursorExpiredError",
    "AbmProfileNotFoundError",
    "AbmProfileRejectedError",
    "AdeProfileInvalidError",
    "AbmThrottledError",
    "describe",
    "from_protocol",
]

INTERNAL_MESSAGE = "internal error"


@runtime_checkable
class Translatable(Protocol):
    """A detail that is a catalogue message (``pomona.i18n.Msg``): English as a string, with the key and
    values a surface needs to render it in its reader's language."""

    key: str
    params: dict[str, object]


_DECIDED_BY_CLASS = frozenset({"reason", "http_status"})  # not context: a raise site cannot choose them


class PomonaError(Exception):
    """The base of the tree: ``reason`` and ``http_status`` are the class's; ``detail`` (what happened,
    for logs, events and the admin's message) and ``context`` (ids, serial, topic) are the instance's."""

    reason: ReasonCode = ReasonCode.INTERNAL_ERROR
    http_status: ClassVar[int] = 500
    apple_code: ClassVar[str | None] = None  # Apple's error code, for a device body Apple defines
    exit_code: ClassVar[int] = 2  # the CLI's exit code for it (docs/cli.md): a refusal or a bad input

    def __init__(self, detail: str = "", **context: object) -> None:
        if _DECIDED_BY_CLASS & context.keys():
            raise TypeError(
                f"{type(self).__name__}: the class decides {sorted(_DECIDED_BY_CLASS)}; raise a subclass"
            )
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail
        self.context: dict[str, object] = context


class MalformedRequestError(PomonaError):
    reason = ReasonCode.MALFORMED_REQUEST
    http_status = 400


class BodyTooLargeError(MalformedRequestError):
    """The body is over the endpoint's size limit; it was not read to the end."""

    http_status = 413


class HeadersTooLargeError(MalformedRequestError):
    """The request line and headers are over the server's limit (``http/server.py``)."""

    http_status = 431


class AdeMachineInfoMalformedError(MalformedRequestError):
    """An ADE device's MachineInfo is not a SignedData with content, or not a MachineInfo plist."""

    reason = ReasonCode.MACHINEINFO_MALFORMED


class AuthError(PomonaError):
    http_status = 401


class AdeSignatureInvalidError(AuthError):
    """An ADE device's MachineInfo lacks one valid signature (``protocol.machineinfo``, steps 2 to 5)."""

    reason = ReasonCode.MACHINEINFO_SIGNATURE_INVALID


class AdeSignerUntrustedError(AuthError):
    """An ADE device's MachineInfo signer does not chain to a trusted device CA key (step 6)."""

    reason = ReasonCode.MACHINEINFO_SIGNER_UNTRUSTED


class SignatureInvalidError(AuthError):
    reason = ReasonCode.SIGNATURE_INVALID


class CertNotTrustedError(AuthError):
    reason = ReasonCode.CERT_NOT_TRUSTED


class CertDeviceMismatchError(AuthError):
    reason = ReasonCode.CERT_DEVICE_MISMATCH


class TopicMismatchError(AuthError):
    reason = ReasonCode.TOPIC_MISMATCH


class IdentityEndedError(AuthError):
    """The signer's enrollment has ended: a device identity serves exactly one enrollment, and a device
    that enrolls again gets a new identity through SCEP. A replay of an old identity is refused here and
    never touches the device's current enrollment."""

    reason = ReasonCode.IDENTITY_ENDED


class UnknownEnrollmentError(PomonaError):
    reason = ReasonCode.UNKNOWN_ENROLLMENT
    http_status = 401


class UnknownTenantError(UnknownEnrollmentError):
    """The URL names no tenant: nothing to record an event under."""


class UnenrollDeviceError(PomonaError):
    """Answered with Apple's 403 ``com.apple.unrecognized.device``: the device removes its enrollment.

    https://developer.apple.com/documentation/devicemanagement/errorunrecognizeddevice
    """

    reason = ReasonCode.UNKNOWN_ENROLLMENT
    http_status = 403
    apple_code = "com.apple.unrecognized.device"


class DeviceBlockedError(UnenrollDeviceError):
    """An admin blocked the device: it is told to unenroll, like a retired enrollment."""

    reason = ReasonCode.DEVICE_BLOCKED


class MessageTypeUnsupportedError(PomonaError):
    """A check-in message Pomona does not know, or knows and does not implement."""

    reason = ReasonCode.MESSAGE_TYPE_UNSUPPORTED
    http_status = 400


class UserChannelDeclinedError(MessageTypeUnsupportedError):
    """410 to UserAuthenticate: the Mac makes no more requests for this user during the login session.

    https://developer.apple.com/documentation/devicemanagement/userauthenticate
    """

    http_status = 410


class EnrollmentTokenError(PomonaError):
    reason = ReasonCode.ENROLLMENT_TOKEN_INVALID
    http_status = 403


class EnrollmentTokenExpiredError(EnrollmentTokenError):
    reason = ReasonCode.ENROLLMENT_TOKEN_EXPIRED


class PolicyError(PomonaError):
    """A refusal of the enrollment policy. Its reason is the decision's (see ``domain.policy``), so it is
    given per instance; the status is always the class's."""

    http_status = 403

    def __init__(self, detail: str = "", *, reason: ReasonCode, **context: object) -> None:
        super().__init__(detail, **context)
        self.reason = reason


class NotFoundError(PomonaError):
    reason = ReasonCode.NOT_FOUND
    http_status = 404


class ConflictError(PomonaError):
    reason = ReasonCode.ALREADY_EXISTS
    http_status = 409


class LicensesExhaustedError(ConflictError):
    """Every licence seat is assigned: one must be freed (or bought) before another is assigned."""

    reason = ReasonCode.LICENSES_EXHAUSTED


class PushTopicChangedError(ConflictError):
    """The new push certificate has another topic: replacing (not renewing) needs an explicit confirmation."""

    reason = ReasonCode.APNS_TOPIC_CHANGED


class ForbiddenError(PomonaError):
    reason = ReasonCode.API_AUTH_FAILED
    http_status = 401


class ApiTokenExpiredError(ForbiddenError):
    """The admin API token is past the expiry it was created with."""

    reason = ReasonCode.API_TOKEN_EXPIRED


class ApiTokenRevokedError(ForbiddenError):
    """The admin API token was revoked (`pomona token revoke`)."""

    reason = ReasonCode.API_TOKEN_REVOKED


class InvalidInputError(PomonaError):
    reason = ReasonCode.INVALID_INPUT
    http_status = 422


class TenantNameInvalidError(InvalidInputError):
    """A tenant name that has the form of a tenant id (a UUID): a reference would name two tenants."""

    reason = ReasonCode.TENANT_NAME_INVALID


class PushCertInvalidError(InvalidInputError):
    """Not a usable MDM push certificate: not PEM/.p12, no key or the wrong one, no MDM topic."""

    reason = ReasonCode.APNS_CERT_INVALID


class PushCertExpiredError(InvalidInputError):
    """An uploaded push certificate that has already expired."""

    reason = ReasonCode.APNS_CERT_EXPIRED


class WebhookTargetError(InvalidInputError):
    """A webhook URL that names, or resolves to, a non-public address (private targets not allowed)."""

    reason = ReasonCode.WEBHOOK_TARGET_REFUSED


class ServerKeyError(PomonaError):
    """The server key does not open a secret sealed in the database (another key, lost, or tampered)."""

    reason = ReasonCode.SERVER_KEY_MISMATCH


class StartupError(PomonaError):
    """A process cannot start with what it was given: a refusal of the operator's input (CLI exit 2),
    found before `pomona serve` says it is serving. The detail names the file, URL or address, never a
    library's internal text."""


class CertFileError(StartupError):
    """A certificate or key file given to the server (--tls-cert/--tls-key, POMONA_SIGNING_IDENTITY) is
    missing, unreadable, not PEM, or its key does not match its certificate."""

    reason = ReasonCode.CERT_FILE_INVALID


class DatabaseUnavailableError(StartupError):
    """The database URL is malformed, names an unknown driver, or its server cannot be reached."""

    reason = ReasonCode.DATABASE_UNAVAILABLE


class DataDirError(StartupError):
    """The data folder cannot be created, is not a folder, or cannot be written."""

    reason = ReasonCode.DATA_DIR_UNUSABLE


class PortUnavailableError(StartupError):
    """The address and port to listen on are in use, not allowed (a port below 1024), or not local."""

    reason = ReasonCode.PORT_UNAVAILABLE


class BackupError(PomonaError):
    """A backup or a restore refused: what the operator gave (or the database) does not allow it. The
    CLI's exit code 2; the detail names the file and what to do."""


class BackupNotSqliteError(BackupError):
    """The database is PostgreSQL: its own tools back it up (the detail has the exact commands)."""

    reason = ReasonCode.BACKUP_NOT_SQLITE


class BackupInvalidError(BackupError):
    """The file to restore is missing, not an SQLite database, damaged, or not a Pomona database."""

    reason = ReasonCode.BACKUP_INVALID


class BackupTooNewError(BackupError):
    """The backup's database is at a migration this version of Pomona does not know (a newer Pomona)."""

    reason = ReasonCode.BACKUP_TOO_NEW


class RestoreTargetNotEmptyError(BackupError):
    """The database a restore would replace holds tenants, and --force was not given."""

    reason = ReasonCode.RESTORE_TARGET_NOT_EMPTY


class WebhookDeliveryError(PomonaError):
    """A webhook (test) delivery failed: the receiver's HTTP status or the network error is the detail."""

    reason = ReasonCode.WEBHOOK_DELIVERY_FAILED
    http_status: ClassVar[int] = 502
    exit_code: ClassVar[int] = 1  # a check that ran and failed, not a bad input


class StorageError(Exception):
    """A store could not do what was asked: not a refusal of the request, answered as an internal error."""

    http_status: ClassVar[int] = 500
    reason: ClassVar[ReasonCode] = ReasonCode.INTERNAL_ERROR


class StorageBusyError(StorageError):
    """A transaction begun on the event loop's thread waited its short bound for a lock held elsewhere.

    The transaction rolled back, so the caller may run its work again off the loop (in a worker thread),
    where the long lock wait is allowed. See ``storage/database.py`` for the bounds.
    """

    http_status = 503


class StorageUnavailableError(StorageError):
    """The database did not answer: the server is down or restarting, the database was dropped, the
    connection was cut, a login is refused, or the SQLite file cannot be opened. Nothing was done; the
    same work may succeed once the database is back (background loops wait with a capped backoff,
    services/outage.py). Its text is the driver's first line (no statement, no parameters)."""

    http_status = 503
    reason = ReasonCode.DATABASE_UNAVAILABLE


class UpstreamError(PomonaError):
    """A service we call (an identity provider) answered something we cannot use."""

    http_status = 502


class AbmTokenFileError(InvalidInputError):
    """An uploaded ABM server token (.p7m) that the tenant's ABM key does not decrypt, or that holds no
    OAuth credentials."""

    reason = ReasonCode.DEP_TOKEN_INVALID


class AbmTokenFileExpiredError(AbmTokenFileError):
    """An uploaded ABM server token that opens but is past its ``access_token_expiry``: the admin's file,
    not Apple's answer (422, not 502)."""

    reason = ReasonCode.DEP_TOKEN_EXPIRED


class AdeProfileInvalidError(InvalidInputError):
    """An ADE profile with a blocking lint finding (``domain.ade_profile.lint``): Apple would reject it,
    so it is neither sent nor kept (``context["findings"]`` holds them)."""

    reason = ReasonCode.DEP_PROFILE_REJECTED


class AbmError(PomonaError):
    """Apple Business Manager answered an error (``context`` carries Apple's ``code`` and the token)."""

    http_status: ClassVar[int] = 502
    exit_code: ClassVar[int] = 1  # a call that ran and failed


class AbmTokenInvalidError(AbmError):
    """Apple refuses the server token (revoked, replaced in ABM, or unknown)."""

    reason = ReasonCode.DEP_TOKEN_INVALID


class AbmTokenExpiredError(AbmError):
    """The server token is past its ``access_token_expiry``: a new one must be downloaded from ABM."""

    reason = ReasonCode.DEP_TOKEN_EXPIRED


class AbmTermsNotAcceptedError(AbmError):
    """T_C_NOT_SIGNED: an administrator must accept new terms in Apple Business Manager."""

    reason = ReasonCode.DEP_TERMS_NOT_ACCEPTED


class AbmCursorExpiredError(AbmError):
    """EXPIRED_CURSOR or INVALID_CURSOR: the sync cursor is gone; a full fetch starts again."""

    reason = ReasonCode.DEP_CURSOR_EXPIRED


class AbmProfileNotFoundError(AbmError):
    """PROFILE_NOT_FOUND: Apple does not know the profile UUID."""

    reason = ReasonCode.DEP_PROFILE_NOT_FOUND


class AbmProfileRejectedError(AbmError):
    """A field error of POST /profile (support phone, name, department, URL ...)."""

    reason = ReasonCode.DEP_PROFILE_REJECTED


class AbmThrottledError(AbmError):
    """THROTTLED, still, after waiting ``retry_after_seconds`` as many times as allowed."""

    http_status: ClassVar[int] = 503


# --- lower layers join the tree here -----------------------------------------------------------------
# Most specific first: the first class in the exception's MRO that is listed here decides.
_FROM_PROTOCOL: dict[type[ProtocolError], type[PomonaError]] = {
    PlistTooLargeError: BodyTooLargeError,
    CsrSignatureError: SignatureInvalidError,
    MachineInfoSignatureError: AdeSignatureInvalidError,
    MachineInfoTrustError: AdeSignerUntrustedError,
    MachineInfoError: AdeMachineInfoMalformedError,
    CmsError: SignatureInvalidError,  # CMS on a device path is a signature (Mdm-Signature, SCEP envelope)
    ProtocolError: MalformedRequestError,
}


def from_protocol(exc: ProtocolError, **context: object) -> PomonaError:
    """The refusal a wire-format failure is: the one place protocol errors become reason-coded errors."""
    cls = next(_FROM_PROTOCOL[c] for c in type(exc).__mro__ if c in _FROM_PROTOCOL)
    return cls(str(exc), **context)


# --- the one mapping from exceptions to responses ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """What any surface needs to answer an error: the surfaces differ only in how they render it."""

    status: int
    reason: ReasonCode
    message: str  # public: safe to show to whoever made the request
    detail: str  # internal: the cause, for logs (for an unknown exception, never shown to the client)
    context: Mapping[str, object] = field(default_factory=dict)
    apple_code: str | None = None  # Apple's error code, when the device is to get Apple's error body
    internal: bool = False  # not a PomonaError: a fault of ours, to be logged with its traceback
    key: str | None = None  # the public message's catalogue key, when the raise site gave one
    params: Mapping[str, object] = field(default_factory=dict)  # the values the key's text names


def describe(exc: BaseException) -> ErrorResponse:
    """The response to any exception: a PomonaError says its own; a protocol error is mapped by
    :func:`from_protocol`; anything else is INTERNAL_ERROR, 500, whose cause stays internal."""
    if isinstance(exc, ProtocolError):
        exc = from_protocol(exc)
    if isinstance(exc, PomonaError):
        text = exc.detail if isinstance(exc.detail, Translatable) else None
        return ErrorResponse(
            status=exc.http_status,
            reason=exc.reason,
            message=exc.detail or exc.reason.value,
            detail=exc.detail,
            context=dict(exc.context),
            apple_code=exc.apple_code,
            key=None if text is None else text.key,
            params={} if text is None else dict(text.params),
        )
    return ErrorResponse(
        status=exc.http_status if isinstance(exc, StorageError) else 500,
        reason=exc.reason if isinstance(exc, StorageError) else ReasonCode.INTERNAL_ERROR,
        message=INTERNAL_MESSAGE,
        detail=f"{type(exc).__name__}: {exc}",
        internal=True,
    )
