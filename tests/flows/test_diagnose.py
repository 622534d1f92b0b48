"""`pomona diagnose` scenarios: one per row of the founding document (non-ADE), each with a twin where the
cause is absent. Real state built through the real app, virtual devices and a local DNS server; the
message is reported as a user would, in English and in Chinese."""

from __future__ import annotations

from datetime import timedelta

import pytest

from diag_helpers import World, later_clock
from helpers import setup_tenant
from pomona.services.diagnose import to_json
from pomona.testing.virtual_device import EnrollmentRefused

MESSAGES = {
    "network": (
        "Profile Installation Failed. A network error has occurred.",
        "配置文件安装失败。发生了网络错误。",
    ),
    "connection": (
        "Profile Installation Failed. Connection to the server could not be established.",
        "配置文件安装失败。无法建立到服务器的连接。",
    ),
    "no_policy": ("This service is not supported. No enrollment policy.", "不支持此服务。无注册策略。"),
    "portal": (
        "Company Portal Temporarily Unavailable. The Company Portal app encountered a problem.",
        "公司门户暂时不可用。公司门户应用遇到问题。",
    ),
    "cap": ("Device Cap Reached", "已达到设备上限"),
    "license": ("User License Type Invalid", "用户许可证类型无效"),
    "user": (
        "User Name Not Recognized. This user account is not authorized to use Microsoft Intune.",
        "未识别用户名。此用户帐户无权使用 Microsoft Intune。",
    ),
    "payload": (
        "Profile Installation Failed. The new MDM payload does not match the old payload.",
        "配置文件安装失败。新的 MDM 有效负载与旧的负载不匹配。",
    ),
    "onboarded": ("AccountNotOnboarded", "AccountNotOnboarded"),
    "nep": ("NoEnrollmentPolicy", "NoEnrollmentPolicy"),
}


def diagnose(w: World, msg_key: str, lang: str, **kw: object) -> dict[str, object]:
    message = MESSAGES[msg_key][0 if lang == "en" else 1]
    d = w.p.diagnose.diagnose(w.s.name, message=message, **kw)  # type: ignore[arg-type]
    return to_json(d, lang)


def top(result: dict[str, object]) -> dict[str, object]:
    return result["findings"][0]  # type: ignore[index,no-any-return]


def verdict_of(result: dict[str, object], code: str) -> str:
    for f in result["findings"]:  # type: ignore[attr-defined]
        if f["code"] == code:
            return str(f["verdict"])
    return "absent"


def steps(result: dict[str, object]) -> str:
    return "\n".join(top(result)["resolution"])  # type: ignore[arg-type]


LANGS = pytest.mark.parametrize("lang", ["en", "zh-CN"])


