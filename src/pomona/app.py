"""The one composition root: settings -> storage -> services -> HTTP.

Only this module and ``cli/`` pick concrete backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pomona.domain.errors import CertFileError
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
from pomona.services.jobs import Background, JobRunner, LeaderLease, SingletonJob
from pomona.services.policy import PolicyService
from pomona.services.portal import PortalService
from pomona.services.push import PushService
from pomona.services.reports import ReportService
from pomona.services.scep import ScepService
from pomona.settings import Settings
from pomona.storage.sql import SqlDatabase, private_dir

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


def _configured_signer(path: Path) -> CmsProfileSigner:
    """POMONA_SIGNING_IDENTITY's certificate(s) and key, or CERT_FILE_INVALID naming what is wrong
    (never cryptography's parser text)."""
    from pomona.pki.tls import check_certificate_pem, check_private_key_pem, read_pem_file

    what = "POMONA_SIGNING_IDENTITY"
    pem = read_pem_file(path, what)
    check_certificate_pem(pem, what=what, path=path)
    check_private_key_pem(pem, what=what, path=path)
    try:
        return CmsProfileSigner.from_pem(pem)
    except ValueError:
        raise CertFileError(
            f"{what} {path}: give the signing certificate, then its RSA or EC key, in one PEM file",
            path=str(path),
        ) from None


def _signer(settings: Settings, db: SqlDatabase) -> CmsProfileSigner:
    if settings.signing_identity is not None:
        return _configured_signer(settings.signing_identity)
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
    from pomona.pki.sealing import KeyringSealer, server_keys
    from pomona.push.apns import ApnsClient
    from pomona.push.certkit import LocalPushCertKit
    from pomona.push.gateway import ApnsGateway, TenantIdentitySource
    from pomona.push.webhooks import HttpWebhookPoster

    # Secrets at rest are sealed with the server key (pki/sealing.py); the data folder is 0700.
    sealer = KeyringSealer(server_keys(private_dir(settings.data_dir), settings.server_key()))
    db = SqlDatabase(settings.url(), sealer=sealer)
    if migrate:
        db.create_all()
        # Seal what an older version left in plaintext, re-seal what an older key sealed, and prove the
        # key opens what is sealed: a wrong key stops the start here (SERVER_KEY_MISMATCH).
        try:
            db.seal_at_rest()
        except BaseException:
            db.dispose()
            raise
    clock = SystemClock()
    pki = LocalPki()
    signer = _signer(settings, db)
    recorded = recorded_public_url(db)
    public_url = (public_url or (recorded.url if recorded else settings.public_url)).rstrip("/")
    kit = LocalPushCertKit(sealer)

    # Push: one APNs client per process (it connects on first use, on its own loop thread).
    identities = TenantIdentitySource(db, kit.open)
    verify: str | bool = str(settings.apns_ca) if settings.apns_ca else True
    gateway = ApnsGateway(ApnsClient(identities, base_url=settings.apns_url, verify=verify), identities)
    push = PushService(db, clock, gateway, settings.push.to_push_settings())

    policy = PolicyService(db, clock)
    admin = AdminService(db, clock, pki)
    enrollment = EnrollmentService(db, clock, pki, signer, Urls(public_url), policy)
    notifier = Notifier(db, clock, kit, HttpWebhookPoster(allow_private=settings.webhook_allow_private))
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
    portal = PortalService(db, clock, admin, policy, enrollment)
    background = Background(
        jobs=jobs,
        push=push,
        close_gateway=gateway.aclose,
        health_round=health.run_all,
        push_worker=settings.push_worker,
        health_interval=settings.health_interval,
        # Singleton jobs run in the one process that holds their lease (services/jobs.py).
        leader=LeaderLease(db, clock),
        singletons=[SingletonJob("shared-state-cleanup", 600, lambda: portal.limiter.purge(clock.now()))],
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
        portal=portal,
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


def rotate_server_key(settings: Settings) -> tuple[str, int]:
    """Replace the server key file and re-seal every secret under the new key (the server stopped):
    ``server.key`` becomes ``server.key.old``, a new ``server.key`` is written, every sealed value is
    re-sealed in one transaction, then ``server.key.old`` is removed. Interrupted, it is run again.
    Returns the new key's id and how many values were re-sealed."""
    from pomona.domain.errors import InvalidInputError
    from pomona.pki.sealing import KeyringSealer, retire_old_key, rotate_key_files, server_keys

    if settings.server_key() is not None:
        raise InvalidInputError(
            "POMONA_SECRET_KEY is set, so the key file is not used: rotate it as docs/security.md says"
        )
    data_dir = private_dir(settings.data_dir)
    server_keys(data_dir, None)  # the key file exists before it is rotated
    plain = SqlDatabase(settings.url())
    try:
        plain.create_all()
    finally:
        plain.dispose()
    rotate_key_files(data_dir)
    sealer = KeyringSealer(server_keys(data_dir, None))
    db = SqlDatabase(settings.url(), sealer=sealer)
    try:
        report = db.seal_at_rest(verify_current=False)
    finally:
        db.dispose()
    retire_old_key(data_dir)
    return sealer.key_id, report.sealed + report.resealed


def create_app(settings: Settings | None = None, *, pomona: Pomona | None = None) -> object:
    """The ASGI application: device endpoints (lean, raw ASGI) in front of the admin API."""
    from pomona.http.root import RootApp

    p = pomona or build(settings or Settings.from_env())
    return RootApp(p, trusted_proxies=p.settings.trusted_proxies)


__all__ = ["Pomona", "Settings", "Tenant", "build", "create_app", "rotate_server_key"]
