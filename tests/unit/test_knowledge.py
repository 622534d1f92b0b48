"""The knowledge base of `pomona diagnose`: complete in both languages, and a tolerant message matcher."""

from __future__ import annotations

import re

import pytest

from pomona import knowledge
from pomona.domain.reasons import ReasonCode
from pomona.i18n import catalogue

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
ALL_CODES = sorted(c.value for c in ReasonCode)

# The founding document's messages, in its order: (id, English wording, Chinese wording, its causes).
SEED = [
    (
        "profile_network_error",
        "Profile Installation Failed. A network error has occurred.",
        "配置文件安装失败。 发生了网络错误。",
        ["PROFILE_INSTALL_FAILED"],
    ),
    (
        "profile_connection_failed",
        "Profile Installation Failed. Connection to the server could not be established.",
        "配置文件安装失败。 无法建立到服务器的连接。",
        [
            "PERSONAL_DEVICE_BLOCKED",
            "DNS_ENROLLMENT_CNAME_MISSING",
            "DEVICE_ENROLLED_TO_OTHER_USER",
            "ENROLLED_WITH_OTHER_MDM",
            "USER_NOT_LICENSED",
        ],
    ),
    (
        "no_enrollment_policy",
        "This service is not supported. No enrollment policy.",
        "不支持此服务。 无注册策略。",
        ["APNS_CERT_MISSING", "APNS_CERT_INVALID"],
    ),
    (
        "company_portal_unavailable",
        "Company Portal Temporarily Unavailable. The Company Portal app encountered a problem. If the problem "
        "persists, contact your system administrator.",
        "公司门户暂时不可用。 公司门户应用遇到问题。 如果问题仍然存在，请与系统管理员联系。",
        ["ENROLLMENT_TOKEN_INVALID", "ENROLLMENT_TOKEN_EXPIRED", "DEVICE_LIMIT_REACHED"],
    ),
    ("device_cap_reached", "Device Cap Reached", "已达到设备上限", ["DEVICE_LIMIT_REACHED"]),
    (
        "workplace_join_failed",
        "Workplace Join failed",
        "Workplace Join 失败",
        ["ENROLLMENT_TOKEN_INVALID", "ENROLLMENT_TOKEN_EXPIRED"],
    ),
    ("user_license_type_invalid", "User License Type Invalid", "用户许可证类型无效", ["USER_NOT_LICENSED"]),
    (
        "user_name_not_recognized",
        "User Name Not Recognized. This user account is not authorized to use Microsoft Intune. Contact your "
        "system administrator if you think you have received this message in error.",
        "未识别用户名。 此用户帐户无权使用 Microsoft Intune。 如果你认为此消息是错误的，请与系统管理员联系。",
        ["USER_NOT_LICENSED"],
    ),
    (
        "mdm_payload_mismatch",
        "Profile Installation Failed. The new MDM payload does not match the old payload.",
        "配置文件安装失败。 新的 MDM 有效负载与旧的负载不匹配。",
        ["MDM_PROFILE_ALREADY_INSTALLED"],
    ),
    (
        "no_enrollment_policy_code",
        "NoEnrollmentPolicy",
        "NoEnrollmentPolicy",
        ["APNS_CERT_MISSING", "APNS_CERT_INVALID", "APNS_CERT_EXPIRED"],
    ),
    (
        "account_not_onboarded",
        "AccountNotOnboarded",
        "AccountNotOnboarded",
        ["APNS_TOPIC_CHANGED", "APNS_CERT_EXPIRED", "APNS_CERT_INVALID"],
    ),
    (
        "xpc_connection_invalid",
        "XPC_TYPE_ERROR Connection invalid",
        "XPC_TYPE_ERROR 连接无效",
        ["DEP_NETWORK_ERROR"],
    ),
    ("ade_not_started", "ADE enrollment does not start", "DEP 注册未启动", ["DEP_PROFILE_NOT_ASSIGNED"]),
    (
        "ade_stuck_at_login",
        "ADE stuck at user login",
        "在用户登录时，DEP 注册停滞",
        ["DEP_MFA_WITH_LEGACY_AUTH"],
    ),
    (
        "mdm_authority_not_defined",
        "MdmAuthorityNotDefined",
        "MdmAuthorityNotDefined",
        ["MDM_AUTHORITY_NOT_SET"],
    ),
]


