"""ReasonCode is exactly the contract: shared/REASONS.md plus docs/REASONS.additions.md."""

from __future__ import annotations

import re
from pathlib import Path

from pomona.domain.reasons import ReasonCode

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| ([A-Z][A-Z0-9_]+) \|", re.M)


def codes(path: Path) -> set[str]:
    return set(ROW.findall(path.read_text("utf-8")))


class TestReasonContract:
    def test_enum_matches_the_documents(self, shared: Path) -> None:
        """Every documented code is in the enum, and the enum has nothing undocumented."""
        documented = codes(shared / "REASONS.md") | codes(ROOT / "docs" / "REASONS.additions.md")
        assert {c.value for c in ReasonCode} == documented

    def test_additions_do_not_shadow_shared(self, shared: Path) -> None:
        """Pomona's additions are new codes, not redefinitions."""
        assert not codes(shared / "REASONS.md") & codes(ROOT / "docs" / "REASONS.additions.md")

    def test_source_uses_only_known_codes(self) -> None:
        """Every UPPER_SNAKE string compared as a reason in src/ is a ReasonCode."""
        known = {c.value for c in ReasonCode}
        pattern = re.compile(r'reason(?:=|\s*==\s*|,\s*)"([A-Z][A-Z0-9_]{3,})"')
        used = set()
        for path in (ROOT / "src" / "pomona").rglob("*.py"):
            used |= set(pattern.findall(path.read_text("utf-8")))
        assert used <= known, used - known
