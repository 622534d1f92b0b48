"""A database that does not answer, under the background loops: the push worker, the lease renewals and
a singleton job each write one warning line when the outage starts (no traceback), back off, and write
one info line when the database answers again. The outage is real: a SQLite file whose folder does not
exist yet, or a PostgreSQL database dropped under the running worker."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pomona import logs
from pomona.app import SystemClock
from pomona.services.jobs import Background, JobRunner, LeaderLease, SingletonJob
from pomona.services.outage import Outage
from pomona.services.push import PushService, PushSettings
from pomona.storage.sql import SqlDatabase

FIRST, LONGEST = 0.01, 0.04  # the backoff, shortened: 0.01 s doubling to 0.04 s


class Outside:
    """A database this test can take away and give back, as the process sees it: its URL is fixed."""

    url: str

    def break_(self) -> None: ...
    def repair(self) -> None: ...


class SqliteOutside(Outside):
    """The SQLite file's folder does not exist (an unmounted volume) until repaired."""

    def __init__(self, tmp_path: Path, template: Path) -> None:
        self.folder = tmp_path / "volume"
        self.template = template
        self.url = f"sqlite:///{self.folder / 'pomona.db'}"

    def repair(self) -> None:
        self.folder.mkdir()
        shutil.copy(self.template, self.folder / "pomona.db")


class PostgresOutside(Outside):
    """A PostgreSQL database, dropped (WITH FORCE: every session ended) and created again."""

    def __init__(self, admin_url: str, template: str) -> None:
        self.admin_url = admin_url
        self.template = template
        self.name = f"pomona_outage_{uuid.uuid4().hex[:8]}"
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"
        self._admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def break_(self) -> None:
        self._admin(f'DROP DATABASE "{self.name}" WITH (FORCE)')

    def repair(self) -> None:
        self._admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def outside(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outside]:
    """The database to lose, on each backend (it answers at first on PostgreSQL, not on SQLite)."""
    if request.param == "sqlite":
        yield SqliteOutside(tmp_path, request.getfixturevalue("sqlite_template"))
        return
    pg = PostgresOutside(request.getfixturevalue("pg_admin_url"), request.getfixturevalue("pg_template"))
    yield pg
    pg.drop()


@pytest.fixture
def console(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """The server's log as it is written (console format, info); calling it returns what was written."""
    logs.configure("console", "info")
    yield lambda: re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err)
    logs.reset()


def _lines(err: str, text: str) -> int:
    """How many lines of the log start with ``text`` (after their time stamp and level)."""
    return len(re.findall(rf"^\S+ \[\w+ *\] {re.escape(text)}", err, re.M))


def _backing_off(outage: Outage) -> bool:
    """The outage's wait is the capped doubling of its attempts (checked at every look)."""
    assert outage.wait == (min(FIRST * 2 ** (outage.failures - 1), LONGEST) if outage.failures else 0.0)
    return True


async def _until(done: Callable[[], bool], *checks: Outage) -> None:
    """Let the loops run until ``done()`` (bounded, so a broken loop fails rather than hangs)."""
    for _ in range(2000):
        if done():
            return
        assert all(_backing_off(o) for o in checks)
        await asyncio.sleep(0.002)
    raise AssertionError("the loops did not get there")


def test_the_push_worker_lives_through_a_database_outage(
    outside: Outside, console: Callable[[], str]
) -> None:
    """The push worker's unanswered batches are one warning line (no traceback), then a capped backoff;
    one info line when the database answers again, and it goes on claiming."""
    db = SqlDatabase(outside.url)
    push = PushService(db, SystemClock(), settings=PushSettings(poll_interval=0.005))
    push.outage = Outage("push worker", logging.getLogger("pomona.push"), first=FIRST, longest=LONGEST)

    async def scenario() -> int:
        worker = asyncio.create_task(push.run())
        outside.break_()
        await _until(lambda: push.outage.failures >= 8, push.outage)
        failed = push.outage.failures
        outside.repair()
        await _until(lambda: push.outage.failures == 0)  # a batch went through
        push.stop()
        await worker
        return failed

    try:
        failed = asyncio.run(scenario())
    finally:
        db.dispose()
    err = console()
    assert failed >= 8 and push.outage.wait == 0.0
    assert _lines(err, "push worker: the database did not answer") == 1, err
    assert "retrying with backoff up to 0.04s" in err
    assert _lines(err, "push worker: the database answers again") == 1
    assert "Traceback" not in err and "push batch failed" not in err


