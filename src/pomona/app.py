"""The one composition root: settings -> storage -> services -> HTTP.

Only this module and ``cli/`` pick concrete backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from pomona.domain.models import Tenant
from pomona.net.dns import DnsResolver
from pomona.net.http import HttpFetcher
from pomona.pki.adapters import CmsProfileSigner, LocalPki
from pomona.services.admin import AdminService
from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
from pomona.services.checkin import CheckinService
from pomona.services.commands import CommandService
from pomona.services.diagnose import DiagnoseService, DiagnoseSettings
from pomona.services.enrollment import EnrollmentService, Urls
from pomona.services.health import HealthService
from pomona.services.policy import PolicyService
from pomona.services.push import PushService
from pomona.services.reports import ReportService
from pomona.settings import Settings
from pomona.storage.sql import SqlDatabase

SIGNING_IDENTITY_KEY = "profile_signing_identity_pem"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


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
    push: PushService
    apns: ApnsLifecycle
    notifier: Notifier
    extras: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        self.db.dispose()

    async def start_background(self) -> None:
        """The server's lifespan start: this process's push worker (one APNs client per process)."""
        import asyncio

        if not self.settings.push_worker or "push_task" in self.extras:
            return
        if self.settings.health_interval > 0:
            self.extras["health_task"] = asyncio.get_running_loop().create_task(
                self._health_loop(), name="pomona-health"
            )
        from pomona.push.apns import ApnsClient
        from pomona.push.gateway import ApnsGateway, TenantIdentitySource

        kit = self.apns.kit
        source = TenantIdentitySource(self.db, kit.open)
        verify: str | bool = str(self.settings.apns_ca) if self.settings.apns_ca else True
        client = ApnsClient(source, base_url=self.settings.apns_url, verify=verify)
        self.push.gateway = ApnsGateway(client, source)
        self.extras["push_task"] = asyncio.get_running_loop().create_task(self.push.run(), name="pomona-push")

    async def _health_loop(self) -> None:
        """Tenant health on a schedule: findings kept with first/last seen, new ones sent to webhooks."""
        import asyncio
        import logging

        while True:
            await asyncio.sleep(self.settings.health_interval)
            try:
                await asyncio.to_thread(self.health.run_all)
            except Exception:  # a failed round must not stop the schedule
                logging.getLogger("pomona.health").exception("scheduled health check failed")

    async def stop_background(self) -> None:
        import asyncio
        import contextlib

        health_task = self.extras.pop("health_task", None)
        if isinstance(health_task, asyncio.Task):
            health_task.cancel()

        task = self.extras.pop("push_task", None)
        if isinstance(task, asyncio.Task):
            self.push.stop()
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        if self.push.gateway is not None:
            with contextlib.suppress(Exception):
                await self.push.gateway.aclose()
            self.push.gateway = None


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
            settings.enrollment_cname_target or host,
            settings.registration_cname_target or host,
            settings.well_known_url,
        ),
    )
    health = HealthService(db, clock, diagnose.resolver, diagnose.settings)
    reports = ReportService(db, clock)
    from pomona.pki.apns_certs import load_or_create_server_key
    from pomona.push.certkit import LocalPushCertKit
    from pomona.push.webhooks import HttpWebhookPoster

    kit = LocalPushCertKit(load_or_create_server_key(settings.data_dir, settings.server_key()))
    push = PushService(db, clock, None, settings.push.to_push_settings())
    commands = CommandService(db, clock, push.wake)
    apns = ApnsLifecycle(db, clock, kit, push.wake)
    notifier = Notifier(db, clock, kit, HttpWebhookPoster())
    # Tenant health reads the certificate lifecycle and push reachability, and reports new findings
    # to the tenant's webhook.
    health.push_cert_findings = apns.findings
    health.extra_checks.append(lambda t, now: _unresponsive(push, t.id, now))
    health.notify = notifier.notify
    diagnose.unresponsive = push.unresponsive
    diagnose.cert_findings = apns.findings
    return Pomona(
        settings=settings,
        db=db,
        clock=clock,
        admin=AdminService(db, clock, pki),
        enrollment=EnrollmentService(db, clock, pki, signer, urls, policy),
        checkin=CheckinService(db, clock, pki, policy),
        commands=commands,
        policy=policy,
        diagnose=diagnose,
        health=health,
        reports=reports,
        pki=pki,
        signer=signer,
        push=push,
        apns=apns,
        notifier=notifier,
    )


def _unresponsive(push: PushService, tenant_id: str, now: datetime) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for f in push.unresponsive(tenant_id, now):
        facts = {k: v for k, v in f.items() if k != "code"}
        udid = f.get("udid")
        out.append(
            {
                "code": "DEVICE_UNRESPONSIVE",
                "severity": "warning",
                "subject": f"device:{udid}",
                "facts": facts,
            }
        )
    return out


def create_app(settings: Settings | None = None, *, pomona: Pomona | None = None) -> object:
    """The ASGI application: device endpoints (lean, raw ASGI) in front of the admin API."""
    from pomona.http.root import RootApp

    p = pomona or build(settings or Settings.from_env())
    return RootApp(p)


__all__ = ["Pomona", "Settings", "Tenant", "build", "create_app"]
