"""Migration 0013: ADE profiles, their definitions, the wanted assignments, and the timeline's reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from helpers import insert_old_tenant
from pomona.ports import AbmAssignment, AbmProfileRecord
from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0013:
    def test_history_kept_and_new_tables_usable(self, empty_db_url: str) -> None:
        """A device timeline written before 0013 reads back (no reason); profiles and assignments can be
        kept after it; downgrading to 0012 and upgrading again works."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC)
        try:
            upgrade(d.engine, "0012")
            tid = str(uuid.uuid4())
            with d.engine.begin() as conn:
                insert_old_tenant(conn, tid, now)
                conn.execute(
                    text(
                        "INSERT INTO abm_device_history (tenant_id, serial_number, token_id, at, op_type, "
                        "profile_status, profile_uuid, device_assigned_by) "
                        "VALUES (:i, 'S1', 't', :c, 'added', 'empty', '', '')"
                    ),
                    {"i": tid, "c": now},
                )
            upgrade(d.engine)
            with d.unit_of_work() as uow:
                (entry,) = uow.abm.history(tid, "S1")
                assert (entry.op_type, entry.reason) == ("added", None)
                uow.abm.save_profile(AbmProfileRecord("p", tid, "staff", {"auth": "modern"}, now, now))
                uow.abm.save_assignments(tid, [AbmAssignment(tid, "S1", "p")])
            with d.unit_of_work(readonly=True) as uow:
                assert [p.name for p in uow.abm.profiles(tid)] == ["staff"]
                assert list(uow.abm.assignments(tid)) == ["S1"]
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0012")
            upgrade(d.engine)
            with d.unit_of_work(readonly=True) as uow:
                assert uow.abm.profiles(tid) == [] and len(uow.abm.history(tid, "S1")) == 1
        finally:
            d.dispose()
