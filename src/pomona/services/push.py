"""Push delivery that never loses a command: the worker over the durable push queue.

Enqueueing a command writes, in the same transaction, a row of the push queue for its enrollment (one
row per enrollment). Each server process runs one :class:`PushService` worker (an asyncio task started by
the ASGI lifespan) that claims due rows in batches under a lease (see storage/push_sql.py for how the
claim works on PostgreSQL and SQLite), sends them through ONE push gateway (the APNs client) per
process, and records what APNs said (push/apns.py ``classify``):

- delivered: the enrollment's last push time and response; the row stays and the device is pushed again
  with backoff (default 1 min, 5 min, 30 min, then hourly, for at most 72 h) while it still has pending
  commands; it is dropped once none is left (the device came and took them);
- 410 Unregistered (PUSH_TOKEN_UNREGISTERED) or another permanent per-device refusal (PUSH_REJECTED:
  BadDeviceToken, DeviceTokenNotForTopic): the token is marked invalid and never pushed again until a
  new TokenUpdate clears it (which re-queues the push if commands wait);
- BadCertificate, BadCertificateEnvironment, TopicDisallowed (APNS_CERT_INVALID): the tenant is marked,
  one event is written, and nothing is pushed for it until its certificate changes;
- 429, 500, 503, GOAWAY, no connection (transient; PUSH_UNREACHABLE when APNs could not be reached):
  retried later with backoff, the row is kept: nothing is lost.

A database that does not answer (StorageUnavailableError) is one warning line, not a traceback per
batch: the worker waits 0.5 s, doubling to 30 s, and says when it answers again (services/outage.py).

A process killed mid-batch loses nothing either: its claimed rows become claimable again when the lease
passes, and commands live in their own table until the device reports a result.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pomona.domain.errors import StorageUnavailableError
from pomona.domain.models import Event, Outcome, Step
from pomona.domain.reasons import ReasonCode
from pomona.ports import (
    HasEvents,
    PushAttempt,
    PushCertStore,
    PushGateway,
    PushJob,
    PushKind,
    PushOutcome,
    PushQueue,
    PushReachabilityStore,
    PushReply,
    PushRequest,
    PushReschedule,
    TenantStore,
    TokenRefusal,
)
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.outage import Outage
from pomona.services.push_settings import PushSettings as PushSettings  # re-exported

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("pomona.push")

#: The hot path refreshes devices.last_seen_at at most this often (services/checkin.py TOUCH_EVERY).
SEEN_SLACK = timedelta(seconds=60)


@dataclass
class BatchStats:
    claimed: int = 0
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    outcomes: dict[PushOutcome, int] = field(default_factory=dict)


class PushRequestStores(Protocol):
    """What :meth:`PushService.request` writes, in the caller's unit of work."""

    @property
    def pushes(self) -> PushQueue: ...


