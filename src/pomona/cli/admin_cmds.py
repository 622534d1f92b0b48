"""CLI: console admin accounts (issue 13): `pomona admin create|list|disable|enable|reset-password`."""

from __future__ import annotations

import sys

import click

from pomona.cli.main import _json, _out, _pomona, common, main
from pomona.domain.errors import InvalidInputError
from pomona.i18n import t


@main.group("admin")
def admin_group() -> None:
    """Console accounts: the server operator, tenant admins and helpdesk staff."""


def _password_from_stdin() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidInputError("no password on standard input")
    return line


def _account_json(a: object, tenant: str | None) -> dict[str, object]:
    from pomona.ports import AdminAccount

    assert isinstance(a, AdminAccount)
    return {
        "id": a.id,
        "email": a.email,
        "role": a.role,
        "tenant": tenant,
        "enabled": a.enabled,
        "totp": a.totp_secret is not None,
        "totp_pending": a.totp_secret == "-",  # must set up an authenticator at its next sign-in
        "created_at": a.created_at.isoformat(),
        "last_sign_in_at": None if a.last_sign_in_at is None else a.last_sign_in_at.isoformat(),
    }


@admin_group.command("create")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, required=True, help="Read the password from standard input.")
@click.option("--tenant", "tenant_name", default=None, help="The tenant of an admin or helpdesk account.")
@click.option("--role", type=click.Choice(["operator", "admin", "helpdesk"]), required=True)
@click.option("--totp", is_flag=True, help="Require a TOTP code at sign-in; prints the secret to enrol.")
@common
def admin_create(email: str, password_stdin: bool, tenant_name: str | None, role: str, totp: bool) -> None:
    """Create a console account."""
    from pomona.services.portal import totp_uri

    password = _password_from_stdin()
    p = _pomona()
    try:
        a = p.console.create_account(email, password, role, tenant_name, totp=totp)
    finally:
        p.close()
    data = _account_json(a, tenant_name)
    text = t("cli.admin.created", email=a.email, role=a.role, tenant=tenant_name or "*")
    if a.totp_secret:
        data["totp_uri"] = totp_uri(a.totp_secret, a.email, "Pomona console")
        text += "\n" + t("cli.admin.totp", uri=data["totp_uri"])
    _out(data, text)


@admin_group.command("list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's accounts.")
@common
def admin_list(tenant_name: str | None) -> None:
    """List console accounts."""
    p = _pomona()
    try:
        rows = p.console.list_accounts(tenant_name)
    finally:
        p.close()
    data = [_account_json(a, name) for a, name in rows]
    if _json():
        _out(data, "")
        return
    if not data:
        click.echo(t("cli.admin.none"))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("email", "role", "tenant", "enabled", "totp", "last_sign_in_at"):
        table.add_column(t(f"cli.admin.column.{col}"), no_wrap=col == "email")
    yes, no = t("cli.user.yes"), t("cli.admin.no")
    for d in data:
        table.add_row(
            str(d["email"]),
            t(f"console.role.{d['role']}"),
            str(d["tenant"] or "*"),
            yes if d["enabled"] else no,
            yes if d["totp"] else no,
            str(d["last_sign_in_at"] or "-")[:16].replace("T", " "),
        )
    Console().print(table)


@admin_group.command("disable")
@click.argument("email")
@common
def admin_disable(email: str) -> None:
    """Disable a console account: its sessions end at once."""
    p = _pomona()
    try:
        a = p.console.set_enabled(email, False)
    finally:
        p.close()
    _out(_account_json(a, None), t("cli.admin.disabled", email=a.email))


@admin_group.command("enable")
@click.argument("email")
@common
def admin_enable(email: str) -> None:
    """Enable a console account again."""
    p = _pomona()
    try:
        a = p.console.set_enabled(email, True)
    finally:
        p.close()
    _out(_account_json(a, None), t("cli.admin.enabled", email=a.email))


@admin_group.command("reset-password")
@click.argument("email")
@click.option(
    "--password-stdin", is_flag=True, required=True, help="Read the new password from standard input."
)
@common
def admin_reset_password(email: str, password_stdin: bool) -> None:
    """Set a new password: the account's sessions end."""
    password = _password_from_stdin()
    p = _pomona()
    try:
        a = p.console.reset_password(email, password)
    finally:
        p.close()
    _out(_account_json(a, None), t("cli.admin.password_reset", email=a.email))