def _texts(code: str, lang: str) -> list[tuple[str, str]]:
    """Every raw text of a code as (field, text), placeholders unfilled."""
    t = knowledge._texts(lang)[code]
    out = [("title", t.title), ("cause", t.cause)]
    for field in ("steps", "proves", "rules_out", "device_checks"):
        out += [(f"{field}[{i}]", s) for i, s in enumerate(getattr(t, field))]
    return out


class TestCompleteness:
    def test_codes_are_exactly_the_reason_codes(self) -> None:
        """The knowledge base explains every ReasonCode and nothing else."""
        assert knowledge.codes() == set(ALL_CODES)

    def test_every_code_names_the_step_it_breaks(self) -> None:
        """causes.yaml lists every ReasonCode exactly, each with a known step and scope (the funnel reads it)."""
        listed = set(knowledge._causes())
        assert listed == set(ALL_CODES), (set(ALL_CODES) - listed, listed - set(ALL_CODES))
        steps = {"discovery", "portal", "profile", "install", "scep", "authenticate", "tokenupdate"}
        steps |= {"command", "ade", "none"}
        for c in knowledge._causes().values():
            assert c.breaks in steps and c.scope in {"subject", "tenant", "device", "request", "none"}, c
        for code in ALL_CODES:  # a device-only cause is the device's scope, and only the device sees it
            if knowledge.device_only(code):
                assert knowledge.cause(code).scope == "device" and not knowledge.cause(code).seen, code

    @pytest.mark.parametrize("lang", knowledge.LANGS)
    @pytest.mark.parametrize("code", ALL_CODES)
    def test_every_code_has_title_cause_and_steps(self, code: str, lang: str) -> None:
        """Each code has a title, a cause of 2 to 4 sentences, steps and evidence in both languages."""
        text = knowledge.text_for(code, lang)
        assert text.title and text.resolution and all(text.resolution)
        sentences = len(re.findall(r"[.。](?:\s|$)|。", text.cause))
        assert 1 <= sentences <= 4, text.cause
        ev = knowledge.evidence(code, lang)
        assert ev.proves and ev.rules_out

    @pytest.mark.parametrize("code", ALL_CODES)
    def test_languages_have_the_same_shape_and_placeholders(self, code: str) -> None:
        """Both languages have the same texts, and each text names the same placeholders."""
        en, zh = _texts(code, "en"), _texts(code, "zh-CN")
        assert [f for f, _ in en] == [f for f, _ in zh]
        for (field, a), (_, b) in zip(en, zh, strict=True):
            assert set(PLACEHOLDER.findall(a)) == set(PLACEHOLDER.findall(b)), (code, field)

    @pytest.mark.parametrize("code", ALL_CODES)
    def test_device_only_codes_say_what_to_check_on_the_device(self, code: str) -> None:
        """A device-only cause lists what to check on the device; the others list nothing."""
        for lang in knowledge.LANGS:
            assert bool(knowledge.text_for(code, lang).device_checks) == knowledge.device_only(code)

    def test_the_device_only_codes(self) -> None:
        """The causes only the device can see are the four the contract names."""
        only = {c for c in ALL_CODES if knowledge.device_only(c)}
        assert only == {
            "PROFILE_INSTALL_FAILED",
            "DEP_NETWORK_ERROR",
            "MDM_PROFILE_ALREADY_INSTALLED",
            "ENROLLED_WITH_OTHER_MDM",
        }

    @pytest.mark.parametrize("code", ALL_CODES)
    def test_resolutions_name_no_microsoft_console(self, code: str) -> None:
        """Resolutions point at Pomona's own commands and pages, never at Azure or Intune consoles."""
        for lang in knowledge.LANGS:
            steps = " ".join(knowledge.text_for(code, lang).resolution).lower()
            for word in ("azure", "intune", "endpoint manager", "microsoft", "office 365"):
                assert word not in steps

    def test_message_codes_are_reason_codes(self) -> None:
        """Every code a message maps to is a ReasonCode."""
        for m in knowledge.messages():
            assert set(m.codes) | set(m.also) <= set(ALL_CODES), m.id
            assert m.codes, m.id
            assert m.wording["en"] or m.keys, m.id
            assert bool(m.wording["en"]) == bool(m.wording["zh-CN"]), m.id

    def test_seed_messages_come_first_in_the_documents_order(self) -> None:
        """The founding document's messages lead the table, in the document's order."""
        ids = [m.id for m in knowledge.messages() if m.source in ("seed", "contract")]
        assert ids == [s[0] for s in SEED]


