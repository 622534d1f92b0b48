"""The error tree. Every refusal Pomona makes is one of these, and each carries a ReasonCode.

    PomonaError                      (reason, http_status, message key; instance detail + context)
    ├── MalformedRequestError        MALFORMED_REQUEST, 400 (413 for oversized bodies)
    ├── AuthError                    device authentication of check-in / command-loop messages, 401
    │   ├── SignatureInvalidError    SIGNATURE_INVALID
    │   ├── CertNotTrustedError      CERT_NOT_TRUSTED
    │   ├── CertDeviceMismatchError  CERT_DEVICE_MISMATCH
    │   └── TopicMismatchError       TOPIC_MISMATCH
    ├── UnknownEnrollmentError       UNKNOWN_ENROLLMENT, 401 (as for any device we cannot authenticate)
    ├── UnenrollDeviceError          DEVICE_BLOCKED / UNKNOWN_ENROLLMENT for a blocked or retired enrollment:
    │                                403 with Apple's com.apple.unrecognized.device body, so the device unenrolls
    ├── EnrollmentTokenError         ENROLLMENT_TOKEN_INVALID / ENROLLMENT_TOKEN_EXPIRED, 403
    ├── PolicyError                  a policy refusal (APNS_CERT_*, USER_*, restrictions ...), 403
    ├── NotFoundError                NOT_FOUND: no such object in this tenant (also another tenant's), 404
    ├── ConflictError                ALREADY_EXISTS: a name already taken, 409
    ├── ForbiddenError               API_AUTH_FAILED: missing or unknown admin token, or not allowed, 401
    └── InvalidInputError            INVALID_INPUT: a bad argument to the admin API or CLI, 422

The HTTP boundary maps them: device endpoints get the status Apple expects, the admin API gets
``{reason, message, request_id}``.
"""

from __future__ import annotations

from typing import ClassVar

from pomona.domain.reasons import ReasonCode


class PomonaError(Exception):
    reason: ClassVar[ReasonCode] = ReasonCode.INTERNAL_ERROR
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        detail: str = "",
        *,
        reason: ReasonCode | None = None,
        http_status: int | None = None,
        **context: object,
    ) -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail
        self.context: dict[str, object] = context
        if reason is not None:
            self.reason = reason  # type: ignore[misc]
        if http_status is not None:
            self.http_status = http_status  # type: ignore[misc]


class MalformedRequestError(PomonaError):
    reason = ReasonCode.MALFORMED_REQUEST
    http_status = 400


class AuthError(PomonaError):
    http_status = 401


class SignatureInvalidError(AuthError):
    reason = ReasonCode.SIGNATURE_INVALID


class CertNotTrustedError(AuthError):
    reason = ReasonCode.CERT_NOT_TRUSTED


class CertDeviceMismatchError(AuthError):
    reason = ReasonCode.CERT_DEVICE_MISMATCH


class TopicMismatchError(AuthError):
    reason = ReasonCode.TOPIC_MISMATCH


class UnknownEnrollmentError(PomonaError):
    reason = ReasonCode.UNKNOWN_ENROLLMENT
    http_status = 401


class UnenrollDeviceError(PomonaError):
    """Answered with Apple's 403 ``com.apple.unrecognized.device``: the device removes its enrollment.

    https://developer.apple.com/documentation/devicemanagement/errorunrecognizeddevice
    """

    reason = ReasonCode.UNKNOWN_ENROLLMENT
    http_status = 403
    apple_code = "com.apple.unrecognized.device"


class EnrollmentTokenError(PomonaError):
    reason = ReasonCode.ENROLLMENT_TOKEN_INVALID
    http_status = 403


class PolicyError(PomonaError):
    http_status = 403


class NotFoundError(PomonaError):
    reason = ReasonCode.NOT_FOUND
    http_status = 404


class ConflictError(PomonaError):
    reason = ReasonCode.ALREADY_EXISTS
    http_status = 409


class ForbiddenError(PomonaError):
    reason = ReasonCode.API_AUTH_FAILED
    http_status = 401


class InvalidInputError(PomonaError):
    reason = ReasonCode.INVALID_INPUT
    http_status = 422


class UnknownTenantError(UnknownEnrollmentError):
    """The URL names no tenant: nothing to record an event under."""
