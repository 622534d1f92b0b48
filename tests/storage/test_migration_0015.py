"""Migration 0015: assignment rules, the rule an assignment came from, and a device's order number."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from helpers import insert_old_tenant
from pomona.ports import AbmAssignmentRule
from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0015:
    def test_assignments_and_devices_kept_and_rules_usable(self, empty_db_url: str) -> None:
        """An assignment and a device written before 0015 read back (no rule, no order number); rules can be
        kept after it; downgrading to 0013 and upgrading again works."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC)
        try:
            upgrade(d.engine, "0013")
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
                        "VALUES (:i, 'S1', 'p', false, 0)"
                    ),
                    {"i": tid},
                )
                conn.execute(
                    text(
                        "INSERT INTO abm_devices (tenant_id, serial_number, token_id, model, description, "
                        "color, asset_tag, device_family, os, profile_status, profile_uuid, "
                        "device_assigned_by, op_type, deleted, first_seen_at, updated_at) VALUES "
                        "(:i, 'S1', 't', 'iPad mini', '', '', '', 'iPad', 'iPadOS', 'empty', '', '', '', "
                        "false, :c, :c)"
                    ),
                    {"i": tid, "c": now},
                )
            upgrade(d.engine)
            with d.unit_of_work() as uow:
                assert uow.abm.assignments(tid)["S1"].rule_id is None
                (device,) = uow.abm.devices(tid)
                assert (device.device.model, device.device.order_number) == ("iPad mini", "")
                uow.abm.add_rule(AbmAssignmentRule("r", tid, "p", "device_family", "iPad", 10, now))
            with d.unit_of_work(readonly=True) as uow:
                assert [r.id for r in uow.abm.rules(tid)] == ["r"]
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0013")
            upgrade(d.engine)
            with d.unit_of_work(readonly=True) as uow:
                assert uow.abm.rules(tid) == [] and list(uow.abm.assignments(tid)) == ["S1"]
        finally:
            d.dispose()
