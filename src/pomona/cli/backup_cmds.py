"""CLI: `pomona backup` and `pomona restore` (SQLite; PostgreSQL has pg_dump: docs/deploy.md).

The work is app.backup_database and app.restore_database (storage/backup.py explains both); here, the
options, a progress bar on a terminal (rich, imported only then), and the lines a person reads."""

from __future__ import annotations

from pathlib import Path

import click

from pomona.cli.main import _out, _settings, common, main
from pomona.cli.output import progress as _progress
from pomona.i18n import t


@main.command("backup")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The backup file to write (replaced if it exists; written beside it first, then renamed).",
)
@common
def backup(out: Path) -> None:
    """Copy the SQLite database to FILE, consistently, while the server runs.

    The server key that seals the secrets in it is NOT copied: keep the data folder's server.key (or
    POMONA_SECRET_KEY) somewhere else; a restore needs it. With PostgreSQL, use pg_dump (the command is
    printed, exit code 2)."""
    from pomona.app import backup_database

    with _progress(t("cli.backup.progress")) as progress:
        info, key_file = backup_database(_settings(), out, progress)
    keys = ", ".join(info.key_ids) or "—"
    data = {
        "out": str(info.path),
        "bytes": info.size,
        "revision": info.revision,
        "tenants": info.tenants,
        "key_ids": list(info.key_ids),
        "key_file": key_file,
    }
    text = t("cli.backup.done", out=info.path, kib=max(1, info.size // 1024), revision=info.revision)
    key_note = (
        t("cli.backup.key_file", key_id=keys, path=key_file)
        if key_file
        else t("cli.backup.key_env", key_id=keys)
    )
    _out(data, f"{text}\n{key_note}")


@main.command("restore")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The backup file made by `pomona backup`.",
)
@click.option("--force", is_flag=True, help="Replace a database that holds tenants.")
@common
def restore(source: Path, force: bool) -> None:
    """Replace the SQLite database with a backup (stop the server first).

    The backup is checked first: a Pomona database, made by this version or an older one (its migrations
    then run up), whose secrets open with this server's key (put the backup's server.key in the data
    folder first). A database that holds tenants is replaced only with --force."""
    from pomona.app import restore_database

    with _progress(t("cli.restore.progress")) as progress:
        report = restore_database(_settings(), source, force=force, progress=progress)
    data = {
        "from": str(report.source),
        "database": str(report.database),
        "from_revision": report.from_revision,
        "revision": report.to_revision,
        "tenants": report.tenants,
        "key_id": report.key_id,
    }
    _out(
        data,
        t(
            "cli.restore.done",
            source=report.source,
            database=report.database,
            tenants=report.tenants,
            before=report.from_revision or "—",
            after=report.to_revision,
        ),
    )
