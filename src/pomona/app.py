"""The one composition root: settings -> storage -> services -> HTTP.

Only this module and ``cli/`` pick concrete backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
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
from pomona.services.installation import recorded_public_url
from pomona.services.jobs import Background, JobRunner
from pomona.services.policy import PolicyService
from pomona.services.portal import PortalService
from pomona.services.push import PushService
from pomona.services.reports import ReportService
from pomona.services.scep import ScepService
from pomona.settings import Settings
from pomona.storage.sql import SqlDatabase

SIGNING_IDENTITY_KEY = "profile_signing_identity_pem"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Pomona(Services):
    """Everything wired for one process: the services the adapters use, and what the root alone owns."""

    settings: Settings
    db: SqlDatabase
    pki: LocalPki
    signer: CmsProfileSigner

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


def build(settings: Settings, *, migrate: bool = True, public_url: str | None = None) -> Pomona:
    """Build every part once, each given what it needs through its constructor.

    The public URL is the installation's recorded one (services.installation), else the settings';
    `public_url` overrides both for this process only (a link printed for another address)."""
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
    recorded = recorded_public_url(db)
    public_url = (public_url or (recorded.url if recorded else settings.public_url)).rstrip("/")
    kit = LocalPushCertKit(load_or_create_server_key(settings.data_dir, settings.server_key()))

    # Push: one APNs client per process (it connects on first use, on its own loop thread).
    identities = TenantIdentitySource(db, kit.open)
    verify: str | bool = str(settings.apns_ca) if settings.apns_ca else True
    gateway = ApnsGateway(ApnsClient(identities, base_url=settings.apns_url, verify=verify), identities)
    push = PushService(db, clock, gateway, settings.push.to_push_settings())

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
