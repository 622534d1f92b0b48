"""Migration 0016: an admin API token's last use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0016:
    def test_tokens_kept_last_use_written_and_downgrade(self, empty_db_url: str) -> None:
        """A token written before 0016 reads back never used; its last use can be written after it;
        downgrading to 0015 and upgrading again works (the token is kept, its last use is not)."""
        d = SqlDatabase(empty_db_url)
        now = datetime.now(UTC).replace(microsecond=0)
        try:
            upgrade(d.engine, "0015")
            tok = str(uuid.uuid4())
            with d.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO api_tokens (id, tenant_id, name, token_hash, created_at) "
                        "VALUES (:i, NULL, 'fleet', :h, :c)"
                    ),
                    {"i": tok, "h": "a" * 64, "c": now},
                )
            upgrade(d.engine)
            with d.unit_of_work() as uow:
                got = uow.api_tokens.get(tok)
                assert got is not None and got.name == "fleet" and got.last_used_at is None
                uow.api_tokens.mark_used(tok, now, since=now - timedelta(minutes=1))
            with d.unit_of_work(readonly=True) as uow:
                got = uow.api_tokens.get(tok)
                assert got is not None and got.last_used_at == now
            from alembic import command

            from pomona.storage.migrate import alembic_config

            command.downgrade(alembic_config(d.engine), "0015")
            upgrade(d.engine)
            with d.unit_of_work(readonly=True) as uow:
                got = uow.api_tokens.get(tok)
                assert got is not None and got.last_used_at is None
        finally:
            d.dispose()
