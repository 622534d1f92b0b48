"""Migration 0008: tenant names of the form of a tenant id are renamed; admin tokens gain expiry and revocation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from pomona.storage.migrate import upgrade
from pomona.storage.sql import SqlDatabase


class TestMigration0008:
    def test_names_of_the_form_of_an_id_are_renamed(self, empty_db_url: str) -> None:
        """Each UUID-shaped tenant name becomes tenant-<name> (numbered if taken); other names stay."""
        d = SqlDatabase(empty_db_url)
        try:
            upgrade(d.engine, "0007")
            victim, evil, taken = (str(uuid.uuid4()) for _ in range(3))
            rows = [(victim, "acme"), (evil, victim), (taken, f"tenant-{victim}")]
            with d.engine.begin() as conn:
                for tid, name in rows:
                    conn.execute(
                        text(
                            "INSERT INTO tenants (id, name, domain, created_at, ca_cert_pem, ca_key_pem, "
                            "licence_seats, policy_version) VALUES (:i, :n, 'x.example', :c, :p, :p, 0, 0)"
                        ),
                        {"i": tid, "n": name, "c": datetime.now(UTC), "p": b"pem"},
                    )
                conn.execute(
                    text(
                        "INSERT INTO api_tokens (id, tenant_id, name, token_hash, created_at) VALUES (:i, :t, 'a', 'h', :c)"
                    ),
                    {"i": str(uuid.uuid4()), "t": victim, "c": datetime.now(UTC)},
                )
            upgrade(d.engine)
            with d.engine.connect() as conn:
                names = dict(conn.execute(text("SELECT id, name FROM tenants")).all())
                token = conn.execute(text("SELECT expires_at, revoked_at FROM api_tokens")).one()
            assert names == {victim: "acme", evil: f"tenant-{victim}-2", taken: f"tenant-{victim}"}
            assert tuple(token) == (None, None)
            with d.unit_of_work(readonly=True) as uow:
                assert uow.tenants.get(victim) is not None
                assert uow.api_tokens.list(victim)[0].revoked_at is None
        finally:
            d.dispose()
