"""The diagnosis's notes (what each checker saw) exist in English and Chinese, with the same fields."""

from __future__ import annotations

import re
import string
from pathlib import Path

from pomona.i18n import catalogue
from pomona.services.diagnose.model import note

SRC = Path(__file__).resolve().parents[2] / "src" / "pomona" / "services" / "diagnose"


def used_keys() -> set[str]:
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    keys = set(re.findall(r'note\(\s*"([a-z_.]+)"', text))
    keys |= set(re.findall(r'note\("([a-z_]+)" if', text)) | set(re.findall(r'else "([a-z_]+)"', text))
    return keys


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class TestNotes:
    def test_every_note_has_both_languages_with_the_same_fields(self) -> None:
        """Each note a checker writes has an en and a zh-CN text naming the same values."""
        keys = used_keys()
        assert len(keys) > 40
        for key in keys:
            en = catalogue("en").get(f"diagnose.note.{key}")
            zh = catalogue("zh-CN").get(f"diagnose.note.{key}")
            assert en and zh, key
            assert fields(en) == fields(zh), key

    def test_steps_and_clauses_render_in_the_language(self) -> None:
        """A step named inside a note, and clauses joined with +, come out in the note's language."""
        n = note(
            "reached", step=note("step.profile"), at="2026-12-04 09:00 UTC", worked=note("step.discovery")
        )
        n += note("did_not_stop", why=note("nothing_proven"))
        assert n.text("en") == (
            "the device reached the profile download at 2026-12-04 09:00 UTC, so DNS discovery worked; "
            "it did not stop this attempt: no cause could be proven from the server's side"
        )
        assert str(n) == n.text("en")
        zh = n.text("zh-CN")
        assert "描述文件下载" in zh and "DNS 发现" in zh and "；" in zh and zh.isascii() is False
