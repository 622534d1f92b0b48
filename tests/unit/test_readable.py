"""Facts, evidence and wrapped text as a person reads them (services/readable.py): no JSON, no Python
text, within the given width, Chinese punctuation where it belongs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pomona.services.readable import cell_len, evidence_line, facts_text, value_text, wrapped

ZH = (
    "enterpriseregistration.acme.example 没有 CNAME 记录（应指向 mdm.pomona.test）；它并未导致本次尝试失败："
    "设备于 2026-12-05 01:41 UTC 到达了「Authenticate」，因此「DNS 发现」正常。"
)
EN = "the device reached the profile download at 2026-12-05 01:41 UTC, so DNS discovery worked; " * 3


class TestWrapped:
    @pytest.mark.parametrize("cols", [24, 40, 57, 80])
    def test_fits_and_keeps_words(self, cols: int) -> None:
        """Every line fits (a CJK character counts two cells), later lines are indented, words stay whole."""
        for text in (EN, ZH):
            lines = wrapped(text, cols, indent=4, first="  -")
            assert all(cell_len(x) <= cols for x in lines), lines
            assert all(x.startswith("    ") for x in lines[1:]), lines
        en = wrapped(EN, cols, indent=4, first="  -")
        assert " ".join(x.strip() for x in en).removeprefix("- ") == EN.strip()

    @pytest.mark.parametrize("cols", range(24, 81))
    def test_chinese_punctuation(self, cols: int) -> None:
        """No line starts with closing punctuation (，。；）」) or ends with opening punctuation (（「)."""
        for line in wrapped(ZH, cols, indent=2):
            assert line.strip()[:1] not in "，。；：）」" and line[-1:] not in "（「", (cols, line)

    def test_a_word_longer_than_the_line_is_cut(self) -> None:
        """A single word wider than the line is cut rather than overflowing."""
        assert all(len(x) <= 10 for x in wrapped("x" * 35, 10))


class TestFacts:
    def test_labels_values_and_times(self) -> None:
        """Known keys get labels in the language, times read in UTC, flags are words, nested maps too."""
        facts = {
            "expected_target": "mdm.acme.example",
            "since": "2026-12-04T09:00:00+08:00",
            "enabled": False,
            "empty": None,
            "nested": {"uses": 1},
        }
        assert facts_text(facts, "en") == (
            "expected target: mdm.acme.example; since: 2026-12-04 01:00 UTC; enabled: no; nested: (uses: 1)"
        )
        zh = facts_text(facts, "zh-CN")
        assert "应指向：mdm.acme.example" in zh and "已启用：否" in zh and "；" in zh
        assert value_text(datetime(2026, 12, 4, 9, tzinfo=UTC)) == "2026-12-04 09:00 UTC"
        assert value_text([]) == "—"

    def test_evidence_kinds(self) -> None:
        """Each kind of evidence is one readable line: events like the log, the policy by its verdict."""
        event = {
            "kind": "event",
            "id": 7,
            "at": "2026-12-04T09:00:00+00:00",
            "step": "authenticate",
            "outcome": "failed",
            "reason": "USER_DISABLED",
            "upn": "ana@acme.example",
            "serial": "S1",
            "udid": "U1",
        }
        assert evidence_line(event, "en") == (
            "event: 2026-12-04 09:00 UTC authenticate failed USER_DISABLED ana@acme.example S1"
        )
        policy = {"kind": "policy", "decision": {"reason": None, "message": None, "allowed": True}}
        assert evidence_line(policy, "en") == "policy now: allowed"
        dns = {"kind": "dns", "name": "enterpriseenrollment.acme.example", "cname": None, "expected": "mdm"}
        assert evidence_line(dns, "en") == "DNS: name: enterpriseenrollment.acme.example; expected: mdm"
        for e in (event, policy, dns, {"kind": "reachability", "code": "DEVICE_UNRESPONSIVE", "udid": "U"}):
            for lang in ("en", "zh-CN"):
                line = evidence_line(e, lang)
                assert "{" not in line and "'" not in line and "None" not in line, line
