"""CLI: `pomona prune`: delete the history older than the retention now (services/retention.py), or count
it with --dry-run. The server does the same every hour when a retention is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pomona.cli.main import _pomona, common, main
from pomona.cli.output import Column, dumps, is_json, progress, table, when
from pomona.domain.errors import InvalidInputError
from pomona.i18n import msg, t

if TYPE_CHECKING:
    from datetime import datetime

    from pomona.services.retention import PruneReport


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--event-days",
    type=int,
    default=None,
    help="Keep this many days of events for this run (default: POMONA_EVENT_RETENTION_DAYS; 0 keeps all).",
)
@click.option(
    "--command-days",
    type=int,
    default=None,
    help="Keep this many days of answered commands for this run (default: POMONA_COMMAND_RETENTION_DAYS; "
    "0 keeps all).",
)
@common
def prune(dry_run: bool, event_days: int | None, command_days: int | None) -> None:
    """Delete events and answered commands older than the retention, per tenant, in batches.

    The retention is POMONA_EVENT_RETENTION_DAYS and POMONA_COMMAND_RETENTION_DAYS (0: keep forever; else
    at least 7 days), or --event-days and --command-days for this run. Commands still waiting for the
    device (Queued, Sent, NotNow) are never deleted. Prints how many events and commands each tenant lost
    (or, with --dry-run, would lose). Exit code 2 when no retention is set or a number of days is too
    small."""
    from dataclasses import replace

    from pomona.services.retention import check_days

    for option, days in (("--event-days", event_days), ("--command-days", command_days)):
        if days is not None:
            check_days(days, option)
    p = _pomona()
    try:
        service = p.retention
        keep = service.retention
        if event_days is not None:
            keep = replace(keep, event_days=event_days)
        if command_days is not None:
            keep = replace(keep, command_days=command_days)
        if not keep.is_on():
            raise InvalidInputError(msg("error.retention.off"))
        with progress(t("cli.prune.progress")) as bar:
            report = service.prune(retention=keep, dry_run=dry_run, progress=bar)
    finally:
        p.close()
    if is_json():
        click.echo(dumps(report.to_json()))
        return
    _print(report, keep.event_days, keep.command_days)


def _line(kind: str, days: int, before: datetime | None, count: int, dry_run: bool) -> str:
    if before is None:
        return t(f"cli.prune.{kind}.kept")
    state = "would" if dry_run else "deleted"
    return t(f"cli.prune.{kind}.{state}", days=days, before=when(before), count=f"{count:,}")


def _print(report: PruneReport, event_days: int, command_days: int) -> None:
    click.echo(_line("events", event_days, report.events_before, report.events, report.dry_run))
    click.echo(_line("commands", command_days, report.commands_before, report.commands, report.dry_run))
    if not report.tenants:
        click.echo(t("cli.prune.nothing"))
        return
    rows = [
        {"tenant": r.tenant, "events": f"{r.events:,}", "commands": f"{r.commands:,}"} for r in report.tenants
    ]
    table([Column("tenant"), Column("events"), Column("commands")], rows)
