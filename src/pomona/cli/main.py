"""The `pomona` command. Same wiring as the server (pomona.app.build). Every command takes --data-dir
(or POMONA_DATABASE_URL) and --json for scripts. rich is imported lazily: start-up time matters.

Settings come from pomona.settings (POMONA_* variables; options win over them). The command line's
language is read before the first text is translated (a command, an error line, or the command modules'
help texts, translated when they are imported: _process_lang); logging is
configured for every command (POMONA_LOG_FORMAT, POMONA_LOG_LEVEL: warning by default).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pomona import __version__
from pomona.domain.errors import (
    InvalidInputError,
    PomonaError,
    StartupError,
    WebhookDeliveryError,
    describe,
)
from pomona.i18n import msg, set_process_lang, t

if TYPE_CHECKING:
    from pomona.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])
DEBUG_KEY = "pomona.debug"  # ctx.meta: `pomona --debug` prints the traceback of an error


@functools.cache
def _process_lang() -> None:
    """The command line's language from the environment (pomona.settings.lang_from_env), read once,
    before the first text is translated: a command, an error line, the command modules' help texts.
    Not at import: pomona.settings loads pydantic, and `pomona --version` needs none of it. A language
    set explicitly before (set_process_lang) is kept."""
    from pomona.settings import lang_from_env

    given = set_process_lang(None)
    set_process_lang(given if given is not None else lang_from_env())


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '1h', '7d' -> timedelta."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            return timedelta(seconds=float(text[:-1]) * units[text[-1]])
        return timedelta(seconds=float(text))
    except (ValueError, IndexError):
        raise InvalidInputError(msg("error.duration", text=text)) from None


def cli_error(exc: BaseException, *, as_json: bool) -> int:
    """The CLI's answer to an error (built on ``domain.errors.describe``): one line, or one JSON object
    with --json, and the exit code (docs/cli.md): the error class's (2 for a refusal, a bad input or a
    start-up failure; 1 for a check that ran and failed), 1 for an internal error. The operator runs the
    command, so the line carries the cause; the traceback only with ``pomona --debug``.

    A start-up failure or a failed delivery is prefixed with its title from the knowledge base, in the
    command line's language."""
    from pomona.presenters import error_text

    _process_lang()
    e = describe(exc)
    message = error_text(e)  # in the command line's language when the error has a catalogue key
    if isinstance(exc, (StartupError, WebhookDeliveryError)):
        from pomona import knowledge
        from pomona.i18n import detect_lang

        title = knowledge.text_for(e.reason.value, detect_lang()).title
        message = t("cli.error.titled", title=title, detail=message)
    if _debug():
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    _print_error(e.reason.value, message, as_json=as_json)
    if e.internal:
        return 1
    return exc.exit_code if isinstance(exc, PomonaError) else 2


def _print_error(reason: str, message: str, *, as_json: bool) -> None:
    """An error's one line on stderr, or with --json its object ``{"reason", "message"}`` on stdout."""
    if as_json:
        click.echo(json.dumps({"reason": reason, "message": message}, ensure_ascii=False))
    else:
        click.echo(t("cli.error", reason=reason, message=message), err=True)


def cli_warning(reason: str | None, message: str) -> None:
    """One warning line on stderr: the command did what it was asked, but the operator should know."""
    if reason:
        click.echo(t("cli.warning.reason", reason=reason, message=message), err=True)
    else:
        click.echo(t("cli.warning", message=message), err=True)


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(DEBUG_KEY))


def common(fn: F) -> F:
    """--data-dir and --json on every command; any error becomes one line and an exit code (cli_error)."""

    @click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Where the SQLite database lives (ignored when POMONA_DATABASE_URL is set). "
        "Default: POMONA_DATA_DIR, else pomona-data.",
    )
    @click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="For scripts: print JSON (a list: one JSON array; docs/cli.md).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: Path | None, as_json: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.obj = {"data_dir": data_dir, "json": as_json}
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: usage errors, --help, Ctrl-C
        except Exception as exc:  # noqa: BLE001 - every error gets one line and an exit code
            # A command's own --lang (policy explain, diagnose) is the language of its error line too.
            lang = kwargs.get("lang")
            previous = set_process_lang(lang) if isinstance(lang, str) else None
            try:
                code = cli_error(exc, as_json=as_json)
            finally:
                if isinstance(lang, str):
                    set_process_lang(previous)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


