"""Migration 0018: the index of commands by tenant and result time (history retention)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from alembic import command as alembic
from sqlalchemy import inspect, text

from helpers import insert_old_tenant
from pomona.storage import schema as s
from pomona.storage.migrate import alembic_config, upgrade
from pomona.storage.sql import SqlDatabase

INDEX = "ix_commands_tenant_result_at"


def _indexes(d: SqlDatabase) -> dict[str, list[str]]:
    return {
        str(ix["name"]): [str(c) for c in ix["column_names"]]
        for ix in inspect(d.engine).get_indexes("commands")
        if str(ix["name"]).startswith("ix_")  # PostgreSQL lists the unique constraint's index too
    }


class TestMigration0018:
    def test_commands_kept_index_made_as_declared_and_downgrade(self, empty_db_url: str) -> None:
        """A command answered before 0018 is still there after it and is found by the retention's query;
        the index exists as schema.py declares it (every index of the table agrees); downgrading to 0017
        drops it and upgrading again makes it."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC).replace(microsecond=0)
        try:
            upgrade(d.engine, "0017")
            tid = str(uuid.uuid4())
            with d.engine.begin() as conn:
                insert_old_tenant(conn, tid, now)
                conn.execute(
                    text("INSERT INTO devices (id, tenant_id, udid, created_at) VALUES ('d', :i, 'u', :c)"),
                    {"i": tid, "c": now},
                )
                conn.execute(
                    text(
                        "INSERT INTO enrollments (id, tenant_id, device_id, udid, status, type, "
                        "cert_fingerprint, topic, started_at, awaiting_configuration) "
                        "VALUES ('e', :i, 'd', 'u', 'active', 'byod', 'fp', 't', :c, false)"
                    ),
                    {"i": tid, "c": now},
                )
                conn.execute(
                    text(
                        "INSERT INTO commands (tenant_id, command_uuid, enrollment_id, device_id, request_type, "
                        "body, status, created_at, result_at) "
                        "VALUES (:i, 'c1', 'e', 'd', 'DeviceInformation', :b, 'Acknowledged', :old, :old)"
                    ),
                    {"i": tid, "b": b"x", "old": now - timedelta(days=40)},
                )
            assert INDEX not in _indexes(d)
            upgrade(d.engine)
            made = _indexes(d)
            assert made[INDEX] == ["tenant_id", "result_at"]
            declared = {str(ix.name): [c.name for c in ix.columns] for ix in s.commands.indexes}
            assert made == declared
            with d.unit_of_work(readonly=True) as uow:
                assert uow.history.old_commands(tid, now - timedelta(days=30)) == 1
            alembic.downgrade(alembic_config(d.engine), "0017")
            assert INDEX not in _indexes(d)
            upgrade(d.engine)
            assert INDEX in _indexes(d)
        finally:
            d.dispose()
