"""Pomona's configuration: one typed object, read from ``POMONA_*`` environment variables.

Every setting is a field of :class:`Settings`, with its type, default and description; the push
queue's settings are the nested :class:`PushConfig` (``POMONA_PUSH_*``). docs/configuration.md is
generated from this model (``python -m pomona.settings --markdown``) and a test keeps the two equal.

Two ways to make one:

- ``Settings(data_dir=..., public_url=...)`` in code (tests, scripts): the defaults and what you pass,
  nothing from the environment; no push worker unless ``push_worker=True``.
- ``Settings.from_env(**overrides)`` (the server, the CLI): the environment, then the overrides that are
  not None (command-line options). The push worker is on unless ``POMONA_PUSH_WORKER=0``. A bad value
  is an :class:`~pomona.domain.errors.InvalidInputError` whose message is one line naming the variable.

``pomona serve --workers N`` hands its resolved settings to the worker processes uvicorn spawns as JSON
in one variable, :data:`HANDOFF_ENV` (:meth:`Settings.handoff`); ``from_env`` reads that variable alone
when it is set. Nothing else writes the environment.

Empty variables count as unset, as they always have.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import types
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    SecretBytes,
    ValidationError,
    field_serializer,
)
from pydantic.fields import FieldInfo

from pomona.domain.errors import InvalidInputError
from pomona.i18n import Msg, msg

if TYPE_CHECKING:
    from pomona.services.push_settings import PushSettings

__all__ = [
    "HANDOFF_ENV",
    "PREFIX",
    "LogFormat",
    "LogLevel",
    "PushConfig",
    "Settings",
    "env_names",
    "lang_from_env",
    "markdown",
]

PREFIX: Final = "POMONA_"
#: The whole settings as JSON: how `pomona serve` hands them to its worker processes.
HANDOFF_ENV: Final = "POMONA_SETTINGS_JSON"

LogFormat = Literal["console", "json"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _push_defaults() -> PushSettings:
    """The push service's own defaults (written once, there; imported when first needed, not at start-up)."""
    from pomona.services.push_settings import PushSettings

    return PushSettings()


def _schedule(value: object) -> object:
    """'60,300,1800,3600' -> (60.0, 300.0, 1800.0, 3600.0); sequences pass through to validation."""
    if isinstance(value, str):
        from pomona.services.push_settings import PushSettings

        try:
            return PushSettings.parse_schedule(value)
        except ValueError:
            raise ValueError(msg("error.settings.schedule")) from None
    return value


def _lang(value: object) -> object:
    """A locale such as 'zh_CN.UTF-8' or 'en_GB' -> 'zh-CN' or 'en' (zh* selects Simplified Chinese)."""
    if isinstance(value, str):
        return "zh-CN" if value.strip().lower().startswith("zh") else "en"
    return value


def _secret_key(value: object) -> object:
    """Base64 text (the environment, the hand-off) or raw bytes (code) -> 32 bytes."""
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(msg("error.settings.not_base64")) from None
    raw = value.get_secret_value() if isinstance(value, SecretBytes) else value
    if isinstance(raw, bytes) and len(raw) != 32:
        raise ValueError(msg("error.settings.key_length", length=len(raw)))
    return value


