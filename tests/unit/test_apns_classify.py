"""classify(): the one place that says what an APNs answer means for Pomona."""

from __future__ import annotations

import pytest

from pomona.domain.reasons import ReasonCode
from pomona.push.apns import REASON_STATUS, ApnsReason, classify, mdm_payload, normalize_token

CASES = [
    (200, None, "delivered", None),
    (410, "Unregistered", "device_permanent", ReasonCode.PUSH_TOKEN_UNREGISTERED),
    (410, "ExpiredToken", "device_permanent", ReasonCode.PUSH_TOKEN_UNREGISTERED),
    (400, "BadDeviceToken", "device_permanent", ReasonCode.PUSH_REJECTED),
    (400, "DeviceTokenNotForTopic", "device_permanent", ReasonCode.PUSH_REJECTED),
    (400, "PayloadEmpty", "device_permanent", ReasonCode.PUSH_REJECTED),
    (413, "PayloadTooLarge", "device_permanent", ReasonCode.PUSH_REJECTED),
    (403, "BadCertificate", "tenant_permanent", ReasonCode.APNS_CERT_INVALID),
    (403, "BadCertificateEnvironment", "tenant_permanent", ReasonCode.APNS_CERT_INVALID),
    (400, "TopicDisallowed", "tenant_permanent", ReasonCode.APNS_CERT_INVALID),
    (403, None, "tenant_permanent", ReasonCode.APNS_CERT_INVALID),
    (429, "TooManyRequests", "transient", ReasonCode.PUSH_REJECTED),
    (500, "InternalServerError", "transient", ReasonCode.PUSH_UNREACHABLE),
    (503, "ServiceUnavailable", "transient", ReasonCode.PUSH_UNREACHABLE),
    (503, "Shutdown", "transient", ReasonCode.PUSH_UNREACHABLE),
    (502, None, "transient", ReasonCode.PUSH_UNREACHABLE),
    (None, None, "transient", ReasonCode.PUSH_UNREACHABLE),
]


class TestClassify:
    @pytest.mark.parametrize(("status", "reason", "outcome", "code"), CASES)
    def test_answer_maps_to_outcome_and_reason(
        self, status: int | None, reason: str | None, outcome: str, code: ReasonCode | None
    ) -> None:
        """Each APNs answer maps to its documented outcome and reason code."""
        assert classify(status, reason) == (outcome, code)

    @pytest.mark.parametrize("reason", list(ApnsReason))
    def test_every_apple_reason_is_classified_consistently_with_its_status(self, reason: ApnsReason) -> None:
        """Every named Apple reason has a status, and classifying by status+reason never says delivered."""
        status = REASON_STATUS[reason]
        assert classify(status, reason.value).outcome != "delivered"


class TestWireHelpers:
    def test_mdm_payload_is_exactly_the_mdm_key(self) -> None:
        """The MDM push body is exactly {"mdm":"<PushMagic>"}."""
        assert mdm_payload("ABC-123") == b'{"mdm":"ABC-123"}'

    @pytest.mark.parametrize(
        ("token", "expected"),
        [
            (b"\x01\xab", "01ab"),
            ("01AB", "01ab"),
            (" 01ab ", "01ab"),
            ("xyz0", None),
            ("abc", None),
            (b"", None),
        ],
    )
    def test_tokens_normalize_to_lowercase_hex(self, token: bytes | str, expected: str | None) -> None:
        """Tokens given as bytes or hex become lowercase hex; anything else is refused."""
        assert normalize_token(token) == expected