def test_the_lease_and_job_loops_live_through_a_database_outage(
    outside: Outside, console: Callable[[], str]
) -> None:
    """The lease renewals and a singleton job: one warning line for the outage (no traceback), a capped
    backoff, and the job runs again once the database answers."""
    db = SqlDatabase(outside.url)
    push = PushService(db, SystemClock())
    push.outage = Outage("push worker", logging.getLogger("pomona.push"), first=FIRST, longest=LONGEST)
    runs: list[int] = []

    async def _noop() -> None:
        return None

    background = Background(
        jobs=JobRunner(),
        push=push,
        close_gateway=_noop,
        health_round=lambda: None,
        push_worker=True,
        health_interval=0,
        leader=LeaderLease(db, SystemClock(), ttl=3 * FIRST),
        singletons=[SingletonJob("probe", FIRST, lambda: runs.append(1))],
        outage_wait=LONGEST,
    )

    async def scenario() -> int:
        await background.start()
        outside.break_()
        leases = background.outages["leases"]
        await _until(lambda: leases.failures >= 8, leases)
        failed = leases.failures
        runs.clear()
        outside.repair()
        await _until(lambda: leases.failures == 0 and len(runs) > 0)
        await background.stop()
        return failed

    try:
        failed = asyncio.run(scenario())
    finally:
        db.dispose()
    err = console()
    assert failed >= 8
    assert _lines(err, "leases: the database did not answer") == 1, err
    assert _lines(err, "leases: the database answers again") == 1
    assert _lines(err, "push worker: the database did not answer") == 1  # the push worker's own line
    assert "Traceback" not in err and "renewal failed" not in err and "job probe failed" not in err


def test_requests_while_the_database_is_gone_get_503_and_one_line_each(
    pg_admin_url: str, pg_template: str, tmp_path: Path, console: Callable[[], str]
) -> None:
    """With the PostgreSQL database dropped under the server, a device endpoint answers 503
    DATABASE_UNAVAILABLE (no cause shown) and the portal its 503 page; each writes one warning line, no
    traceback."""
    import httpx

    from pomona.app import build
    from pomona.asgi import create
    from pomona.settings import Settings

    pg = PostgresOutside(pg_admin_url, pg_template)
    try:
        settings = Settings(data_dir=tmp_path, database_url=pg.url, push_worker=False)
        p = build(settings)
        tenant = p.admin.create_tenant("acme", "acme.example", key_type="p256")
        p.close()
        app = create(settings)

        async def requests() -> tuple[httpx.Response, httpx.Response]:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://pomona.test") as client:
                assert (await client.get("/portal/acme/signin")).status_code == 200
                pg.break_()
                headers = {"content-type": "application/x-apple-aspen-mdm-checkin"}
                device = await client.put(f"/mdm/{tenant.id}/checkin", content=b"<plist/>", headers=headers)
                portal = await client.get("/portal/acme/signin")
                return device, portal

        device, portal = asyncio.run(requests())
    finally:
        pg.drop()
    assert device.status_code == 503 and device.json()["reason"] == "DATABASE_UNAVAILABLE"
    assert pg.name not in device.text and "Traceback" not in device.text
    assert portal.status_code == 503 and "text/html" in portal.headers["content-type"]
    err = console()
    assert "Traceback" not in err
    assert len(re.findall(r"\[warning *\] request \w+: the database did not answer", err)) == 2, err