def _settings(**overrides: object) -> Settings:
    """The settings: the environment, then --data-dir and the given options (those not None)."""
    from pomona.settings import Settings

    return Settings.from_env(data_dir=click.get_current_context().obj["data_dir"], **overrides)


def _pomona(public_url: str | None = None) -> Any:
    from pomona.app import build

    return build(_settings(), public_url=public_url)


def _json() -> bool:
    return bool(click.get_current_context().obj["json"])


def _out(data: object, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if _json() else text)


class _SettingsError(click.ClickException):
    """Settings the environment gives that do not validate: one line with its reason code, exit 2; with
    --json on the command line, the JSON object of every other error (cli_error)."""

    exit_code = 2  # as for every PomonaError

    def __init__(self, message: str, *, as_json: bool) -> None:
        super().__init__(message)
        self.as_json = as_json

    def show(self, file: Any = None) -> None:
        _print_error(InvalidInputError.reason.value, self.message, as_json=self.as_json)


WANTS_JSON = "pomona.wants_json"  # ctx.meta: the command line asks for --json (its subcommand's option)


def _asks_for_json(args: list[str]) -> bool:
    """``--json`` (or the deprecated ``--format json``) among a subcommand's arguments, before any ``--``.
    The settings are read before the subcommand parses its options: their error still has to come as
    JSON to a script that asked for it."""
    args = args[: args.index("--")] if "--" in args else args
    pairs = zip(args, [*args[1:], ""], strict=True)
    return any(a == "--json" or a == "--format=json" or (a == "--format" and b == "json") for a, b in pairs)


#: Commands complete in this module: no command module adds to them, so running one imports none of
#: the other command modules (start-up time: `pomona tenant list` in a helpdesk loop). A module that adds
#: a subcommand to one of these groups takes it out of this set (tests/unit/test_cli_imports.py checks).
SELF_CONTAINED = frozenset({"tenant", "enroll-token", "token", "serve"})


class _Commands(dict[str, click.Command]):
    """`main.commands`. The command modules (cli/*_cmds.py, simulate, demo, emulate) register themselves
    on `main` when it is first read, not when this module is imported: reading it (a test, --help, a
    command outside ``SELF_CONTAINED``) sees every command, as before."""

    def _complete(self) -> None:
        if not _registering:
            _register_optional()

    def __getitem__(self, key: str) -> click.Command:
        self._complete()
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._complete()
        return super().get(key, default)

    def peek(self, key: str) -> click.Command | None:
        """The command registered under ``key`` now, without registering the command modules."""
        return super().get(key)

    def __contains__(self, key: object) -> bool:
        self._complete()
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self._complete()
        return super().__iter__()

    def __len__(self) -> int:
        self._complete()
        return super().__len__()

    def keys(self) -> Any:
        self._complete()
        return super().keys()

    def values(self) -> Any:
        self._complete()
        return super().values()

    def items(self) -> Any:
        self._complete()
        return super().items()


