"""docs/scaling.md's tables are what `bench/capacity.py --model docs/scaling-figures.json` prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from doc_blocks import shell_blocks

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scaling.md"
FIGURES = ROOT / "docs" / "scaling-figures.json"
ROW = re.compile(r"^  ([A-Za-z][^\d]*?[a-z)])\s{2,}([\d,.\s]+)$")


def script_output(*extra: str) -> str:
    """What the script prints for the saved figures."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "capacity.py"), "--model", str(FIGURES), *extra],
        cwd=ROOT / "bench",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return out


def model_output(*extra: str) -> str:
    """The PostgreSQL section of the script's model for the saved figures."""
    out = script_output(*extra)
    return out[out.index("Capacity model from the [postgres]") :]


def rows(text: str) -> dict[str, str]:
    """Label -> the figures of each row of a model table (whitespace normalised)."""
    found = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            found[m.group(1).strip()] = " ".join(m.group(2).split())
    return found


def doc_section(heading: str) -> str:
    text = DOC.read_text("utf-8")
    start = text.index(heading)
    return text[start : text.index("\n#", start + len(heading))]


@pytest.mark.parametrize(
    ("heading", "extra"),
    [
        ("### With a fleet-wide command within 60 minutes", ()),
        ("### With a fleet-wide command within 10 minutes", ("--burst-minutes", "10")),
    ],
)
def test_model_tables_match_the_script(heading: str, extra: tuple[str, ...]) -> None:
    """Every row the doc shows has the figures the script computes from docs/scaling-figures.json."""
    shown = rows(doc_section(heading))
    computed = rows(model_output(*extra))
    assert len(shown) >= 7, shown
    wrong = {k: (v, computed.get(k)) for k, v in shown.items() if computed.get(k) != v}
    assert not wrong, f"docs/scaling.md differs from bench/capacity.py --model (doc, script): {wrong}"


def measured(text: str) -> dict[str, list[str]]:
    """Operation -> its figures, in the measured tables (columns shown as "-" left out)."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"^((?:background|full|daily|idle|push|queue|command|weekly)\b.*?\))\s{2,}(.*)$", line)
        if m:
            found[m.group(1)] = [v for v in m.group(2).split() if v != "-"]
    return found


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_measured_tables_match_the_figures(db: str) -> None:
    """The per-operation figures the doc shows are the saved runs' medians (the doc leaves out the load)."""
    out = script_output()
    section = out[out.index(f"[{db}] median") : out.index(f"Capacity model from the [{db}]")]
    computed = {k: v[:-1] for k, v in measured(section).items()}  # the last column is the load
    text = DOC.read_text("utf-8")
    start = text.index("SQLite (statements" if db == "sqlite" else "PostgreSQL 15 (a private cluster")
    shown = measured(text[start : text.index("```", text.index("```text", start) + 7)])
    assert len(shown) >= 8, shown
    wrong = {k: (v, computed.get(k)) for k, v in shown.items() if computed.get(k) != v}
    assert not wrong, f"docs/scaling.md differs from bench/capacity.py --model (doc, script): {wrong}"


def test_the_doc_command_prints_its_tables() -> None:
    """docs/scaling.md's one shell block, run literally from the repository root, prints the figures and
    the model the page's tables are checked against."""
    (block,) = shell_blocks(DOC)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        ["bash", "-e", "-c", block.text], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == script_output()
