"""CLI: licences, users, groups, restrictions, corporate identifiers, blocking, the policy dry run."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from pomona.cli.main import _json, _out, _pomona, common, main
from pomona.cli.output import Column, dumps, emit_list
from pomona.domain.errors import InvalidInputError
from pomona.domain.policy import Access, RestrictionKind
from pomona.i18n import t
from pomona.presenters import corporate_json, restriction_json


# --- licences -------------------------------------------------------------------------------------
@main.group()
def licence() -> None:
    """Licence seats of a tenant."""


@licence.command("set")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--seats", type=int, required=True)
@common
def licence_set(tenant_name: str, seats: int) -> None:
    """Set how many licence seats the tenant has."""
    r = _pomona().policy.set_seats(tenant_name, seats)
    _out(r, t("cli.licence.set", tenant=tenant_name, **r))


@licence.command("show")
@click.option("--tenant", "tenant_name", required=True)
@common
def licence_show(tenant_name: str) -> None:
    """How many licence seats the tenant has, how many are assigned and how many are free."""
    r = _pomona().policy.seats(tenant_name)
    _out(r, t("cli.licence.show", tenant=tenant_name, **r))


def _licence(tenant_name: str, upn: str, assign: bool) -> None:
    r = _pomona().policy.licence(tenant_name, upn, assign=assign)
    _out(
        r,
        t(
            "cli.licence.assigned" if assign else "cli.licence.removed",
            upn=upn,
            free=r["free"],
            seats=r["seats"],
        ),
    )


@licence.command("assign")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", required=True)
@common
def licence_assign(tenant_name: str, upn: str) -> None:
    """Give a user a licence seat."""
    _licence(tenant_name, upn, True)


@licence.command("remove")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", required=True)
@common
def licence_remove(tenant_name: str, upn: str) -> None:
    """Take a user's licence seat back."""
    _licence(tenant_name, upn, False)


# --- users ----------------------------------------------------------------------------------------
def _user_group() -> click.Group:
    cmd = main.commands["user"]
    assert isinstance(cmd, click.Group)
    return cmd


@_user_group().command("delete")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--upn", required=True)
@common
def user_delete(tenant_name: str, upn: str) -> None:
    """Delete a user from the directory."""
    _pomona().policy.delete_user(tenant_name, upn)
    _out({"upn": upn, "deleted": True}, t("cli.user.deleted", upn=upn))


@_user_group().command("import")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common
def user_import(tenant_name: str, csv_file: Path) -> None:
    """Import users (and their groups) from CSV: upn,display_name,groups(;-separated),licensed,dem,mfa_required.

    Every row is checked first; if any row is wrong nothing is imported and each error is listed."""
    from pomona.services.directory_import import import_users

    p = _pomona()
    text = csv_file.read_text("utf-8-sig")
    progress = None
    if not _json() and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task(t("cli.progress.importing"), total=None)
        bar.start()

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

    try:
        report = import_users(p, tenant_name, text, progress=progress)
    finally:
        if progress is not None:
            bar.stop()
    data = {"imported": report.imported, "groups_created": report.groups_created, "errors": report.errors}
    if _json():
        click.echo(json.dumps(data, indent=2))
    else:
        if report.errors:
            for e in report.errors:
                click.echo(
                    t("cli.import.row_error", row=e["row"], value=e["value"], error=e["error"]), err=True
                )
            click.echo(t("cli.import.nothing", count=len(report.errors)), err=True)
        else:
            click.echo(t("cli.import.users_done", count=report.imported, groups=report.groups_created))
    if report.errors:
        sys.exit(1)


# --- groups ---------------------------------------------------------------------------------------
@main.group()
def group() -> None:
    """Groups of users (restrictions are assigned to groups)."""


@group.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("name")
@common
def group_create(tenant_name: str, name: str) -> None:
    """Create a group."""
    g = _pomona().policy.create_group(tenant_name, name)
    _out({"id": g.id, "name": g.name}, t("cli.group.created", name=g.name))