class TestSeedMessages:
    @pytest.mark.parametrize(("msg_id", "english", "chinese", "causes"), SEED, ids=[s[0] for s in SEED])
    def test_english_wording(self, msg_id: str, english: str, chinese: str, causes: list[str]) -> None:
        """The English wording finds the message first, with the document's causes in its order."""
        best = knowledge.match_message(english)[0]
        assert (best.id, list(best.codes)) == (msg_id, causes)

    @pytest.mark.parametrize(("msg_id", "english", "chinese", "causes"), SEED, ids=[s[0] for s in SEED])
    def test_chinese_wording(self, msg_id: str, english: str, chinese: str, causes: list[str]) -> None:
        """The Chinese wording (as the document prints it) finds the same message and causes."""
        best = knowledge.match_message(chinese)[0]
        assert (best.id, list(best.codes)) == (msg_id, causes)


class TestTolerance:
    CONNECTION = "profile_connection_failed"

    @pytest.mark.parametrize(
        "text",
        [
            "PROFILE INSTALLATION FAILED. CONNECTION TO THE SERVER COULD NOT BE ESTABLISHED.",
            "profile installation failed connection to the server could not be established",
            "  Profile   Installation\tFailed.\n\nConnection to the server   could not be established.  ",
            "Profile Installation Failed: Connection to the server couldn't be established!",
            "配置文件安装失败，无法建立到服务器的连接",
            "配置文件安装失败．无法建立到服务器的连接！",
            "配置 文件 安装 失败 无法 建立 到 服务器 的 连接",
        ],
    )
    def test_case_punctuation_width_and_spacing(self, text: str) -> None:
        """Case, punctuation (full-width too) and extra or missing spaces do not matter."""
        assert knowledge.match_message(text)[0].id == self.CONNECTION

    @pytest.mark.parametrize(
        ("text", "msg_id"),
        [
            ("could not be established", "profile_connection_failed"),
            ("无法建立到服务器的连接", "profile_connection_failed"),
            ("new MDM payload does not match", "mdm_payload_mismatch"),
            ("有效负载与旧的负载不匹配", "mdm_payload_mismatch"),
            ("device cap", "device_cap_reached"),
            ("Temporarily Unavailable", "company_portal_unavailable"),
            ("注册停滞", "ade_stuck_at_login"),
        ],
    )
    def test_partial_pastes(self, text: str, msg_id: str) -> None:
        """A fragment of a message finds the message."""
        assert knowledge.match_message(text)[0].id == msg_id

    @pytest.mark.parametrize(
        ("text", "msg_id", "code"),
        [
            ("NoEnrollmentPolicy", "no_enrollment_policy_code", "APNS_CERT_MISSING"),
            ("noenrollmentpolicy", "no_enrollment_policy_code", "APNS_CERT_MISSING"),
            ("ＮｏＥｎｒｏｌｌｍｅｎｔＰｏｌｉｃｙ", "no_enrollment_policy_code", "APNS_CERT_MISSING"),
            ("DeviceCapReached", "device_cap_reached", "DEVICE_LIMIT_REACHED"),
            ("AccountNotOnboarded", "account_not_onboarded", "APNS_TOPIC_CHANGED"),
            ("XPC_TYPE_ERROR", "xpc_connection_invalid", "DEP_NETWORK_ERROR"),
            ("MdmAuthorityNotDefined", "mdm_authority_not_defined", "MDM_AUTHORITY_NOT_SET"),
            ("DEVICE_LIMIT_REACHED", "code.DEVICE_LIMIT_REACHED", "DEVICE_LIMIT_REACHED"),
            ("device_limit_reached", "code.DEVICE_LIMIT_REACHED", "DEVICE_LIMIT_REACHED"),
            ("Error [USER_NOT_LICENSED]: no licence", "code.USER_NOT_LICENSED", "USER_NOT_LICENSED"),
            (
                "Reason code: PERSONAL_DEVICE_BLOCKED",
                "code.PERSONAL_DEVICE_BLOCKED",
                "PERSONAL_DEVICE_BLOCKED",
            ),
        ],
    )
    def test_codes_alone(self, text: str, msg_id: str, code: str) -> None:
        """A code pasted alone (Intune's or Pomona's) finds its message and causes."""
        best = knowledge.match_message(text)[0]
        assert (best.id, best.codes[0]) == (msg_id, code)

    def test_a_code_inside_a_log_line(self) -> None:
        """A code inside a longer device log line is still found."""
        line = (
            "mobileassetd[83] <Notice>: 0x1a49aebc0 Client connection: XPC_TYPE_ERROR Connection invalid "
            '<error: 0x1a49aebc0> { count = 1, contents = "XPCErrorDescription" }'
        )
        assert knowledge.match_message(line)[0].id == "xpc_connection_invalid"

    @pytest.mark.parametrize(
        "text", ["", "   ", "hello world", "the printer is out of paper", "failed", "unknown", "今天天气很好"]
    )
    def test_unknown_text(self, text: str) -> None:
        """Text that is no known message gives no match."""
        assert knowledge.match_message(text) == []

    def test_the_specific_message_hides_its_generic_prefix(self) -> None:
        """The full message is not also reported as the bare "Profile installation failed"."""
        ids = [
            m.id
            for m in knowledge.match_message("Profile Installation Failed. A network error has occurred.")
        ]
        assert ids[0] == "profile_network_error" and "mc_installation_error" not in ids

    @pytest.mark.parametrize("lang", knowledge.LANGS)
    def test_every_portal_title_finds_its_code(self, lang: str) -> None:
        """Each refusal title of the portal catalogue (pomona/i18n) finds its own code first."""
        titles = {
            k.split(".")[2]: v
            for k, v in catalogue(lang).items()
            if re.fullmatch(r"portal\.reason\.[A-Z_]+\.title", k)
        }
        assert titles
        for code, title in titles.items():
            filled = PLACEHOLDER.sub("iPhone", title)
            assert code in knowledge.match_message(filled)[0].codes, (code, filled)

    def test_portal_refusal_titles(self) -> None:
        """The portal's refusal titles, in either language, map to their code."""
        assert knowledge.match_message("You have reached your device limit")[0].codes == (
            "DEVICE_LIMIT_REACHED",
        )
        assert knowledge.match_message("你已达到设备上限")[0].codes[0] == "DEVICE_LIMIT_REACHED"


