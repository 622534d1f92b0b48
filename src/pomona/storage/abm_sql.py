"""The SQL store of Apple Business Manager data (ports.AbmStore): the tenant's ABM key pair and server
tokens (both sealed at rest), each token's sync cursor, the devices ABM lists, and their timeline.

Devices are upserted by (tenant, serial) a page at a time: one read of the page's serials, then one
executemany each for the new rows, the changed rows and the timeline entries (a full fetch of 200,000
devices is 200 pages of 1,000). A device that did not change writes nothing. A device ABM deletes is
kept, marked deleted, with its history: diagnosis reads what happened to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update

from pomona.ports import (
    RULE_FIELDS,
    AbmAssignment,
    AbmAssignmentRule,
    AbmDeviceRecord,
    AbmHistoryEntry,
    AbmProfileRecord,
    AbmTokenInfo,
    AbmUpsert,
    Sealer,
)
from pomona.protocol.dep import DEVICE_FIELDS, AbmDevice, ServerToken, decode_server_token, format_time
from pomona.storage import schema as s
from pomona.storage.rows import chunks, select_in, utc, utc_req
from pomona.storage.sealed import seal, unseal

_D = s.abm_devices
_H = s.abm_device_history
_T = s.abm_tokens
_P = s.abm_profiles
_PD = s.abm_profile_definitions
_A = s.abm_assignments
_R = s.abm_assignment_rules
_TIMES = frozenset({"profile_assign_time", "profile_push_time", "device_assigned_date", "op_date"})
#: Apple's fields that a change of makes a timeline entry (the rest are updated silently).
_TRACKED = (
    "profile_status",
    "profile_uuid",
    "profile_assign_time",
    "profile_push_time",
    "device_assigned_by",
)
_COLS = DEVICE_FIELDS  # the device columns are Apple's names
_TOKEN_COLS = (
    _T.c.id,
    _T.c.tenant_id,
    _T.c.name,
    _T.c.consumer_key,
    _T.c.access_token_expiry,
    _T.c.created_at,
    _T.c.cursor,
    _T.c.last_sync_at,
    _T.c.last_full_sync_at,
    _T.c.last_error,
    _T.c.last_error_at,
)


_PG_EXISTING = text(
    f"SELECT {', '.join('d.' + c for c in (*_COLS, 'deleted'))} "
    "FROM unnest(CAST(:serials AS varchar[])) AS s(serial) "
    "CROSS JOIN LATERAL (SELECT * FROM abm_devices "
    "WHERE tenant_id = :t AND serial_number = s.serial LIMIT 1) AS d"
)


def _token(r: Any) -> AbmTokenInfo:
    return AbmTokenInfo(
        r.id,
        r.tenant_id,
        r.name,
        r.consumer_key,
        utc_req(r.access_token_expiry),
        utc_req(r.created_at),
        r.cursor,
        utc(r.last_sync_at),
        utc(r.last_full_sync_at),
        r.last_error,
        utc(r.last_error_at),
    )


def _values(d: AbmDevice) -> tuple[object, ...]:
    return tuple(getattr(d, c) for c in _COLS)


def _device_of(values: Sequence[Any]) -> AbmDevice:
    kw: dict[str, Any] = {
        c: (utc(v) if c in _TIMES else (v or "")) for c, v in zip(_COLS, values, strict=True)
    }
    return AbmDevice(**kw)


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    for a, b in zip(old, new, strict=True):
        if isinstance(a, datetime) and isinstance(b, datetime):
            if utc_req(a) != utc_req(b):
                return False
        elif (a or "") != (b or ""):
            return False
    return True


class SqlAbmStore:
    def __init__(self, conn: Connection, sealer: Sealer | None = None) -> None:
        self.conn = conn
        self.sealer = sealer

    # --- the key pair and the tokens ---------------------------------------------------------------
    def set_keypair(self, tenant_id: str, cert_pem: bytes, key_pem: bytes, at: datetime) -> None:
        sealed = seal(self.sealer, key_pem, f"abm-key:{tenant_id}")
        k = s.abm_keypairs
        self.conn.execute(delete(k).where(k.c.tenant_id == tenant_id))
        self.conn.execute(
            insert(k).values(tenant_id=tenant_id, cert_pem=cert_pem, key_pem=sealed, created_at=at)
        )

    def keypair(self, tenant_id: str) -> tuple[bytes, bytes] | None:
        k = s.abm_keypairs
        r = self.conn.execute(select(k.c.cert_pem, k.c.key_pem).where(k.c.tenant_id == tenant_id)).first()
        if r is None:
            return None
        return bytes(r.cert_pem), unseal(self.sealer, bytes(r.key_pem), f"abm-key:{tenant_id}")

    def add_token(self, info: AbmTokenInfo, credentials: ServerToken) -> None:
        secret = json.dumps(
            {
                "consumer_key": credentials.consumer_key,
                "consumer_secret": credentials.consumer_secret,
                "access_token": credentials.access_token,
                "access_secret": credentials.access_secret,
                "access_token_expiry": format_time(credentials.access_token_expiry),
            }
        ).encode()
        self.conn.execute(
            insert(_T).values(
                id=info.id,
                tenant_id=info.tenant_id,
                name=info.name,
                consumer_key=info.consumer_key,
                secret=seal(self.sealer, secret, f"abm-token:{info.id}"),
                access_token_expiry=info.access_token_expiry,
                created_at=info.created_at,
            )
        )

    def tokens(self, tenant_id: str) -> list[AbmTokenInfo]:
        q = select(*_TOKEN_COLS).where(_T.c.tenant_id == tenant_id).order_by(_T.c.name)
        return [_token(r) for r in self.conn.execute(q)]

    def credentials(self, token_id: str) -> ServerToken | None:
        r = self.conn.execute(select(_T.c.secret).where(_T.c.id == token_id)).first()
        if r is None:
            return None
        return decode_server_token(unseal(self.sealer, bytes(r.secret), f"abm-token:{token_id}"))

    def remove_token(self, tenant_id: str, token_id: str) -> bool:
        q = delete(_T).where(_T.c.tenant_id == tenant_id, _T.c.id == token_id)
        return bool(self.conn.execute(q).rowcount)

    def sync_done(self, token_id: str, cursor: str, at: datetime, *, full: bool) -> None:
        values: dict[str, object] = {"cursor": cursor, "last_sync_at": at, "last_error": None}
        if full:
            values["last_full_sync_at"] = at
        self.conn.execute(update(_T).where(_T.c.id == token_id).values(**values))

    def sync_failed(self, token_id: str, reason: str, at: datetime) -> None:
        values: dict[str, object] = {"last_error": reason, "last_error_at": at}
        if reason == "DEP_CURSOR_EXPIRED":
            values["cursor"] = None
        self.conn.execute(update(_T).where(_T.c.id == token_id).values(**values))

    # --- devices -----------------------------------------------------------------------------------
    def upsert_devices(
        self, tenant_id: str, token_id: str, devices: Sequence[AbmDevice], at: datetime
    ) -> AbmUpsert:
        latest: dict[str, AbmDevice] = {}
        for d in devices:  # a page may name a device twice: its last operation wins
            latest[d.serial_number] = d
        existing: dict[str, tuple[tuple[object, ...], bool]] = {}
        for r in self._existing(tenant_id, list(latest)):
            existing[r.serial_number] = (tuple(r)[: len(_COLS)], bool(r.deleted))
        new: list[dict[str, object]] = []
        changed: list[dict[str, object]] = []
        history: list[dict[str, object]] = []
        added = modified = deleted = unchanged = 0
        for serial, d in latest.items():
            gone = d.op_type == "deleted"
            old = existing.get(serial)
            if gone and old is not None:  # a deletion names the device; keep what we knew of it
                d = replace(_device_of(old[0]), op_type="deleted", op_date=d.op_date)
            elif not d.op_type and old is not None and not old[1]:  # a full fetch has no operation
                known = _device_of(old[0])
                d = replace(d, op_type=known.op_type, op_date=known.op_date)
            values = _values(d)
            row = dict(zip(_COLS, values, strict=True))
            if old is None:
                new.append(
                    {**row, "tenant_id": tenant_id, "token_id": token_id, "deleted": gone}
                    | {"first_seen_at": at, "updated_at": at}
                )
            elif old[1] == gone and _same(old[0], values):
                unchanged += 1
                continue
            else:
                del row["serial_number"]
                changed.append(
                    {**row, "k_serial": serial, "token_id": token_id, "deleted": gone, "updated_at": at}
                )
            if gone:
                deleted += 1
            elif old is None or old[1]:
                added += 1
            else:
                modified += 1
            op = d.op_type or ("added" if old is None or old[1] else "modified")
            history.append(
                {
                    "tenant_id": tenant_id,
                    "serial_number": serial,
                    "token_id": token_id,
                    "at": at,
                    "op_type": op,
                    "op_date": d.op_date,
                    **{c: row[c] for c in _TRACKED},
                }
            )
        if new:
            self.conn.execute(insert(_D), new)
        if changed:
            # executemany: the SET clause is every key of the rows but the WHERE's k_serial
            stmt = update(_D).where(_D.c.tenant_id == tenant_id, _D.c.serial_number == bindparam("k_serial"))
            self.conn.execute(stmt, changed)
        if history:
            self.conn.execute(insert(_H), history)
        return AbmUpsert(added, modified, deleted, unchanged)

    def _existing(self, tenant_id: str, serials: list[str]) -> Iterator[Any]:
        """The stored rows of these serials. On PostgreSQL one probe of the primary key per serial
        (a LATERAL ... LIMIT 1 the planner cannot turn into a scan): during a bulk load the table's
        statistics lag behind, and ``serial = ANY(array)`` was planned as a filter over every row of the
        tenant, making each page slower than the last."""
        if self.conn.dialect.name == "postgresql":
            if serials:
                yield from self.conn.execute(_PG_EXISTING, {"t": tenant_id, "serials": serials})
            return
        q = select(*(_D.c[c] for c in _COLS), _D.c.deleted).where(_D.c.tenant_id == tenant_id)
        yield from select_in(self.conn, q, _D.c.serial_number, serials)

    def devices(
        self, tenant_id: str, *, serial: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[AbmDeviceRecord]:
        q = select(_D).where(_D.c.tenant_id == tenant_id)
        if serial is not None:
            q = q.where(_D.c.serial_number == serial)
        q = q.order_by(_D.c.serial_number).limit(limit).offset(offset)
        return [
            AbmDeviceRecord(
                r.tenant_id,
                r.token_id,
                _device_of([r._mapping[c] for c in _COLS]),
                bool(r.deleted),
                utc_req(r.first_seen_at),
                utc_req(r.updated_at),
            )
            for r in self.conn.execute(q)
        ]

    def device_count(self, tenant_id: str, *, deleted: bool = False) -> int:
        q = select(func.count()).select_from(_D).where(_D.c.tenant_id == tenant_id, _D.c.deleted == deleted)
        return int(self.conn.execute(q).scalar_one())

    def listed_serials(self, tenant_id: str, token_id: str) -> set[str]:
        q = select(_D.c.serial_number).where(
            _D.c.tenant_id == tenant_id, _D.c.token_id == token_id, _D.c.deleted.is_(False)
        )
        return set(self.conn.execute(q).scalars())

    def history(
        self,
        tenant_id: str,
        serial: str,
        *,
        limit: int = 200,
        newest: bool = False,
        until: datetime | None = None,
    ) -> list[AbmHistoryEntry]:
        conds = [_H.c.tenant_id == tenant_id, _H.c.serial_number == serial]
        if until is not None:
            conds.append(_H.c.at < until)
        q = select(_H).where(*conds).order_by(_H.c.id.desc() if newest else _H.c.id).limit(limit)
        rows = list(self.conn.execute(q))
        if newest:
            rows.reverse()
        return [
            AbmHistoryEntry(
                utc_req(r.at),
                r.op_type,
                utc(r.op_date),
                r.profile_status,
                r.profile_uuid,
                utc(r.profile_assign_time),
                utc(r.profile_push_time),
                r.device_assigned_by,
                r.token_id,
                r.reason,
            )
            for r in rows
        ]

    def add_history(self, tenant_id: str, entries: Sequence[tuple[str, AbmHistoryEntry]]) -> None:
        rows = [
            {
                "tenant_id": tenant_id,
                "serial_number": serial,
                "token_id": e.token_id,
                "at": e.at,
                "op_type": e.op_type,
                "op_date": e.op_date,
                "profile_status": e.profile_status,
                "profile_uuid": e.profile_uuid,
                "profile_assign_time": e.profile_assign_time,
                "profile_push_time": e.profile_push_time,
                "device_assigned_by": e.device_assigned_by,
                "reason": e.reason,
            }
            for serial, e in entries
        ]
        if rows:
            self.conn.execute(insert(_H), rows)

    def flagged(
        self, tenant_id: str, reason: str, *, serial: str | None = None
    ) -> list[tuple[str, datetime]]:
        last = (
            select(func.max(_H.c.id))
            .where(_H.c.tenant_id == tenant_id, _H.c.serial_number == serial)
            .scalar_subquery()
            if serial is not None
            else None
        )
        latest = _H.alias("later")
        q = select(_H.c.serial_number, _H.c.at).where(_H.c.tenant_id == tenant_id, _H.c.reason == reason)
        if last is not None:
            q = q.where(_H.c.id == last)
        else:  # no later entry of the same device
            q = q.where(
                ~select(latest.c.id)
                .where(
                    latest.c.tenant_id == _H.c.tenant_id,
                    latest.c.serial_number == _H.c.serial_number,
                    latest.c.id > _H.c.id,
                )
                .exists()
            )
        return [(r[0], utc_req(r[1])) for r in self.conn.execute(q.order_by(_H.c.serial_number))]

    def profile_states(self, tenant_id: str, token_id: str) -> list[tuple[str, str, str]]:
        q = select(_D.c.serial_number, _D.c.profile_uuid, _D.c.profile_status).where(
            _D.c.tenant_id == tenant_id, _D.c.token_id == token_id, _D.c.deleted.is_(False)
        )
        return [(r[0], r[1] or "", r[2] or "") for r in self.conn.execute(q)]

    # --- ADE profiles ------------------------------------------------------------------------------
    def save_profile(self, profile: AbmProfileRecord) -> None:
        values = {
            "tenant_id": profile.tenant_id,
            "token_id": profile.token_id,
            "name": profile.name,
            "settings": json.dumps(dict(profile.settings), sort_keys=True),
            "is_default": profile.is_default,
            "created_at": profile.created_at,
            "updated_at": profile.updated_at,
        }
        done = self.conn.execute(update(_P).where(_P.c.id == profile.id).values(**values))
        if not done.rowcount:
            self.conn.execute(insert(_P).values(id=profile.id, **values))

    def profiles(self, tenant_id: str) -> list[AbmProfileRecord]:
        rows = list(self.conn.execute(select(_P).where(_P.c.tenant_id == tenant_id).order_by(_P.c.name)))
        defs: dict[str, dict[str, str]] = {}
        if rows:
            q = select(_PD.c.profile_id, _PD.c.token_id, _PD.c.profile_uuid)
            for d in select_in(self.conn, q, _PD.c.profile_id, [r.id for r in rows]):
                defs.setdefault(d.profile_id, {})[d.token_id] = d.profile_uuid
        return [
            AbmProfileRecord(
                r.id,
                r.tenant_id,
                r.name,
                json.loads(r.settings),
                utc_req(r.created_at),
                utc_req(r.updated_at),
                r.token_id,
                bool(r.is_default),
                defs.get(r.id, {}),
            )
            for r in rows
        ]

    def clear_default(self, tenant_id: str, token_id: str | None, keep: str) -> None:
        scope = _P.c.token_id.is_(None) if token_id is None else _P.c.token_id == token_id
        self.conn.execute(
            update(_P).where(_P.c.tenant_id == tenant_id, scope, _P.c.id != keep).values(is_default=False)
        )

    def set_definition(self, profile_id: str, token_id: str, profile_uuid: str, at: datetime) -> None:
        self.conn.execute(delete(_PD).where(_PD.c.profile_id == profile_id, _PD.c.token_id == token_id))
        self.conn.execute(
            insert(_PD).values(
                profile_id=profile_id, token_id=token_id, profile_uuid=profile_uuid, defined_at=at
            )
        )

    def drop_definitions(self, profile_id: str, token_id: str | None = None) -> None:
        q = delete(_PD).where(_PD.c.profile_id == profile_id)
        if token_id is not None:
            q = q.where(_PD.c.token_id == token_id)
        self.conn.execute(q)

    # --- what each device should have --------------------------------------------------------------
    def assignments(self, tenant_id: str) -> dict[str, AbmAssignment]:
        return {
            r.serial_number: AbmAssignment(
                r.tenant_id,
                r.serial_number,
                r.profile_id,
                bool(r.explicit),
                int(r.attempts),
                utc(r.next_try_at),
                utc(r.last_try_at),
                r.last_error,
                r.rule_id,
            )
            for r in self.conn.execute(select(_A).where(_A.c.tenant_id == tenant_id))
        }

    def assignment(self, tenant_id: str, serial: str) -> AbmAssignment | None:
        """One device's wanted assignment (one read by primary key: the ADE endpoint's)."""
        r = self.conn.execute(
            select(_A).where(_A.c.tenant_id == tenant_id, _A.c.serial_number == serial)
        ).first()
        if r is None:
            return None
        return AbmAssignment(
            r.tenant_id,
            r.serial_number,
            r.profile_id,
            bool(r.explicit),
            int(r.attempts),
            utc(r.next_try_at),
            utc(r.last_try_at),
            r.last_error,
        )

    def save_assignments(self, tenant_id: str, assignments: Sequence[AbmAssignment]) -> None:
        """Delete the serials' rows, then one executemany insert (an upsert of a page at a time)."""
        latest = {a.serial_number: a for a in assignments if a.tenant_id == tenant_id}
        for part in chunks(list(latest)):
            self.conn.execute(delete(_A).where(_A.c.tenant_id == tenant_id, _A.c.serial_number.in_(part)))
        rows = [
            {
                "tenant_id": tenant_id,
                "serial_number": a.serial_number,
                "profile_id": a.profile_id,
                "explicit": a.explicit,
                "attempts": a.attempts,
                "next_try_at": a.next_try_at,
                "last_try_at": a.last_try_at,
                "last_error": a.last_error,
                "rule_id": a.rule_id,
            }
            for a in latest.values()
        ]
        if rows:
            self.conn.execute(insert(_A), rows)

    # --- assignment rules --------------------------------------------------------------------------
    def add_rule(self, rule: AbmAssignmentRule) -> None:
        self.conn.execute(
            insert(_R).values(
                id=rule.id,
                tenant_id=rule.tenant_id,
                profile_id=rule.profile_id,
                field=rule.field,
                value=rule.value,
                priority=rule.priority,
                created_at=rule.created_at,
            )
        )

    def rules(self, tenant_id: str) -> list[AbmAssignmentRule]:
        q = select(_R).where(_R.c.tenant_id == tenant_id).order_by(_R.c.priority, _R.c.created_at, _R.c.id)
        return [
            AbmAssignmentRule(
                r.id, r.tenant_id, r.profile_id, r.field, r.value, int(r.priority), utc_req(r.created_at)
            )
            for r in self.conn.execute(q)
        ]

    def remove_rule(self, tenant_id: str, rule_id: str) -> bool:
        q = delete(_R).where(_R.c.tenant_id == tenant_id, _R.c.id == rule_id)
        return bool(self.conn.execute(q).rowcount)

    def device_facts(self, tenant_id: str, token_id: str) -> dict[str, dict[str, str]]:
        cols = [c for c in RULE_FIELDS if c in _D.c]
        q = select(_D.c.serial_number, *(_D.c[c] for c in cols)).where(
            _D.c.tenant_id == tenant_id, _D.c.token_id == token_id, _D.c.deleted.is_(False)
        )
        return {r[0]: {c: (v or "") for c, v in zip(cols, r[1:], strict=True)} for r in self.conn.execute(q)}