def _networks(value: object) -> object:
    """'10.0.0.1, 192.168.0.0/16' (the environment) or a list -> normalised CIDR strings."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    out = []
    for item in items:
        text = str(item).strip()
        if text:
            try:
                out.append(str(ipaddress.ip_network(text, strict=False)))
            except ValueError:
                raise ValueError(msg("error.settings.network", value=repr(text))) from None
    return tuple(out)


Networks = Annotated[tuple[str, ...], BeforeValidator(_networks)]

Schedule = Annotated[
    tuple[Annotated[float, Field(gt=0)], ...], Field(min_length=1), BeforeValidator(_schedule)
]
Lang = Annotated[Literal["en", "zh-CN"], BeforeValidator(_lang)]
Seconds = Annotated[float, Field(gt=0)]


def _retention_days(value: int) -> int:
    """0 (keep forever) or at least services.retention.MIN_DAYS days (diagnosis reads a week back)."""
    if value:
        from pomona.services.retention import MIN_DAYS

        if value < MIN_DAYS:
            raise ValueError(msg("error.settings.retention", min=MIN_DAYS))
    return value


RetentionDays = Annotated[int, Field(ge=0), AfterValidator(_retention_days)]


class PushConfig(BaseModel):
    """The push queue (services/push.py): ``POMONA_PUSH_<FIELD>``. Defaults are the push service's."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    repush: Schedule = Field(
        default_factory=lambda: _push_defaults().repush,
        description="Re-push schedule while commands wait: seconds after each accepted push, "
        "comma-separated; the last value repeats.",
        json_schema_extra={"doc_type": "seconds, comma-separated"},
    )
    repush_cap: Seconds = Field(
        default_factory=lambda: _push_defaults().repush_cap,
        description="Stop re-pushing this many seconds after the first accepted push.",
    )
    lease: Seconds = Field(
        default_factory=lambda: _push_defaults().lease,
        description="Seconds a worker's claim on queued pushes lasts; a dead process's pushes are "
        "claimable again after it.",
    )
    retry_base: Seconds = Field(
        default_factory=lambda: _push_defaults().retry_base,
        description="Transient APNs failures are retried after retry_base * 2^n seconds, jittered, "
        "up to a maximum.",
    )
    unresponsive_after: Seconds = Field(
        default_factory=lambda: _push_defaults().unresponsive_after,
        description="DEVICE_UNRESPONSIVE: pushes accepted and no answer from the device for this many seconds.",
    )
    poll: Seconds = Field(
        default_factory=lambda: _push_defaults().poll_interval,
        description="Seconds between looks at an idle push queue.",
    )

    def to_push_settings(self) -> PushSettings:
        """The push service's settings (the fields not configurable here keep their defaults)."""
        return replace(
            _push_defaults(),
            repush=self.repush,
            repush_cap=self.repush_cap,
            lease=self.lease,
            retry_base=self.retry_base,
            unresponsive_after=self.unresponsive_after,
            poll_interval=self.poll,
        )


