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
from pomona.net.dns import DnsResolver
from pomona.net.http import HttpFetcher
from pomona.pki.adapters import CmsProfileSigner, LocalPki
from pomona.pki.scep import LocalScep
from pomona.services.admin import AdminService
from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
from pomona.services.checkin import CheckinService
from pomona.services.checks import DiscoverySettings, unresponsive_check
from pomona.services.commands import CommandService
from pomona.services.container import Services
from pomona.services.diagnose import DiagnoseService
from pomona.services.enrollment import EnrollmentService, Urls
from pomona.services.health import HealthService
from pomona.services.jobs import Background, JobRunner
from pomona.services.policy import PolicyService
from pomona.services.portal import PortalService
from pomona.services.push import PushService, PushSettings
from pomona.services.reports import ReportService
from pomona.services.scep import ScepService
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
    # APNs (issue 4): where pushes go and which CA the client trusts there (None: the system's).
    apns_url: str = "https://api.push.apple.com"  # POMONA_APNS_URL
    apns_ca: Path | None = None  # POMONA_APNS_CA: a CA bundle (the emulator's ca.pem)
    # The server (Settings.from_env) sends pushes unless POMONA_PUSH_WORKER=0; Settings() built in code
    # (tests, scripts) does not start a worker unless asked.
    push_worker: bool = False
    health_interval: float = 300.0  # seconds between scheduled health checks (POMONA_HEALTH_INTERVAL; 0: off)
    push: PushSettings = field(default_factory=PushSettings)  # POMONA_PUSH_* (see _push_settings)
    # Where account-driven enrollment's discovery document is fetched; {domain} is the tenant's domain.
    well_known_url: str = "https://{domain}/.well-known/com.apple.remotemanagement"

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
            ("POMONA_WELL_KNOWN_URL", "well_known_url"),
            ("POMONA_ENROLLMENT_CNAME_TARGET", "enrollment_cname_target"),
            ("POMONA_REGISTRATION_CNAME_TARGET", "registration_cname_target"),
        ):
            if os.environ.get(env):
                values[key] = os.environ[env]
        if os.environ.get("POMONA_APNS_URL"):
            values["apns_url"] = os.environ["POMONA_APNS_URL"]
        if os.environ.get("POMONA_APNS_CA"):
            values["apns_ca"] = Path(os.environ["POMONA_APNS_CA"])
        values["push_worker"] = os.environ.get("POMONA_PUSH_WORKER", "1") not in ("0", "false", "no")
        if os.environ.get("POMONA_HEALTH_INTERVAL"):
            values["health_interval"] = float(os.environ["POMONA_HEALTH_INTERVAL"])
        values["push"] = _push_settings()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return sqlite_url(self.data_dir)


@dataclass
class Pomona(Services):
    """Everything wired for one process: the services the adapters use, and what the root alone owns."""

    settings: Settings
    db: SqlDatabase
    pki: LocalPki
    signer: CmsProfileSigner

    def close(self) -> None:
        self.db.dispose()


def _push_settings() -> PushSettings:
    """POMONA_PUSH_REPUSH ("60,300,1800,3600" seconds), POMONA_PUSH_REPUSH_CAP, POMONA_PUSH_LEASE,
    POMONA_PUSH_RETRY_BASE, POMONA_PUSH_UNRESPONSIVE_AFTER, POMONA_PUSH_POLL (seconds)."""
    env = os.environ
    values: dict[str, object] = {}
    if env.get("POMONA_PUSH_REPUSH"):
        values["repush"] = PushSettings.parse_schedule(env["POMONA_PUSH_REPUSH"])
    for name, key in (
        ("POMONA_PUSH_REPUSH_CAP", "repush_cap"),
        ("POMONA_PUSH_LEASE", "lease"),
        ("POMONA_PUSH_RETRY_BASE", "retry_base"),
        ("POMONA_PUSH_UNRESPONSIVE_AFTER", "unresponsive_after"),
        ("POMONA_PUSH_POLL", "poll_interval"),
    ):
        if env.get(name):
            values[key] = float(env[name])
    return PushSettings(**values)  # type: ignore[arg-type]


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
    """Build every part once, each given what it needs through its constructor."""
    from pomona.pki.apns_certs import load_or_create_server_key
    from pomona.push.apns import ApnsClient
    from pomona.push.certkit import LocalPushCertKit
    from pomona.push.gateway import ApnsGateway, TenantIdentitySource
    from pomona.push.webhooks import HttpWebhookPoster

    db = SqlDatabase(settings.url())
    if migrate:
        db.create_all()
    clock = SystemClock()
    pki = LocalPki()
    signer = _signer(settings, db)
    public_url = settings.public_url.rstrip("/")
    kit = LocalPushCertKit(load_or_create_server_key(settings.data_dir))

    # Push: one APNs client per process (it connects on first use, on its own loop thread).
    identities = TenantIdentitySource(db, kit.open)
    verify: str | bool = str(settings.apns_ca) if settings.apns_ca else True
    gateway = ApnsGateway(ApnsClient(identities, base_url=settings.apns_url, verify=verify), identities)
    push = PushService(db, clock, gateway, settings.push)

    policy = PolicyService(db, clock)
    admin = AdminService(db, clock, pki)
    enrollment = EnrollmentService(db, clock, pki, signer, Urls(public_url), policy)
    notifier = Notifier(db, clock, kit, HttpWebhookPoster())
    host = urlsplit(public_url).hostname or "localhost"
    discovery = DiscoverySettings(
        settings.enrollment_cname_target or host,
        settings.registration_cname_target or host,
        settings.well_known_url,
    )
    resolver = DnsResolver(settings.dns_server)
    jobs = JobRunner()
    apns = ApnsLifecycle(db, clock, kit, push.wake, jobs)
    # Health and diagnose read the certificate lifecycle's findings and push reachability; health
    # reports new findings to the tenant's webhook.
    unresponsive = unresponsive_check(push.unresponsive)
    diagnose = DiagnoseService(
        db, clock, policy, resolver, HttpFetcher(), discovery, apns.check, unresponsive
    )
    health = HealthService(db, clock, resolver, discovery, apns.check, unresponsive, notifier.notify)
    background = Background(
        jobs=jobs,
        push=push,
        close_gateway=gateway.aclose,
        health_round=health.run_all,
        push_worker=settings.push_worker,
        health_interval=settings.health_interval,
    )
    return Pomona(
        clock=clock,
        public_url=public_url,
        admin=admin,
        enrollment=enrollment,
        scep=ScepService(db, clock, pki, LocalScep(), enrollment),
        checkin=CheckinService(db, clock, pki, policy),
        commands=CommandService(db, clock, push.wake),
        policy=policy,
        portal=PortalService(db, clock, admin, policy, enrollment),
        diagnose=diagnose,
        health=health,
        reports=ReportService(db, clock),
        push=push,
        apns=apns,
        notifier=notifier,
        background=background,
        settings=settings,
        db=db,
        pki=pki,
        signer=signer,
    )


def create_app(settings: Settings | None = None, *, pomona: Pomona | None = None) -> object:
    """The ASGI application: device endpoints (lean, raw ASGI) in front of the admin API."""
    from pomona.http.root import RootApp

    p = pomona or build(settings or Settings.from_env())
    return RootApp(p)


__all__ = ["Pomona", "Settings", "Tenant", "build", "create_app"]