class _PomonaGroup(click.Group):
    """The `pomona` group: an error escaping a command that is not wrapped by ``common`` (demo, simulate,
    emulate) is answered like any other, one line and an exit code, never a traceback.

    A command of ``SELF_CONTAINED`` runs without the other command modules (see :class:`_Commands`)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SELF_CONTAINED and isinstance(self.commands, _Commands):
            return self.commands.peek(cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        first = getattr(ctx, "_protected_args", None)  # click 8.2 on; before, ``protected_args``
        rest = [*(ctx.protected_args if first is None else first), *ctx.args]
        ctx.meta[WANTS_JSON] = _asks_for_json([str(a) for a in rest])
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - every error gets one line and an exit code
            sys.exit(cli_error(exc, as_json=False))


@click.group(cls=_PomonaGroup)
# The version written in the package, not read from its installed metadata: importlib.metadata's import and
# its scan of sys.path were a fifth of `pomona --version` (tests/unit/test_cli_imports.py keeps them equal).
@click.version_option(version=__version__, package_name="pomona")
@click.option("--debug", is_flag=True, help="On an error, print its traceback too.")
def main(debug: bool) -> None:
    """Pomona: enroll and manage iPhones and iPads, and explain every enrollment failure."""
    from pomona.logs import configure
    from pomona.settings import Settings

    _process_lang()
    click.get_current_context().meta[DEBUG_KEY] = debug

    try:
        settings = Settings.from_env()
    except InvalidInputError as exc:
        from pomona.presenters import error_text

        as_json = bool(click.get_current_context().meta.get(WANTS_JSON))
        raise _SettingsError(error_text(describe(exc)), as_json=as_json) from None  # in its language
    configure(settings.log_format, settings.log_level or "warning", lazy=True)


main.commands = _Commands(main.commands)


# --- tenants --------------------------------------------------------------------------------------
@main.group()
def tenant() -> None:
    """Create and list tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--domain", required=True, help="The organisation's DNS domain, e.g. example.com.")
@click.option(
    "--key-type",
    type=click.Choice(["rsa", "p256"]),
    default="rsa",
    show_default=True,
    help="The device CA's key.",
)
@click.option(
    "--seats",
    type=click.IntRange(0, 10_000_000),
    default=None,
    help="Licence seats (default 25, as an Intune trial; tighten later with `pomona licence set`).",
)
@common
def tenant_create(name: str, domain: str, key_type: str, seats: int | None) -> None:
    """Create a tenant with its own device CA, ready to enroll once its push certificate is uploaded.

    Pomona becomes its MDM authority and it gets licence seats (``pomona licence set`` changes them;
    ``pomona user create`` gives each new user a seat while one is free)."""
    from pomona.services.admin import DAY_ONE_AUTHORITY, DAY_ONE_SEATS

    p = _pomona()
    tn = p.admin.create_tenant(
        name,
        domain,
        key_type=key_type,
        authority=DAY_ONE_AUTHORITY,
        seats=DAY_ONE_SEATS if seats is None else seats,
    )
    _out(
        {
            "id": tn.id,
            "name": tn.name,
            "domain": tn.domain,
            "mdm_authority": tn.mdm_authority,
            "licence_seats": tn.licence_seats,
        },
        t(
            "cli.tenant.created",
            name=tn.name,
            id=tn.id,
            domain=tn.domain,
            authority=tn.mdm_authority,
            seats=tn.licence_seats,
        ),
    )


@tenant.command("list")
@common
def tenant_list() -> None:
    """List tenants: a table, or a JSON array with --json."""
    from pomona import fastread
    from pomona.cli.output import Column, emit_list
    from pomona.presenters import tenant_json

    # A database that needs no start-up work is read on the raw driver (issue 14: start-up time).
    found = fastread.tenants(_settings())
    if found is None:
        found = _pomona().admin.list_tenants()
    rows = [{**tenant_json(x), "mdm_authority": x.mdm_authority} for x in found]
    emit_list(
        rows,
        [
            Column("tenant", "name"),  # what every --tenant takes; the id and the topic: --json
            Column("domain"),
            Column("authority", "mdm_authority"),
            Column("push_expires", "push_not_after", time=True),
        ],
        empty=t("cli.tenant.none"),
    )


@tenant.command("set-authority")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("authority", type=click.Choice(["pomona"]))
@common
def tenant_set_authority(tenant_name: str, authority: str) -> None:
    """Set the tenant's MDM authority."""
    p = _pomona()
    tn = p.admin.set_authority(tenant_name, authority)
    _out(
        {"name": tn.name, "mdm_authority": tn.mdm_authority},
        t("cli.tenant.authority", name=tn.name, authority=authority),
    )


# --- APNs: see cli/apns_cmds.py ------------------------------------------------------------------


