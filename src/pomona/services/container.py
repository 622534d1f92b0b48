"""What the adapters receive: every use case, built once by the composition root (``app.build``).

The HTTP and CLI adapters take a :class:`Services` and never build a service themselves; nothing here is
assigned after construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from pomona.ports import Clock, Metrics
from pomona.services.abm import AbmService
from pomona.services.admin import AdminService
from pomona.services.apns_lifecycle import ApnsLifecycle, Notifier
from pomona.services.checkin import CheckinService
from pomona.services.commands import CommandService
from pomona.services.console import ConsoleService
from pomona.services.diagnose import DiagnoseService
from pomona.services.enrollment import EnrollmentService
from pomona.services.health import HealthService
from pomona.services.jobs import Background
from pomona.services.policy import PolicyService
from pomona.services.portal import PortalService
from pomona.services.push import PushService
from pomona.services.reports import ReportService
from pomona.services.scep import ScepService


@dataclass
class Services:
    """Every service of one process, and the background work that serves them."""

    clock: Clock
    metrics: Metrics  # what /metrics shows (NoMetrics outside the server)
    public_url: str  # the URL devices and browsers reach this server at (profiles, portal links)
    admin: AdminService
    enrollment: EnrollmentService
    scep: ScepService
    checkin: CheckinService
    commands: CommandService
    policy: PolicyService
    portal: PortalService
    diagnose: DiagnoseService
    health: HealthService
    reports: ReportService
    push: PushService
    apns: ApnsLifecycle
    notifier: Notifier
    abm: AbmService
    background: Background
    console: ConsoleService
