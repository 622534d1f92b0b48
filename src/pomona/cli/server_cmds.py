"""CLI: the server itself (its key: rotation of the key that seals secrets at rest)."""

from __future__ import annotations

from pomona.cli.main import _out, _settings, common, main
from pomona.i18n import t


@main.group()
def server() -> None:
    """The server's own state: the key that seals secrets at rest."""


@server.command("rotate-key")
@common
def server_rotate_key() -> None:
    """Replace the server key and re-seal every secret under the new one (stop the server first).

    ``server.key`` becomes ``server.key.old``, a new ``server.key`` is written, every sealed value is
    re-sealed in one transaction, then ``server.key.old`` is removed. Interrupted, it is run again."""
    from pomona.app import rotate_server_key

    key_id, count = rotate_server_key(_settings())
    _out({"key_id": key_id, "resealed": count}, t("cli.server.rotated", key_id=key_id, count=count))
