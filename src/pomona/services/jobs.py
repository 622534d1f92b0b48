"""The server process's background work, owned by one object: the push worker, the health schedule, the
ABM sync schedule, and one-off jobs (the push certificate's canary) that must not run inside a request.

``Background.start()`` runs in the server's lifespan, on its event loop; ``stop()`` ends every task.
Outside a started server (the CLI, scripts, tests) ``submit`` runs a job at once, in the caller's thread,
so a CLI command still waits for its canary and prints the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("pomona.jobs")


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
    ) -> None:
        self.jobs = jobs
        self.push = push
        self.close_gateway = close_gateway
        self.health_round = health_round
        self.push_worker = push_worker
        self.health_interval = health_interval
        self.abm_round = abm_round
        self.abm_interval = abm_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start this process's push worker and health schedule (once; a second call does nothing)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.jobs.attach(self._loop)
        if not self.push_worker:
            return
        self._push_task = self._loop.create_task(self.push.run(), name="pomona-push")
        if self.health_interval > 0:
            self.jobs.track(self._loop.create_task(self._health_loop(), name="pomona-health"))
        if self.abm_interval > 0 and self.abm_round is not None:
            self.jobs.track(self._loop.create_task(self._abm_loop(self.abm_round), name="pomona-abm-sync"))

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
        self._loop = None

    async def _health_loop(self) -> None:
        """Tenant health on a schedule: findings kept with first/last seen, new ones sent to webhooks."""
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                await asyncio.to_thread(self.health_round)
            except Exception:  # a failed round must not stop the schedule
                log.exception("scheduled health check failed")

    async def _abm_loop(self, sync_round: Callable[[], object]) -> None:
        """Every ABM server token synced on a schedule (services/abm.py ``sync_all``)."""
        while True:
            await asyncio.sleep(self.abm_interval)
            try:
                await asyncio.to_thread(sync_round)
            except Exception:  # a failed round must not stop the schedule
                log.exception("scheduled ABM sync failed")
