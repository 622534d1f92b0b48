"""Migration 0014: the serial an ADE challenge (an enrollment token) and its identity are bound to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from helpers import insert_old_tenant
from pomona.domain.models import EnrollmentToken, IssuedCert
from pomona.ports import AbmAssignment, AbmProfileRecord
from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0014:
    def test_old_tokens_read_back_and_ade_ones_keep_their_serial(self, empty_db_url: str) -> None:
        """A link written before 0014 reads back as no ADE challenge; an ADE challenge keeps its serial,
        is left out of the admin's token list, and SCEP's identity keeps it; one device's assignment is
        read by serial; downgrading to 0013 and upgrading again works."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC)
        try:
            upgrade(d.engine, "0013")
            tid = str(uuid.uuid4())
            with d.engine.begin() as conn:
                insert_old_tenant(conn, tid, now)
                conn.execute(
                    text(
                        "INSERT INTO enrollment_tokens (id, tenant_id, token_hash, expires_at, uses_allowed, "
                        "uses_count, revoked, created_at) VALUES ('old', :i, 'h-old', :c, 1, 0, false, :c)"
                    ),
                    {"i": tid, "c": now},
                )
            upgrade(d.engine)
            ade = EnrollmentToken("ade", tid, None, now + timedelta(minutes=15), 1, 0, now, ade_serial="S1")
            with d.unit_of_work() as uow:
                old = uow.enrollment_tokens.by_hash("h-old")
                assert old is not None and old.ade_serial is None
                uow.enrollment_tokens.add(ade, "h-ade")
                uow.certs.add(IssuedCert("fp", tid, "1", "ade", None, now, now, ade_serial="S1"))
                uow.abm.save_profile(AbmProfileRecord("p", tid, "staff", {"auth": "none"}, now, now))
                uow.abm.save_assignments(tid, [AbmAssignment(tid, "S1", "p", attempts=2)])
            with d.unit_of_work(readonly=True) as uow:
                assert uow.enrollment_tokens.by_hash("h-ade") == ade
                assert [t.id for t in uow.enrollment_tokens.list(tid)] == ["old"]
                cert = uow.certs.get("fp")
                assert cert is not None and cert.ade_serial == "S1"
                got = uow.abm.assignment(tid, "S1")
                assert got is not None and (got.profile_id, got.attempts) == ("p", 2)
                assert uow.abm.assignment(tid, "S2") is None
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0013")
            upgrade(d.engine)
            with d.unit_of_work(readonly=True) as uow:
                again = uow.enrollment_tokens.by_hash("h-ade")
                assert again is not None and again.ade_serial is None
        finally:
            d.dispose()