class Settings(BaseModel):
    """Everything Pomona reads from its environment. See the module docstring for how to make one.

    A plain pydantic model: the environment is read by :func:`_read_env`, not by pydantic-settings,
    whose import (asyncio with it) cost a sixth of the CLI's start-up (issue 14)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
        defer_build=True,  # the schema is built on first use, not when the CLI imports this module
    )
    data_dir: Path = Field(
        Path("pomona-data"),
        description="Where the SQLite database, the server key and other local state live.",
    )
    database_url: str | None = Field(
        None,
        description="A SQLAlchemy URL (postgresql+psycopg://user@host/db) for PostgreSQL; "
        "SQLite under the data directory when unset. Several server processes need PostgreSQL.",
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="The https:// address devices reach; enrollment profiles and check-in URLs point "
        "there. `pomona serve` defaults it to its own address.",
    )
    signing_identity: Path | None = Field(
        None,
        description="A PEM file (certificate chain, then key) that signs enrollment profiles; "
        "generated and kept in the database when unset.",
    )
    secret_key: Annotated[SecretBytes | None, BeforeValidator(_secret_key)] = Field(
        None,
        description="The 32-byte server key (base64) that seals every secret at rest (device CA keys, the "
        "profile-signing identity, the portal session secret, push certificate keys, webhook secrets); "
        "`<data dir>/server.key` (mode 0600), created on first use, when unset. Losing it loses every "
        "sealed secret; see docs/security.md for rotation.",
        json_schema_extra={"doc_type": "base64 (32 bytes)"},
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook targets at loopback, private, link-local and other non-public "
        "addresses. Off, a webhook URL whose host is or resolves to such an address is refused "
        "(WEBHOOK_TARGET_REFUSED), when it is set and at every delivery.",
    )
    trusted_proxies: Networks = Field(
        (),
        description="The reverse proxies (IP addresses or CIDR networks, comma-separated) whose "
        "X-Forwarded-For and X-Forwarded-Proto headers are believed. Empty: those headers are ignored "
        "and the client is the connection's peer.",
        json_schema_extra={"doc_type": "list of CIDRs"},
    )
    dns_server: str | None = Field(
        None,
        description="The DNS server (ip or ip:port) diagnosis and health checks ask; "
        "the system's resolvers when unset.",
    )
    enrollment_cname_target: str | None = Field(
        None,
        description="What `EnterpriseEnrollment.<domain>` must point to; the public URL's host when unset.",
    )
    registration_cname_target: str | None = Field(
        None,
        description="What `EnterpriseRegistration.<domain>` must point to; the public URL's host when unset.",
    )
    well_known_url: str = Field(
        "https://{domain}/.well-known/com.apple.remotemanagement",
        description="Where account-driven enrollment's discovery document is fetched; "
        "`{domain}` is the tenant's domain.",
    )
    apns_url: str = Field(
        "https://api.push.apple.com", description="Where pushes go (the APNs emulator in labs and tests)."
    )
    apns_ca: Path | None = Field(
        None,
        description="A CA bundle the APNs client trusts (the emulator's ca.pem); the system's when unset.",
    )
    push_worker: bool = Field(
        False,
        description="Send pushes from this process. On for the server (`pomona serve`, "
        "`Settings.from_env`); off for Settings built in code (tests, scripts) unless asked.",
        json_schema_extra={"doc_default": "1 (server)"},
    )
    health_interval: Annotated[float, Field(ge=0)] = Field(
        300.0,
        description="Seconds between scheduled tenant health checks (0: off).",
    )
    device_threads: Annotated[int, Field(ge=0, le=64)] = Field(
        4,
        description="PostgreSQL: threads per server process for the device messages that commit a durable "
        "write (command results, check-in messages), so that their wait for the WAL flush does not hold "
        "the event loop; each keeps a database connection (0: all on the event loop). SQLite: unused.",
    )
    push: PushConfig = Field(default_factory=PushConfig, description="The push queue.")
    abm_url: str = Field(
        "https://mdmenrollment.apple.com",
        description="Apple Business Manager's device assignment service (the ABM emulator in labs and tests: "
        "`pomona emulate abm`).",
    )
    abm_ca: Path | None = Field(
        None,
        description="A CA bundle the ABM client trusts (the emulator's, when it runs TLS); the system's "
        "when unset.",
    )
    abm_sync_interval: Annotated[float, Field(ge=0)] = Field(
        300.0,
        description="Seconds between scheduled syncs of every ABM server token (0: off; needs the push "
        "worker's process, `pomona serve`).",
    )
    abm_assign_backoff: Annotated[float, Field(ge=0)] = Field(
        300.0,
        description="Seconds before an ADE profile assignment that did not take is tried again (doubled "
        "at each further try, at most six hours).",
    )
    event_retention_days: RetentionDays = Field(
        0,
        description="Days the event log is kept: events older than this are deleted every hour, in batches "
        "(`pomona prune` does it at once). 0: kept forever; else at least 7 (diagnosis reads a week back). "
        "The daily failure counts of reports are kept either way.",
        json_schema_extra={"doc_type": "days"},
    )
    command_retention_days: RetentionDays = Field(
        0,
        description="Days answered commands are kept (Acknowledged, Error, CommandFormatError), counted from "
        "their result: older ones are deleted every hour, in batches (`pomona prune` does it at once). "
        "Commands still waiting (Queued, Sent, NotNow) are never deleted. 0: kept forever; else at least 7.",
        json_schema_extra={"doc_type": "days"},
    )
    ade_test_device_ca: Path | None = Field(
        None,
        description="TEST MODE ONLY: a PEM file holding a test device CA's certificate (or public key) "
        "whose key the ADE enrollment endpoint trusts for MachineInfo signatures IN ADDITION to Apple's "
        "pinned iPhone Device CA key, so that virtual devices can enroll by ADE. Never set it in "
        "production: anyone with that CA's key could enroll as any serial ABM lists. `pomona serve` logs "
        "a warning naming it at start-up.",
    )
    lang: Lang | None = Field(
        None,
        validation_alias=AliasChoices("POMONA_LANG", "LC_ALL", "LANG"),
        description="The command line's language: en or zh-CN (any zh* locale selects zh-CN). "
        "LC_ALL, then LANG, when unset; en when none is set.",
        json_schema_extra={"doc_type": "en | zh-CN"},
    )
    log_format: LogFormat = Field(
        "console", description="How log lines are written to stderr: console (for people) or json."
    )
    log_level: LogLevel | None = Field(
        None,
        description="The lowest level logged. When unset: info for `pomona serve` (one line per "
        "refusal), warning for the other commands.",
        json_schema_extra={"doc_default": "info (serve), warning"},
    )
    access_log: bool = Field(
        False,
        description="One log line per HTTP request (method, path, status, duration, request id); "
        "`pomona serve --access-log` turns it on too.",
    )
    metrics_allow: Networks = Field(
        ("127.0.0.0/8", "::1/128"),
        description="Who may read `/metrics` without a token: client addresses or CIDR networks, "
        "comma-separated (the client as POMONA_TRUSTED_PROXIES resolves it; a request forwarded by a proxy "
        "that is not trusted never counts as local). Anyone else needs a server-wide API token "
        "(`Authorization: Bearer`). Empty: a token always.",
        json_schema_extra={"doc_type": "list of CIDRs", "doc_default": "127.0.0.0/8,::1/128"},
    )
    metrics_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("POMONA_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"),
        description="Where the server processes of `pomona serve --workers N` (N > 1) keep their counters "
        "for /metrics (prometheus-client's multiprocess mode; emptied at each start); `<data dir>/metrics` "
        "when unset. A single process keeps them in memory.",
    )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """The settings from the environment (or the serve hand-off), then ``overrides`` that are not None."""
        return cls.from_environ(os.environ, overrides)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
    ) -> Settings:
        """``from_env`` over the given variables instead of the process's."""
        handoff = environ.get(HANDOFF_ENV)
        try:
            values: dict[str, Any] = json.loads(handoff) if handoff else {}
        except ValueError as exc:
            raise InvalidInputError(
                msg(
                    "error.settings.invalid",
                    detail=msg("error.settings.not_json", var=HANDOFF_ENV, error=str(exc)),
                )
            ) from None
        if not handoff:
            try:
                values = _read_env(cls, environ)
            except ValueError as exc:
                raise InvalidInputError(msg("error.settings.invalid", detail=exc.args[0])) from None
        if not handoff:
            values.setdefault("push_worker", True)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as exc:
            raise InvalidInputError(_one_line(exc)) from None

    def handoff(self, environ: MutableMapping[str, str]) -> None:
        """Put these settings, whole, where ``from_env`` in a child process reads them first."""
        environ[HANDOFF_ENV] = self.model_dump_json(context={"reveal": True})

    @field_serializer("secret_key", when_used="json")
    def _dump_secret(self, value: SecretBytes | None, info: FieldSerializationInfo) -> str | None:
        if value is None:
            return None
        if isinstance(info.context, dict) and info.context.get("reveal"):
            return base64.b64encode(value.get_secret_value()).decode()
        return "**********"

    def server_key(self) -> bytes | None:
        """The 32 bytes of POMONA_SECRET_KEY, or None (the key file under the data directory)."""
        return None if self.secret_key is None else self.secret_key.get_secret_value()

    @property
    def on_sqlite(self) -> bool:
        """Whether the database is SQLite (no ``database_url``, or a ``sqlite`` one): known without
        :meth:`url`, which imports the storage package (and with it SQLite)."""
        return not self.database_url or self.database_url.startswith("sqlite")

    def url(self) -> str:
        """The database URL: ``database_url``, else SQLite under ``data_dir`` (created)."""
        if self.database_url:
            return self.database_url
        from pomona.storage.sql import private_dir, sqlite_url

        return sqlite_url(private_dir(self.data_dir))


