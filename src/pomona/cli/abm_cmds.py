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
    lines += [
        t("abm.cli.reconciled", assigned=r.assigned, failed=r.assign_failed)
        for r in reports
        if r.assigned or r.assign_failed
    ]
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
        elsewhere = p.abm.assigned_elsewhere(tenant_name, serial)
        data = {
            **_device_json(records[0]),
            "assigned_elsewhere": bool(elsewhere),  # DEP_DEVICE_ASSIGNED_ELSEWHERE, ABM's own answer
            "assigned_elsewhere_since": elsewhere[0][1].isoformat() if elsewhere else None,
            "history": [h.to_json() for h in history],
        }
        if _json():
            _out(data, "")
            return
        if elsewhere:
            from pomona.cli.main import cli_warning

            cli_warning(
                "DEP_DEVICE_ASSIGNED_ELSEWHERE",
                t("abm.cli.assigned_elsewhere", serial=serial, since=f"{elsewhere[0][1]:%Y-%m-%d %H:%M:%S}"),
            )
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
            ["time", "op", "profile_status", "profile", "reason"],
            [
                [
                    f"{h.at:%Y-%m-%d %H:%M:%S}",
                    h.op_type,
                    h.profile_status or "-",
                    h.profile_uuid or "-",
                    h.reason or "",
                ]
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


# --- ADE profiles and their assignment -----------------------------------------------------------------
_AUTH = click.Choice(["modern", "legacy", "none"])


def _items(options: tuple[str, ...], extra: tuple[str, ...]) -> list[str]:
    """``--skip A --skip B``, ``--skip A B`` and ``--skip A,B`` alike (the issue's ``--skip ITEM ...``)."""
    return [v.strip() for raw in (*options, *extra) for v in raw.split(",") if v.strip()]


def _show_findings(findings: list[Any]) -> None:
    """The linter's findings, one line each on stderr, in the command line's language."""
    from pomona.cli.main import cli_warning

    for f in findings:
        values = f["values"] if isinstance(f, dict) else dict(f.values)
        key = f["message_key"] if isinstance(f, dict) else f.message_key
        code = f["code"] if isinstance(f, dict) else (f.code.value if f.code else None)
        cli_warning(code, f"{t(key, **values)} ({f['field'] if isinstance(f, dict) else f.field})")


def _profile_text(report: Any, key: str) -> str:
    d = report.to_json()
    lines = [t(key, name=d["name"], tokens=", ".join(d["definitions"]) or "-")]
    if not d["definitions"]:
        lines.append(t("abm.cli.profile_undefined", name=d["name"]))
    if d["default"]:
        lines.append(
            t("abm.cli.profile_default", name=d["name"], token=d["token"] or t("abm.cli.every_token"))
        )
    if d["assigned"] or d["assign_failed"]:
        lines.append(t("abm.cli.reconciled", assigned=d["assigned"], failed=d["assign_failed"]))
    return "\n".join(lines)


def _lint_refusal(exc: Any) -> None:
    if not _json():
        _show_findings([f for f in exc.context.get("findings", []) if f["severity"] == "critical"])


@abm.group("profile")
def abm_profile() -> None:
    """ADE enrollment profiles: create, edit, list (each defined at ABM under the tenant's tokens)."""


@abm_profile.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--name", required=True)
@click.option(
    "--auth", type=_AUTH, default="modern", show_default=True, help="User sign-in in Setup Assistant."
)
@click.option("--await-configured", is_flag=True, help="Hold the device in Setup Assistant until released.")
@click.option("--supervised/--no-supervised", default=True, show_default=True)
@click.option("--removable/--no-removable", default=False, show_default=True)
@click.option("--skip", multiple=True, help="A Setup Assistant pane to skip (Apple's SkipKeys); repeatable.")
@click.option("--default", "is_default", is_flag=True, help="The default profile of the token(s).")
@click.option("--token", "token_name", default=None, help="Only under this token (default: every token).")
@click.argument("more_skip", nargs=-1)
@common
def abm_profile_create(
    tenant_name: str,
    name: str,
    auth: str,
    await_configured: bool,
    supervised: bool,
    removable: bool,
    skip: tuple[str, ...],
    is_default: bool,
    token_name: str | None,
    more_skip: tuple[str, ...],
) -> None:
    """Lint an ADE profile, define it at ABM and keep it (`--default`: assigned to every new device)."""
    from pomona.domain.ade_profile import AuthMode
    from pomona.domain.errors import AdeProfileInvalidError

    p = _pomona()
    try:
        report = p.abm.create_profile(
            tenant_name,
            name,
            auth=AuthMode(auth),
            await_configured=await_configured,
            supervised=supervised,
            removable=removable,
            skip=_items(skip, more_skip),
            default=is_default,
            token=token_name,
        )
    except AdeProfileInvalidError as exc:
        _lint_refusal(exc)
        raise
    if not _json():
        _show_findings(report.findings)
    _out(report.to_json(), _profile_text(report, "abm.cli.profile_created"))


@abm_profile.command("edit")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--name", default=None, help="The profile (may be left out when the tenant has one).")
@click.option("--auth", type=_AUTH, default=None)
@click.option("--await-configured/--no-await-configured", default=None)
@click.option("--supervised/--no-supervised", default=None)
@click.option("--removable/--no-removable", default=None)
@click.option("--skip", multiple=True, help="The panes to skip, replacing the profile's; repeatable.")
@click.option("--default/--no-default", "is_default", default=None)
@click.option("--rename", default=None, help="A new name for the profile.")
@click.option("--token", "token_name", default=None, help="Only under this token from now on.")
@click.option("--every-token", is_flag=True, help="Under every token of the tenant from now on.")
@click.argument("more_skip", nargs=-1)
@common
def abm_profile_edit(
    tenant_name: str,
    name: str | None,
    auth: str | None,
    await_configured: bool | None,
    supervised: bool | None,
    removable: bool | None,
    skip: tuple[str, ...],
    is_default: bool | None,
    rename: str | None,
    token_name: str | None,
    every_token: bool,
    more_skip: tuple[str, ...],
) -> None:
    """Change an ADE profile: it is defined at ABM again and assigned again to its devices."""
    from pomona.domain.ade_profile import AuthMode
    from pomona.domain.errors import AdeProfileInvalidError
    from pomona.services.abm import EVERY_TOKEN

    if token_name is not None and every_token:
        from pomona.domain.errors import InvalidInputError
        from pomona.i18n import msg

        raise InvalidInputError(msg("abm.error.token_or_every"), field="token")
    p = _pomona()
    items = _items(skip, more_skip)
    try:
        report = p.abm.edit_profile(
            tenant_name,
            name,
            auth=None if auth is None else AuthMode(auth),
            await_configured=await_configured,
            supervised=supervised,
            removable=removable,
            skip=items or None,
            default=is_default,
            rename=rename,
            token=EVERY_TOKEN if every_token else token_name,
        )
    except AdeProfileInvalidError as exc:
        _lint_refusal(exc)
        raise
    if not _json():
        _show_findings(report.findings)
    _out(report.to_json(), _profile_text(report, "abm.cli.profile_edited"))


@abm_profile.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def abm_profile_list(tenant_name: str) -> None:
    """The tenant's ADE profiles: their settings, default, and Apple's UUID under each token."""
    from pomona.cli.output import Column, emit_list

    p = _pomona()
    rows = [v.to_json() for v in p.abm.profiles(tenant_name)]
    for r in rows:
        s = r["settings"]
        assert isinstance(s, dict)
        r["auth"] = s.get("auth")
        r["flags"] = " ".join(
            k for k in ("is_supervised", "is_mdm_removable", "await_device_configured") if s.get(k)
        )
        r["defined"] = ", ".join(f"{k}: {v}" for k, v in r["definitions"].items()) or "-"
    emit_list(
        rows,
        [
            Column("name"),
            Column("default", lambda r: "✓" if r["default"] else ""),
            Column("auth"),
            Column("settings", "flags"),
            Column("profile", "defined"),
        ],
        empty=t("abm.cli.no_profiles", tenant=tenant_name),
    )


@abm.command("assign")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--profile", "profile_name", required=True)
@click.option("--serial", "serials", multiple=True, required=True, help="A device's serial; repeatable.")
@click.argument("more_serials", nargs=-1)
@common
def abm_assign(
    tenant_name: str, profile_name: str, serials: tuple[str, ...], more_serials: tuple[str, ...]
) -> None:
    """Assign an ADE profile to devices; Pomona keeps it assigned (every sync re-assigns what differs)."""
    from pomona.cli.output import Column, emit_list

    p = _pomona()
    report = p.abm.assign(tenant_name, profile_name, _items(serials, more_serials))
    rows = [{"serial": s, "answer": a} for s, a in report.answers.items()]
    emit_list(rows, [Column("serial"), Column("status", "answer")], empty="")
    refused = [s for s, a in report.answers.items() if a not in ("SUCCESS", "pending")]
    if refused:
        if not _json():
            from pomona.cli.main import cli_warning

            cli_warning("DEP_PROFILE_NOT_ASSIGNED", t("abm.cli.assign_refused", serials=", ".join(refused)))
        sys.exit(1)


@abm.command("release")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--serial", required=True, help="The serial of a device ABM lists, enrolled and held.")
@common
def abm_release(tenant_name: str, serial: str) -> None:
    """Release a device held at Setup Assistant (await_device_configured): queue DeviceConfigured."""
    p = _pomona()
    if not p.abm.devices(tenant_name, serial=serial):
        from pomona.domain.errors import NotFoundError

        raise NotFoundError(f"ABM lists no device {serial!r} for this tenant", serial=serial)
    queued = p.commands.release(tenant_name, serial)
    _out(
        {
            "tenant": tenant_name,
            "serial": serial,
            "request_type": queued.request_type,
            "command_uuid": queued.command_uuid,
        },
        t("abm.cli.released", serial=serial, command=queued.command_uuid),
    )


# --- assignment rules ----------------------------------------------------------------------------------
@abm.group("rule")
def abm_rule() -> None:
    """Assignment rules: devices whose model, family or order number match get a profile."""


@abm_rule.command("add")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--profile", "profile_name", required=True)
@click.option("--model", default=None, help="Apple's model name, e.g. 'iPad Air' (* and ? match anything).")
@click.option("--family", default=None, help="Apple's device family: iPhone, iPad, Mac, AppleTV, ...")
@click.option("--order", default=None, help="The order number the devices were bought with.")
@click.option("--priority", type=int, default=None, help="Lower is tried first (default: after the others).")
@common
def abm_rule_add(
    tenant_name: str,
    profile_name: str,
    model: str | None,
    family: str | None,
    order: str | None,
    priority: int | None,
) -> None:
    """Give a profile to the devices that match (after explicit assignments, before the default)."""
    given = [(f, v) for f, v in (("model", model), ("device_family", family), ("order_number", order)) if v]
    if len(given) != 1:
        from pomona.domain.errors import InvalidInputError
        from pomona.i18n import msg

        raise InvalidInputError(msg("abm.error.rule_one_field"))
    p = _pomona()
    ((field_name, value),) = given
    view, done = p.abm.add_rule(tenant_name, profile_name, field_name, value, priority=priority)
    d = view.to_json()
    lines = [t("abm.cli.rule_added", **{k: d[k] for k in ("id", "field", "value", "profile", "priority")})]
    if done.assigned or done.failed:
        lines.append(t("abm.cli.reconciled", assigned=done.assigned, failed=done.failed))
    _out({**d, "assigned": done.assigned, "assign_failed": done.failed}, "\n".join(lines))


@abm_rule.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def abm_rule_list(tenant_name: str) -> None:
    """The tenant's assignment rules, in the order they are tried."""
    from pomona.cli.output import Column, emit_list

    p = _pomona()
    emit_list(
        [v.to_json() for v in p.abm.rules(tenant_name)],
        [Column("priority"), Column("field"), Column("value"), Column("profile"), Column("id")],
        empty=t("abm.cli.no_rules", tenant=tenant_name),
    )


@abm_rule.command("remove")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--id", "rule_id", required=True, help="The rule's id (pomona abm rule list).")
@common
def abm_rule_remove(tenant_name: str, rule_id: str) -> None:
    """Forget a rule: its devices get the token's default profile at this reconciliation."""
    p = _pomona()
    view, done = p.abm.remove_rule(tenant_name, rule_id)
    lines = [t("abm.cli.rule_removed", id=view.rule.id, profile=view.profile)]
    if done.assigned or done.failed:
        lines.append(t("abm.cli.reconciled", assigned=done.assigned, failed=done.failed))
    _out(
        {**view.to_json(), "removed": True, "assigned": done.assigned, "assign_failed": done.failed},
        "\n".join(lines),
    )
