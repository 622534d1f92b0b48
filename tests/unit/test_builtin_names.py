"""The names Pomona gives objects itself and what a policy decision says are shown in the reader's
language (presenters), while the stored names and the English messages stay as they were."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pomona.domain.errors import NotFoundError, describe
from pomona.domain.policy import (
    DeviceLimitRestriction,
    DeviceTypeRestriction,
    OtherEnrollment,
    Platform,
    PolicyInput,
    RestrictionKind,
    Stage,
    UserFacts,
    decide,
    default_restriction_name,
    numbered_restriction_name,
)
from pomona.domain.reasons import ReasonCode as R
from pomona.i18n import msg, t
from pomona.presenters import decision_json, decision_text, display_name, error_text, render

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CJK = re.compile("[\u4e00-\u9fff]")
TYPE = DeviceTypeRestriction("rt", default_restriction_name(RestrictionKind.PLATFORM), 1_000_000, True)
LIMIT = DeviceLimitRestriction("rl", default_restriction_name(RestrictionKind.LIMIT), 1_000_000, True)
USER = UserFacts("u", "ann@acme.example", True, True, False, frozenset())


def inp(**changes: object) -> PolicyInput:
    base = PolicyInput(
        stage=Stage.AUTHENTICATE,
        now=NOW,
        mdm_authority="pomona",
        push_not_after=NOW + timedelta(days=300),
        user=USER,
        free_seats=0,
        restrictions=(TYPE, LIMIT),
        platform=Platform.IOS,
        os_version="17.4",
        serial="C02XK0ABCDEF",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# One input per outcome of decide(): every refusal it can make, and the allowed one.
CASES = {
    "allowed": inp(),
    R.MDM_AUTHORITY_NOT_SET: inp(mdm_authority=None),
    R.APNS_CERT_MISSING: inp(push_not_after=None),
    R.APNS_CERT_EXPIRED: inp(push_not_after=NOW - timedelta(days=1)),
    R.USER_NOT_FOUND: inp(user=None),
    R.USER_DISABLED: inp(user=replace(USER, enabled=False)),
    R.LICENSES_EXHAUSTED: inp(user=replace(USER, licensed=False)),
    R.USER_NOT_LICENSED: inp(user=replace(USER, licensed=False), free_seats=3),
    R.DEVICE_BLOCKED: inp(blocked=True),
    R.PLATFORM_BLOCKED: inp(restrictions=(replace(TYPE, ios_allowed=False), LIMIT)),
    R.OS_VERSION_TOO_LOW: inp(restrictions=(replace(TYPE, ios_min_os="18"), LIMIT)),
    R.OS_VERSION_TOO_HIGH: inp(restrictions=(replace(TYPE, ios_max_os="16"), LIMIT)),
    R.PERSONAL_DEVICE_BLOCKED: inp(restrictions=(replace(TYPE, ios_personal_allowed=False), LIMIT)),
    R.DEVICE_ENROLLED_TO_OTHER_USER: inp(other_user_enrollment=OtherEnrollment("e", "u2", "bob@x", NOW)),
    "other unknown": inp(other_user_enrollment=OtherEnrollment("e", "u2", None, NOW)),
    R.DEVICE_LIMIT_REACHED: inp(active_device_count=15),
}


class TestNames:
    @pytest.mark.parametrize("kind", list(RestrictionKind))
    def test_defaults_in_both_languages(self, kind: RestrictionKind) -> None:
        """A Default restriction shows as stored in English and in Chinese for a Chinese reader."""
        name = default_restriction_name(kind)
        assert display_name(name, "en") == name
        assert CJK.search(display_name(name, "zh-CN")) and "Default" not in display_name(name, "zh-CN")

    def test_numbered_names(self) -> None:
        """A restriction created without a name shows its kind in the reader's language and its number."""
        name = numbered_restriction_name(RestrictionKind.LIMIT, 3)
        assert display_name(name, "en") == "limit restriction 3"
        assert display_name(name, "zh-CN") == "设备数量限制 3"

    def test_admin_names_stay(self) -> None:
        """A name an admin gave is shown as it is, in any language."""
        for name in ("Sales iPads", "platform restriction", "Default platform restriction 2"):
            assert display_name(name, "zh-CN") == name


class TestDecisions:
    @pytest.mark.parametrize("case", list(CASES), ids=str)
    def test_english_is_the_decisions_message(self, case: object) -> None:
        """The catalogue's English of each outcome is word for word the decision's own message."""
        d = decide(CASES[case])  # type: ignore[index]
        assert (d.reason or "allowed") == case or case == "other unknown"
        key, facts = d.text_key
        assert t(key, "en", **facts) == d.message

    @pytest.mark.parametrize("case", list(CASES), ids=str)
    def test_chinese_says_it_in_chinese(self, case: object) -> None:
        """In Chinese each outcome is Chinese, with the built-in restriction's Chinese name."""
        d = decide(CASES[case])  # type: ignore[index]
        text = decision_text(d, "zh-CN")
        assert CJK.search(text) and not re.search(r"[a-z]{3,} [a-z]{2,}", text), text
        assert "Default" not in text

    def test_json_keeps_the_stable_name(self) -> None:
        """decision_json keeps name and message for scripts and adds display_name and text."""
        d = decide(CASES[R.PLATFORM_BLOCKED])
        data = decision_json(d, "zh-CN")
        assert data["message"] == "ios is blocked by Default platform restriction"
        assert data["text"] == "iOS 被“默认设备类型限制”阻止"
        applied = data["platform_restriction"]
        assert isinstance(applied, dict) and applied["display_name"] == "默认设备类型限制"


class TestErrorText:
    def test_an_error_with_a_key(self) -> None:
        """An error raised with a catalogue message keeps its English detail and renders in Chinese."""
        e = describe(NotFoundError(msg("error.user.not_found", upn="ana@x", tenant="acme"), upn="ana@x"))
        assert e.detail == "no user ana@x in tenant acme" and e.key == "error.user.not_found"
        assert error_text(e, "en") == e.detail
        assert error_text(e, "zh-CN") == "租户 acme 中没有用户 ana@x"

    def test_an_error_without_a_key(self) -> None:
        """A plain English detail is shown as it is."""
        e = describe(NotFoundError("no such thing"))
        assert e.key is None and error_text(e, "zh-CN") == "no such thing"

    def test_nested_messages_and_names(self) -> None:
        """A message inside a message, and a built-in name as a value, follow the reader's language."""
        inner = msg("error.pushcert.p12_no_key")
        outer = msg("error.push.unusable", kind="no_key", detail=inner)
        assert str(outer) == "the certificate or key cannot be used: no_key: the .p12 holds no private key"
        assert render(outer, "zh-CN") == "无法使用该证书或私钥：no_key：该 .p12 文件中没有私钥"
        blocked = msg("decision.PLATFORM_BLOCKED", platform="ios", restriction="Default platform restriction")
        assert render(blocked, "zh-CN") == "iOS 被“默认设备类型限制”阻止"

    def test_messages_survive_pickling(self) -> None:
        """A message keeps its key and values when pickled (errors cross process and thread boundaries)."""
        import pickle

        m = pickle.loads(pickle.dumps(msg("error.tenant.not_found", tenant="x")))
        assert (str(m), m.key, m.params) == ("no tenant 'x'", "error.tenant.not_found", {"tenant": "x"})
