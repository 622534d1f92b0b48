"""The server process's background work, owned by one object: the push worker, the health schedule, the
ABM sync schedule, and one-off jobs (the push certificate's canary) that must not run inside a request.

Singleton jobs (the health schedule, the clean-up of shared state, any job given as a
:class:`SingletonJob`) run in one process of the whole installation: the holder of the job's lease
(``ports.Leases``, a row per job name with an expiry). Every process tries to take or renew each lease
every ``LEASE_RENEW`` seconds; the holder keeps it ``LEASE_TTL`` seconds past its last renewal. A holder
that dies (SIGKILL, a lost host) stops renewing, and another process takes the lease over within
``LEASE_TTL + LEASE_RENEW`` seconds; a holder that stops cleanly releases it at once. Why a lease row and
not an advisory lock: the same code on SQLite and PostgreSQL, no connection held open per process
(and none to lose behind a transaction-pooling proxy), and a host that vanishes without closing its TCP
connection still loses the lease on time.

A database that does not answer (StorageUnavailableError) is no bug: each loop (the lease renewals,
each singleton job, the push worker) writes one warning line when the outage starts, waits with a
capped backoff, and one info line when the database answers again (services/outage.py). Any other
failure is logged with its traceback.

Each server process also hands its heap's free memory back to the system every ``TRIM_EVERY`` seconds
(``trim``, a worker thread; the composition root passes ``pomona.heap.release_free_heap``): memory a
console page, a health round or a SQLite cache freed stays the process's otherwise, and RSS rose in
steps over a soak (issue 14, bench/memory.py).

``Background.start()`` runs in the server's lifespan, on its event loop; ``stop()`` ends every task.
Outside a started server (the CLI, scripts, tests) ``submit`` runs a job at once, in the caller's thread,
so a CLI command still waits for its canary and prints the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pomona.domain.errors import StorageUnavailableError
from pomona.ports import Clock, Leases
from pomona.services.outage import LONGEST_WAIT, Outage

log = logging.getLogger("pomona.jobs")


#: Seconds a lease lasts past its holder's last renewal, and seconds between renewals.
LEASE_TTL: Final = 10.0
LEASE_RENEW: Final = 2.0

#: Seconds between two hand-backs of the heap's free memory (``Background.trim``), in every process.
TRIM_EVERY: Final = 60.0


@dataclass(frozen=True)
class SingletonJob:
    """A periodic job that one process of the installation runs: ``run`` every ``interval`` seconds, in
    a worker thread, by the holder of the lease ``name``."""

    name: str
    interval: float
    run: Callable[[], object]


class LeaderLease:
    """Which singleton jobs this process leads: it holds the lease of each name in :meth:`renew`'s
    last answer, until that answer's ``ttl`` runs out (counted on this process's monotonic clock from
    before the renewal was asked, so this process stops before the database lets another take over)."""

    def __init__(self, leases: Leases, clock: Clock, *, ttl: float = LEASE_TTL, holder: str | None = None):
        self.leases = leases
        self.clock = clock
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._until: dict[str, float] = {}  # name -> monotonic time the held lease runs out
        self._failed: set[str] = set()  # leases whose last renewal failed with an unexpected error

    def renew(self, name: str) -> bool:
        """Take or renew the lease ``name``: whether this process holds it now. A database that does not
        answer leads nothing and raises StorageUnavailableError (the lease loop logs it and backs off)."""
        asked = time.monotonic()
        try:
            held = self.leases.lease_acquire(name, self.holder, self.clock.now(), self.ttl)
        except StorageUnavailableError:  # the database is away: lead nothing until it answers again
            self._until.pop(name, None)
            raise
        except Exception:  # a bug: lead nothing, and say so once, with the traceback
            if name not in self._failed:
                log.exception("lease %s: renewal failed", name)
                self._failed.add(name)
            held = False
        else:
            self._failed.discard(name)
        if held:
            if name not in self._until or self._until[name] < asked:
                log.info("this process now leads %s (%s)", name, self.holder)
            self._until[name] = asked + self.ttl
        else:
            self._until.pop(name, None)
        return held

    def holds(self, name: str) -> bool:
        return self._until.get(name, 0.0) > time.monotonic()

    def release(self, name: str) -> None:
        if self._until.pop(name, None) is not None:
            with contextlib.suppress(Exception):
                self.leases.lease_release(name, self.holder)


class PushWorker(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


class Jobs(Protocol):
    """What a service needs to hand work to the background: a name (for logs) and a blocking callable."""

    def submit(self, name: str, fn: Callable[[], object]) -> None: ...


class JobRunner:
    """One-off blocking jobs: run in a worker thread of the started server, or at once where none runs."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def submit(self, name: str, fn: Callable[[], object]) -> None:
        """Run ``fn`` in a worker thread of the started server, or at once where no server runs here."""
        loop = self._loop
        if loop is None or loop.is_closed():
            fn()
            return

        async def job() -> object:
            try:
                return await asyncio.to_thread(fn)
            except StorageUnavailableError as exc:  # not a bug: one line, no traceback
                log.warning("background job %s: the database did not answer (%s)", name, exc)
                return None
            except Exception:  # a failed job is logged; it never takes the server down
                log.exception("background job %s failed", name)
                return None

        loop.call_soon_threadsafe(lambda: self.track(loop.create_task(job(), name=f"pomona-{name}")))

    def track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Background:
    """Owns every task of one server process: the push worker, the health schedule and the job runner's
    jobs. Each started task is tracked, logged if it fails, and ended by :meth:`stop`."""

    def __init__(
        self,
        *,
        jobs: JobRunner,
        push: PushWorker,
        close_gateway: Callable[[], Awaitable[None]],
        health_round: Callable[[], object],
        push_worker: bool,
        health_interval: float,
        abm_round: Callable[[], object] | None = None,
        abm_interval: float = 0.0,
        leader: LeaderLease | None = None,
        singletons: Sequence[SingletonJob] = (),
        outage_wait: float = LONGEST_WAIT,
        trim: Callable[[], object] | None = None,
        trim_interval: float = TRIM_EVERY,
    ) -> None:
        self.jobs = jobs
        self.push = push
        self.close_gateway = close_gateway
        self.health_round = health_round
        self.push_worker = push_worker
        self.health_interval = health_interval
        self.leader = leader  # None: this process is the only one (it leads every singleton job)
        self.singletons = list(singletons)
        self.trim = trim  # this process's free heap handed back (per process: not a singleton job)
        self.trim_interval = trim_interval
        if health_interval > 0:
            self.singletons.insert(0, SingletonJob("health", health_interval, self._health_round))
        if abm_interval > 0 and abm_round is not None:  # the ABM sync (main's signature), led alike
            self.singletons.append(SingletonJob("abm-sync", abm_interval, abm_round))
        #: The longest wait between rounds while the database does not answer (services/outage.py),
        #: and each loop's view of it: "leases" and each singleton job's name.
        self.outages = {job.name: Outage(job.name, log, longest=outage_wait) for job in self.singletons}
        if leader is not None:
            self.outages["leases"] = Outage("leases", log, first=self._renew_every(), longest=outage_wait)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start this process's push worker and health schedule (once; a second call does nothing)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.jobs.attach(self._loop)
        if self.trim is not None and self.trim_interval > 0:
            self.jobs.track(self._loop.create_task(self._trim_loop(self.trim), name="pomona-trim"))
        if not self.push_worker:
            return
        self._push_task = self._loop.create_task(self.push.run(), name="pomona-push")
        if self.singletons and self.leader is not None:
            self.jobs.track(self._loop.create_task(self._lease_loop(), name="pomona-leases"))
        for job in self.singletons:
            self.jobs.track(self._loop.create_task(self._singleton_loop(job), name=f"pomona-{job.name}"))

    async def stop(self) -> None:
        """End the push worker (letting it finish its batch for up to 5 s), the schedule and every job."""
        if self._loop is None:
            return
        self.jobs.attach(None)
        await self.jobs.cancel_all()
        if self._push_task is not None:
            self.push.stop()
            try:
                await asyncio.wait_for(self._push_task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._push_task.cancel()
            self._push_task = None
        with contextlib.suppress(Exception):
            await self.close_gateway()
        if self.leader is not None:  # another process takes over now, not when the lease runs out
            for job in self.singletons:
                await asyncio.to_thread(self.leader.release, job.name)
        self._loop = None

    def leads(self, name: str) -> bool:
        """Whether this process runs the singleton job ``name`` now."""
        return self.leader is None or self.leader.holds(name)

    def _renew_every(self) -> float:
        return LEASE_RENEW if self.leader is None else min(LEASE_RENEW, self.leader.ttl / 3)

    async def _lease_loop(self) -> None:
        """Take or renew every singleton job's lease, every LEASE_RENEW seconds; while the database does
        not answer, with a capped backoff from there (services/outage.py)."""
        assert self.leader is not None
        leader = self.leader
        every = self._renew_every()
        outage = self.outages["leases"]
        while True:
            try:
                for job in self.singletons:
                    await asyncio.to_thread(leader.renew, job.name)
            except StorageUnavailableError as exc:  # the leases not renewed run out: nothing is led
                await asyncio.sleep(outage.failed(exc))
                continue
            outage.answered()
            await asyncio.sleep(every)

    async def _singleton_loop(self, job: SingletonJob) -> None:
        """Run ``job`` every ``interval`` seconds while this process holds its lease (while the database
        does not answer, at most as often as the backoff allows)."""
        outage = self.outages[job.name]
        while True:
            await asyncio.sleep(max(job.interval, outage.wait))
            if not self.leads(job.name):
                continue
            try:
                await asyncio.to_thread(job.run)
            except StorageUnavailableError as exc:
                outage.failed(exc)
            except Exception:  # a failed round must not stop the schedule
                log.exception("scheduled job %s failed", job.name)
            else:
                outage.answered()

    async def _trim_loop(self, trim: Callable[[], object]) -> None:
        """Hand this process's free heap back every ``trim_interval`` seconds."""
        while True:
            await asyncio.sleep(self.trim_interval)
            try:
                await asyncio.to_thread(trim)
            except Exception:  # the next round tries again
                log.exception("heap trim failed")

    def _health_round(self) -> object:
        return self.health_round()
