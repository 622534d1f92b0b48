"""The one composition root: settings -> storage -> services -> HTTP.

Only this module and ``cli/`` pick concrete backends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pomona.domain.models import Tenant
from pomona.pki.adapters import CmsProfileSigner, LocalPki
from pomona.services.admin import AdminService
from pomona.services.checkin import CheckinService
from pomona.services.commands import CommandService
from pomona.services.enrollment import EnrollmentService, Urls
from pomona.net.dns import DnsResolver
from pomona.net.http import HttpFetcher
from pomona.services.diagnose import DiagnoseService, DiagnoseSettings
from pomona.services.health import HealthService
from pomona.services.reports import ReportService
from pomona.services.policy import PolicyService
from pomona.storage.sql import SqlDatabase, sqlite_url

SIGNING_IDENTITY_KEY = "profile_signing_identity_pem"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("pomona-data")
    database_url: str | None = None  # POMONA_DATABASE_URL; SQLite under data_dir when unset
    public_url: str = "http://127.0.0.1:8080"
    signing_identity: Path | None = None  # PEM: certificate(s) then key; generated when unset
    dns_server: str | None = None  # POMONA_DNS_SERVER (ip or ip:port) for diagnosis; the system's when unset
    enrollment_cname_target: str | None = None  # what EnterpriseEnrollment.<domain> must point to
    registration_cname_target: str | None = None  # what EnterpriseRegistration.<domain> must point to

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        if os.environ.get("POMONA_DATABASE_URL"):
            values["database_url"] = os.environ["POMONA_DATABASE_URL"]
        if os.environ.get("POMONA_DATA_DIR"):
            values["data_dir"] = Path(os.environ["POMONA_DATA_DIR"])
        if os.environ.get("POMONA_PUBLIC_URL"):
            values["public_url"] = os.environ["POMONA_PUBLIC_URL"]
        for env, key in (
            ("POMONA_DNS_SERVER", "dns_server"),
            ("POMONA_ENROLLMENT_CNAME_TARGET", "enrollment_cname_target"),
            ("POMONA_REGISTRATION_CNAME_TARGET", "registration_cname_target"),
        ):
            if os.environ.get(env):
                values[key] = os.environ[env]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(self.data_dir)


@dataclass
class Pomona:
    """Everything wired: what the HTTP app and the CLI use."""

    settings: Settings
    db: SqlDatabase
    clock: SystemClock
    admin: AdminService
    enrollment: EnrollmentService
    checkin: CheckinService
    commands: CommandService
    policy: PolicyService
    diagnose: DiagnoseService
    health: HealthService
    reports: ReportService
    pki: LocalPki
    signer: CmsProfileSigner
    extras: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        self.db.dispose()


def _signer(settings: Settings, db: SqlDatabase) -> CmsProfileSigner:
    if settings.signing_identity is not None:
        return CmsProfileSigner.from_pem(settings.signing_identity.read_bytes())
    pem = db.settings_get(SIGNING_IDENTITY_KEY)
    if pem is None:
        signer, pem = CmsProfileSigner.generate("Pomona profile signing")
        db.settings_put(SIGNING_IDENTITY_KEY, pem)
        # Two processes starting at once: the first writer wins, everyone uses what is stored.
        pem = db.settings_get(SIGNING_IDENTITY_KEY) or pem
    return CmsProfileSigner.from_pem(pem)


def build(settings: Settings, *, migrate: bool = True) -> Pomona:
    db = SqlDatabase(settings.url())
    if migrate:
        db.create_all()
    clock = SystemClock()
    pki = LocalPki()
    signer = _signer(settings, db)
    urls = Urls(settings.public_url.rstrip("/"))
    policy = PolicyService(db, clock)
    host = urlsplit(settings.public_url).hostname or "localhost"
    diagnose = DiagnoseService(
        db,
        clock,
        policy,
        DnsResolver(settings.dns_server),
        HttpFetcher(),
        DiagnoseSettings(
            settings.enrollment_cname_target or host, settings.registration_cname_target or host
        ),
    )
    health = HealthService(db, clock, diagnose.resolver, diagnose.settings)
    reports = ReportService(db, clock)
    return Pomona(
        settings=settings,
        db=db,
        clock=clock,
        admin=AdminService(db, clock, pki),
        enrollment=EnrollmentService(db, clock, pki, signer, urls, policy),
        checkin=CheckinService(db, clock, pki, policy),
        commands=CommandService(db, clock),
        policy=policy,
        diagnose=diagnose,
        health=health,
        reports=reports,
        pki=pki,
        signer=signer,
    )


def create_app(settings: Settings | None = None, *, pomona: Pomona | None = None) -> object:
    """The ASGI application: device endpoints (lean, raw ASGI) in front of the admin API."""
    from pomona.http.root import RootApp

    p = pomona or build(settings or Settings.from_env())
    return RootApp(p)


__all__ = ["Pomona", "Settings", "Tenant", "build", "create_app"]
