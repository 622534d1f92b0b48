"""The wheel ships every file the package reads at run time: each non-Python file under src/pomona is
matched by a pattern of pyproject's package-data (a template left out works from a checkout and breaks
an installed server)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pomona"


def test_every_data_file_is_package_data() -> None:
    """No template, catalogue, asset or migration file under src/pomona is missing from package-data."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "pomona"
    ]
    missing = []
    for path in PACKAGE.rglob("*"):
        if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        # setuptools globs do not cross "/": fnmatch's "*" does, so compare folder by folder.
        if not any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns):
            missing.append(rel)
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