@group.command("add-member")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--group", "group_name", required=True)
@click.option("--user", "upn", required=True)
@common
def group_add_member(tenant_name: str, group_name: str, upn: str) -> None:
    """Add a user to a group."""
    _pomona().policy.add_member(tenant_name, group_name, upn)
    _out({"group": group_name, "upn": upn}, t("cli.group.member_added", upn=upn, group=group_name))


@group.command("remove-member")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--group", "group_name", required=True)
@click.option("--user", "upn", required=True)
@common
def group_remove_member(tenant_name: str, group_name: str, upn: str) -> None:
    """Remove a user from a group."""
    _pomona().policy.add_member(tenant_name, group_name, upn, remove=True)
    _out(
        {"group": group_name, "upn": upn, "removed": True},
        t("cli.group.member_removed", upn=upn, group=group_name),
    )


@group.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def group_list(tenant_name: str) -> None:
    """List groups with their member counts."""
    rows = [{"id": g.id, "name": g.name, "members": n} for g, n in _pomona().policy.list_groups(tenant_name)]
    emit_list(
        rows,
        [Column("id"), Column("name"), Column("members")],
        empty=t("cli.group.none", tenant=tenant_name),
    )


# --- restrictions ---------------------------------------------------------------------------------
@main.group()
def restriction() -> None:
    """Enrollment restrictions: device type (platform, ownership, OS range) and device limit."""


_ALLOW = click.Choice([a.value for a in Access])
_KIND = click.Choice([k.value for k in RestrictionKind])


def _settings(
    ios: str | None,
    ipados: str | None,
    personal: str | None,
    min_os: str | None,
    max_os: str | None,
    limit: int | None,
) -> dict[str, object]:
    return {
        "ios": ios,
        "ipados": ipados,
        "personal": personal,
        "min_os": min_os,
        "max_os": max_os,
        "limit": limit,
    }


@restriction.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--type", "type_", type=_KIND, required=True)
@click.option("--ios", type=_ALLOW)
@click.option("--ipados", type=_ALLOW)
@click.option("--personal", type=_ALLOW, help="Personally-owned devices (both platforms).")
@click.option("--min-os", default=None)
@click.option("--max-os", default=None)
@click.option("--limit", type=int, default=None, help="Device limit, 1 to 15.")
@click.option("--priority", type=int, required=True, help="1 is the highest.")
@click.option("--group", "groups", multiple=True, required=True, help="Assign to this group (repeatable).")
@click.option("--name", default=None)
@common
def restriction_create(
    tenant_name: str,
    type_: str,
    ios: str | None,
    ipados: str | None,
    personal: str | None,
    min_os: str | None,
    max_os: str | None,
    limit: int | None,
    priority: int,
    groups: tuple[str, ...],
    name: str | None,
) -> None:
    """Create a restriction assigned to groups, with a priority."""
    r = _pomona().policy.create_restriction(
        tenant_name,
        type_=type_,
        priority=priority,
        groups=list(groups),
        name=name,
        **_settings(ios, ipados, personal, min_os, max_os, limit),
    )
    _out(restriction_json(r), t("cli.restriction.created", name=r.name, priority=priority))