@LANGS
class TestFoundingDocument:
    def test_network_error(self, w: World, lang: str) -> None:
        """Profile downloaded and never installed: PROFILE_INSTALL_FAILED is likely (device-only)."""
        w.p.diagnose.clock = later_clock(40)  # type: ignore[assignment]
        w.client.get(w.s.enroll_url)
        r = diagnose(w, "network", lang, upn=w.s.upn)
        assert (top(r)["code"], top(r)["verdict"]) == ("PROFILE_INSTALL_FAILED", "likely")
        assert top(r)["device_only"] is True
        last = r["funnel"][-1]  # type: ignore[index]
        assert (last["reached"], last["state"]) == (["profile"], "stalled")

    def test_network_error_twin(self, w: World, lang: str) -> None:
        """When the device named installed the profile, PROFILE_INSTALL_FAILED is ruled out."""
        d = w.device()
        d.enroll()
        r = diagnose(w, "network", lang, upn=w.s.upn, serial=d.serial)
        assert verdict_of(r, "PROFILE_INSTALL_FAILED") == "ruled_out"
        last = r["funnel"][-1]  # type: ignore[index]
        assert last["state"] == "enrolled" and last["reached"][-3:] == ["scep", "authenticate", "tokenupdate"]

    def test_connection_personal_blocked(self, w: World, lang: str) -> None:
        """Personal devices blocked and the serial not corporate: PERSONAL_DEVICE_BLOCKED proven."""
        w.p.policy.edit_restriction(w.s.name, type_="platform", default=True, personal="block")
        d = w.device()
        with pytest.raises(EnrollmentRefused):
            d.enroll()
        r = diagnose(w, "connection", lang, upn=w.s.upn, serial=d.serial)
        assert (top(r)["code"], top(r)["verdict"]) == ("PERSONAL_DEVICE_BLOCKED", "proven")
        assert "pomona" in steps(r) and w.s.name in steps(r)

    def test_connection_personal_twin(self, w: World, lang: str) -> None:
        """Personal devices allowed: PERSONAL_DEVICE_BLOCKED ruled out."""
        d = w.device()
        d.enroll()
        r = diagnose(w, "connection", lang, upn=w.s.upn, serial=d.serial)
        assert verdict_of(r, "PERSONAL_DEVICE_BLOCKED") == "ruled_out"
        assert top(r)["code"] != "PERSONAL_DEVICE_BLOCKED"

    def test_connection_dns(self, w: World, lang: str) -> None:
        """No EnterpriseEnrollment CNAME: DNS_ENROLLMENT_CNAME_MISSING proven, naming the record."""
        w.zone.cnames.clear()
        r = diagnose(w, "connection", lang, upn=w.s.upn)
        assert (top(r)["code"], top(r)["verdict"]) == ("DNS_ENROLLMENT_CNAME_MISSING", "proven")
        assert f"{w.s.name}.example" in steps(r)

    def test_connection_dns_twin(self, w: World, lang: str) -> None:
        """With both CNAMEs right, the DNS causes are ruled out."""
        r = diagnose(w, "connection", lang, upn=w.s.upn)
        assert verdict_of(r, "DNS_ENROLLMENT_CNAME_MISSING") == "ruled_out"

    def test_connection_other_user(self, w: World, lang: str) -> None:
        """A device still enrolled to another user: DEVICE_ENROLLED_TO_OTHER_USER proven, naming that user."""
        w.p.admin.create_user(w.s.name, "bo@acme.example")
        w.p.policy.licence(w.s.name, "bo@acme.example", assign=True)
        first = w.device()
        first.enroll()
        again = w.device(w.link("bo@acme.example"), serial=first.serial, udid=first.udid)
        with pytest.raises(EnrollmentRefused):
            again.enroll()
        r = diagnose(w, "connection", lang, upn="bo@acme.example", serial=first.serial)
        assert (top(r)["code"], top(r)["verdict"]) == ("DEVICE_ENROLLED_TO_OTHER_USER", "proven")
        assert w.s.upn in steps(r) or w.s.upn in str(top(r)["evidence"])

    def test_connection_other_user_twin(self, w: World, lang: str) -> None:
        """After the old record is retired, DEVICE_ENROLLED_TO_OTHER_USER is ruled out."""
        w.p.admin.create_user(w.s.name, "bo@acme.example")
        w.p.policy.licence(w.s.name, "bo@acme.example", assign=True)
        first = w.device()
        first.enroll()
        w.p.policy.retire(w.s.name, serial=first.serial)
        r = diagnose(w, "connection", lang, upn="bo@acme.example", serial=first.serial)
        assert verdict_of(r, "DEVICE_ENROLLED_TO_OTHER_USER") == "ruled_out"

    def test_licence(self, w: World, lang: str) -> None:
        """An unlicensed user: USER_NOT_LICENSED proven for both messages that list it."""
        w.p.policy.licence(w.s.name, w.s.upn, assign=False)
        for key in ("license", "connection"):
            r = diagnose(w, key, lang, upn=w.s.upn)
            assert (top(r)["code"], top(r)["verdict"]) == ("USER_NOT_LICENSED", "proven")
        assert w.s.upn in steps(r)

    def test_licence_twin(self, w: World, lang: str) -> None:
        """A licensed user: USER_NOT_LICENSED ruled out."""
        r = diagnose(w, "license", lang, upn=w.s.upn)
        assert verdict_of(r, "USER_NOT_LICENSED") == "ruled_out"

    def test_no_enrollment_policy(self, w: World, lang: str) -> None:
        """No push certificate: APNS_CERT_MISSING proven, for the sentence and for the code alone."""
        s2 = setup_tenant(w.p, "nopush", push=False)
        for key in ("no_policy", "nep"):
            res = to_json(
                w.p.diagnose.diagnose(s2.name, message=MESSAGES[key][0 if lang == "en" else 1], upn=s2.upn),
                lang,
            )
            assert (top(res)["code"], top(res)["verdict"]) == ("APNS_CERT_MISSING", "proven")

    def test_no_enrollment_policy_twin(self, w: World, lang: str) -> None:
        """A valid push certificate: the certificate causes are ruled out."""
        r = diagnose(w, "no_policy", lang, upn=w.s.upn)
        assert verdict_of(r, "APNS_CERT_MISSING") == "ruled_out"
        assert verdict_of(r, "APNS_CERT_EXPIRED") == "ruled_out"

    def test_portal_unavailable(self, w: World, lang: str) -> None:
        """An expired enrollment link: ENROLLMENT_TOKEN_EXPIRED proven from the refusal."""
        issued = w.p.admin.create_enrollment_token(w.s.name, w.s.upn, expires_in=timedelta(minutes=1))
        url = w.p.enrollment.urls.enroll(issued.secret)
        w.p.enrollment.clock = later_clock(5)  # type: ignore[assignment]
        w.client.get(url)
        r = diagnose(w, "portal", lang, upn=w.s.upn)
        assert (top(r)["code"], top(r)["verdict"]) == ("ENROLLMENT_TOKEN_EXPIRED", "proven")

    def test_portal_unavailable_twin(self, w: World, lang: str) -> None:
        """No link refusals: the token causes are ruled out."""
        r = diagnose(w, "portal", lang, upn=w.s.upn)
        assert verdict_of(r, "ENROLLMENT_TOKEN_EXPIRED") == "ruled_out"

    def test_device_cap(self, w: World, lang: str) -> None:
        """At the limit: DEVICE_LIMIT_REACHED proven; the cause names the count, limit and restriction
        (the built-in one in the reader's language)."""
        w.p.policy.edit_restriction(w.s.name, type_="limit", default=True, limit=2)
        for _ in range(2):
            w.device().enroll()
        r = diagnose(w, "cap", lang, upn=w.s.upn)
        assert (top(r)["code"], top(r)["verdict"]) == ("DEVICE_LIMIT_REACHED", "proven")
        name = {"en": "Default limit restriction", "zh-CN": "默认设备数量限制"}[lang]  # the reader's language
        assert "2" in str(top(r)["cause"]) and name in str(top(r)["cause"])
        assert w.s.upn in steps(r)

    def test_device_cap_twin(self, w: World, lang: str) -> None:
        """Below the limit: DEVICE_LIMIT_REACHED ruled out."""
        w.device().enroll()
        r = diagnose(w, "cap", lang, upn=w.s.upn)
        assert verdict_of(r, "DEVICE_LIMIT_REACHED") == "ruled_out"

    def test_user_not_recognized(self, w: World, lang: str) -> None:
        """An unknown sign-in name: USER_NOT_FOUND proven."""
        r = diagnose(w, "user", lang, upn="nobody@acme.example")
        assert (top(r)["code"], top(r)["verdict"]) == ("USER_NOT_FOUND", "proven")

    def test_user_not_recognized_twin(self, w: World, lang: str) -> None:
        """A known user: USER_NOT_FOUND ruled out."""
        r = diagnose(w, "user", lang, upn=w.s.upn)
        assert verdict_of(r, "USER_NOT_FOUND") == "ruled_out"

    def test_payload_mismatch(self, w: World, lang: str) -> None:
        """Already enrolled and the profile downloaded again: MDM_PROFILE_ALREADY_INSTALLED likely."""
        d = w.device()
        d.enroll()
        w.client.get(w.s.enroll_url)
        r = diagnose(w, "payload", lang, upn=w.s.upn, serial=d.serial)
        assert (top(r)["code"], top(r)["verdict"]) == ("MDM_PROFILE_ALREADY_INSTALLED", "likely")

    def test_payload_mismatch_twin(self, w: World, lang: str) -> None:
        """No enrollment and no repeated download: MDM_PROFILE_ALREADY_INSTALLED ruled out."""
        r = diagnose(w, "payload", lang, upn=w.s.upn)
        assert verdict_of(r, "MDM_PROFILE_ALREADY_INSTALLED") == "ruled_out"

    def test_account_not_onboarded(self, w: World, lang: str) -> None:
        """Devices enrolled under an older push topic: APNS_TOPIC_CHANGED proven."""
        d = w.device()
        d.enroll()
        with w.p.db.unit_of_work() as uow:
            t = uow.tenants.by_name(w.s.name)
            creds = uow.push_certs.credentials(w.s.topic)
            assert t is not None and creds is not None and t.push_not_after
            uow.tenants.set_push_cert(
                t.id, creds.cert_pem, creds.key, "com.apple.mgmt.External.new", t.push_not_after
            )
        r = diagnose(w, "onboarded", lang, udid=d.udid)
        assert (top(r)["code"], top(r)["verdict"]) == ("APNS_TOPIC_CHANGED", "proven")

    def test_account_not_onboarded_twin(self, w: World, lang: str) -> None:
        """Same topic: APNS_TOPIC_CHANGED ruled out."""
        d = w.device()
        d.enroll()
        r = diagnose(w, "onboarded", lang, udid=d.udid)
        assert verdict_of(r, "APNS_TOPIC_CHANGED") == "ruled_out"