# --- the environment -----------------------------------------------------------------------------
def _read_env(cls: type[Settings], env: Mapping[str, str]) -> dict[str, Any]:
    """The raw values of every field set in ``env`` (nested ones as dicts), keyed by field name.

    Names are case-insensitive and empty values count as unset. A field is ``POMONA_<NAME>``, or its
    aliases, the first set winning (``lang``: POMONA_LANG, LC_ALL, LANG). A nested model (``push``) is
    its own variable as a JSON object, with ``POMONA_PUSH_<FIELD>`` over it (``POMONA_PUSH_REPUSH_CAP``
    is ``push.repush_cap``); its unknown keys are ignored by the model. The values stay text: the fields'
    validators parse them (lists are comma-separated, not JSON)."""
    lowered = {k.lower(): v for k, v in env.items() if v != ""}  # empty counts as unset
    raw: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        names = [a.lower() for a in _aliases(field)] or [f"{PREFIX}{name}".lower()]
        value = next((lowered[n] for n in names if n in lowered), None)
        nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        if not nested:
            if value is not None:
                raw[name] = value
            continue
        parts: dict[str, Any] = {}
        if value is not None:
            try:
                parts = json.loads(value)
            except ValueError as exc:
                raise ValueError(
                    msg("error.settings.not_json", var=names[0].upper(), error=str(exc))
                ) from None
            if not isinstance(parts, dict):
                raise ValueError(msg("error.settings.not_object", var=names[0].upper()))
        prefix = names[0] + "_"
        parts.update(
            {k[len(prefix) :]: v for k, v in lowered.items() if k.startswith(prefix) and k != prefix}
        )
        if value is not None or parts:
            raw[name] = parts
    return raw


