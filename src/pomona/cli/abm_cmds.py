"""CLI: Apple Business Manager (ABM): the key pair, server tokens, device sync and the synced devices."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pomona.cli.main import _json, _out, _pomona, common, main
from pomona.i18n import t
from pomona.ports import AbmDeviceRecord
from pomona.presenters import abm_device_json

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _table(columns: list[str], rows: list[list[str]]) -> None:
    """A table for people in the CLI's one convention (cli/output.py), columns named ``cli.column.<name>``."""
    from pomona.cli.output import Column, table

    table([Column(c) for c in columns], [dict(zip(columns, r, strict=True)) for r in rows])


def _device_json(r: AbmDeviceRecord) -> dict[str, object]:
    return abm_device_json(
        r.device,
        deleted=r.deleted,
        token_id=r.token_id,
        first_seen_at=r.first_seen_at,
        updated_at=r.updated_at,
    )


@main.group()
def abm() -> None:
    """Apple Business Manager: server tokens and the devices ABM assigns to this server."""


@abm.command("keypair")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@common
def abm_keypair(tenant_name: str, out_path: Path | None) -> None:
    """The certificate to upload to ABM (made once per tenant; its key is kept encrypted)."""
    p = _pomona()
    cert_pem, made = p.abm.keypair(tenant_name)
    if out_path is not None:
        out_path.write_bytes(cert_pem)
    data = {"tenant": tenant_name, "made": made, "out": str(out_path or ""), "certificate": cert_pem.decode()}
    if _json():
        _out(data, "")
        return
    if out_path is None:
        click.echo(cert_pem.decode(), nl=False)
    key = "abm.cli.keypair_made" if made else "abm.cli.keypair_kept"
    click.echo(t(key, tenant=tenant_name, out=str(out_path or "-")), err=True)


@abm.group("token")
def abm_token() -> None:
    """ABM server tokens (.p7m): upload, list, remove."""


@abm_token.command("upload")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--file", "file_path", type=_FILE, required=True, help="The server token ABM gave (.p7m).")
@click.option("--name", default=None, help="A name for it (default: abm-1, abm-2, ...).")
@common
def abm_token_upload(tenant_name: str, file_path: Path, name: str | None) -> None:
    """Upload a server token downloaded from ABM (encrypted to the `abm keypair` certificate)."""
    p = _pomona()
    st = p.abm.upload_token(tenant_name, file_path.read_bytes(), name)
    _out(
        st.to_json(),
        t(
            "abm.cli.token_uploaded",
            tenant=tenant_name,
            name=st.info.name,
            expiry=f"{st.info.access_token_expiry:%Y-%m-%d}",
            days=st.days_left,
        ),
    )
    if st.state != "ok" and not _json():
        from pomona.cli.main import cli_warning

        cli_warning("DEP_TOKEN_EXPIRED", t("abm.cli.token_expiring", name=st.info.name, days=st.days_left))


@abm_token.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def abm_token_list(tenant_name: str) -> None:
    """The tenant's server tokens: expiry (warned 30 days ahead), last sync, last error."""
    p = _pomona()
    tokens = p.abm.tokens(tenant_name)
    if _json():
        _out([st.to_json() for st in tokens], "")
        return
    if not tokens:
        click.echo(t("abm.cli.no_tokens", tenant=tenant_name))
        return
    _table(
        ["name", "expires", "state", "last_sync", "last_error"],
        [
            [
                st.info.name,
                f"{st.info.access_token_expiry:%Y-%m-%d}",
                t(f"abm.cli.state.{st.state}", days=st.days_left),
                f"{st.info.last_sync_at:%Y-%m-%d %H:%M}" if st.info.last_sync_at else "-",
                st.info.last_error or "-",
            ]
            for st in tokens
        ],
    )


@abm_token.command("remove")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--name", required=True, help="The token's name (or id).")
@common
def abm_token_remove(tenant_name: str, name: str) -> None:
    """Forget a server token (its devices stay listed, as history)."""
    p = _pomona()
    info = p.abm.remove_token(tenant_name, name)
    _out({"tenant": tenant_name, "removed": info.name}, t("abm.cli.token_removed", name=info.name))


@abm.command("sync")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--full", is_flag=True, help="Fetch every device again instead of following the cursor.")
@click.option("--token", "token_name", default=None, help="Only this token (default: every token).")
@common
def abm_sync(tenant_name: str, full: bool, token_name: str | None) -> None:
    """Sync the devices ABM assigns to this server, now (the server also does it on a schedule)."""
    p = _pomona()
    if _json() or not sys.stderr.isatty():
        reports = p.abm.sync(tenant_name, full=full, token=token_name)
    else:
        reports = _sync_with_progress(p, tenant_name, full, token_name)
    lines = [
        t(
            "abm.cli.synced",
            token=r.token,
            kind=t("abm.cli.kind.full" if r.full else "abm.cli.kind.sync"),
            fetched=r.fetched,
            added=r.added,
            modified=r.modified,
            deleted=r.deleted,
        )
        for r in reports
    ]
    lines += [t("abm.cli.cursor_expired", token=r.token) for r in reports if r.cursor_expired]
    _out([r.to_json() for r in reports], "\n".join(lines) or t("abm.cli.no_tokens", tenant=tenant_name))


def _sync_with_progress(p: Any, tenant_name: str, full: bool, token_name: str | None) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pomona.services.abm import SyncProgress

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(t("abm.cli.progress", token="…"), total=None)

        def show(s: SyncProgress) -> None:
            bar.update(task, description=t("abm.cli.progress", token=s.token), completed=s.fetched)

        return p.abm.sync(tenant_name, full=full, token=token_name, progress=show)


@abm.command("devices")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--serial", default=None, help="One device, with its ABM timeline.")
@click.option("--limit", type=int, default=100, show_default=True)
@common
def abm_devices(tenant_name: str, serial: str | None, limit: int) -> None:
    """The devices ABM assigns to this server, as the last sync saw them."""
    p = _pomona()
    records = p.abm.devices(tenant_name, serial=serial, limit=limit)
    if serial is not None:
        if not records:
            from pomona.domain.errors import NotFoundError

            raise NotFoundError(f"ABM lists no device {serial!r} for this tenant", serial=serial)
        history = p.abm.history(tenant_name, serial)
        data = {**_device_json(records[0]), "history": [h.to_json() for h in history]}
        if _json():
            _out(data, "")
            return
        d = records[0].device
        click.echo(
            t(
                "abm.cli.device",
                serial=d.serial_number,
                model=d.model,
                family=d.device_family,
                os=d.os,
                status=d.profile_status,
                profile=d.profile_uuid or "-",
                deleted=t("abm.cli.deleted") if records[0].deleted else "",
            )
        )
        _table(
            ["time", "op", "profile_status", "profile"],
            [
                [f"{h.at:%Y-%m-%d %H:%M:%S}", h.op_type, h.profile_status, h.profile_uuid or "-"]
                for h in history
            ],
        )
        return
    if _json():
        _out([_device_json(r) for r in records], "")
        return
    if not records:
        click.echo(t("abm.cli.no_devices", tenant=tenant_name))
        return
    _table(
        ["serial", "model", "family", "os", "profile_status", "profile"],
        [
            [
                r.device.serial_number + (" †" if r.deleted else ""),
                r.device.model,
                r.device.device_family,
                r.device.os,
                r.device.profile_status,
                r.device.profile_uuid or "-",
            ]
            for r in records
        ],
    )