# --- users and tokens -----------------------------------------------------------------------------
@main.group()
def user() -> None:
    """Users of a tenant."""


@user.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--upn", required=True, help="The user's sign-in name, e.g. ana@example.com.")
@click.option("--display-name", default=None)
@click.option("--password", default=None, help="For local portal sign-in (stored hashed).")
@click.option("--dem", is_flag=True, help="Device enrollment manager: up to 1,000 devices, no user affinity.")
@click.option("--disabled", is_flag=True, help="Create the user blocked from signing in.")
@click.option("--mfa-required", is_flag=True, help="Require MFA (TOTP) at portal sign-in.")
@click.option(
    "--licence/--no-licence",
    default=True,
    show_default=True,
    help="Give the user a licence seat (warned about, not refused, when none is free).",
)
@common
def user_create(
    tenant_name: str,
    upn: str,
    display_name: str | None,
    password: str | None,
    dem: bool,
    disabled: bool,
    mfa_required: bool,
    licence: bool,
) -> None:
    """Create a user; with a licence seat while one is free (--no-licence: without)."""
    import dataclasses

    from pomona.domain.errors import LicensesExhaustedError
    from pomona.presenters import user_json

    p = _pomona()
    u = p.admin.create_user(
        tenant_name,
        upn,
        display_name=display_name,
        password=password,
        enabled=not disabled,
        is_dem=dem,
        mfa_required=mfa_required,
    )
    if licence:
        try:
            p.policy.licence(tenant_name, u.upn, assign=True)
        except LicensesExhaustedError as exc:
            cli_warning(
                exc.reason.value,
                t("cli.user.no_seat", upn=u.upn, tenant=tenant_name, seats=exc.context.get("seats")),
            )
        else:
            u = dataclasses.replace(u, licensed=True)
    _out(
        user_json(u),
        t("cli.user.created", upn=u.upn, tenant=tenant_name),
    )


@main.group("enroll-token")
def enroll_token() -> None:
    """Enrollment links (each is also the SCEP challenge)."""


@enroll_token.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", required=True)
@click.option("--uses", default=1, show_default=True, help="How many devices may enroll with this link.")
@click.option("--expires", default="24h", show_default=True, help="Lifetime: 90s, 15m, 1h, 7d.")
@click.option(
    "--public-url", default=None, help="Default: the server's recorded public URL (pomona server show)."
)
@common
def enroll_token_create(tenant_name: str, upn: str, uses: int, expires: str, public_url: str) -> None:
    """Create an enrollment link for a user and print its URL.

    The link is created even when the user cannot enroll now (a licence to assign, a push certificate to
    upload), so it can be handed out while that is fixed: a warning names the reason code and the command
    that fixes it. A plain http:// public URL off this machine is warned about too."""
    from pomona.i18n import detect_lang
    from pomona.services.installation import validate_public_url

    p = _pomona(None if public_url is None else validate_public_url(public_url))
    issued = p.admin.create_enrollment_token(tenant_name, upn, uses=uses, expires_in=parse_duration(expires))
    url = p.enrollment.urls.enroll(issued.secret)
    warnings = [w.to_dict() for w in p.policy.link_warnings(tenant_name, upn, p.public_url, detect_lang())]
    if _json():
        click.echo(
            json.dumps(
                {
                    "url": url,
                    "id": issued.token.id,
                    "uses": uses,
                    "expires_at": issued.token.expires_at.isoformat(),
                    "warnings": warnings,
                },
                ensure_ascii=False,
            )
        )
    else:
        for w in warnings:
            cli_warning(w["reason"], str(w["message"]))
        click.echo(
            t("cli.enroll_token.created", upn=upn, uses=uses, expires=issued.token.expires_at.isoformat()),
            err=True,
        )
        click.echo(url)


