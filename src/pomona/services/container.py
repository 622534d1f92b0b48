"""What the adapters receive: every use case, built once by the composition root (``app.build``).

The HTTP and CLI adapters take a :class:`Services` and never build a service themselves; nothing here is
assigned after it is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pomona.ports import Clock, Metrics
    from pomona.services.abm import AbmService
    from pomona.services.ade import AdeEnrollmentService
    from pomona.services.admin import AdminService
    from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
    from pomona.services.checkin import CheckinService
    from pomona.services.commands import CommandService
    from pomona.services.console import ConsoleService
    from pomona.services.console_admin import AdminPagesService
    from pomona.services.console_apple import AppleSettingsService
    from pomona.services.console_auth import ConsoleAuthService
    from pomona.services.console_policy import RestrictionPagesService
    from pomona.services.console_reports import ConsoleReportsService
    from pomona.services.diagnose import DiagnoseService
    from pomona.services.enrollment import EnrollmentService
    from pomona.services.health import HealthService
    from pomona.services.jobs import Background
    from pomona.services.policy import PolicyService
    from pomona.services.portal import PortalService
    from pomona.services.push import PushService
    from pomona.services.reports import ReportService
    from pomona.services.retention import RetentionService
    from pomona.services.scep import ScepService


class Services(Protocol):
    """Every service of one process, and the background work that serves them. Read-only: the root
    (app.Pomona) builds each once, when it is first used (a CLI command builds only what it runs)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Metrics: ...  # what /metrics shows (NoMetrics outside the server)
    @property
    def public_url(self) -> str: ...  # the URL devices and browsers reach (profiles, portal links)
    @property
    def admin(self) -> AdminService: ...
    @property
    def enrollment(self) -> EnrollmentService: ...
    @property
    def scep(self) -> ScepService: ...
    @property
    def checkin(self) -> CheckinService: ...
    @property
    def commands(self) -> CommandService: ...
    @property
    def policy(self) -> PolicyService: ...
    @property
    def portal(self) -> PortalService: ...
    @property
    def diagnose(self) -> DiagnoseService: ...
    @property
    def health(self) -> HealthService: ...
    @property
    def reports(self) -> ReportService: ...
    @property
    def retention(self) -> RetentionService: ...
    @property
    def push(self) -> PushService: ...
    @property
    def apns(self) -> ApnsLifecycle: ...
    @property
    def notifier(self) -> Notifier: ...
    @property
    def abm(self) -> AbmService: ...
    @property
    def ade(self) -> AdeEnrollmentService: ...
    @property
    def background(self) -> Background: ...
    @property
    def console(self) -> ConsoleService: ...
    @property
    def console_apple(self) -> AppleSettingsService: ...
    @property
    def console_auth(self) -> ConsoleAuthService: ...
    @property
    def console_policy(self) -> RestrictionPagesService: ...
    @property
    def console_admin(self) -> AdminPagesService: ...
    @property
    def console_reports(self) -> ConsoleReportsService: ...