def lang_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The language setting alone (POMONA_LANG, else LC_ALL, else LANG): what the command line needs
    before anything else (its help texts), without failing on the other settings."""
    environ = os.environ if environ is None else environ
    try:
        raw = _read_env(Settings, environ).get("lang")  # nothing validated
    except ValueError:  # another variable does not parse (the push object not JSON): the language alone
        raw = next((environ[n] for n in ("POMONA_LANG", "LC_ALL", "LANG") if environ.get(n)), None)
    return str(_lang(raw)) if isinstance(raw, str) else None


def _aliases(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [a for a in alias.choices if isinstance(a, str)]
    return [alias] if isinstance(alias, str) else []


def env_names() -> dict[str, tuple[str, ...]]:
    """Dotted field name -> the environment variables that set it (first wins), nested fields included."""
    out: dict[str, tuple[str, ...]] = {}
    for name, field in Settings.model_fields.items():
        if name == "push":
            for sub in PushConfig.model_fields:
                out[f"push.{sub}"] = (f"{PREFIX}PUSH_{sub.upper()}",)
            continue
        out[name] = tuple(_aliases(field)) or (f"{PREFIX}{name.upper()}",)
    return out


#: pydantic's error types Pomona words itself (catalogue key, and the constraint its message names).
_PROBLEMS: Final[dict[str, tuple[str, str | None]]] = {
    "greater_than_equal": ("error.settings.at_least", "ge"),
    "greater_than": ("error.settings.more_than", "gt"),
    "less_than_equal": ("error.settings.at_most", "le"),
    "less_than": ("error.settings.less_than", "lt"),
    "int_parsing": ("error.settings.integer", None),
    "int_type": ("error.settings.integer", None),
    "int_from_float": ("error.settings.integer", None),
    "float_parsing": ("error.settings.number", None),
    "float_type": ("error.settings.number", None),
    "bool_parsing": ("error.settings.boolean", None),
    "bool_type": ("error.settings.boolean", None),
    "literal_error": ("error.settings.one_of", "expected"),
    "too_short": ("error.settings.too_short", "min_length"),
}


def _problem(err: Any) -> str:
    """What is wrong with one value, as a catalogue message where Pomona words it (its own validators'
    messages, the common constraint types), else pydantic's English text."""
    ctx = err.get("ctx") or {}
    raised = ctx.get("error")
    if isinstance(raised, ValueError) and raised.args and isinstance(raised.args[0], Msg):
        return raised.args[0]
    known = _PROBLEMS.get(err["type"])
    if known is not None:
        key, limit = known
        return msg(key, limit=str(ctx[limit])) if limit and limit in ctx else msg(key)
    return str(err["msg"]).removeprefix("Value error, ")