@enroll_token.command("list")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--limit", default=100, show_default=True)
@common
def enroll_token_list(tenant_name: str, limit: int) -> None:
    """List a tenant's enrollment links, newest first (never their secrets)."""
    from pomona.cli.output import Column, emit_list
    from pomona.presenters import enrollment_token_json

    p = _pomona()
    now = p.clock.now()
    rows = [
        enrollment_token_json(x, u, now) for x, u in p.admin.list_enrollment_tokens(tenant_name, limit=limit)
    ]
    emit_list(
        rows,
        [
            Column("id"),
            Column("user", "upn"),
            Column("uses", lambda r: f"{r['uses_count']}/{r['uses_allowed']}"),
            Column("state", lambda r: t(f"cli.state.{r['state']}")),
            Column("created", "created_at", time=True),
            Column("expires", "expires_at", time=True),
        ],
        empty=t("cli.enroll_token.none", tenant=tenant_name),
    )


@enroll_token.command("revoke")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("token_id")
@common
def enroll_token_revoke(tenant_name: str, token_id: str) -> None:
    """Revoke an enrollment link by its id (from `pomona enroll-token list`)."""
    from pomona.presenters import enrollment_token_json

    p = _pomona()
    tok = p.admin.revoke_enrollment_token(tenant_name, token_id)
    _out(enrollment_token_json(tok, None, p.clock.now()), t("cli.enroll_token.revoked", id=tok.id))


@main.group()
def token() -> None:
    """Admin API tokens."""


@token.command("create")
@click.option("--tenant", "tenant_name", default=None, help="The tenant the token reaches (its only tenant).")
@click.option("--server", "server_wide", is_flag=True, help="A server-wide token that can create tenants.")
@click.option("--name", default="admin", show_default=True)
@click.option("--expires-in", default=None, help="Lifetime: 15m, 12h, 30d. Default: until revoked.")
@common
def token_create(tenant_name: str | None, server_wide: bool, name: str, expires_in: str | None) -> None:
    """Create an admin API token and print it (once)."""
    if (tenant_name is None) == (not server_wide):
        raise InvalidInputError(msg("error.token.scope"))
    p = _pomona()
    lifetime = None if expires_in is None else parse_duration(expires_in)
    issued = p.admin.create_api_token(tenant_name, name, expires_in=lifetime)
    expires = None if issued.token.expires_at is None else issued.token.expires_at.isoformat()
    if _json():
        click.echo(
            json.dumps(
                {"token": issued.secret, "id": issued.token.id, "tenant": tenant_name, "expires_at": expires}
            )
        )
    else:
        click.echo(t("cli.token.created"), err=True)
        if expires is not None:
            click.echo(t("cli.token.expires", expires=expires), err=True)
        click.echo(issued.secret)


@token.command("list")
@click.option(
    "--tenant", "tenant_name", default=None, help="Only this tenant's tokens. Default: every token."
)
@common
def token_list(tenant_name: str | None) -> None:
    """List admin API tokens (never their secrets): scope, expiry, whether revoked, and last use (to the
    minute)."""
    from pomona.cli.output import Column, emit_list
    from pomona.presenters import api_token_json

    p = _pomona()
    now = p.clock.now()
    names = {x.id: x.name for x in p.admin.list_tenants()}
    rows = [api_token_json(x, now) for x in p.admin.list_api_tokens(tenant_name)]
    emit_list(
        rows,
        [
            Column("id"),
            Column("name"),
            Column(
                "scope",
                lambda r: (
                    t("cli.scope.server") if r["tenant_id"] is None else names.get(str(r["tenant_id"]), "?")
                ),
            ),
            Column("state", lambda r: t(f"cli.state.{r['state']}")),
            Column("created", "created_at", time=True),
            Column("expires", "expires_at", time=True),
            Column("last_used", "last_used_at", time=True),
        ],
        empty=t("cli.token.none"),
    )


@token.command("revoke")
@click.argument("token_id")
@common
def token_revoke(token_id: str) -> None:
    """Revoke an admin API token by its id (from `pomona token list`): it is refused from then on."""
    from pomona.presenters import api_token_json

    p = _pomona()
    tok = p.admin.revoke_api_token(token_id)
    _out(api_token_json(tok, p.clock.now()), t("cli.token.revoked", id=tok.id, name=tok.name))


