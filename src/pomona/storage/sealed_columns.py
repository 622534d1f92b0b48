"""Which columns hold secrets sealed at rest, and each row's sealing context: names only, no SQLAlchemy,
so that a read on the raw driver (storage/quick_read.py) checks the server key as a start-up does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SealedColumn:
    table: str  # the table's name (storage/schema.py)
    column: str
    key: str  # the row's key column
    context: Callable[[str], str]  # the sealing context of the row with that key
    pushkit: bool = False  # sealed by the push certificate kit (never plaintext in a database)


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn("tenants", "ca_key_pem", "id", lambda k: f"ca-key:{k}"),
    SealedColumn("tenants", "scep_ra_key_pem", "id", lambda k: f"scep-ra-key:{k}"),
    SealedColumn("tenants", "push_key_pem", "id", lambda k: f"push-key:{k}", pushkit=True),
    SealedColumn("tenants", "push_pending_key", "id", lambda k: f"pending-push-key:{k}", pushkit=True),
    SealedColumn("webhooks", "secret", "tenant_id", lambda k: f"webhook:{k}", pushkit=True),
    SealedColumn("settings", "value", "key", lambda k: f"setting:{k}"),
    SealedColumn("abm_keypairs", "key_pem", "tenant_id", lambda k: f"abm-key:{k}"),
    SealedColumn("abm_tokens", "secret", "id", lambda k: f"abm-token:{k}"),
)

__all__ = ["SEALED_COLUMNS", "SealedColumn"]
