"""The dependency direction protocol <- domain <- services <- {http, cli}, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pomona"

# package -> the pomona packages it may import
ALLOWED = {
    "protocol": {"protocol"},
    "domain": {"domain", "protocol"},
    "services": {"services", "domain", "protocol", "ports", "knowledge", "i18n"},
    "knowledge": {"knowledge", "domain"},
    "storage": {"storage", "domain", "ports"},
    "pki": {"pki", "protocol"},
}


def pomona_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pomona" and len(parts) > 1:
                found.add(parts[1])
    return found


class TestLayers:
    @pytest.mark.parametrize("package", sorted(ALLOWED))
    def test_package_imports_only_what_it_may(self, package: str) -> None:
        """Each layer imports only the layers beneath it; only app.py and cli/ pick backends."""
        bad = {}
        for path in (SRC / package).rglob("*.py"):
            extra = pomona_imports(path) - ALLOWED[package]
            if extra:
                bad[str(path.relative_to(SRC))] = sorted(extra)
        assert not bad, f"layer violations: {bad}"

    def test_ports_import_only_domain(self) -> None:
        """ports.py names contracts in domain terms only."""
        assert pomona_imports(SRC / "ports.py") <= {"domain"}