class TestDeviceSideMessages:
    @pytest.mark.parametrize(
        ("text", "code"),
        [
            (
                "Profile Installation Failed The SCEP server returned an invalid response.",
                "ENROLLMENT_TOKEN_INVALID",
            ),
            (
                'Error Domain=MCCloudConfigurationErrorDomain Code=34006 "The cloud configuration server is unavailable."',
                "DEP_NETWORK_ERROR",
            ),
            ("The cloud configuration could not be retrieved", "DEP_NETWORK_ERROR"),
            ("MCCloudConfigurationErrorDomain 33001", "DEP_NETWORK_ERROR"),
            ("The configuration for your iPhone could not be downloaded from Acme Inc.", "DEP_NETWORK_ERROR"),
            ("Domain : MCMDMErrorDomain Code : 12021", "MDM_PROFILE_ALREADY_INSTALLED"),
            ("MCMDMErrorDomain 12026", "MDM_PROFILE_ALREADY_INSTALLED"),
            (
                "The server certificate for \u201chttps://10.1.3.23:8080/checkin\u201d is invalid.",
                "PROFILE_INSTALL_FAILED",
            ),
            ("Domain : MCInstallationErrorDomain Code : 4001", "PROFILE_INSTALL_FAILED"),
            ("DEP API Error: CONFIG_URL_REQUIRED", "DEP_PROFILE_REJECTED"),
            ("T_C_NOT_SIGNED", "DEP_TERMS_NOT_ACCEPTED"),
            ("BadDeviceToken", "PUSH_REJECTED"),
            ("SCEP 服务器返回了无效的响应。", "ENROLLMENT_TOKEN_INVALID"),
        ],
    )
    def test_device_strings(self, text: str, code: str) -> None:
        """Device-side and Apple-service strings pasted from logs map to their first candidate cause."""
        assert knowledge.match_message(text)[0].codes[0] == code


