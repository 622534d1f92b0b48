"""CLI: the server itself: the public URL every process reads, and the key that seals secrets at rest."""

from __future__ import annotations

import click

from pomona.cli.main import _out, _pomona, _settings, cli_warning, common, main
from pomona.i18n import t


@main.group()
def server() -> None:
    """The installation's own state: its public URL, the key that seals secrets at rest."""


@server.command("rotate-key")
@common
def server_rotate_key() -> None:
    """Replace the server key and re-seal every secret under the new one (stop the server first).

    ``server.key`` becomes ``server.key.old``, a new ``server.key`` is written, every sealed value is
    re-sealed in one transaction, then ``server.key.old`` is removed. Interrupted, it is run again."""
    from pomona.app import rotate_server_key

    key_id, count = rotate_server_key(_settings())
    _out({"key_id": key_id, "resealed": count}, t("cli.server.rotated", key_id=key_id, count=count))


@server.command("show")
@common
def server_show() -> None:
    """Show the public URL devices reach (as recorded by `pomona serve` or set by an admin)."""
    from pomona.services.installation import recorded_public_url

    p = _pomona()
    rec = recorded_public_url(p.db)
    data = {"public_url": p.public_url, "source": rec.source.value if rec else "default"}
    _out(data, t("cli.server.show", url=p.public_url, source=t(f"cli.server.source.{data['source']}")))


@server.command("set-public-url")
@click.argument("url")
@common
def server_set_public_url(url: str) -> None:
    """Record the https:// address devices reach (behind a reverse proxy: the proxy's address).

    Enrollment profiles, check-in URLs, the portal, health and diagnose's DNS checks all use it.
    A running server reads it when it starts."""
    from pomona.services.installation import UrlSource, is_plain_http_remote, record_public_url

    p = _pomona()
    rec = record_public_url(p.db, url, UrlSource.SET)
    if is_plain_http_remote(rec.url):
        cli_warning(None, t("cli.warning.plain_http", url=rec.url))
    _out({"public_url": rec.url, "source": rec.source.value}, t("cli.server.public_url_set", url=rec.url))
