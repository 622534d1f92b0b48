"""History retention: events and answered commands older than the installation's retention are deleted.

The event log and the command history are what grows without end (docs/scaling.md: about 1.5 GB a day
at a million devices). Two settings bound them, each 0 (keep forever, the default: an upgrade deletes
nothing unasked) or a number of days, at least :data:`MIN_DAYS`:

- ``POMONA_EVENT_RETENTION_DAYS``: events whose time is older are deleted. The daily failure counts
  (``failure_rollup``), which the failure reports read, are kept: reports over months still work.
- ``POMONA_COMMAND_RETENTION_DAYS``: commands the device answered for good (Acknowledged, Error,
  CommandFormatError) whose result is older are deleted, body and result with them. A command still
  waiting (Queued, Sent, NotNow) is never deleted, however old; nor is a Cancelled one (it has no
  result time).

Deletion goes tenant by tenant, :data:`BATCH` rows per transaction (ports.HistoryStore), each batch found
by an index on (tenant, time): the first prune of a year of history never holds a long lock (SQLite's
writer lock, PostgreSQL's row locks) nor writes a burst of WAL in one commit, and device traffic goes on
between batches. The server runs :meth:`RetentionService.run` hourly as the singleton job
``history-retention`` (services/jobs.py) when either setting is on; ``pomona prune`` runs it at once, or
counts with ``--dry-run``.

What reads old history degrades as the rows go, and nothing breaks: diagnosis reads a week back from the
time asked about (hence the 7-day minimum); the console's device timeline and ``pomona events`` show what
is left; the incident summary reads its own window; the push certificate's last canary is its event, so
after the retention it reads as "none recorded"; an enrollment held at Setup Assistant past the
retention gets one new AWAITING_CONFIGURATION_STUCK event (its earlier one is gone). No other row
references an event or a command (no foreign key points at either table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from pomona.domain.errors import InvalidInputError
from pomona.i18n import msg
from pomona.ports import Clock, HasEvents, HistoryStore, Metrics, NoMetrics, TenantStore, Transactions
from pomona.services.base import ServiceBase

log = logging.getLogger("pomona.retention")

#: The shortest retention that may be set: diagnosis reads a week of events back from the time it is
#: asked about (services/diagnose/context.py WINDOW; tests/unit/test_retention.py keeps them in step).
MIN_DAYS: Final = 7
#: Rows deleted per transaction.
BATCH: Final = 5000
#: How often the server's singleton job runs (seconds).
EVERY: Final = 3600.0

#: (rows deleted so far, rows to delete in all): a progress bar's view of a prune.
Progress = Callable[[int, int], None]


def check_days(days: int, what: str) -> int:
    """``days`` if it is 0 (keep forever) or at least MIN_DAYS; else INVALID_INPUT naming ``what``."""
    if days < 0 or 0 < days < MIN_DAYS:
        raise InvalidInputError(msg("error.retention.days", what=what, days=days, min=MIN_DAYS), field=what)
    return days


@dataclass(frozen=True)
class Retention:
    """How many days of each history to keep (0: forever)."""

    event_days: int = 0
    command_days: int = 0

    def is_on(self) -> bool:
        return self.event_days > 0 or self.command_days > 0


@dataclass(frozen=True)
class TenantPruned:
    """What a prune deleted (or, dry, would delete) of one tenant's history."""

    tenant_id: str
    tenant: str
    events: int
    commands: int

    def to_json(self) -> dict[str, object]:
        return {
            "tenant_id": self.tenant_id,
            "tenant": self.tenant,
            "events": self.events,
            "commands": self.commands,
        }


@dataclass(frozen=True)
class PruneReport:
    """A prune's outcome: the cut-off times (None: that history is kept) and each tenant's counts."""

    dry_run: bool
    events_before: datetime | None
    commands_before: datetime | None
    tenants: list[TenantPruned] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(t.events for t in self.tenants)

    @property
    def commands(self) -> int:
        return sum(t.commands for t in self.tenants)

    def to_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "events_before": None if self.events_before is None else self.events_before.isoformat(),
            "commands_before": None if self.commands_before is None else self.commands_before.isoformat(),
            "events": self.events,
            "commands": self.commands,
            "tenants": [t.to_json() for t in self.tenants],
        }