class TestTextFor:
    def test_fills_placeholders(self) -> None:
        """Facts fill the resolution's placeholders with this tenant's names and numbers."""
        text = knowledge.text_for("USER_NOT_LICENSED", "en", tenant="acme", upn="ana@acme.example")
        assert "pomona licence assign --tenant acme --user ana@acme.example" in text.resolution[0]
        assert "{" not in " ".join(text.resolution)

    def test_fills_chinese_too(self) -> None:
        """The Chinese text takes the same facts."""
        text = knowledge.text_for(
            "DEVICE_LIMIT_REACHED", "zh-CN", upn="ana", count=15, limit=15, restriction="默认"
        )
        assert "ana 已有 15 个有效注册" in text.cause and "“默认”" in text.cause

    def test_survives_missing_facts(self) -> None:
        """Missing or empty facts stay readable as <name>, never a KeyError."""
        text = knowledge.text_for("DEVICE_LIMIT_REACHED", "en", tenant="acme", upn="")
        assert "<upn>" in text.cause and "<limit>" in text.cause and "--tenant acme" in text.resolution[0]

    def test_extra_facts_are_ignored(self) -> None:
        """Facts the text does not use do no harm."""
        assert knowledge.text_for("UNKNOWN", "en", nothing="x", tenant="acme").title

    def test_language_names(self) -> None:
        """zh, zh_CN and zh-CN select Chinese; anything else English."""
        zh = knowledge.text_for("USER_NOT_FOUND", "zh-CN").title
        assert knowledge.text_for("USER_NOT_FOUND", "zh").title == zh
        assert knowledge.text_for("USER_NOT_FOUND", "zh_CN").title == zh
        assert (
            knowledge.text_for("USER_NOT_FOUND", "fr").title
            == knowledge.text_for("USER_NOT_FOUND", "en").title
        )

    def test_folded_chinese_has_no_stray_spaces(self) -> None:
        """Line breaks inside a Chinese paragraph do not turn into spaces between characters."""
        for code in ALL_CODES:
            cause = knowledge.text_for(code, "zh-CN").cause
            assert not re.search("[\u4e00-\u9fff，。] [\u4e00-\u9fff，。]", cause), (code, cause)

    def test_unknown_code(self) -> None:
        """A code the knowledge base does not know is an error, not empty text."""
        with pytest.raises(ValueError):
            knowledge.text_for("NO_SUCH_CODE", "en")

    def test_evidence_is_filled(self) -> None:
        """Evidence lines take the same facts."""
        ev = knowledge.evidence("DEVICE_BLOCKED", "en", serial="F2LX", udid="", tenant="acme")
        assert "F2LX" in ev.proves[0] and "<udid>" in ev.proves[0]

    def test_accepts_reason_code_members(self) -> None:
        """A ReasonCode member works as well as its string."""
        assert knowledge.text_for(ReasonCode.APNS_CERT_MISSING, "en").code == "APNS_CERT_MISSING"
        assert knowledge.device_only(ReasonCode.DEP_NETWORK_ERROR)
