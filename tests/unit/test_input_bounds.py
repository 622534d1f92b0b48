"""The pure parsers that read what anyone may send: the User-Agent and the UPN, bounded by construction."""

from __future__ import annotations

import re

import pytest

from pomona.domain.models import MAX_UPN, is_upn
from pomona.domain.policy import MAX_USER_AGENT, Platform, platform_of_user_agent
from pomona.http.portal import pick_lang

# The pattern this module replaced: the reference the new parser must agree with on short inputs.
_OLD_UA = re.compile(r"\((iPhone|iPad|iPod)[^)]*?OS (\d+)[_.](\d+)(?:[_.](\d+))?")

SAMPLES = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15",
    "Mozilla/5.0 (iPod touch; CPU iPhone OS 12_5_7 like Mac OS X)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    "(iPhone (iPad OS 17.1)",
    "(iPhone) (iPad; OS 9_3)",
    "(iPhoneOS 1_2)",
    "",
]


def _old(ua: str) -> tuple[Platform | None, str | None]:
    m = _OLD_UA.search(ua)
    if not m:
        return None, None
    return (Platform.IPADOS if m.group(1) == "iPad" else Platform.IOS), ".".join(
        x for x in m.group(2, 3, 4) if x is not None
    )


class TestUserAgent:
    @pytest.mark.parametrize("ua", SAMPLES)
    def test_agrees_with_the_old_pattern(self, ua: str) -> None:
        """On real (short) User-Agents the linear parser finds what the old pattern found."""
        assert platform_of_user_agent(ua) == _old(ua)

    def test_reads_only_a_bounded_prefix(self) -> None:
        """What comes after the first MAX_USER_AGENT characters is not read at all."""
        ua = "x" * MAX_USER_AGENT + SAMPLES[0]
        assert platform_of_user_agent(ua) == (None, None)
        assert platform_of_user_agent(SAMPLES[0] + "x" * 100_000) == (Platform.IOS, "17.4.1")

    def test_attack_shape_finds_nothing(self) -> None:
        """Many unclosed '(iPhone' groups (the quadratic shape) find no platform."""
        assert platform_of_user_agent("(iPhone" * 10_000) == (None, None)


class TestUpn:
    @pytest.mark.parametrize("upn", ["ana@acme.example", "a.b+c@sub.acme.example", "名@例子.中国"])
    def test_accepted(self, upn: str) -> None:
        """Ordinary UPNs are accepted."""
        assert is_upn(upn)

    @pytest.mark.parametrize(
        "upn",
        [
            "",
            "ana",
            "@acme.example",
            "ana@",
            "ana@acme",
            "ana@.example",
            "ana@acme.",
            "a@b@acme.example",
            "a b@acme.example",
            "a\x00b@acme.example",
            "a\x7fb@acme.example",
            "a" * MAX_UPN + "@acme.example",
            "a@" + "." * 100_000 + " ",
        ],
    )
    def test_refused(self, upn: str) -> None:
        """Missing parts, white space, control characters and over-long names are refused."""
        assert not is_upn(upn)


class TestAcceptLanguage:
    @pytest.mark.parametrize(
        ("header", "lang"),
        [
            ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
            ("en-US,en;q=0.9", "en"),
            ("fr, zh;q=0.5", "zh-CN"),
            ("en;q=abc, zh;q=0.1", "zh-CN"),
            ("en;q=0", "en"),
            (None, "en"),
        ],
    )
    def test_picks(self, header: str | None, lang: str) -> None:
        """The best language we have by q value, English by default."""
        assert pick_lang(None, header) == lang

    def test_reads_only_a_bounded_prefix(self) -> None:
        """A megabyte of entries is cut: what lies past the bound is not read."""
        assert pick_lang(None, "fr," * 500_000 + "zh") == "en"
