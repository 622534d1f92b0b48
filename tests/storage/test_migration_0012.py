"""Migration 0012: the tables of state shared between processes, and the tenants' SCEP RA columns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from helpers import insert_old_tenant
from pomona.ports import CaKeyPair
from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0012:
    def test_tenants_keep_their_rows_and_gain_an_empty_ra(self, empty_db_url: str) -> None:
        """A tenant made before 0012 keeps its CA and users, has no RA until one is kept, and downgrading
        to 0011 and upgrading again works."""
        d = SqlDatabase(empty_db_url)
        try:
            upgrade(d.engine, "0011")
            tid = str(uuid.uuid4())
            with d.engine.begin() as conn:
                insert_old_tenant(conn, tid, datetime.now(UTC))
            upgrade(d.engine)
            with d.unit_of_work() as uow:
                assert uow.tenants.ca_keypair(tid) == CaKeyPair(b"pem", b"pem")
                assert uow.tenants.scep_ra(tid) is None
                uow.tenants.keep_scep_ra(tid, CaKeyPair(b"ra", b"key"))
            assert d.lease_acquire("health", "me", datetime.now(UTC), 10.0)
            assert d.totp_claim("u", 1)
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0011")
            upgrade(d.engine)
            with d.unit_of_work(readonly=True) as uow:
                assert uow.tenants.get(tid) is not None and uow.tenants.scep_ra(tid) is None
        finally:
            d.dispose()