class PushStores(PushRequestStores, HasEvents, Protocol):
    """The push worker's stores: the queue, what each push got, and the certificate APNs may refuse."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...
    @property
    def push_certs(self) -> PushCertStore: ...


@dataclass
class PushService(ServiceBase[PushStores]):
    gateway: PushGateway | None = None
    settings: PushSettings = field(default_factory=PushSettings)

    def __post_init__(self) -> None:
        self.worker_id = uuid.uuid4().hex[:12]
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._rng = random.Random()
        self.totals = BatchStats()
        self.outage = Outage("push worker", log)  # the database's answers, and the wait when it is away

    # -- requests (sync; any thread) ---------------------------------------------------------------
    def request(self, uow: PushRequestStores, tenant_id: str, enrollment_ids: Sequence[str]) -> None:
        """Queue a push to each enrollment, in the caller's transaction (coalesced per enrollment)."""
        uow.pushes.request(tenant_id, enrollment_ids, self.clock.now())

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll (no-op outside the worker's process)."""
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    # -- the worker --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Claim, send and record until :meth:`stop`."""
        import asyncio  # the server only: the CLI reads the push settings without asyncio

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                stats = await self.run_once()
            except asyncio.CancelledError:
                raise
            except StorageUnavailableError as exc:  # one line when it starts, then a capped backoff
                await self._idle(self.outage.failed(exc))
                continue
            except Exception:  # noqa: BLE001 - the worker must outlive a bad batch
                log.exception("push batch failed")
                stats = BatchStats()
                await asyncio.sleep(1.0)
            else:
                self.outage.answered()
            if stats.claimed >= self.settings.batch:
                continue
            await self._idle(self.settings.poll_interval)

    async def _idle(self, seconds: float) -> None:
        """Wait ``seconds``, or less if woken (a push was queued, or :meth:`stop`)."""
        import asyncio

        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    async def run_once(self) -> BatchStats:
        """One batch: claim due rows, send, record. Returns what happened."""
        import asyncio

        now = self.clock.now()
        jobs = await asyncio.to_thread(self._claim, now)
        stats = BatchStats(claimed=len(jobs))
        if not jobs:
            return stats
        plan = _Plan()
        to_send: list[PushJob] = []
        for job in jobs:
            verdict = self._triage(job, now)
            if verdict == "send":
                to_send.append(job)
            elif verdict == "hold":
                plan.reschedule(
                    job, now + timedelta(seconds=self.settings.tenant_hold), job.attempts, job.failures, None
                )
            else:
                plan.drops.append(job.enrollment_id)
        replies: list[PushReply] = []
        if to_send:
            if self.gateway is None:
                replies = [
                    PushReply(
                        PushOutcome.TRANSIENT, ReasonCode.PUSH_UNREACHABLE.value, detail="no push gateway"
                    )
                ] * len(to_send)
            else:
                replies = await self.gateway.send(
                    [PushRequest(j.push_token or b"", j.push_magic or "", j.topic) for j in to_send]
                )
        sent_at = self.clock.now()
        for job, reply in zip(to_send, replies, strict=True):
            stats.outcomes[reply.outcome] = stats.outcomes.get(reply.outcome, 0) + 1
            self.metrics.push_outcome(reply.outcome.value)
            self._plan_reply(plan, job, reply, sent_at)
        stats.sent = len(to_send)
        stats.delivered = stats.outcomes.get(PushOutcome.DELIVERED, 0)
        stats.dropped = len(plan.drops)
        await asyncio.to_thread(self._record, plan, sent_at)
        if self.gateway is not None:
            for topic in plan.forget_topics:
                self.gateway.forget(topic)
        t = self.totals
        t.claimed += stats.claimed
        t.sent += stats.sent
        t.delivered += stats.delivered
        t.dropped += stats.dropped
        for k, v in stats.outcomes.items():
            t.outcomes[k] = t.outcomes.get(k, 0) + v
        return stats

    def _claim(self, now: datetime) -> list[PushJob]:
        until = now + timedelta(seconds=self.settings.lease)
        with self.db.unit_of_work() as uow:
            return uow.pushes.claim(now, until, self.worker_id, self.settings.batch)

    def _triage(self, job: PushJob, now: datetime) -> Literal["send", "hold", "drop"]:
        """send | hold (the tenant cannot push now) | drop (nothing to push, or not pushable)."""
        if (
            job.status != "active"
            or not job.push_token
            or not job.push_magic
            or job.token_invalid
            or job.reenroll_required
        ):
            return "drop"
        if job.kind is PushKind.COMMAND and not job.has_pending:
            return "drop"
        if job.tenant_topic is None or job.tenant_cert_invalid:
            return "hold"
        if job.tenant_not_after is not None and job.tenant_not_after <= now:
            return "hold"
        if job.topic != job.tenant_topic:
            return "drop"  # enrolled under a replaced certificate: unreachable until it re-enrolls
        if (
            job.kind is PushKind.COMMAND
            and job.first_pushed_at is not None
            and (now - job.first_pushed_at).total_seconds() > self.settings.repush_cap
        ):
            return "drop"
        return "send"

    def _repush_delay(self, attempts: int) -> float:
        sched = self.settings.repush
        return sched[min(attempts, len(sched) - 1)]

    def _plan_reply(self, plan: _Plan, job: PushJob, reply: PushReply, at: datetime) -> None:
        if reply.outcome is PushOutcome.DELIVERED:
            first = job.first_unanswered_push_at
            seen = job.last_seen_at
            if first is None or (seen is not None and seen >= first - SEEN_SLACK):
                first = at
            plan.pushed.append(PushAttempt(job.enrollment_id, at, PushOutcome.DELIVERED.value, first))
            if job.kind is PushKind.CANARY and not job.has_pending:
                plan.drops.append(job.enrollment_id)
            else:
                due = at + timedelta(seconds=self._repush_delay(job.attempts))
                plan.reschedule(
                    job, due, job.attempts + 1, 0, None, first_pushed_at=job.first_pushed_at or at
                )
            return
        code = reply.reason_code or ReasonCode.PUSH_REJECTED.value
        detail: dict[str, object] = {"status": reply.status, "apns_reason": reply.reason}
        if reply.detail:
            detail["detail"] = reply.detail
        if reply.outcome is PushOutcome.DEVICE_PERMANENT:
            plan.invalid.append(TokenRefusal(job.enrollment_id, at, code))
            plan.events.append(_event(job, at, code, detail))
            plan.drops.append(job.enrollment_id)
            return
        if reply.outcome is PushOutcome.TENANT_PERMANENT:
            plan.tenant_refusals.setdefault(job.tenant_id, (code, detail))
            plan.forget_topics.add(job.topic)
            plan.reschedule(
                job, at + timedelta(seconds=self.settings.tenant_hold), job.attempts, job.failures, code
            )
            return
        # transient: retried later, never lost
        failures = job.failures + 1
        delay = min(self.settings.retry_max, self.settings.retry_base * (2 ** min(job.failures, 16)))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        plan.reschedule(job, at + timedelta(seconds=delay), job.attempts, failures, code)
        plan.pushed.append(PushAttempt(job.enrollment_id, at, code, job.first_unanswered_push_at))
        if reply.status is None and job.tenant_id not in plan.unreachable:
            plan.unreachable[job.tenant_id] = (job, detail)

    def _record(self, plan: _Plan, at: datetime) -> None:
        with self.db.unit_of_work() as uow:
            q = uow.pushes
            uow.reachability.record_pushes(plan.pushed)
            uow.reachability.mark_token_invalid(plan.invalid)
            q.reschedule(self.worker_id, plan.rows)
            q.drop(self.worker_id, plan.drops)
            for ev in plan.events:
                uow.events.append(ev)
            for tenant_id, (code, detail) in plan.tenant_refusals.items():
                if code == ReasonCode.APNS_CERT_INVALID.value and uow.push_certs.set_cert_invalid(
                    tenant_id, at, code
                ):
                    uow.events.append(
                        Event(
                            tenant_id=tenant_id,
                            at=at,
                            step=Step.PUSH,
                            outcome=Outcome.FAILED,
                            reason=code,
                            detail=detail,
                        )
                    )
            for tenant_id, (_job, detail) in plan.unreachable.items():
                uow.events.append(
                    Event(
                        tenant_id=tenant_id,
                        at=at,
                        step=Step.PUSH,
                        outcome=Outcome.FAILED,
                        reason=ReasonCode.PUSH_UNREACHABLE.value,
                        detail=detail,
                    )
                )

    # -- reachability, for health ------------------------------------------------------------------
    def _tenant_id(self, uow: PushStores, tenant: str) -> str:
        t = find_tenant(uow.tenants, tenant)
        return t.id

    def unresponsive(
        self, tenant: str, now: datetime, enrollment_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """DEVICE_UNRESPONSIVE: enrollments whose pushes APNs accepted but that stayed silent longer than
        ``settings.unresponsive_after`` since the first unanswered push (precision: one minute, how often
        the command channel records a check-in)."""
        before = now - timedelta(seconds=self.settings.unresponsive_after)
        with self.db.unit_of_work(readonly=True) as uow:
            rows = uow.reachability.unanswered(self._tenant_id(uow, tenant), before, enrollment_ids)
        out = []
        for r in rows:
            first = r.first_unanswered_push_at
            assert first is not None
            if r.last_seen_at is not None and r.last_seen_at >= first - SEEN_SLACK:
                continue
            out.append(
                {
                    "code": ReasonCode.DEVICE_UNRESPONSIVE.value,
                    "enrollment_id": r.enrollment_id,
                    "udid": r.udid,
                    "serial": r.serial,
                    "first_unanswered_push_at": first.isoformat(),
                    "last_push_at": None if r.last_push_at is None else r.last_push_at.isoformat(),
                    "last_push_status": r.last_push_status,
                    "last_seen_at": None if r.last_seen_at is None else r.last_seen_at.isoformat(),
                    "silent_for_s": int((now - (r.last_seen_at or first)).total_seconds()),
                }
            )
        return out

    def reachability(self, tenant: str) -> list[dict[str, Any]]:
        """Per enrollment: last push time and response, last check-in, an invalid token's reason."""
        with self.db.unit_of_work(readonly=True) as uow:
            rows = uow.reachability.reachability(self._tenant_id(uow, tenant))
        return [
            {
                "enrollment_id": r.enrollment_id,
                "udid": r.udid,
                "serial": r.serial,
                "last_push_at": None if r.last_push_at is None else r.last_push_at.isoformat(),
                "last_push_status": r.last_push_status,
                "last_seen_at": None if r.last_seen_at is None else r.last_seen_at.isoformat(),
                "push_token_invalid": r.push_token_invalid_reason,
            }
            for r in rows
        ]

    def queue_size(self, tenant: str | None = None) -> int:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.pushes.queue_size(None if tenant is None else self._tenant_id(uow, tenant))


def _event(job: PushJob, at: datetime, code: str, detail: dict[str, object]) -> Event:
    return Event(
        tenant_id=job.tenant_id,
        at=at,
        step=Step.PUSH,
        outcome=Outcome.FAILED,
        reason=code,
        udid=job.udid,
        enrollment_id=job.enrollment_id,
        detail=detail,
    )


@dataclass
class _Plan:
    """What one batch writes back, in one transaction."""

    pushed: list[PushAttempt] = field(default_factory=list)
    invalid: list[TokenRefusal] = field(default_factory=list)
    rows: list[PushReschedule] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    tenant_refusals: dict[str, tuple[str, dict[str, object]]] = field(default_factory=dict)
    unreachable: dict[str, tuple[PushJob, dict[str, object]]] = field(default_factory=dict)
    forget_topics: set[str] = field(default_factory=set)

    def reschedule(
        self,
        job: PushJob,
        due: datetime,
        attempts: int,
        failures: int,
        error: str | None,
        *,
        first_pushed_at: datetime | None = None,
    ) -> None:
        self.rows.append(
            PushReschedule(
                job.enrollment_id, due, attempts, failures, first_pushed_at or job.first_pushed_at, error
            )
        )