# --- devices --------------------------------------------------------------------------------------
@main.group()
def device() -> None:
    """Enrolled devices."""


@device.command("list")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--limit", default=100, show_default=True)
@common
def device_list(tenant_name: str, limit: int) -> None:
    """List a tenant's devices (the --limit most recently seen; --json: a JSON array)."""
    from pomona.cli.output import Column, emit_list
    from pomona.presenters import device_json

    p = _pomona()
    views, total = p.commands.list_devices(tenant_name, limit=limit)
    rows = [device_json(v.device, v.enrollment) for v in views]
    emit_list(
        rows,
        [
            Column("serial"),
            Column("model", "product_name"),
            Column("os", "os_version"),
            Column("name", "device_name"),
            Column("last_seen", "last_seen_at", time=True),
            Column("enrolled"),
        ],
        empty=t("cli.devices.none", tenant=tenant_name),
    )
    if not _json() and total > len(rows):
        click.echo(t("cli.list.more", shown=len(rows), total=total), err=True)


# --- serving --------------------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option(
    "--public-url",
    default=None,
    help="The https:// address devices reach (default: POMONA_PUBLIC_URL, else http://HOST:PORT).",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate (PEM, with its chain).",
)
@click.option(
    "--tls-key",
    type=click.Path(path_type=Path),
    default=None,
    help="The certificate's private key (PEM, unencrypted).",
)
@click.option(
    "--workers", default=1, show_default=True, help="Server processes (use PostgreSQL for more than one)."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"]),
    default=None,
    help="Default: POMONA_LOG_LEVEL, else info.",
)
@click.option(
    "--access-log", is_flag=True, default=None, help="One log line per request (or POMONA_ACCESS_LOG=1)."
)
@common
def serve(
    host: str,
    port: int,
    public_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    workers: int,
    log_level: str | None,
    access_log: bool | None,
) -> None:
    """Run the Pomona server (device endpoints, admin API).

    Everything that can stop the start is checked before the server says it is serving: the public URL,
    the TLS files, the address to listen on, the data folder, the database and the signing identity. Each
    failure is one line with its reason code and exit code 2 (docs/cli.md)."""
    import os

    import uvicorn

    from pomona.logs import configure
    from pomona.pki.tls import check_server_tls
    from pomona.services.installation import is_plain_http_remote, validate_public_url

    scheme = "https" if tls_cert else "http"
    settings = _settings(log_level=log_level, access_log=access_log or None)
    slab = False
    if settings.on_sqlite:  # before this process's first SQLite connection (build, below)
        from pomona.heap import give_sqlite_a_page_slab

        slab = give_sqlite_a_page_slab()
    given = public_url or (settings.public_url if "public_url" in settings.model_fields_set else None)
    if given:
        given = validate_public_url(given)
    level = settings.log_level or "info"
    if workers > 1 and not settings.database_url:
        raise InvalidInputError(msg("error.serve.workers"))
    check_server_tls(tls_cert, tls_key)
    check_listen(host, port)
    configure(settings.log_format, level)
    import logging

    logging.getLogger("pomona.serve").debug("SQLite page caches in a slab of their own: %s", slab)
    from pomona.app import build
    from pomona.services.installation import served_public_url

    p = build(settings)  # migrate and create the signing identity once, before workers start
    try:
        p.signer  # noqa: B018 - made (and stored) on first use: here, not in each worker at once
        served = served_public_url(p.db, given=given, listening=f"{scheme}://{host}:{port}")
    finally:
        p.close()
    public = served.url
    settings = settings.model_copy(update={"public_url": public, "log_level": level})
    if workers > 1 or settings.metrics_dir:  # counters of several workers: prometheus multiprocess mode
        from pomona.metrics import prepare_multiprocess

        folder = prepare_multiprocess(settings.metrics_dir or settings.data_dir / "metrics", os.environ)
        settings = settings.model_copy(update={"metrics_dir": folder})
    db = settings.database_url or str(settings.url())
    if settings.log_format == "json":  # stderr is JSON lines for a collector: the banner is one too
        from pomona.logs import log_serving

        log_serving(f"{scheme}://{host}:{port}", public, _redact(db), plain_http=is_plain_http_remote(public))
    else:
        if is_plain_http_remote(public):
            cli_warning(None, t("cli.warning.plain_http", url=public))
        click.echo(
            t("cli.serve.starting", url=f"{scheme}://{host}:{port}", public=public, db=_redact(db)), err=True
        )
        if scheme == "http":
            click.echo(t("cli.serve.tls_hint"), err=True)
    # Each server process (uvicorn spawns them for --workers) builds the app from these very settings.
    settings.handoff(os.environ)
    uvicorn.run(
        "pomona.asgi:create",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=level,
        log_config=None,  # uvicorn's loggers go through pomona.logs like every other
        ssl_certfile=None if tls_cert is None else str(tls_cert),
        ssl_keyfile=None if tls_key is None else str(tls_key),
        access_log=False,  # ours (pomona.access) when asked: structured, with the request id
        proxy_headers=False,  # X-Forwarded-*: http/middleware.py TrustedProxies (POMONA_TRUSTED_PROXIES)
        # httptools with the request head bounded (431 past it); h11, if chosen, gets the same bound
        http="pomona.http.server:BoundedHttpToolsProtocol",
        h11_max_incomplete_event_size=64 * 1024,
    )


