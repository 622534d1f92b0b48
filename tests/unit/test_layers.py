"""The dependency direction protocol <- domain <- services <- {http, cli}, checked on the source of every
package and module under src/pomona (a new one must be given its place here before its first import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pomona"

# Layers, bottom up. Each entry: the pomona packages/modules it may import (itself always).
PURE = {"protocol", "domain"}
CORE = PURE | {"ports"}
ALLOWED: dict[str, set[str]] = {
    # wire formats and pure rules
    "protocol": set(),
    "domain": {"protocol"},
    "ports": {"domain", "protocol"},
    # reference data and translations
    "i18n": set(),
    "knowledge": {"domain"},
    # one JSON shape per object, for every adapter
    "presenters": PURE | {"i18n"},  # names and messages rendered in the reader's language
    # cross-cutting set-up, read by the composition root and the CLI
    # the push queue's defaults and the SQLite URL, lazily; its refusals carry catalogue messages
    "settings": {"domain", "services", "storage", "i18n"},
    "logs": {"services", "settings"},
    # use cases over the ports
    "services": CORE | {"knowledge", "i18n"},
    # implementations of the ports: never a service, an adapter or each other's internals
    "storage": CORE | {"i18n"},  # its refusals carry catalogue messages (pomona.i18n.msg)
    "pki": CORE | {"i18n"},  # its refusals carry catalogue messages (pomona.i18n.msg)
    "push": CORE | {"pki"},
    "net": CORE,
    # the Metrics port on prometheus-client (the composition root picks it)
    "metrics": CORE,
    # adapters: services and presenters, never a backend, never each other, never the composition root
    "http": CORE | {"services", "presenters", "i18n", "knowledge"},
    # the CLI picks backends (through app), runs the emulators and the virtual device; never http.
    # heap: `serve` and `demo` start server processes and set SQLite's page slab before importing app
    # (which starts SQLite)
    "cli": CORE
    | {
        "services",
        "presenters",
        "i18n",
        "knowledge",
        "app",
        "fastread",
        "settings",
        "logs",
        "testing",
        "pki",
        "push",
        "metrics",
        "heap",
    },
    # public test helpers: the virtual device, emulators, in-memory backends, a frozen clock
    "testing": CORE | {"pki", "push", "storage", "services", "i18n"},
    # the composition root builds everything
    "app": {
        "protocol",
        "domain",
        "ports",
        "services",
        "storage",
        "pki",
        "push",
        "net",
        "metrics",
        "http",
        "settings",
        "logs",
        "presenters",
        "i18n",
        "knowledge",
        "heap",
    },
    # the composition root's read-only fast path for the CLI's read commands (raw driver, no services)
    "fastread": {"domain", "storage", "pki", "settings"},
    # the server's ASGI entry (uvicorn's factory): the composition root plus logging and settings
    "asgi": {"app", "http", "logs", "settings", "i18n", "heap"},
    # the server process's C heap (glibc malloc: arenas bounded, free pages handed back; SQLite's page
    # slab): a leaf
    "heap": set(),
    "__main__": {"cli"},
    "__init__": set(),
}


def unit_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


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


def units() -> list[str]:
    return sorted({unit_of(p) for p in SRC.rglob("*.py") if "__pycache__" not in p.parts})


class TestLayers:
    def test_every_package_has_a_place(self) -> None:
        """Every package and top-level module under src/pomona is listed with what it may import."""
        assert set(units()) <= set(ALLOWED), set(units()) - set(ALLOWED)

    @pytest.mark.parametrize("unit", units())
    def test_unit_imports_only_what_it_may(self, unit: str) -> None:
        """Each package imports only the layers beneath it; only app.py and cli/ pick backends."""
        bad = {}
        for path in SRC.rglob("*.py"):
            if unit_of(path) != unit:
                continue
            extra = pomona_imports(path) - ALLOWED[unit] - {unit}
            if extra:
                bad[str(path.relative_to(SRC))] = sorted(extra)
        assert not bad, f"layer violations: {bad}"

    def test_the_rules_point_down(self) -> None:
        """No two layers may import each other (the table itself has no cycle of length two)."""
        pairs = {(a, b) for a, allowed in ALLOWED.items() for b in allowed if a in ALLOWED.get(b, set())}
        assert not pairs, pairs
