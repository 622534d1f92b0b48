"""Migration 0017: indexes for the incident summary and the ADE profile page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, text

from helpers import insert_old_tenant
from pomona.domain.models import Event, Outcome, Step
from pomona.storage import schema as s
from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase

NEW = {
    "events": {"ix_events_tenant_step_at": ["tenant_id", "step", "at"]},
    "abm_assignments": {
        "ix_abm_assignments_tenant_profile": ["tenant_id", "profile_id", "serial_number", "last_error"]
    },
    "abm_devices": {
        "ix_abm_devices_tenant_token_profile": [
            *("tenant_id", "token_id", "profile_uuid", "serial_number", "profile_status", "deleted")
        ]
    },
}


def _indexes(d: SqlDatabase, table: str) -> dict[str, list[str]]:
    return {
        str(ix["name"]): [str(c) for c in ix["column_names"]] for ix in inspect(d.engine).get_indexes(table)
    }


class TestMigration0017:
    def test_rows_kept_indexes_made_as_the_schema_declares_and_downgrade(self, empty_db_url: str) -> None:
        """Events, an assignment and an ABM device written before 0017 read back through the queries the
        indexes serve; the three indexes exist after it, as schema.py declares them (every index of the
        three tables agrees); downgrading to 0016 drops them and upgrading again makes them."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC).replace(microsecond=0)
        try:
            upgrade(d.engine, "0016")
            tid = str(uuid.uuid4())
            with d.engine.begin() as conn:
                insert_old_tenant(conn, tid, now)
                conn.execute(
                    text(
                        "INSERT INTO abm_profiles (id, tenant_id, name, settings, is_default, created_at, "
                        "updated_at) VALUES ('p', :i, 'staff', '{}', false, :c, :c)"
                    ),
                    {"i": tid, "c": now},
                )
                conn.execute(
                    text(
                        "INSERT INTO abm_assignments (tenant_id, serial_number, profile_id, explicit, attempts) "
                        "VALUES (:i, 'S1', 'p', true, 0)"
                    ),
                    {"i": tid},
                )
                conn.execute(
                    text(
                        "INSERT INTO abm_devices (tenant_id, serial_number, token_id, model, description, "
                        "color, asset_tag, device_family, os, profile_status, profile_uuid, "
                        "device_assigned_by, op_type, deleted, first_seen_at, updated_at, order_number) "
                        "VALUES (:i, 'S2', 't', 'iPad mini', '', '', '', 'iPad', 'iPadOS', 'assigned', 'U', "
                        "'', '', false, :c, :c, '')"
                    ),
                    {"i": tid, "c": now},
                )
            with d.unit_of_work() as uow:  # the events table is as 0016 left it
                for step, outcome, reason, upn, serial in (
                    (Step.PORTAL, Outcome.FAILED, "DEVICE_LIMIT_REACHED", "ana@x.example", "S1"),
                    (Step.SCEP, Outcome.OK, None, "bo@x.example", "S3"),
                ):
                    uow.events.append(Event(tid, now, step, outcome, reason, upn=upn, serial=serial))
            for table, new in NEW.items():
                assert not set(new) & set(_indexes(d, table))
            upgrade(d.engine)
            for table, new in NEW.items():
                made = _indexes(d, table)
                assert {k: made[k] for k in new} == new
                declared = {
                    str(ix.name): [c.name for c in ix.columns] for ix in s.metadata.tables[table].indexes
                }
                assert made == declared
            with d.unit_of_work(readonly=True) as uow:
                f = uow.events.incident_facts(
                    tid, ["DEVICE_LIMIT_REACHED"], ["portal", "scep"], now, now + timedelta(minutes=1)
                )
                assert f.failures["DEVICE_LIMIT_REACHED"][0] == 1
                assert (f.attempting_users, f.attempting_devices) == (2, 2)
                rows = uow.abm_listing.profile_devices(tid, "p", {"t": "U"})
                assert [(r.serial, r.how) for r in rows] == [("S1", "explicit"), ("S2", "abm")]
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0016")
            for table, new in NEW.items():
                assert not set(new) & set(_indexes(d, table))
            upgrade(d.engine)
            assert "ix_events_tenant_step_at" in _indexes(d, "events")
        finally:
            d.dispose()