@restriction.command("edit")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--type", "type_", type=_KIND, required=True)
@click.option(
    "--default", "is_default", is_flag=True, help="Edit the built-in Default restriction of this type."
)
@click.option("--priority", type=int, default=None, help="Which restriction (by its priority).")
@click.option("--new-priority", type=int, default=None)
@click.option("--ios", type=_ALLOW)
@click.option("--ipados", type=_ALLOW)
@click.option("--personal", type=_ALLOW)
@click.option("--min-os", default=None, help="'' clears it.")
@click.option("--max-os", default=None, help="'' clears it.")
@click.option("--limit", type=int, default=None)
@click.option("--group", "groups", multiple=True, help="Also assign to this group.")
@common
def restriction_edit(
    tenant_name: str,
    type_: str,
    is_default: bool,
    priority: int | None,
    new_priority: int | None,
    ios: str | None,
    ipados: str | None,
    personal: str | None,
    min_os: str | None,
    max_os: str | None,
    limit: int | None,
    groups: tuple[str, ...],
) -> None:
    """Edit a restriction, the Default one included."""
    if is_default == (priority is not None):
        raise InvalidInputError("give exactly one of --default or --priority P")
    r = _pomona().policy.edit_restriction(
        tenant_name,
        type_=type_,
        default=is_default,
        priority=priority,
        new_priority=new_priority,
        groups=list(groups),
        **_settings(ios, ipados, personal, min_os, max_os, limit),
    )
    _out(restriction_json(r), t("cli.restriction.edited", name=r.name))


@restriction.command("delete")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--type", "type_", type=_KIND, required=True)
@click.option("--priority", type=int, required=True)
@common
def restriction_delete(tenant_name: str, type_: str, priority: int) -> None:
    """Delete a restriction (the Default cannot be deleted)."""
    _pomona().policy.delete_restriction(tenant_name, type_, priority)
    _out(
        {"deleted": True, "type": type_, "priority": priority},
        t("cli.restriction.deleted", priority=priority),
    )


@restriction.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def restriction_list(tenant_name: str) -> None:
    """List restrictions in the order they are considered."""
    rs, names = _pomona().policy.list_restrictions(tenant_name)
    rows = [restriction_json(r, names) for r in rs]
    emit_list(
        rows,
        [
            Column("id"),
            Column("name"),
            Column("type"),
            Column("priority", lambda r: t("cli.restriction.default") if r["default"] else r["priority"]),
            Column("groups"),
            Column("settings", restriction_settings),
        ],
        empty=t("cli.restriction.none", tenant=tenant_name),
    )


def restriction_settings(r: Mapping[str, Any]) -> str:
    """A restriction's settings on one line, as its options name them (--ios allow --min-os 16.0)."""
    if "limit" in r:
        return f"limit {r['limit']}"
    parts = [
        f"ios {r['ios']}",
        f"ipados {r['ipados']}",
        f"personal {r['ios_personal']}/{r['ipados_personal']}",
    ]
    for platform in ("ios", "ipados"):
        low, high = r[f"{platform}_min_os"], r[f"{platform}_max_os"]
        if low or high:
            parts.append(f"{platform} {low or ''}–{high or ''}")
    return ", ".join(parts)


# --- corporate identifiers ------------------------------------------------------------------------
@main.group()
def corporate() -> None:
    """Corporate device identifiers (serial numbers, IMEIs)."""


@corporate.command("import")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common
def corporate_import(tenant_name: str, csv_file: Path) -> None:
    """Import up to 5,000 identifiers (CSV: identifier[,description]). All rows or none."""
    r = _pomona().policy.import_corporate(tenant_name, csv_file.read_text("utf-8-sig"))
    if _json():
        click.echo(
            json.dumps({"imported": r.imported, "unchanged": r.unchanged, "errors": r.errors}, indent=2)
        )
    elif r.errors:
        for e in r.errors:
            click.echo(t("cli.import.row_error", row=e["row"], value=e["value"], error=e["error"]), err=True)
        click.echo(t("cli.import.nothing", count=len(r.errors)), err=True)
    else:
        click.echo(t("cli.corporate.imported", imported=r.imported, unchanged=r.unchanged))
    if r.errors:
        sys.exit(1)


