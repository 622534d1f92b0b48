"""The sealed columns: which values are secrets at rest, their sealing context, and the walk that seals
or re-seals them (start-up upgrade of plaintext databases, and key rotation).

The stores seal what they write (the tenants' CA keys, the settings) with the database's
:class:`~pomona.ports.Sealer`; the push certificate kit seals push keys and webhook secrets before they
reach a store. A value read back that is not sealed is a plaintext value of a database from before
sealing: it is returned as it is, and :func:`seal_all` seals it in place at the next start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Column, Connection, select, update

from pomona.domain.errors import ServerKeyError
from pomona.ports import Sealer
from pomona.storage import schema as s
from pomona.storage.sealed_columns import SEALED_COLUMNS, SealedColumn


def seal(sealer: Sealer | None, value: bytes, context: str) -> bytes:
    """``value`` as it is stored: sealed, or plaintext when the database has no sealer (tests)."""
    return value if sealer is None else sealer.seal(value, context)


def unseal(sealer: Sealer | None, value: bytes, context: str) -> bytes:
    """A stored value opened; a plaintext value (a database from before sealing) as it is."""
    if sealer is None:
        if value[:1] in (b"\x01", b"\x02"):
            raise ServerKeyError(f"{context} is sealed and this database has no server key")
        return value
    return sealer.open(value, context) if sealer.is_sealed(value) else value


@dataclass
class SealReport:
    """What :func:`seal_all` did: plaintext values sealed, sealed values re-sealed under the current key,
    and values already current (each of those was opened, which proves the key)."""

    sealed: int = 0
    resealed: int = 0
    current: int = 0


def _rows(conn: Connection, col: SealedColumn) -> Iterator[tuple[str, bytes]]:
    table = s.metadata.tables[col.table]
    c: Column[bytes] = table.c[col.column]
    k = table.c[col.key]
    for key, value in conn.execute(select(k, c).where(c.is_not(None))):
        yield str(key), bytes(value)


def seal_all(conn: Connection, sealer: Sealer, *, verify_current: bool = True) -> SealReport:
    """Seal every plaintext secret and re-seal every secret not under the sealing key, in the caller's
    transaction. Idempotent. Raises :class:`ServerKeyError` for a value no key of the ring opens."""
    report = SealReport()
    for col in SEALED_COLUMNS:
        for key, value in list(_rows(conn, col)):
            context = col.context(key)
            if sealer.is_current(value):
                if verify_current:
                    sealer.open(value, context)
                report.current += 1
                continue
            if sealer.is_sealed(value):
                plain = sealer.open(value, context)
                report.resealed += 1
            else:
                plain = value
                report.sealed += 1
            t = s.metadata.tables[col.table]
            conn.execute(
                update(t).where(t.c[col.key] == key).values({col.column: sealer.seal(plain, context)})
            )
    return report


__all__ = ["SEALED_COLUMNS", "SealReport", "SealedColumn", "seal", "seal_all", "unseal"]
