"""The one composition root: settings -> storage -> services -> HTTP.

Only this module and ``cli/`` pick concrete backends.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pomona.settings import Settings
from pomona.storage.sql import SqlDatabase, private_dir

if TYPE_CHECKING:
    from pomona.net.dns import DnsResolver
    from pomona.pki.adapters import CmsProfileSigner, LocalPki
    from pomona.ports import CaCertificate, CertificateAuthority, Metrics, Pki, Sealer
    from pomona.protocol.cms import PublicKey
    from pomona.push.certkit import LocalPushCertKit
    from pomona.push.gateway import ApnsGateway
    from pomona.services.abm import AbmService
    from pomona.services.ade import AdeEnrollmentService
    from pomona.services.admin import AdminService
    from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
    from pomona.services.checkin import CheckinService
    from pomona.services.checks import DeviceCheck, DiscoverySettings
    from pomona.services.commands import CommandService
    from pomona.services.console import ConsoleService
    from pomona.services.console_admin import AdminPagesService
    from pomona.services.console_apple import AppleSettingsService
    from pomona.services.console_auth import ConsoleAuthService
    from pomona.services.console_policy import RestrictionPagesService
    from pomona.services.console_reports import ConsoleReportsService
    from pomona.services.diagnose import DiagnoseService
    from pomona.services.doctor import CheckLine
    from pomona.services.enrollment import EnrollmentService
    from pomona.services.health import HealthService
    from pomona.services.jobs import Background, JobRunner
    from pomona.services.policy import PolicyService
    from pomona.services.portal import PortalService
    from pomona.services.push import PushService
    from pomona.services.reports import ReportService
    from pomona.services.retention import RetentionService
    from pomona.services.scep import ScepService
    from pomona.storage.backup import BackupInfo

SIGNING_IDENTITY_KEY = "profile_signing_identity_pem"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Pomona:
    """Everything wired for one process (a :class:`pomona.services.container.Services`): the services
    the adapters use, and what the root alone owns.

    Each service is built, with what it needs through its constructor, when it is first used and then
    kept (``cached_property``): a CLI command builds, and imports, only what it runs. The server builds
    them all at once (:meth:`build_all`, from :func:`create_app`) before it serves."""

    def __init__(
        self,
        settings: Settings,
        db: SqlDatabase,
        sealer: Sealer,
        *,
        public_url: str,
        measure: bool = False,
    ) -> None:
        self.settings = settings
        self.db = db
        self.public_url = public_url
        self.clock = SystemClock()
        self._sealer = sealer
        self.metrics: Metrics = self._metrics(measure)

    def close(self) -> None:
        self.db.dispose()

    def build_all(self) -> Pomona:
        """Build every service now (the server: nothing is built later, on a request's thread)."""
        from pomona.storage.sql import SqlUnitOfWork

        for name in _SERVICES:
            getattr(self, name)
        SqlUnitOfWork.load_stores()  # the stores' modules too (imported on first use otherwise)
        return self

    def _metrics(self, measure: bool) -> Metrics:
        if not measure:
            from pomona.ports import NoMetrics

            return NoMetrics()
        from pomona.metrics import PrometheusMetrics

        # The gauges are read at scrape time from the services (closures, called later).
        return PrometheusMetrics(
            lambda: self.commands.pending_count(),
            lambda: self.push.queue_size(),
            multiprocess_dir=self.settings.metrics_dir,
        )

    # --- what the root alone owns ----------------------------------------------------------------
    @cached_property
    def pki(self) -> LocalPki:
        from pomona.pki.adapters import LocalPki

        return LocalPki()

    @cached_property
    def _pki_port(self) -> Pki:
        return _PkiOnFirstUse(lambda: self.pki)

    @cached_property
    def signer(self) -> CmsProfileSigner:
        return _signer(self.settings, self.db)

    @cached_property
    def _kit(self) -> LocalPushCertKit:
        from pomona.push.certkit import LocalPushCertKit

        return LocalPushCertKit(self._sealer)

    @cached_property
    def _gateway(self) -> ApnsGateway:
        # Push: one APNs client per process (it connects on first use, on its own loop thread).
        from pomona.push.apns import ApnsClient
        from pomona.push.gateway import ApnsGateway, TenantIdentitySource

        identities = TenantIdentitySource(self.db, self._kit.open)
        settings = self.settings
        verify: str | bool = str(settings.apns_ca) if settings.apns_ca else True
        return ApnsGateway(ApnsClient(identities, base_url=settings.apns_url, verify=verify), identities)

    @cached_property
    def _discovery(self) -> DiscoverySettings:
        from pomona.services.checks import DiscoverySettings

        settings = self.settings
        host = urlsplit(self.public_url).hostname or "localhost"
        return DiscoverySettings(
            settings.enrollment_cname_target or host,
            settings.registration_cname_target or host,
            settings.well_known_url,
        )

    @cached_property
    def _resolver(self) -> DnsResolver:
        from pomona.net.dns import DnsResolver

        return DnsResolver(self.settings.dns_server)

    @cached_property
    def _jobs(self) -> JobRunner:
        from pomona.services.jobs import JobRunner

        return JobRunner()

    @cached_property
    def _unresponsive(self) -> DeviceCheck:
        from pomona.services.checks import unresponsive_check

        return unresponsive_check(self.push.unresponsive)

    # --- the services ----------------------------------------------------------------------------
    @cached_property
    def push(self) -> PushService:
        from pomona.services.push import PushService

        s = self.settings
        return PushService(
            self.db, self.clock, self._gateway, s.push.to_push_settings(), metrics=self.metrics
        )

    @cached_property
    def policy(self) -> PolicyService:
        from pomona.services.policy import PolicyService

        return PolicyService(self.db, self.clock, metrics=self.metrics)

    @cached_property
    def admin(self) -> AdminService:
        from pomona.services.admin import AdminService

        return AdminService(self.db, self.clock, self._pki_port, metrics=self.metrics)

    @cached_property
    def enrollment(self) -> EnrollmentService:
        from pomona.services.enrollment import EnrollmentService, Urls

        return EnrollmentService(
            self.db,
            self.clock,
            self.pki,
            self.signer,
            Urls(self.public_url),
            self.policy,
            metrics=self.metrics,
        )

    @cached_property
    def notifier(self) -> Notifier:
        from pomona.push.webhooks import HttpWebhookPoster
        from pomona.services.apns_lifecycle import Notifier

        poster = HttpWebhookPoster(allow_private=self.settings.webhook_allow_private)
        return Notifier(self.db, self.clock, self._kit, poster, metrics=self.metrics)

    @cached_property
    def apns(self) -> ApnsLifecycle:
        from pomona.services.apns_lifecycle import ApnsLifecycle

        return ApnsLifecycle(self.db, self.clock, self._kit, self.push.wake, self._jobs, metrics=self.metrics)

    @cached_property
    def diagnose(self) -> DiagnoseService:
        # Health and diagnose read the certificate lifecycle's findings and push reachability; health
        # reports new findings to the tenant's webhook.
        from pomona.net.http import HttpFetcher
        from pomona.services.diagnose import DiagnoseService

        return DiagnoseService(
            self.db,
            self.clock,
            self.policy,
            self._resolver,
            HttpFetcher(),
            self._discovery,
            self.apns.check,
            self._unresponsive,
            metrics=self.metrics,
        )

    @cached_property
    def abm(self) -> AbmService:
        from pomona.net.abm import HttpAbmConnector
        from pomona.pki.abm import LocalAbmKeys
        from pomona.services.abm import AbmService
        from pomona.services.enrollment import Urls

        settings = self.settings
        abm_verify: str | bool = str(settings.abm_ca) if settings.abm_ca else True
        connector = HttpAbmConnector(settings.abm_url, verify=abm_verify)
        return AbmService(
            self.db,
            self.clock,
            LocalAbmKeys(),
            connector,
            urls=Urls(self.public_url),
            assign_backoff=settings.abm_assign_backoff,
            sync_interval=settings.abm_sync_interval,
        )

    @cached_property
    def health(self) -> HealthService:
        from pomona.services.health import HealthService

        return HealthService(
            self.db,
            self.clock,
            self._resolver,
            self._discovery,
            self.apns.check,
            self._unresponsive,
            self.notifier.notify,
            abm=self.abm.check,
            metrics=self.metrics,
        )

    @cached_property
    def portal(self) -> PortalService:
        from pomona.services.portal import PortalService

        return PortalService(
            self.db, self.clock, self.admin, self.policy, self.enrollment, metrics=self.metrics
        )

    @cached_property
    def ade(self) -> AdeEnrollmentService:
        from pomona.services.ade import AdeEnrollmentService

        return AdeEnrollmentService(
            self.db,
            self.clock,
            self.enrollment,
            self.policy,
            ade_trusted_keys(self.settings),
            self.portal.sign_in_password,
            metrics=self.metrics,
        )

    @cached_property
    def background(self) -> Background:
        from pomona.heap import release_free_heap
        from pomona.services.jobs import Background, LeaderLease, SingletonJob
        from pomona.services.release import WATCH_EVERY
        from pomona.services.retention import EVERY as RETENTION_EVERY

        settings, clock = self.settings, self.clock
        portal = self.portal
        singletons = [
            SingletonJob("shared-state-cleanup", 600, lambda: portal.limiter.purge(clock.now())),
            SingletonJob("ade-release-watch", WATCH_EVERY, self.health.flag_stuck),  # held too long
        ]
        if self.retention.retention.is_on():  # POMONA_*_RETENTION_DAYS: old history deleted hourly
            singletons.append(SingletonJob("history-retention", RETENTION_EVERY, self.retention.run))
        return Background(
            jobs=self._jobs,
            push=self.push,
            close_gateway=self._gateway.aclose,
            health_round=self.health.run_all,
            push_worker=settings.push_worker,
            health_interval=settings.health_interval,
            abm_round=self.abm.sync_all,
            abm_interval=settings.abm_sync_interval,
            # Singleton jobs run in the one process that holds their lease (services/jobs.py).
            leader=LeaderLease(self.db, clock),
            singletons=singletons,
            trim=release_free_heap,  # per process: the heap's free pages back to the system
        )

    @cached_property
    def commands(self) -> CommandService:
        from pomona.services.commands import CommandService

        return CommandService(self.db, self.clock, self.push.wake, metrics=self.metrics)

    @cached_property
    def retention(self) -> RetentionService:
        from pomona.services.retention import Retention, RetentionService

        s = self.settings
        keep = Retention(s.event_retention_days, s.command_retention_days)
        return RetentionService(self.db, self.clock, keep, metrics=self.metrics)

    @cached_property
    def scep(self) -> ScepService:
        from pomona.pki.scep import LocalScep
        from pomona.services.scep import ScepService

        return ScepService(self.db, self.clock, self.pki, LocalScep(), self.enrollment, metrics=self.metrics)

    @cached_property
    def checkin(self) -> CheckinService:
        from pomona.services.checkin import CheckinService

        return CheckinService(self.db, self.clock, self.pki, self.policy, metrics=self.metrics)

    @cached_property
    def reports(self) -> ReportService:
        from pomona.services.reports import ReportService

        return ReportService(self.db, self.clock, metrics=self.metrics)

    @cached_property
    def console(self) -> ConsoleService:
        from pomona.services.console import ConsoleService

        return ConsoleService(
            self.db,
            self.clock,
            self.policy,
            self.health.open_findings,
            self.push.wake,
            unresponsive_after=timedelta(seconds=self.settings.push.unresponsive_after),
        )

    @cached_property
    def console_apple(self) -> AppleSettingsService:
        from pomona.services.console_apple import AppleSettingsService

        return AppleSettingsService(
            self.db, self.clock, self.console, self.apns, self.abm, metrics=self.metrics
        )

    @cached_property
    def console_auth(self) -> ConsoleAuthService:
        from pomona.services.console_auth import ConsoleAuthService

        return ConsoleAuthService(self.console, self.db)

    @cached_property
    def console_policy(self) -> RestrictionPagesService:
        from pomona.services.console_policy import RestrictionPagesService

        return RestrictionPagesService(self.console, self.policy)

    @cached_property
    def console_admin(self) -> AdminPagesService:
        from pomona.services.console_admin import AdminPagesService

        return AdminPagesService(
            self.db, self.clock, self.console, self.admin, self.policy, self.notifier, metrics=self.metrics
        )

    @cached_property
    def console_reports(self) -> ConsoleReportsService:
        from pomona.services.console_reports import ConsoleReportsService

        return ConsoleReportsService(
            self.db,
            self.clock,
            self.console,
            self.reports,
            self._resolver,
            self._discovery,
            metrics=self.metrics,
        )


class _PkiOnFirstUse:
    """The Pki port for a service that may not need it in this process (the admin service: `pomona
    tenant list` signs nothing): pki.adapters, and cryptography's x509 with it, load on its first use."""

    def __init__(self, pki: Callable[[], Pki]) -> None:
        self._pki = pki

    def new_ca(self, common_name: str, key_type: str) -> CertificateAuthority:
        return self._pki().new_ca(common_name, key_type)

    def load_ca(self, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        return self._pki().load_ca(cert_pem, key_pem)

    def load_ca_certificate(self, cert_pem: bytes) -> CaCertificate:
        return self._pki().load_ca_certificate(cert_pem)


#: What build_all builds, in the order build() built them before they were lazy.
_SERVICES = (
    "pki",
    "signer",
    "push",
    "policy",
    "admin",
    "enrollment",
    "notifier",
    "apns",
    "diagnose",
    "abm",
    "health",
    "portal",
    "ade",
    "background",
    "commands",
    "retention",
    "scep",
    "checkin",
    "reports",
    "console",
    "console_apple",
    "console_auth",
    "console_policy",
    "console_admin",
    "console_reports",
)


def ade_trusted_keys(settings: Settings) -> tuple[PublicKey, ...]:
    """The device CA keys the ADE endpoint trusts: Apple's pinned iPhone Device CA key, and the test
    device CA of POMONA_ADE_TEST_DEVICE_CA (test mode only: logged as a warning each time it is loaded)."""
    import logging

    from pomona.protocol.machineinfo import apple_device_ca_keys

    keys: list[PublicKey] = list(apple_device_ca_keys())
    path = settings.ade_test_device_ca
    if path is not None:
        keys.append(load_test_device_ca(path))
        logging.getLogger("pomona.ade").warning(
            "TEST MODE: the ADE endpoint trusts the test device CA %s (POMONA_ADE_TEST_DEVICE_CA) besides "
            "Apple's; never in production",
            path,
        )
    return tuple(keys)


def load_test_device_ca(path: Path) -> PublicKey:
    """The public key of POMONA_ADE_TEST_DEVICE_CA: a PEM certificate or public key, else CERT_FILE_INVALID."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from pomona.domain.errors import CertFileError
    from pomona.pki.tls import read_pem_file

    what = "POMONA_ADE_TEST_DEVICE_CA"
    pem = read_pem_file(path, what)
    key: object
    try:
        key = (
            x509.load_pem_x509_certificate(pem).public_key()
            if b"CERTIFICATE-----" in pem
            else serialization.load_pem_public_key(pem)
        )
    except ValueError:
        key = None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CertFileError(
            f"{what} {path}: give the test device CA's certificate (or its RSA or EC public key) in PEM",
            path=str(path),
        )
    return key


def _configured_signer(path: Path) -> CmsProfileSigner:
    """POMONA_SIGNING_IDENTITY's certificate(s) and key, or CERT_FILE_INVALID naming what is wrong
    (never cryptography's parser text)."""
    from pomona.domain.errors import CertFileError
    from pomona.pki.adapters import CmsProfileSigner
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
    from pomona.pki.adapters import CmsProfileSigner

    if settings.signing_identity is not None:
        return _configured_signer(settings.signing_identity)
    pem = db.settings_get(SIGNING_IDENTITY_KEY)
    if pem is None:
        signer, mine = CmsProfileSigner.generate("Pomona profile signing")
        # Two processes starting at once: the first writer's identity, for both.
        pem = db.settings_add(SIGNING_IDENTITY_KEY, mine)
        if pem == mine:
            return signer  # ours: not parsed back (loading an RSA key checks it, tens of milliseconds)
    return CmsProfileSigner.from_pem(pem)


def build(
    settings: Settings, *, migrate: bool = True, public_url: str | None = None, measure: bool = False
) -> Pomona:
    """The process's :class:`Pomona`: the database opened (and migrated, its secrets sealed), each
    service and the profile signing identity (made and stored on first use) built when first used.

    The public URL is the installation's recorded one (services.installation), else the settings';
    `public_url` overrides both for this process only (a link printed for another address).
    `measure`: count for /metrics (the server); the CLI counts nothing and does not load prometheus-client."""
    from pomona.pki.sealing import KeyringSealer, server_keys
    from pomona.services.installation import recorded_public_url

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
    recorded = recorded_public_url(db)
    url = (public_url or (recorded.url if recorded else settings.public_url)).rstrip("/")
    p = Pomona(settings, db, sealer, public_url=url, measure=measure)
    if settings.signing_identity is not None:
        p.signer  # noqa: B018 - a configured identity that cannot be used stops every command here
    return p


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


@dataclass(frozen=True)
class RestoreReport:
    """What `pomona restore` did: the database replaced, the migrations it ran, the tenants it holds."""

    source: Path
    database: Path
    from_revision: str | None
    to_revision: str
    tenants: int
    key_id: str


def backup_database(
    settings: Settings, out: Path, progress: Callable[[int, int], None] | None = None
) -> tuple[BackupInfo, str | None]:
    """A consistent copy of the SQLite database at ``out`` while the server may run (storage/backup.py),
    and the path of the server key file it needs (None when POMONA_SECRET_KEY is the key). PostgreSQL:
    BACKUP_NOT_SQLITE with the exact pg_dump and pg_restore commands."""
    from pomona.domain.errors import InvalidInputError
    from pomona.pki.sealing import SERVER_KEY_FILE
    from pomona.storage.backup import make_backup, sqlite_file

    database = sqlite_file(settings.url())
    if not out.parent.is_dir():
        raise InvalidInputError(f"--out {out}: the folder {out.parent} does not exist")
    if out.resolve() == database.resolve():
        raise InvalidInputError(f"--out {out} is the database itself")
    info = make_backup(database, out, progress)
    key_file = None if settings.server_key() is not None else str(settings.data_dir / SERVER_KEY_FILE)
    return info, key_file


def restore_database(
    settings: Settings,
    source: Path,
    *,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> RestoreReport:
    """Replace the SQLite database with the backup at ``source`` (the server stopped): checked, staged
    beside the database, migrated up to this version, its secrets opened with this server's key, then
    copied over the database (storage/backup.py says how, and what each refusal means)."""
    from pomona.domain.errors import ServerKeyError
    from pomona.pki.sealing import SERVER_KEY_FILE, KeyringSealer, server_keys
    from pomona.storage.backup import (
        check_backup_version,
        copy_database,
        inspect_backup,
        refuse_non_empty,
        sqlite_file,
    )
    from pomona.storage.migrate import known_revisions

    database = sqlite_file(settings.url())
    info = inspect_backup(source)
    known = known_revisions()
    check_backup_version(info, known)
    refuse_non_empty(database, force)
    data_dir = private_dir(settings.data_dir)
    key = settings.server_key()
    needed = ", ".join(info.key_ids) or "none"
    if key is None and not (data_dir / SERVER_KEY_FILE).exists() and info.key_ids:
        raise ServerKeyError(
            f"there is no server key in {data_dir}: copy the server.key kept with this backup (key "
            f"{needed}) there (mode 0600, owned by the server's user), then restore again"
        )
    sealer = KeyringSealer(server_keys(data_dir, key))
    staged = database.with_name(database.name + ".restore")
    leftovers = [staged.with_name(staged.name + s) for s in ("", "-wal", "-shm", "-journal")]
    for f in leftovers:
        f.unlink(missing_ok=True)
    try:
        copy_database(source, staged)
        db = SqlDatabase(f"sqlite:///{staged}", sealer=sealer)
        try:
            db.create_all()  # an older backup: its migrations up to this version's
            try:
                db.seal_at_rest()
            except ServerKeyError:
                raise ServerKeyError(
                    f"{source} was sealed under server key {needed}, and this server's key is "
                    f"{sealer.key_id}: put the server.key kept with this backup in {data_dir} (or set "
                    "POMONA_SECRET_KEY to it), then restore again",
                    key_id=needed,
                ) from None
        finally:
            db.dispose()
        if not database.exists():
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        copy_database(staged, database, progress)
    finally:
        for f in leftovers:
            f.unlink(missing_ok=True)
    return RestoreReport(source, database, info.revision, known[-1], info.tenants, sealer.key_id)


def run_doctor(settings: Settings, *, public_url: str | None, ca_file: Path | None) -> list[CheckLine]:
    """`pomona doctor`'s checks, in order (services/doctor.py says what each checks). The data folder is
    checked before anything opens it, and nothing is migrated."""

    from pomona.domain.checks import Finding, Severity, key_file_findings, migration_findings
    from pomona.domain.errors import DatabaseUnavailableError
    from pomona.domain.reasons import ReasonCode
    from pomona.net.probe import TlsUrlProber
    from pomona.pki.sealing import SERVER_KEY_FILE
    from pomona.services.doctor import Doctor, line, skipped
    from pomona.storage import migrate

    lines: list[CheckLine] = []
    folder = Path(settings.data_dir)
    key = folder / SERVER_KEY_FILE
    if settings.server_key() is not None:
        lines.append(skipped("data_folder", str(folder), "doctor.note.key_in_env"))
    elif not key.exists():
        lines.append(skipped("data_folder", str(folder), "doctor.note.no_key"))
    else:
        found = key_file_findings(str(key), key.stat().st_mode & 0o777)
        found += key_file_findings(str(folder), folder.stat().st_mode & 0o777)
        lines.append(line("data_folder", str(key), found))
    from pomona.storage.database import redact_url

    shown = redact_url(settings.url())
    db: SqlDatabase | None = None
    try:
        db = SqlDatabase(settings.url())
        db.check_reachable()
        current = migrate.current(db.engine)
    except DatabaseUnavailableError as exc:
        finding = Finding(
            ReasonCode.DATABASE_UNAVAILABLE, Severity.CRITICAL, "database", {"error": exc.detail}
        )
        lines.append(line("database", shown, [finding]))
        at_head = False
    else:
        pending = migration_findings(current, migrate.head())
        lines.append(line("database", shown, pending, "doctor.note.schema", revision=str(current)))
        at_head = not pending
    finally:
        if db is not None:
            db.dispose()
    if settings.ade_test_device_ca is not None:  # test mode only: say so wherever it is on
        test_ca = str(settings.ade_test_device_ca)
        finding = Finding(
            ReasonCode.ADE_TEST_DEVICE_CA_TRUSTED, Severity.WARNING, "server", {"path": test_ca}
        )
        lines.append(line("ade_device_ca", test_ca, [finding]))
    p = build(settings, migrate=False) if at_head else None
    try:
        url = public_url or (p.public_url if p is not None else None)
        doctor = Doctor(TlsUrlProber(ca_file=ca_file), SystemClock())
        if url is None:
            lines.append(skipped("public_url", "?", "doctor.note.no_public_url"))
        else:
            lines += doctor.public_url(url)
        if p is None:
            lines.append(skipped("push_certificate", "*", "doctor.note.no_database"))
        else:
            lines += doctor.tenants(p.health)
    finally:
        if p is not None:
            p.close()
    return lines


def create_app(
    settings: Settings | None = None, *, pomona: Pomona | None = None, eager: bool = True
) -> object:
    """The ASGI application: device endpoints (lean, raw ASGI) in front of the admin API. Not `eager`
    (tests): the admin API, portal, console and ADE web view are each built on their first request."""
    from pomona.http.root import RootApp

    p = pomona or build(settings or Settings.from_env(), measure=True)
    p.build_all()
    return RootApp(
        p,
        trusted_proxies=p.settings.trusted_proxies,
        metrics_allow=p.settings.metrics_allow,
        eager=eager,
        # PostgreSQL's durable commits wait for the WAL flush: off the event loop (http/root.py, _run)
        device_threads=0 if p.db.is_sqlite else p.settings.device_threads,
    )


__all__ = [
    "Pomona",
    "RestoreReport",
    "Settings",
    "backup_database",
    "build",
    "create_app",
    "restore_database",
    "rotate_server_key",
    "run_doctor",
]