@corporate.command("list")
@click.option("--tenant", "tenant_name", required=True)
@common
def corporate_list(tenant_name: str) -> None:
    """List identifiers with their state (not contacted, enrolled, failed)."""
    rows = [corporate_json(c) for c in _pomona().policy.list_corporate(tenant_name)]
    emit_list(
        rows,
        [
            Column("identifier", "value"),
            Column("kind"),
            Column("state", lambda r: t(f"cli.corporate.state.{r['state']}")),
            Column("description"),
            Column("last_contact", "last_contact_at", time=True),
        ],
        empty=t("cli.corporate.none", tenant=tenant_name),
    )


# --- devices: block, retire -----------------------------------------------------------------------
def _device_group() -> click.Group:
    cmd = main.commands["device"]
    assert isinstance(cmd, click.Group)
    return cmd


@_device_group().command("block")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--serial", default=None)
@click.option("--udid", default=None)
@click.option("--note", default=None)
@common
def device_block(tenant_name: str, serial: str | None, udid: str | None, note: str | None) -> None:
    """Block a device: it cannot enroll, and an enrolled one is told to unenroll."""
    n = _pomona().policy.block(tenant_name, serial=serial, udid=udid, note=note)
    _out(
        {"blocked": serial or udid, "ended_enrollments": n},
        t("cli.device.blocked", device=serial or udid, n=n),
    )


@_device_group().command("unblock")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--serial", default=None)
@click.option("--udid", default=None)
@common
def device_unblock(tenant_name: str, serial: str | None, udid: str | None) -> None:
    """Lift a block."""
    _pomona().policy.block(tenant_name, serial=serial, udid=udid, unblock=True)
    _out({"unblocked": serial or udid}, t("cli.device.unblocked", device=serial or udid))


@_device_group().command("retire")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--serial", default=None)
@click.option("--udid", default=None)
@common
def device_retire(tenant_name: str, serial: str | None, udid: str | None) -> None:
    """Retire a device's enrollment: frees a slot, and the device unenrolls at its next check-in."""
    n = _pomona().policy.retire(tenant_name, serial=serial, udid=udid)
    _out({"retired": serial or udid, "enrollments": n}, t("cli.device.retired", device=serial or udid))


# --- the dry run ----------------------------------------------------------------------------------
@main.group()
def policy() -> None:
    """The enrollment policy."""


@policy.command("explain")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", required=True)
@click.option("--serial", default=None)
@click.option("--udid", default=None)
@click.option("--os", "os_version", default=None, help="e.g. 17.4")
@click.option("--platform", default=None, help="iPhone, iPad, iOS, iPadOS or a product such as iPhone15,2")
@click.option("--lang", default=None, type=click.Choice(["en", "zh-CN"]))
@common
def policy_explain(
    tenant_name: str,
    upn: str,
    serial: str | None,
    udid: str | None,
    os_version: str | None,
    platform: str | None,
    lang: str | None,
) -> None:
    """What would happen if this user enrolled this device now: restrictions, count, ownership, verdict."""
    d = _pomona().policy.explain(
        tenant_name, upn, serial=serial, os_version=os_version, platform=platform, udid=udid
    )
    data = d.to_dict()
    if _json():
        click.echo(dumps(data))
        return
    for kind, a in (
        (RestrictionKind.PLATFORM, d.platform_restriction),
        (RestrictionKind.LIMIT, d.limit_restriction),
    ):
        if a is None:
            continue
        why = (
            t("cli.explain.default", lang=lang)
            if a.is_default
            else t("cli.explain.via", lang=lang, group=a.via_group, priority=a.priority)
        )
        click.echo(t(f"cli.explain.{kind}", lang=lang, name=a.name, why=why))
    click.echo(t("cli.explain.count", lang=lang, count=d.device_count, limit=d.device_limit))
    click.echo(
        t("cli.explain.ownership", lang=lang, ownership=t(f"cli.ownership.{d.ownership.value}", lang=lang))
    )
    if d.allowed:
        click.echo(t("cli.explain.allowed", lang=lang))
    else:
        click.echo(t("cli.explain.refused", lang=lang, reason=d.reason, message=d.message))
