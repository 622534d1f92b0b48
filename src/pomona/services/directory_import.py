"""Bulk import of users and groups from CSV: every row checked first, then one transaction.

Columns (a header row names them; order free): upn (required), display_name, email, groups
(separated by ';'), licensed, dem, mfa_required, enabled (true/false, yes/no, 1/0).
An existing user is updated (flags set, groups added), never duplicated.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pomona.domain.errors import InvalidInputError, LicensesExhaustedError
from pomona.domain.models import Group, Step, User, is_upn
from pomona.i18n import msg
from pomona.ports import GroupStore, HasEvents, TenantStore, UserStore
from pomona.services.base import ServiceBase, find_tenant

MAX_ROWS = 200_000
_TRUE = {"true", "yes", "1", "y", "是"}
_FALSE = {"false", "no", "0", "n", "", "否"}


@dataclass(frozen=True)
class UserImportReport:
    imported: int
    groups_created: int
    errors: list[dict[str, object]]


def _flag(value: str | None, row: int, name: str, errors: list[dict[str, object]]) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False if v else None
    errors.append({"row": row, "value": value, "error": f"{name} must be true or false"})
    return None


class ImportStores(HasEvents, Protocol):
    """What an import writes, in one transaction: the tenant's users and groups, and its audit event."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def users(self) -> UserStore: ...
    @property
    def groups(self) -> GroupStore: ...


class HasPolicy(Protocol):
    """What :func:`import_users` is given (the services): it imports through the policy service."""

    @property
    def policy(self) -> ServiceBase[ImportStores]: ...


def import_users(
    p: HasPolicy, tenant_ref: str, text: str, *, progress: Callable[[int, int], None] | None = None
) -> UserImportReport:
    svc = p.policy
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if reader.fieldnames is None or "upn" not in [f.strip().lower() for f in reader.fieldnames]:
            raise InvalidInputError(msg("error.csv.header"), field="file")
        rows = [
            {(k or "").strip().lower(): (v if isinstance(v, str) else "").strip() for k, v in r.items()}
            for r in reader
        ]
    except csv.Error as exc:
        raise InvalidInputError(msg("error.csv.unreadable", error=exc), field="file") from None
    if len(rows) > MAX_ROWS:
        raise InvalidInputError(msg("error.csv.too_many", max=MAX_ROWS), field="file")
    errors: list[dict[str, object]] = []
    parsed = []
    seen: set[str] = set()
    for n, r in enumerate(rows, start=2):
        upn = r.get("upn", "").lower()
        if not is_upn(upn):
            errors.append({"row": n, "value": upn, "error": "upn must look like name@example.com"})
            continue
        if upn in seen:
            errors.append({"row": n, "value": upn, "error": "duplicate of an earlier row"})
            continue
        seen.add(upn)
        groups = [g.strip() for g in r.get("groups", "").split(";") if g.strip()]
        if any(len(g) > 255 for g in groups):
            errors.append({"row": n, "value": upn, "error": "a group name is longer than 255 characters"})
        parsed.append(
            (
                n,
                upn,
                r.get("display_name") or None,
                r.get("email") or None,
                groups,
                _flag(r.get("licensed"), n, "licensed", errors),
                _flag(r.get("dem"), n, "dem", errors),
                _flag(r.get("mfa_required"), n, "mfa_required", errors),
                _flag(r.get("enabled"), n, "enabled", errors),
            )
        )
    if errors:
        return UserImportReport(0, 0, errors)
    total = len(parsed)
    created_groups = 0
    with svc.db.unit_of_work() as uow:
        t = find_tenant(uow.tenants, tenant_ref)
        group_ids: dict[str, str] = {g.name: g.id for g in uow.groups.list(t.id)}
        now = svc.clock.now()
        licensed_after = uow.users.licensed_count(t.id)
        for i, (_row, upn, display, email, groups, licensed, dem, mfa, enabled) in enumerate(parsed, start=1):
            user = uow.users.by_upn(t.id, upn)
            if user is None:
                user = User(
                    id=str(uuid.uuid4()),
                    tenant_id=t.id,
                    upn=upn,
                    email=(email or upn).lower(),
                    display_name=display or upn.split("@", 1)[0],
                    created_at=now,
                    enabled=enabled if enabled is not None else True,
                    licensed=bool(licensed),
                    is_dem=bool(dem),
                    mfa_required=bool(mfa),
                )
                uow.users.add(user)
                licensed_after += 1 if licensed else 0
            else:
                flags: dict[str, object] = {
                    k: v
                    for k, v in (
                        ("licensed", licensed),
                        ("is_dem", dem),
                        ("mfa_required", mfa),
                        ("enabled", enabled),
                    )
                    if v is not None
                }
                if display:
                    flags["display_name"] = display
                if licensed is not None and licensed != user.licensed:
                    licensed_after += 1 if licensed else -1
                uow.users.update(t.id, user.id, **flags)
            for g in groups:
                if g not in group_ids:
                    grp = Group(str(uuid.uuid4()), t.id, g, now)
                    uow.groups.add(grp)
                    group_ids[g] = grp.id
                    created_groups += 1
                uow.groups.add_member(group_ids[g], user.id)
            if progress is not None and (i % 500 == 0 or i == total):
                progress(i, total)
        if licensed_after > t.licence_seats:
            raise LicensesExhaustedError(
                msg("error.licence.import", needed=licensed_after, seats=t.licence_seats)
            )
        uow.events.append(
            svc.ok_event(
                t.id,
                Step.ADMIN,
                detail={"action": "user.import", "rows": total, "groups_created": created_groups},
            )
        )
    return UserImportReport(total, created_groups, [])
