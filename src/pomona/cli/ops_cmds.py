"""CLI: operations: `pomona doctor`, the deployment self-check (services/doctor.py, app.run_doctor)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pomona.cli.main import _settings, common, main
from pomona.i18n import t

if TYPE_CHECKING:
    from pomona.services.doctor import CheckLine

#: Facts too long or too repetitive for the table (they stay in --json).
_HIDDEN = {"url", "not_after", "threshold_days", "local", "topic", "apple_id"}


@main.command()
@click.option(
    "--public-url",
    default=None,
    help="Check this address instead of the recorded public URL (pomona server show).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Trust these CA certificates (PEM) instead of the system's, as devices given that CA would.",
)
@common
def doctor(public_url: str | None, ca_file: Path | None) -> None:
    """Check the deployment, one line per check: the data folder, the database and its migrations,
    the public URL and its TLS certificate as a device sees it, the clock, and each tenant's push
    certificate and DNS. Exit code 1 when a check fails, 2 on bad input (docs/operations.md)."""
    import sys

    from pomona.app import run_doctor
    from pomona.domain.errors import InvalidInputError
    from pomona.services.installation import validate_public_url

    if ca_file is not None and not ca_file.is_file():
        raise InvalidInputError(f"--ca-file {ca_file}: no such file")
    url = None if public_url is None else validate_public_url(public_url)
    lines = run_doctor(_settings(), public_url=url, ca_file=ca_file)
    failed = any(x.status == "fail" for x in lines)
    if click.get_current_context().obj["json"]:
        click.echo(json.dumps({"ok": not failed, "checks": [x.to_json() for x in lines]}, indent=2))
    else:
        _table(lines)
    if failed:
        sys.exit(1)


def _detail(line: CheckLine) -> str:
    from pomona import knowledge
    from pomona.i18n import detect_lang

    parts = [] if line.note is None else [t(line.note, **line.args)]
    for f in line.findings:
        facts = ", ".join(f"{k}={v}" for k, v in f.facts.items() if k not in _HIDDEN and v is not None)
        title = knowledge.text_for(f.code.value, detect_lang()).title
        parts.append(f"{f.code.value}: {title}" + (f" ({facts})" if facts else ""))
    return "\n".join(parts)


def _table(lines: list[CheckLine]) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"ok": "green", "warning": "yellow", "fail": "red", "skipped": "dim"}
    table = Table()
    for col in ("check", "subject", "status", "detail"):
        table.add_column(t(f"cli.column.{col}"), overflow="fold")
    for x in lines:
        status = f"[{colour[x.status]}]{t(f'cli.doctor.status.{x.status}')}[/]"
        table.add_row(t(f"cli.doctor.check.{x.check}"), x.subject, status, _detail(x))
    Console().print(table)
