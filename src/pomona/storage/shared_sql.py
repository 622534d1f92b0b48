"""State shared between processes (issue 14): leases of singleton jobs, failed-try counters, the TOTP
steps already used. Every write is one ``INSERT ... ON CONFLICT ... DO UPDATE`` (the same text on SQLite
and PostgreSQL), so two processes racing on one key never both win. Times are epoch seconds.

``SqlDatabase`` runs each function in its own short transaction (storage/database.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

_ACQUIRE = text(
    "INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, :until) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE leases.holder = excluded.holder OR leases.expires_at <= :now"
)
_RELEASE = text("DELETE FROM leases WHERE name = :name AND holder = :holder")
_HOLDER = text("SELECT holder FROM leases WHERE name = :name AND expires_at > :now")

_HITS = text("SELECT hits, window_start FROM rate_limits WHERE key = :key AND window_start > :since")
# In SET, rate_limits.* is the row before the update (both databases).
_FAIL = text(
    "INSERT INTO rate_limits (key, hits, window_start) VALUES (:key, 1, :now) "
    "ON CONFLICT (key) DO UPDATE SET "
    "hits = CASE WHEN rate_limits.window_start <= :since THEN 1 ELSE rate_limits.hits + 1 END, "
    "window_start = CASE WHEN rate_limits.window_start <= :since OR rate_limits.hits >= :limit "
    "THEN :now ELSE rate_limits.window_start END"
)
_RESET = text("DELETE FROM rate_limits WHERE key = :key")
_PURGE = text("DELETE FROM rate_limits WHERE window_start < :before")

_CLAIM = text(
    "INSERT INTO totp_steps (user_id, step) VALUES (:user_id, :step) "
    "ON CONFLICT (user_id) DO UPDATE SET step = excluded.step WHERE totp_steps.step < excluded.step"
)


def _ts(when: datetime) -> float:
    return when.timestamp()


def lease_acquire(conn: Connection, name: str, holder: str, now: datetime, ttl: float) -> bool:
    t = _ts(now)
    r = conn.execute(_ACQUIRE, {"name": name, "holder": holder, "until": t + ttl, "now": t})
    return r.rowcount == 1


def lease_release(conn: Connection, name: str, holder: str) -> None:
    conn.execute(_RELEASE, {"name": name, "holder": holder})


def lease_holder(conn: Connection, name: str, now: datetime) -> str | None:
    r = conn.execute(_HOLDER, {"name": name, "now": _ts(now)}).first()
    return None if r is None else str(r[0])


def limit_hits(conn: Connection, key: str, now: datetime, window: float) -> tuple[int, datetime] | None:
    r = conn.execute(_HITS, {"key": key, "since": _ts(now) - window}).first()
    return None if r is None else (int(r[0]), datetime.fromtimestamp(float(r[1]), UTC))


def limit_fail(conn: Connection, key: str, now: datetime, window: float, limit: int) -> None:
    t = _ts(now)
    conn.execute(_FAIL, {"key": key, "now": t, "since": t - window, "limit": limit})


def limit_reset(conn: Connection, key: str) -> None:
    conn.execute(_RESET, {"key": key})


def limit_purge(conn: Connection, before: datetime) -> int:
    return int(conn.execute(_PURGE, {"before": _ts(before)}).rowcount)


def totp_claim(conn: Connection, user_id: str, step: int) -> bool:
    return conn.execute(_CLAIM, {"user_id": user_id, "step": step}).rowcount == 1