#: Which of a history store's batch deletions to run.
_Batch = Callable[[HistoryStore], Callable[[str, datetime, int], int]]


def _event_batch(h: HistoryStore) -> Callable[[str, datetime, int], int]:
    return h.prune_events


def _command_batch(h: HistoryStore) -> Callable[[str, datetime, int], int]:
    return h.prune_commands


class RetentionStores(HasEvents, Protocol):
    """The retention service's stores: the tenants, and the history it deletes."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def history(self) -> HistoryStore: ...


class RetentionService(ServiceBase[RetentionStores]):
    def __init__(
        self,
        db: Transactions[RetentionStores],
        clock: Clock,
        retention: Retention,
        *,
        batch: int = BATCH,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(db, clock, metrics=metrics or NoMetrics())
        self.retention = retention
        self.batch = batch

    def prune(
        self, *, retention: Retention | None = None, dry_run: bool = False, progress: Progress | None = None
    ) -> PruneReport:
        """Delete (``dry_run``: count) every tenant's history older than ``retention`` (else the
        configured one), BATCH rows per transaction. With ``progress``, the rows are counted first and
        ``progress(done, total)`` is called after each batch."""
        keep = retention or self.retention
        check_days(keep.event_days, "event_retention_days")
        check_days(keep.command_days, "command_retention_days")
        now = self.clock.now()
        events_before = now - timedelta(days=keep.event_days) if keep.event_days else None
        commands_before = now - timedelta(days=keep.command_days) if keep.command_days else None
        with self.db.unit_of_work(readonly=True) as uow:
            tenants = [(t.id, t.name) for t in uow.tenants.list()]
        counted: dict[str, tuple[int, int]] = {}
        if dry_run or progress is not None:
            counted = {tid: self._count(tid, events_before, commands_before) for tid, _ in tenants}
        if dry_run:
            rows = [TenantPruned(tid, name, *counted[tid]) for tid, name in tenants]
            return PruneReport(
                True, events_before, commands_before, [r for r in rows if r.events or r.commands]
            )
        total = sum(e + c for e, c in counted.values())
        done = 0

        def advanced(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        out: list[TenantPruned] = []
        for tid, name in tenants:
            events = commands = 0
            if events_before is not None:
                events = self._drain(_event_batch, tid, events_before, advanced)
            if commands_before is not None:
                commands = self._drain(_command_batch, tid, commands_before, advanced)
            if events or commands:
                out.append(TenantPruned(tid, name, events, commands))
        if progress is not None:
            progress(total, total)
        return PruneReport(False, events_before, commands_before, out)

    def run(self) -> PruneReport | None:
        """The singleton job ``history-retention``: prune as configured, log what went (None when off)."""
        if not self.retention.is_on():
            return None
        report = self.prune()
        if report.tenants:
            log.info(
                "history retention: %d events and %d commands deleted (%d tenants)",
                report.events,
                report.commands,
                len(report.tenants),
            )
        return report

    def _count(self, tenant_id: str, events: datetime | None, commands: datetime | None) -> tuple[int, int]:
        with self.db.unit_of_work(readonly=True) as uow:
            return (
                0 if events is None else uow.history.old_events(tenant_id, events),
                0 if commands is None else uow.history.old_commands(tenant_id, commands),
            )

    def _drain(self, which: _Batch, tenant_id: str, before: datetime, advanced: Callable[[int], None]) -> int:
        """Delete the tenant's rows older than ``before``, a batch per transaction, until a batch comes
        back short: how many were deleted."""
        deleted = 0
        while True:
            with self.db.unit_of_work() as uow:
                n = which(uow.history)(tenant_id, before, self.batch)
            deleted += n
            advanced(n)
            if n < self.batch:
                return deleted
