"""The ADE enrollment profile (domain/ade_profile.py): each lint rule, the skip keys against Apple's list,
the findings' texts in both languages, and what is sent to Apple."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pomona.domain import ade_profile as ap
from pomona.domain.ade_profile import AdeProfile, AuthMode, LintRule
from pomona.domain.checks import Severity
from pomona.domain.reasons import ReasonCode as R
from pomona.i18n import catalogue, t
from protocol.apple_schema import require_shared

GOOD = AdeProfile(
    name="Sales iPhones",
    url="https://mdm.example.com/t/acme/ade/enroll",
    org_magic="6f1d2c3b-acme",
    configuration_web_url="https://mdm.example.com/t/acme/ade/signin",
    await_device_configured=True,
    skip_setup_items=("AppleID", "Android", "Siri"),
    language="zh",
    region="CN",
    department="IT, Shanghai office",
    support_phone_number="+86 (21) 5555-0100 ext. 42",
    support_email_address="it-help@example.com",
)


def rules(profile: AdeProfile, **kwargs: bool) -> list[LintRule]:
    return [f.rule for f in ap.lint(profile, **kwargs)]


def only(profile: AdeProfile, rule: LintRule, **kwargs: bool) -> ap.ProfileFinding:
    findings = ap.lint(profile, **kwargs)
    assert [f.rule for f in findings] == [rule], findings
    return findings[0]


def change(**kwargs: object) -> AdeProfile:
    return dataclasses.replace(GOOD, **kwargs)  # type: ignore[arg-type]


def der_cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anchor")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


class TestAGoodProfile:
    def test_has_no_findings(self) -> None:
        """A complete, consistent profile lints clean and may be sent."""
        assert ap.lint(GOOD) == [] and ap.is_sendable([])

    def test_defaults_are_supervised_and_locked(self) -> None:
        """The defaults are what ADE is for: supervised, not removable, modern sign-in."""
        p = AdeProfile(name="x", url="https://a.example", org_magic="o")
        assert (p.is_supervised, p.is_mdm_removable, p.auth) == (True, False, AuthMode.MODERN)


class TestName:
    @pytest.mark.parametrize("name", ["", "   "])
    def test_required(self, name: str) -> None:
        """A profile without a name is rejected by Apple."""
        f = only(change(name=name), LintRule.NAME_REQUIRED)
        assert (f.field, f.severity, f.code, f.blocking) == (
            "profile_name",
            Severity.CRITICAL,
            R.DEP_PROFILE_REJECTED,
            True,
        )

    def test_length(self) -> None:
        """A name at the limit passes; one character more is too long."""
        assert ap.lint(change(name="n" * ap.PROFILE_NAME_MAX)) == []
        f = only(change(name="n" * (ap.PROFILE_NAME_MAX + 1)), LintRule.NAME_TOO_LONG)
        assert f.values == {"limit": ap.PROFILE_NAME_MAX}

    def test_control_characters(self) -> None:
        """A name with a line break is refused."""
        only(change(name="Sales\niPhones"), LintRule.NAME_INVALID)


class TestUrls:
    @pytest.mark.parametrize("field", ["url", "configuration_web_url"])
    def test_http_is_refused(self, field: str) -> None:
        """Plain http for the MDM or sign-in URL is refused: devices need https during setup."""
        f = only(change(**{field: "http://mdm.example.com/enroll"}), LintRule.URL_NOT_HTTPS)
        assert f.field == field and f.blocking

    @pytest.mark.parametrize(
        "value", ["mdm.example.com/enroll", "https://", " https://a.example/x", "https://[::1"]
    )
    def test_not_a_url(self, value: str) -> None:
        """A value that is not an absolute URL is refused."""
        assert only(change(url=value), LintRule.URL_INVALID).field == "url"


class TestFlags:
    def test_non_removable_needs_supervision(self) -> None:
        """is_mdm_removable false without supervision is Apple's FLAGS_INVALID (fleet #21397)."""
        findings = ap.lint(change(is_supervised=False, await_device_configured=False))
        assert [f.rule for f in findings] == [LintRule.REMOVABLE_NEEDS_SUPERVISION, LintRule.NOT_SUPERVISED]
        assert findings[0].code is R.DEP_PROFILE_REJECTED and not ap.is_sendable(findings)

    def test_removable_unsupervised_is_allowed(self) -> None:
        """A removable, unsupervised profile is accepted by Apple: only advice remains."""
        findings = ap.lint(change(is_supervised=False, is_mdm_removable=True, await_device_configured=False))
        assert [f.rule for f in findings] == [LintRule.NOT_SUPERVISED]
        assert findings[0].severity is Severity.INFO and ap.is_sendable(findings)

    def test_await_configured_needs_supervision(self) -> None:
        """Awaiting DeviceConfigured without supervision is ignored on iOS: a warning, not a refusal."""
        findings = ap.lint(change(is_supervised=False, is_mdm_removable=True))
        assert LintRule.AWAIT_NEEDS_SUPERVISION in [f.rule for f in findings]
        f = next(f for f in findings if f.rule is LintRule.AWAIT_NEEDS_SUPERVISION)
        assert (f.severity, f.code, f.blocking) == (Severity.WARNING, None, False)