class TestHonesty:
    def test_unknown_when_nothing_proven(self, w: World) -> None:
        """Nothing provable: the answer is UNKNOWN, with what was checked and what to ask."""
        d = w.device()
        d.enroll()
        r = to_json(w.p.diagnose.diagnose(w.s.name, upn=w.s.upn, message="something odd happened"), "en")
        assert top(r)["code"] == "UNKNOWN" and r["ask"]
        r = to_json(w.p.diagnose.diagnose(w.s.name, upn=w.s.upn), "zh-CN")
        assert top(r)["code"] == "UNKNOWN" and r["checked"] and r["ask"]

    def test_api_and_shape(self, w: World) -> None:
        """POST /api/v1/diagnose answers the documented shape for the token's tenant."""
        w.p.policy.licence(w.s.name, w.s.upn, assign=False)
        r = w.client.post(
            "/api/v1/diagnose",
            headers={"Authorization": f"Bearer {w.s.admin_token}"},
            json={"upn": w.s.upn, "message": "User License Type Invalid", "lang": "zh-CN"},
        )
        body = r.json()
        assert r.status_code == 200, body
        f = body["findings"][0]
        assert set(f) >= {"code", "verdict", "title", "evidence", "resolution"}
        assert (f["code"], f["verdict"]) == ("USER_NOT_LICENSED", "proven")
