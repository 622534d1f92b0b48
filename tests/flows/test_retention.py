"""History retention wired as the server and the CLI run it: `pomona prune` (a table, --json, --dry-run,
exit codes) and the hourly singleton job `history-retention`, led by the holder of its lease."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import active_enrollment, setup_tenant
from pomona.app import Pomona, Settings, build
from pomona.cli.main import main
from pomona.domain.models import (
    CommandStatus,
    Device,
    Event,
    Outcome,
    QueuedCommand,
    Step,
)
from pomona.i18n import set_process_lang
from pomona.services.retention import EVERY, PruneReport

OLD = timedelta(days=40)


def old_history(p: Pomona, tenant: str, events: int) -> None:
    """``events`` refusals 40 days old, and a device with two commands: one answered 40 days ago, one
    still queued since then."""
    now = datetime.now(UTC)
    with p.db.unit_of_work() as uow:
        t = uow.tenants.by_name(tenant)
        assert t is not None
        d = uow.devices.upsert(
            Device(id=str(uuid.uuid4()), tenant_id=t.id, udid=f"U-{tenant}", serial=None, created_at=now)
        )
        e = active_enrollment(d, f"fp-{tenant}", now - OLD)
        uow.enrollments.add(e)
        for i in range(events):
            uow.events.append(
                Event(t.id, now - OLD, Step.SCEP, Outcome.FAILED, "SIGNATURE_INVALID", serial=f"S{i}")
            )
        for n in ("answered", "waiting"):
            uow.commands.enqueue(
                QueuedCommand(
                    0, t.id, n, e.id, d.id, "DeviceInformation", b"<plist/>", CommandStatus.QUEUED, now - OLD
                )
            )
        uow.commands.record_result(e.id, "answered", CommandStatus.ACKNOWLEDGED, b"<plist/>", [], now - OLD)


def counts(p: Pomona, tenant: str) -> tuple[int, int]:
    """(events older than 30 days, answered commands older than 30 days) of the tenant."""
    cut = datetime.now(UTC) - timedelta(days=30)
    with p.db.unit_of_work(readonly=True) as uow:
        t = uow.tenants.by_name(tenant)
        assert t is not None
        return uow.history.old_events(t.id, cut), uow.history.old_commands(t.id, cut)


@pytest.fixture
def world(pomona: Pomona, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pomona:
    """Tenants acme (3 old events, an old answered command) and bolt (2 old events), and the CLI on
    their database and data folder."""
    for name, n in (("acme", 3), ("bolt", 2)):
        setup_tenant(pomona, name, push=False)
        old_history(pomona, name, n)
    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    monkeypatch.delenv("POMONA_LANG", raising=False)
    for var in ("POMONA_EVENT_RETENTION_DAYS", "POMONA_COMMAND_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)
    return pomona


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["prune", *args], env=env)
    return res.exit_code, res.stdout, res.stderr


class TestPruneCommand:
    def test_dry_run_json_counts_per_tenant_and_deletes_nothing(self, world: Pomona) -> None:
        """--dry-run --json: one object, each tenant's counts (the queued command not among them), exit 0,
        nothing deleted."""
        env = {"POMONA_EVENT_RETENTION_DAYS": "30", "POMONA_COMMAND_RETENTION_DAYS": "30"}
        code, out, err = run("--dry-run", "--json", env=env)
        assert code == 0, err
        data = json.loads(out)
        assert data["dry_run"] is True and (data["events"], data["commands"]) == (5, 2)
        by_tenant = {t["tenant"]: (t["events"], t["commands"]) for t in data["tenants"]}
        assert by_tenant == {"acme": (3, 1), "bolt": (2, 1)}
        assert counts(world, "acme") == (3, 1)

    def test_prune_prints_a_table_and_deletes(self, world: Pomona) -> None:
        """The options override the settings for the run: what went is said per kind and per tenant, in a
        table; the queued command and recent events stay."""
        code, out, err = run("--event-days", "30", "--command-days", "30")
        assert code == 0, err
        assert "Events older than 30 days" in out and "3" in out and "deleted" in out
        assert "acme" in out and "bolt" in out and "Commands" in out
        assert counts(world, "acme") == (0, 0) and counts(world, "bolt") == (0, 0)
        with world.db.unit_of_work(readonly=True) as uow:
            assert uow.commands.pending_count() == 2  # each tenant's waiting command
        assert world.commands.events("acme")  # the tenant's set-up events of today stay
        code, out, _ = run("--event-days", "30")
        assert code == 0 and "No tenant has history older than that." in out

    def test_events_kept_when_only_commands_are_pruned(self, world: Pomona) -> None:
        """POMONA_COMMAND_RETENTION_DAYS alone: commands go, events are said to be kept and stay."""
        code, out, err = run("--json", env={"POMONA_COMMAND_RETENTION_DAYS": "30"})
        assert code == 0, err
        data = json.loads(out)
        assert data["events_before"] is None and (data["events"], data["commands"]) == (0, 2)
        assert counts(world, "acme") == (3, 0)

    @pytest.mark.parametrize(
        ("args", "env", "named"),
        [
            ((), {}, "POMONA_EVENT_RETENTION_DAYS"),
            (("--event-days", "3"), {}, "--event-days"),
            ((), {"POMONA_COMMAND_RETENTION_DAYS": "5"}, "POMONA_COMMAND_RETENTION_DAYS"),
        ],
    )
    def test_no_or_too_short_retention_is_exit_2(
        self, world: Pomona, args: tuple[str, ...], env: dict[str, str], named: str
    ) -> None:
        """No retention set, or fewer than 7 days: one INVALID_INPUT line naming what to set, exit 2,
        nothing deleted."""
        code, out, err = run(*args, env=env)
        assert code == 2
        assert "INVALID_INPUT" in err and named in err and "Traceback" not in out + err
        assert counts(world, "acme") == (3, 1)

    def test_chinese(self, world: Pomona) -> None:
        """In Chinese (as POMONA_LANG=zh-CN sets it when the CLI starts) the lines and the table are too."""
        previous = set_process_lang("zh-CN")
        try:
            code, out, err = run("--event-days", "30")
        finally:
            set_process_lang(previous)
        assert code == 0, err
        assert "已删除" in out and "事件" in out and "命令：永久保留" in out


class TestTheJob:
    def test_registered_only_when_a_retention_is_set(self, db_url: str, tmp_path: Path) -> None:
        """The server's singleton jobs include history-retention (hourly) when either setting is on."""
        for keep, expected in (
            ({}, False),
            ({"event_retention_days": 30}, True),
            ({"command_retention_days": 7}, True),
        ):
            p = build(Settings(data_dir=tmp_path, database_url=db_url, push_worker=True, **keep))  # type: ignore[arg-type]
            try:
                jobs = {j.name: j for j in p.background.singletons}
                assert ("history-retention" in jobs) is expected
                if expected:
                    assert jobs["history-retention"].interval == EVERY == 3600
            finally:
                p.close()

    def test_runs_under_its_lease(self, world: Pomona, db_url: str, tmp_path: Path) -> None:
        """A started server takes the job's lease (its holder is the one process that runs it); the job
        it runs deletes the old history."""
        p = build(Settings(data_dir=tmp_path, database_url=db_url, push_worker=True, event_retention_days=30))
        try:
            bg = p.background
            job = next(j for j in bg.singletons if j.name == "history-retention")

            async def lead() -> tuple[bool, str | None]:
                await bg.start()
                try:
                    deadline = time.monotonic() + 10
                    while not bg.leads(job.name) and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    return bg.leads(job.name), p.db.lease_holder(job.name, datetime.now(UTC))
                finally:
                    await bg.stop()

            leads, holder = asyncio.run(lead())
            assert leads and bg.leader is not None and holder == bg.leader.holder
            report = job.run()
            assert isinstance(report, PruneReport) and report.events == 5
            assert counts(world, "acme") == (0, 1)  # commands kept: only the event retention is set
        finally:
            p.close()