class TestAuthentication:
    def test_modern_needs_the_web_url(self) -> None:
        """Modern sign-in without a configuration_web_url cannot work."""
        assert only(change(configuration_web_url=None), LintRule.MODERN_AUTH_NEEDS_WEB_URL).blocking

    @pytest.mark.parametrize("auth", [AuthMode.LEGACY, AuthMode.NONE])
    def test_a_web_url_without_modern_auth(self, auth: AuthMode) -> None:
        """A web view URL with legacy or no sign-in contradicts itself."""
        only(change(auth=auth), LintRule.WEB_URL_WITHOUT_MODERN_AUTH)

    def test_legacy_and_none_without_a_web_url(self) -> None:
        """Legacy and no sign-in lint clean without a web view URL."""
        for auth in (AuthMode.LEGACY, AuthMode.NONE):
            assert ap.lint(change(auth=auth, configuration_web_url=None)) == []

    def test_mfa_users_behind_legacy_auth(self) -> None:
        """Users who must pass MFA behind legacy sign-in: DEP_MFA_WITH_LEGACY_AUTH, a warning."""
        legacy = change(auth=AuthMode.LEGACY, configuration_web_url=None)
        f = only(legacy, LintRule.MFA_WITH_LEGACY_AUTH, users_require_mfa=True)
        assert (f.code, f.severity, f.field, f.blocking) == (
            R.DEP_MFA_WITH_LEGACY_AUTH,
            Severity.WARNING,
            "auth",
            False,
        )

    def test_mfa_is_only_a_concern_of_legacy_auth(self) -> None:
        """MFA users are fine with modern sign-in, and no sign-in involves no user."""
        assert ap.lint(GOOD, users_require_mfa=True) == []
        assert ap.lint(change(auth=AuthMode.NONE, configuration_web_url=None), users_require_mfa=True) == []

    def test_legacy_without_mfa_users(self) -> None:
        """Legacy sign-in is not warned about when the users need no MFA."""
        assert (
            ap.lint(change(auth=AuthMode.LEGACY, configuration_web_url=None), users_require_mfa=False) == []
        )


class TestSkipKeys:
    def test_the_list_is_apples(self) -> None:
        """SKIP_KEYS is exactly Apple's SkipKeys, with each key's iOS introduction and removal."""
        doc = yaml.safe_load(require_shared("apple-device-management", "other", "skipkeys.yaml").read_text())
        apple: dict[str, tuple[str | None, str | None]] = {}
        for entry in doc["payloadkeys"]:
            ios = entry.get("supportedOS", {}).get("iOS", {})
            introduced = ios.get("introduced", "7.0")
            apple[entry["key"]] = (
                None if introduced == "n/a" else introduced,
                ios.get("deprecated") or ios.get("removed"),
            )
        assert dict(ap.SKIP_KEYS) == apple

    def test_every_key_is_accepted(self) -> None:
        """Every key of the list lints without a blocking finding."""
        assert ap.is_sendable(ap.lint(change(skip_setup_items=tuple(ap.SKIP_KEYS))))

    @pytest.mark.parametrize("item", ["appleid", "Apple ID", "Bluetooth", ""])
    def test_an_unknown_key(self, item: str) -> None:
        """A key not in Apple's list (they are case-sensitive) is rejected."""
        f = only(change(skip_setup_items=("AppleID", item)), LintRule.SKIP_ITEM_UNKNOWN)
        assert f.values == {"value": item} and f.code is R.DEP_PROFILE_REJECTED

    def test_a_duplicate(self) -> None:
        """A key listed twice is a warning; the definition sent lists it once."""
        profile = change(skip_setup_items=("Siri", "AppleID", "Siri"))
        assert only(profile, LintRule.SKIP_ITEM_DUPLICATE).severity is Severity.WARNING
        assert ap.to_definition(profile).skip_setup_items == ("Siri", "AppleID")

    @pytest.mark.parametrize(("item", "since"), [("FileVault", None), ("TVRoom", None), ("Zoom", "17.0")])
    def test_keys_iphone_and_ipad_do_not_have(self, item: str, since: str | None) -> None:
        """A Mac or TV key, or one iOS dropped, is advice only."""
        f = only(change(skip_setup_items=(item,)), LintRule.SKIP_ITEM_NOT_ON_IOS)
        assert (f.severity, f.values) == (Severity.INFO, {"value": item, "since": since})


class TestLanguageAndRegion:
    @pytest.mark.parametrize("value", ["en", "zh", "haw"])
    def test_languages(self, value: str) -> None:
        """Two- and three-letter ISO 639 codes pass."""
        assert ap.lint(change(language=value)) == []

    @pytest.mark.parametrize("value", ["EN", "english", "zh-CN", "e", ""])
    def test_bad_languages(self, value: str) -> None:
        """Anything else is rejected."""
        only(change(language=value), LintRule.LANGUAGE_INVALID)

    @pytest.mark.parametrize("value", ["us", "USA", "C", "U1"])
    def test_bad_regions(self, value: str) -> None:
        """A region must be two capital letters."""
        only(change(region=value), LintRule.REGION_INVALID)


