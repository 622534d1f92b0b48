"""The server's ABM sync schedule (services/jobs.py Background): every token synced every interval."""

from __future__ import annotations

import asyncio
import threading

from pomona.services.jobs import Background, JobRunner


class IdleWorker:
    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


async def _noop() -> None:
    return None


def started(abm_interval: float) -> tuple[Background, threading.Event, list[int]]:
    called = threading.Event()
    rounds: list[int] = []

    def abm_round() -> int:
        rounds.append(1)
        called.set()
        if len(rounds) == 1:
            raise RuntimeError("ABM unreachable")  # a failed round does not stop the schedule
        return 1

    bg = Background(
        jobs=JobRunner(),
        push=IdleWorker(),
        close_gateway=_noop,
        health_round=lambda: 0,
        push_worker=True,
        health_interval=0,
        abm_round=abm_round,
        abm_interval=abm_interval,
    )
    return bg, called, rounds


class TestAbmSchedule:
    def test_rounds_run_and_survive_a_failure(self) -> None:
        """With an interval, the sync round runs again and again, even after one raised."""
        bg, _, rounds = started(0.01)

        async def go() -> None:
            await bg.start()
            for _ in range(500):
                if len(rounds) >= 2:
                    break
                await asyncio.sleep(0.01)
            await bg.stop()

        asyncio.run(go())
        assert len(rounds) >= 2

    def test_interval_zero_is_off(self) -> None:
        """POMONA_ABM_SYNC_INTERVAL=0: no scheduled sync."""
        bg, _, rounds = started(0)

        async def go() -> None:
            await bg.start()
            await asyncio.sleep(0.05)
            await bg.stop()

        asyncio.run(go())
        assert rounds == []