def _one_line(exc: ValidationError) -> Msg:
    """Every bad variable of ``exc``, named, on one line (a catalogue message: the reader's language)."""
    names = env_names()
    parts: list[Msg] = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
        key = ".".join(loc[:2])
        if key not in names and loc and loc[0] in ("POMONA_LANG", "LC_ALL", "LANG"):
            key = "lang"
        var = names.get(key, (key,))[0]
        if err["type"] == "extra_forbidden":
            parts.append(msg("error.settings.field", var=var, problem=msg("error.settings.unknown")))
            continue
        given = err.get("input")
        if key == "secret_key" or not isinstance(given, str | int | float):
            parts.append(msg("error.settings.field", var=var, problem=_problem(err)))
        else:
            parts.append(msg("error.settings.field_got", var=var, problem=_problem(err), given=repr(given)))
    detail = parts[0]
    for part in parts[1:]:
        detail = msg("error.settings.and", first=detail, then=part)
    return msg("error.settings.invalid", detail=detail)


# --- docs/configuration.md ------------------------------------------------------------------------
def _type_label(annotation: object, field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_type"), str):
        return str(extra["doc_type"])
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_label(args[0], field)
    if origin in (Union, types.UnionType):
        return (
            _type_label(args[0], field) if len(args) == 1 else " | ".join(_type_label(a, field) for a in args)
        )
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(annotation))
    labels: dict[object, str] = {
        Path: "path",
        str: "text",
        bool: "boolean (1/0)",
        float: "seconds",
        int: "integer",
    }
    return labels.get(annotation) or str(getattr(annotation, "__name__", annotation))


def _default_label(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("doc_default"), str):
        return f"`{extra['doc_default']}`"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return "`" + ",".join(f"{v:g}" for v in value) + "`"
    return f"`{value}`"


def _rows() -> list[tuple[tuple[str, ...], FieldInfo]]:
    names = env_names()
    rows: list[tuple[tuple[str, ...], FieldInfo]] = []
    for name, field in Settings.model_fields.items():
        if name == "push":
            rows += [(names[f"push.{sub}"], f) for sub, f in PushConfig.model_fields.items()]
        else:
            rows.append((names[name], field))
    return rows


def markdown() -> str:
    """docs/configuration.md: every setting, generated from the model."""
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m pomona.settings --markdown` from src/pomona/settings.py: edit the",
        "     model, then regenerate. tests/unit/test_settings.py checks that this file is current. -->",
        "",
        "Pomona reads its settings from environment variables: `pomona serve`, every other `pomona`",
        "command and `uvicorn pomona.asgi:app` alike. Empty variables count as unset. A bad value",
        "stops the command with one line naming the variable. Command-line options (`--data-dir`,",
        "`--public-url`, `--log-level`, `--access-log`) win over the variables.",
        "",
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for env, field in _rows():
        var = f"`{env[0]}`" + (f" (else {', '.join(f'`{e}`' for e in env[1:])})" if env[1:] else "")
        cells = (var, _type_label(field.annotation, field), _default_label(field), field.description or "")
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += [
        "",
        f"`{HANDOFF_ENV}` holds the whole settings as JSON: `pomona serve` sets it for the server",
        "processes it starts. When it is set, the variables above are not read.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        print("usage: python -m pomona.settings --markdown", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
