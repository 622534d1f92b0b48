"""The console's reports (issue 13, pages 1's chart, 8 and 9): what the dashboard chart, the Domains and
DNS page and the Reports page read.

Failures come from the daily failure roll-up (storage/rollup.py: one row per tenant, UTC day, reason,
platform, enrollment type and step), never from the event log, so a report over months of a large tenant
reads hundreds of rows; filters and grouping are applied to those rows here. Enrollments are those started
per UTC day, counted in the database. The Domains page asks the DNS for the discovery CNAMEs through the
resolver port, as the health checks do (`pomona health`: DNS_*_CNAME_MISSING / _WRONG).

Every read goes through :meth:`ConsoleService.scope` (another tenant's is NOT_FOUND); all roles read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Protocol

from pomona.domain.checks import DiscoveryRecord
from pomona.domain.errors import InvalidInputError
from pomona.domain.models import Tenant
from pomona.ports import AdminAccount, HasEvents, ReportListing, Resolver, RollupRow
from pomona.services.base import ServiceBase
from pomona.services.checks import DiscoverySettings, lookup_cnames
from pomona.services.console import ConsoleService
from pomona.services.reports import ReportService

CHART_DAYS: Final = 30
MAX_DAYS: Final = 366
#: A report's grouping -> the roll-up row's column (day, reason, platform, type, step).
GROUPS: Final[dict[str, int]] = {"reason": 1, "day": 0, "step": 4, "platform": 2, "type": 3}
#: The filters -> the roll-up row's column.
FILTERS: Final[dict[str, int]] = {"reason": 1, "step": 4, "platform": 2, "type": 3}


class ReportStores(HasEvents, Protocol):
    @property
    def report_listing(self) -> ReportListing: ...


@dataclass(frozen=True)
class Chart:
    """Enrollments and failures per UTC day (every day of the span, oldest first), failures by reason."""

    days: list[str]
    enrollments: dict[str, int]
    failures: dict[str, dict[str, int]]  # day -> reason -> count
    reasons: list[tuple[str, int]]  # every reason with its total, most first

    @property
    def total_failures(self) -> int:
        return sum(n for _, n in self.reasons)

    @property
    def total_enrollments(self) -> int:
        return sum(self.enrollments.values())

    def day_failures(self, day: str) -> int:
        return sum(self.failures.get(day, {}).values())


@dataclass(frozen=True)
class ReportQuery:
    since: date
    until: date
    group_by: str = "reason"
    filters: dict[str, str] = field(default_factory=dict)  # reason, step, platform, type


@dataclass(frozen=True)
class Report:
    tenant: Tenant
    query: ReportQuery
    groups: list[tuple[str, int]]  # most first (by day: oldest first)
    total: int
    chart: Chart
    choices: dict[str, list[str]]  # each filter's values seen in the span (unfiltered)


@dataclass(frozen=True)
class CnameRow:
    record: str  # EnterpriseEnrollment | EnterpriseRegistration
    name: str
    expected: str
    found: str | None
    status: str  # ok | missing | wrong | unanswered | unchecked
    error: str | None = None


@dataclass(frozen=True)
class DomainsView:
    tenant: Tenant
    domains: list[str]
    records: list[CnameRow]
    checked: bool  # False: no resolver, or the server's name cannot be a CNAME target (an address)
    well_known: str


def _span(since: date, until: date) -> tuple[datetime, datetime]:
    return datetime.combine(since, time.min, UTC), datetime.combine(until, time.max, UTC)


def _days(since: date, until: date) -> list[str]:
    return [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]


def chart_of(rows: list[RollupRow], enrollments: dict[str, int], days: list[str]) -> Chart:
    per_day: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for day, reason, _platform, _type, _step, n in rows:
        per_day.setdefault(day, {})
        per_day[day][reason] = per_day[day].get(reason, 0) + n
        totals[reason] = totals.get(reason, 0) + n
    reasons = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return Chart(days, {d: enrollments.get(d, 0) for d in days}, per_day, reasons)


#: How long the enrollments-per-day counts of a span are reused: counting them reads every enrollment
#: row of the span (no index has the start time), tens of milliseconds at 200,000 devices. Failures are
#: read fresh from the roll-up at every request.
ENROLLMENT_COUNTS_TTL: Final = timedelta(seconds=60)


@dataclass
class ConsoleReportsService(ServiceBase[ReportStores]):
    console: ConsoleService
    reports: ReportService
    resolver: Resolver | None
    settings: DiscoverySettings
    _counts: dict[tuple[str, str, str], tuple[datetime, dict[str, int]]] = field(
        default_factory=dict, init=False, repr=False
    )

    def enrollment_counts(self, tenant_id: str, since: date, until: date) -> dict[str, int]:
        """Enrollments started per UTC day of the span, at most ENROLLMENT_COUNTS_TTL old (per process)."""
        now = self.clock.now()
        key = (tenant_id, since.isoformat(), until.isoformat())
        hit = self._counts.get(key)
        if hit is not None and now - hit[0] < ENROLLMENT_COUNTS_TTL:
            return hit[1]
        start, end = _span(since, until)
        with self.db.unit_of_work(readonly=True) as uow:
            counts = uow.report_listing.enrollments_by_day(tenant_id, start, end)
        if len(self._counts) > 256:  # a bound: spans asked by hand are many, the dashboard's one
            self._counts.clear()
        self._counts[key] = (now, counts)
        return counts

    def chart(self, account: AdminAccount, tenant_ref: str, days: int = CHART_DAYS) -> Chart:
        """The dashboard's chart: the last ``days`` UTC days, today included."""
        t = self.console.scope(account, tenant_ref)
        until = self.clock.now().astimezone(UTC).date()
        since = until - timedelta(days=days - 1)
        start, end = _span(since, until)
        with self.db.unit_of_work(readonly=True) as uow:
            rows = uow.report_listing.failure_rows(t.id, start, end)
        return chart_of(rows, self.enrollment_counts(t.id, since, until), _days(since, until))

    def default_span(self) -> tuple[date, date]:
        until = self.clock.now().astimezone(UTC).date()
        return until - timedelta(days=CHART_DAYS - 1), until

    def report(
        self, account: AdminAccount, tenant_ref: str, q: ReportQuery, *, enrollments: bool = True
    ) -> Report:
        """Failures in ``q``'s span (UTC days, both included), filtered and grouped; and the chart of the
        same rows (failures by reason per day, and the enrollments started unless ``enrollments`` is
        False: the CSV export has no chart)."""
        if q.group_by not in GROUPS:
            raise InvalidInputError(f"group by one of {', '.join(GROUPS)}", field="group")
        if q.until < q.since:
            raise InvalidInputError("the end of the span is before its start", field="until")
        if (q.until - q.since).days >= MAX_DAYS:
            raise InvalidInputError(f"a report spans at most {MAX_DAYS} days", field="since")
        t = self.console.scope(account, tenant_ref)
        start, end = _span(q.since, q.until)
        with self.db.unit_of_work(readonly=True) as uow:
            every = uow.report_listing.failure_rows(t.id, start, end)
        enrolled = self.enrollment_counts(t.id, q.since, q.until) if enrollments else {}
        choices = {k: sorted({str(r[col]) for r in every}) for k, col in FILTERS.items()}
        rows = [
            r for r in every if all(r[FILTERS[k]] == v for k, v in q.filters.items() if k in FILTERS and v)
        ]
        col = GROUPS[q.group_by]
        grouped: dict[str, int] = {}
        for r in rows:
            key = str(r[col])
            grouped[key] = grouped.get(key, 0) + r[5]
        if q.group_by == "day":
            groups = sorted(grouped.items())
        else:
            groups = sorted(grouped.items(), key=lambda kv: (-kv[1], kv[0]))
        chart = chart_of(rows, enrolled, _days(q.since, q.until))
        return Report(t, q, groups, sum(grouped.values()), chart, choices)

    def incident(self, account: AdminAccount, tenant_ref: str, code: str, lang: str) -> tuple[Tenant, str]:
        """The incident summary of a reason code over the last 30 days (`pomona incident --code`), as
        the Markdown the CLI prints."""
        t = self.console.scope(account, tenant_ref, "diagnose")
        now = self.clock.now()
        inc = self.reports.incident(t.id, codes=[code], since=now - timedelta(days=CHART_DAYS), until=now)
        return t, self.reports.incident_markdown(inc, lang)

    def domains(self, account: AdminAccount, tenant_ref: str) -> DomainsView:
        """The tenant's domain, the discovery CNAMEs to create there, and what the DNS answers now."""
        t = self.console.scope(account, tenant_ref)
        checked = self.resolver is not None and self.settings.discoverable
        rows: list[CnameRow] = []
        if checked:
            assert self.resolver is not None
            for lk in lookup_cnames(self.resolver, t.domain, self.settings):
                found = None if lk.found is None else lk.found.rstrip(".").lower()
                if not lk.answered:
                    status = "unanswered"
                elif found is None:
                    status = "missing"
                elif found == lk.expected.rstrip(".").lower():
                    status = "ok"
                else:
                    status = "wrong"
                rows.append(CnameRow(_record(lk.record), lk.name, lk.expected, found, status, lk.error))
        else:
            for record in DiscoveryRecord:
                name = f"{record.value}.{t.domain}"
                rows.append(CnameRow(_record(record), name, self.settings.target(record), None, "unchecked"))
        return DomainsView(t, [t.domain], rows, checked, self.settings.well_known_url.format(domain=t.domain))


def _record(record: DiscoveryRecord) -> str:
    return "EnterpriseEnrollment" if record is DiscoveryRecord.ENROLLMENT else "EnterpriseRegistration"


__all__ = ["Chart", "ConsoleReportsService", "DomainsView", "Report", "ReportQuery", "chart_of"]
