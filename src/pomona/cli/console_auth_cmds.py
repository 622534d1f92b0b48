"""CLI: how console accounts sign in (issue 13): `pomona admin totp-reset EMAIL` (the account enrols a new
authenticator at its next sign-in) and `pomona admin oidc set|show|clear` (a tenant's OpenID Connect
provider for the console; the client secret from standard input, sealed at rest, never shown)."""

from __future__ import annotations

import sys
from urllib.parse import quote

import click

from pomona.cli.admin_cmds import admin_group
from pomona.cli.main import _out, _pomona, common
from pomona.domain.errors import InvalidInputError
from pomona.i18n import t


@admin_group.command("totp-reset")
@click.argument("email")
@common
def admin_totp_reset(email: str) -> None:
    """Require TOTP: the account sets up a new authenticator at its next sign-in (the old one stops)."""
    p = _pomona()
    try:
        a = p.console_auth.require_totp(email)
    finally:
        p.close()
    _out({"email": a.email, "totp": "pending"}, t("cli.admin.totp_reset", email=a.email))


@admin_group.group("oidc")
def oidc_group() -> None:
    """A tenant's OpenID Connect provider for console sign-in."""


def _oidc_json(tenant: str, cfg: object, redirect: str) -> dict[str, object]:
    from pomona.services.console_auth import ConsoleOidc

    if cfg is None:
        return {"tenant": tenant, "configured": False}
    assert isinstance(cfg, ConsoleOidc)
    return {
        "tenant": tenant,
        "configured": True,
        "issuer": cfg.issuer,
        "client_id": cfg.client_id,
        "email_claim": cfg.email_claim,
        "name": cfg.label(),
        "redirect_uri": redirect,
    }


def _redirect(base: str, tenant: str) -> str:
    """The callback to register at the provider: at the server's public URL."""
    return f"{base.rstrip('/')}/console/t/{quote(tenant, safe='')}/oidc/callback"


@oidc_group.command("set")
@click.option("--tenant", "tenant_name", required=True)
@click.option(
    "--issuer", required=True, help="The provider's issuer URL (its discovery document is under it)."
)
@click.option("--client-id", required=True)
@click.option(
    "--client-secret-stdin", is_flag=True, required=True, help="Read the client secret from standard input."
)
@click.option(
    "--email-claim",
    "claim",
    default=None,
    help="The ID token claim with the account's email (default: email).",
)
@click.option("--name", default=None, help='What the sign-in button names ("Sign in with NAME").')
@common
def oidc_set(
    tenant_name: str,
    issuer: str,
    client_id: str,
    client_secret_stdin: bool,
    claim: str | None,
    name: str | None,
) -> None:
    """Configure the tenant's provider: its accounts may then sign in with it (their role stays theirs)."""
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise InvalidInputError("no client secret on standard input")
    p = _pomona()
    try:
        base = p.public_url
        tn, cfg = p.console_auth.set_oidc(
            tenant_name,
            issuer=issuer,
            client_id=client_id,
            client_secret=secret,
            email_claim=claim,
            name=name,
        )
    finally:
        p.close()
    _out(
        _oidc_json(tn.name, cfg, _redirect(base, tn.name)),
        t("cli.oidc.set", tenant=tn.name, issuer=cfg.issuer, redirect=_redirect(base, tn.name)),
    )


@oidc_group.command("show")
@click.option("--tenant", "tenant_name", required=True)
@common
def oidc_show(tenant_name: str) -> None:
    """The tenant's provider (never its client secret)."""
    p = _pomona()
    try:
        base = p.public_url
        tn, cfg = p.console_auth.show_oidc(tenant_name)
    finally:
        p.close()
    data = _oidc_json(tn.name, cfg, _redirect(base, tn.name))
    if cfg is None:
        _out(data, t("cli.oidc.none", tenant=tn.name))
    else:
        _out(
            data,
            t(
                "cli.oidc.show",
                tenant=tn.name,
                issuer=cfg.issuer,
                client_id=cfg.client_id,
                claim=cfg.email_claim,
                redirect=_redirect(base, tn.name),
            ),
        )


@oidc_group.command("clear")
@click.option("--tenant", "tenant_name", required=True)
@common
def oidc_clear(tenant_name: str) -> None:
    """Remove the tenant's provider: its accounts sign in with their passwords only."""
    p = _pomona()
    try:
        tn = p.console_auth.clear_oidc(tenant_name)
    finally:
        p.close()
    _out({"tenant": tn.name, "configured": False}, t("cli.oidc.cleared", tenant=tn.name))
