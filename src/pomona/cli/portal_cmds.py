"""CLI: the self-service portal (single sign-on through OpenID Connect)."""

from __future__ import annotations

import click

from pomona.cli.main import _out, _pomona, common, main
from pomona.i18n import t


@main.group()
def portal() -> None:
    """The self-service enrollment portal."""


@portal.command("oidc")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--issuer", required=True, help="The identity provider's issuer URL (as in its ID tokens).")
@click.option("--client-id", required=True)
@click.option("--client-secret", required=True)
@click.option(
    "--metadata-url",
    default=None,
    help="Discovery document URL; default <issuer>/.well-known/openid-configuration.",
)
@click.option(
    "--claim",
    default=None,
    help="The ID token claim holding the UPN; default upn, preferred_username, email.",
)
@common
def portal_oidc(
    tenant_name: str,
    issuer: str,
    client_id: str,
    client_secret: str,
    metadata_url: str | None,
    claim: str | None,
) -> None:
    """Let the tenant's users sign in to the portal with their organisation account (OpenID Connect)."""
    p = _pomona()
    try:
        cfg = p.portal.set_oidc(
            tenant_name,
            issuer=issuer,
            client_id=client_id,
            client_secret=client_secret,
            metadata_url=metadata_url,
            claim=claim,
        )
        tenant = p.admin.get_tenant(tenant_name)
    finally:
        p.close()
    redirect = f"{p.public_url}/portal/{tenant.name}/oidc/callback"
    _out(
        {"tenant": tenant.name, "issuer": cfg.issuer, "client_id": cfg.client_id, "redirect_uri": redirect},
        t("portal.cli.oidc_set", tenant=tenant.name, issuer=cfg.issuer, redirect_uri=redirect),
    )
