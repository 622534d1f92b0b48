"""CLI: `pomona user list|show|set` — the directory's users, one at a time or as a table."""

from __future__ import annotations

import sys

import click

from pomona.cli.main import _json, _out, _pomona, common, main
from pomona.cli.output import Column, dumps, emit_list, table
from pomona.domain.errors import InvalidInputError
from pomona.i18n import t


def _user_group() -> click.Group:
    cmd = main.commands["user"]
    assert isinstance(cmd, click.Group)
    return cmd


@_user_group().command("list")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
@common
def user_list(tenant_name: str, limit: int, offset: int) -> None:
    """List a tenant's users by UPN: enabled, licensed, groups and enrolled devices."""
    from pomona.presenters import user_json

    if not 1 <= limit <= 10_000 or offset < 0:
        raise InvalidInputError("--limit must be between 1 and 10000, --offset 0 or more")
    p = _pomona()
    rows = [
        {**user_json(x.user), "groups": x.groups, "devices": x.devices}
        for x in p.policy.users_overview(tenant_name, limit=limit, offset=offset)
    ]
    emit_list(
        rows,
        [
            Column("upn"),
            Column("name", "display_name"),
            Column("enabled"),
            Column("licensed"),
            Column("groups"),
            Column("devices"),
        ],
        empty=t("cli.user.none", tenant=tenant_name),
    )


@_user_group().command("show")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("upn")
@common
def user_show(tenant_name: str, upn: str) -> None:
    """One user: flags, licence, groups, and the devices enrolled now."""
    from pomona.presenters import device_json, enrollment_json, iso, user_json

    p = _pomona()
    d = p.policy.user_detail(tenant_name, upn)
    u = d.user
    data = {
        **user_json(u),
        "created_at": iso(u.created_at),
        "password_set": u.password_hash is not None,
        "totp_set": u.totp_secret is not None,
        "groups": d.groups,
        "enrollments": [
            {**enrollment_json(e), "device": None if dev is None else device_json(dev, e)}
            for e, dev in d.enrollments
        ],
    }
    if _json():
        click.echo(dumps(data))
        return
    yes, no = t("cli.user.yes"), t("cli.user.no")
    lines = [
        t("cli.user.show.title", upn=u.upn, name=u.display_name),
        t("cli.user.show.email", email=u.email),
        t("cli.user.show.enabled", value=yes if u.enabled else no),
        t("cli.user.show.licensed", value=yes if u.licensed else no),
        t("cli.user.show.password", value=yes if u.password_hash else no),
        t("cli.user.show.mfa", value=yes if u.mfa_required else no, totp=yes if u.totp_secret else no),
        t("cli.user.show.dem", value=yes if u.is_dem else no),
        t("cli.user.show.groups", groups=", ".join(d.groups) if d.groups else "—"),
    ]
    click.echo("\n".join(lines))
    if not d.enrollments:
        click.echo(t("cli.user.show.no_devices"))
        return
    click.echo(t("cli.user.show.devices", count=len(d.enrollments)))
    table(
        [
            Column("serial", lambda r: r["device"] and r["device"]["serial"]),
            Column("model", lambda r: r["device"] and r["device"]["product_name"]),
            Column("os", lambda r: r["device"] and r["device"]["os_version"]),
            Column("type"),
            Column("enrolled_at", "started_at", time=True),
            Column("last_seen", lambda r: r["device"] and r["device"]["last_seen_at"], time=True),
        ],
        data["enrollments"],
    )


def _read_password(prompt: bool, from_stdin: bool) -> str | None:
    """The new password: prompted twice (hidden), or the first line of standard input."""
    if prompt and from_stdin:
        raise InvalidInputError("give --password or --password-stdin, not both")
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidInputError("no password on standard input")
        return line
    if prompt:
        value: str = click.prompt(
            t("cli.user.password.prompt"),
            hide_input=True,
            confirmation_prompt=t("cli.user.password.again"),
            err=True,
        )
        return value
    return None


@_user_group().command("set")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("upn_arg", metavar="UPN", required=False)
@click.option("--upn", default=None, help="The user (instead of the UPN argument).")
@click.option(
    "--password",
    "prompt_password",
    is_flag=True,
    help="Set a new portal password, asked twice (hidden). It signs out the user's portal sessions.",
)
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@click.option(
    "--enable/--disable",
    "--enabled/--disabled",
    "enabled",
    default=None,
    help="Allow or block sign-in and enrollment. Disabling ends the user's portal sessions.",
)
@click.option("--dem/--no-dem", default=None, help="Device enrollment manager: up to 1,000 devices.")
@click.option("--mfa-required/--no-mfa-required", default=None)
@common
def user_set(
    tenant_name: str,
    upn_arg: str | None,
    upn: str | None,
    prompt_password: bool,
    password_stdin: bool,
    enabled: bool | None,
    dem: bool | None,
    mfa_required: bool | None,
) -> None:
    """Reset a user's password, disable or enable them, or change their flags."""
    from pomona.presenters import user_json

    if upn_arg and upn and upn_arg.strip().lower() != upn.strip().lower():
        raise InvalidInputError("give the user once: as the UPN argument or as --upn")
    who = upn_arg or upn
    if not who:
        raise InvalidInputError("which user? give the UPN: pomona user set --tenant T ana@example.com")
    flags = {
        k: v
        for k, v in (("enabled", enabled), ("is_dem", dem), ("mfa_required", mfa_required))
        if v is not None
    }
    if not flags and not (prompt_password or password_stdin):
        raise InvalidInputError(
            "nothing to change: give --password, --password-stdin, --enable/--disable, --dem/--no-dem "
            "or --mfa-required/--no-mfa-required"
        )
    p = _pomona()
    u = p.policy.user_detail(tenant_name, who).user  # an unknown user is NOT_FOUND before any prompt
    password = _read_password(prompt_password, password_stdin)
    if password is not None:
        p.admin.set_password(tenant_name, u.upn, password)
    if flags:
        u = p.policy.set_user_flags(tenant_name, u.upn, **flags)
    messages = []
    if password is not None:
        messages.append(t("cli.user.password_set", upn=u.upn))
    if enabled is False:
        messages.append(t("cli.user.disabled", upn=u.upn))
    elif enabled is True:
        messages.append(t("cli.user.enabled", upn=u.upn))
    if dem is not None or mfa_required is not None:
        messages.append(t("cli.user.updated", upn=u.upn))
    _out({**user_json(u), "password_changed": password is not None}, "\n".join(messages))