class TestDepartment:
    def test_length(self) -> None:
        """A department at the limit passes; longer is rejected."""
        assert ap.lint(change(department="d" * ap.DEPARTMENT_MAX)) == []
        assert only(
            change(department="d" * (ap.DEPARTMENT_MAX + 1)), LintRule.DEPARTMENT_TOO_LONG
        ).values == {"limit": ap.DEPARTMENT_MAX}

    @pytest.mark.parametrize("value", ["IT\nShanghai", " ", "tab\there"])
    def test_format(self, value: str) -> None:
        """A department must be one non-blank line."""
        only(change(department=value), LintRule.DEPARTMENT_INVALID)


class TestSupportContacts:
    @pytest.mark.parametrize(
        "phone", ["+1 408 555 1010", "(021) 5555-0100", "400.820.8820", "+86 21 5555 0100 x42", "110"]
    )
    def test_phone_numbers(self, phone: str) -> None:
        """Numbers with the usual separators and an extension pass."""
        assert ap.lint(change(support_phone_number=phone)) == []

    @pytest.mark.parametrize(
        "phone", ["call us", "12", "+1 408 555 1010 please", "1" * 21, "+1-(408)-" + "5" * 45, "++1 408", ""]
    )
    def test_bad_phone_numbers(self, phone: str) -> None:
        """Letters, too few or too many digits, or an over-long value are rejected."""
        assert only(change(support_phone_number=phone), LintRule.PHONE_INVALID).blocking

    @pytest.mark.parametrize(
        "email", ["it", "it@", "@example.com", "it help@example.com", "it@example", "a@b@c.com"]
    )
    def test_bad_email_addresses(self, email: str) -> None:
        """Something that is not one address is rejected."""
        only(change(support_email_address=email), LintRule.EMAIL_INVALID)

    def test_an_overlong_email_address(self) -> None:
        """An address over 254 characters is rejected."""
        only(change(support_email_address="a" * 250 + "@example.com"), LintRule.EMAIL_INVALID)


class TestAnchorCertificates:
    def test_der_certificates_pass(self) -> None:
        """DER certificates are accepted as anchors."""
        assert ap.lint(change(anchor_certs=(der_cert(), der_cert()))) == []

    def test_a_non_certificate(self) -> None:
        """A value that is not a DER certificate is rejected, with its position."""
        f = only(
            change(anchor_certs=(der_cert(), b"-----BEGIN CERTIFICATE-----")), LintRule.ANCHOR_CERT_INVALID
        )
        assert f.values == {"index": 1}


class TestFindingTexts:
    @pytest.mark.parametrize("rule", list(LintRule))
    def test_every_rule_has_english_and_chinese(self, rule: LintRule) -> None:
        """Each rule's message key exists in en and zh-CN, with the same placeholders."""
        key = f"ade_profile.lint.{rule.value}"
        en, zh = catalogue("en").get(key), catalogue("zh-CN").get(key)
        assert en and zh and en != zh
        import string

        fields = [{f for _, f, _, _ in string.Formatter().parse(text) if f} for text in (en, zh)]
        assert fields[0] == fields[1]

    def test_a_finding_renders_in_both_languages(self) -> None:
        """A finding's message key and values give a sentence in either language."""
        f = only(change(name="n" * 200), LintRule.NAME_TOO_LONG)
        assert "125" in t(f.message_key, "en", **f.values) and "125" in t(f.message_key, "zh-CN", **f.values)

    def test_json_shape(self) -> None:
        """A finding prints as rule, code, field, severity, message key and values."""
        f = only(change(region="cn"), LintRule.REGION_INVALID)
        assert f.to_json() == {
            "rule": "region_invalid",
            "code": "DEP_PROFILE_REJECTED",
            "field": "region",
            "severity": "critical",
            "message_key": "ade_profile.lint.region_invalid",
            "values": {"value": "cn"},
        }


class TestDefinition:
    def test_modern_profile(self) -> None:
        """The definition carries every field, mandatory, with the web view URL."""
        d = ap.to_definition(GOOD, devices=("SERIAL1",))
        assert (d.profile_name, d.url, d.org_magic) == (GOOD.name, GOOD.url, GOOD.org_magic)
        assert (d.is_supervised, d.is_mdm_removable, d.is_mandatory, d.await_device_configured) == (
            True,
            False,
            True,
            True,
        )
        assert d.configuration_web_url == GOOD.configuration_web_url and d.devices == ("SERIAL1",)

    @pytest.mark.parametrize("auth", [AuthMode.LEGACY, AuthMode.NONE])
    def test_no_web_view_without_modern_auth(self, auth: AuthMode) -> None:
        """Legacy and no sign-in never send a web view URL."""
        assert ap.to_definition(change(auth=auth)).configuration_web_url is None