def check_listen(host: str, port: int) -> None:
    """The address `serve` will listen on can be bound now (as uvicorn binds it: SO_REUSEADDR), else
    PORT_UNAVAILABLE naming why: in use, not allowed, or not an address of this machine."""
    import errno
    import socket

    from pomona.domain.errors import PortUnavailableError

    where = f"{host}:{port}"
    if not 0 < port < 65536:
        raise PortUnavailableError(msg("error.serve.port", port=port), port=port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise PortUnavailableError(msg("error.serve.host", host=host), host=host) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            why = {
                errno.EADDRINUSE: "another process is listening there already",
                errno.EACCES: "this account may not listen there (ports below 1024 need privileges)",
                errno.EADDRNOTAVAIL: "that is not an address of this machine",
            }.get(exc.errno or 0, exc.strerror or "cannot listen there")
            raise PortUnavailableError(
                msg("error.serve.listen", where=where, why=why), host=host, port=port
            ) from None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


_registering = False


@functools.cache
def _register_optional() -> None:
    """Register every command module on `main` (once)."""
    global _registering
    _process_lang()  # simulate's and emulate's help texts are translated when they are imported
    _registering = True
    try:
        _import_command_modules()
    finally:
        _registering = False


def _import_command_modules() -> None:
    try:
        from pomona.cli.simulate import simulate
    except ImportError:  # pragma: no cover - the simulator ships with the package
        return
    main.add_command(simulate)
    from pomona.cli.demo import demo

    main.add_command(demo)
    import pomona.cli.abm_cmds  # noqa: F401
    import pomona.cli.admin_cmds  # noqa: F401
    import pomona.cli.apns_cmds  # noqa: F401
    import pomona.cli.backup_cmds  # noqa: F401
    import pomona.cli.console_auth_cmds  # noqa: F401
    import pomona.cli.diagnose_cmds  # noqa: F401
    import pomona.cli.events_cmds  # noqa: F401
    import pomona.cli.ops_cmds  # noqa: F401  (pomona doctor)
    import pomona.cli.policy_cmds  # noqa: F401  (registers its commands on `main`)
    import pomona.cli.portal_cmds  # noqa: F401
    import pomona.cli.prune_cmds  # noqa: F401  (pomona prune)
    import pomona.cli.server_cmds  # noqa: F401
    import pomona.cli.user_cmds  # noqa: F401
    from pomona.cli.emulate import emulate

    main.add_command(emulate)


if __name__ == "__main__":
    # Run the imported module's group, on which every command module registered itself.
    from pomona.cli.main import main as _main

    _main()
