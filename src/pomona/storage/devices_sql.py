"""SQL store of devices and their inventory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, insert, select, update

from pomona.domain.models import Device
from pomona.storage import schema as s
from pomona.storage.hot_sql import Prepared
from pomona.storage.rows import RecordCodec, select_in

DEVICE = RecordCodec(Device)
#: The facts a device reports (inventory): an upsert refreshes those that are set.
DEVICE_FACTS = tuple(
    f for f in DEVICE.fields if f not in ("id", "tenant_id", "udid", "last_seen_at", "created_at")
)

_TOUCH = update(s.devices).where(s.devices.c.id == bindparam("did")).values(last_seen_at=bindparam("at"))
_TOUCH_P = Prepared(_TOUCH)
_INSERT = Prepared(insert(s.devices).values({name: bindparam(name) for name in DEVICE.fields}))
_BY_UDID = Prepared(
    select(s.devices).where(
        s.devices.c.tenant_id == bindparam("tenant_id"), s.devices.c.udid == bindparam("udid")
    )
)
_GET = Prepared(
    select(s.devices).where(
        s.devices.c.tenant_id == bindparam("tenant_id"), s.devices.c.id == bindparam("id")
    )
)


class SqlDeviceStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def upsert(self, device: Device) -> Device:
        """Insert the device, or refresh the facts it reported (only those that are set)."""
        existing = self.by_udid(device.tenant_id, device.udid)
        if existing is None:
            _INSERT.run(self.conn, DEVICE.dump(device))
            return device
        values: dict[str, object] = {
            k: getattr(device, k) for k in DEVICE_FACTS if getattr(device, k) is not None
        }
        if device.last_seen_at is not None:
            values["last_seen_at"] = device.last_seen_at
        if values:
            self.conn.execute(update(s.devices).where(s.devices.c.id == existing.id).values(**values))
        refreshed = self.get(device.tenant_id, existing.id)
        assert refreshed is not None
        return refreshed

    def _where(self, tenant_id: str, cond: Any) -> Select[Any]:
        return select(s.devices).where(and_(s.devices.c.tenant_id == tenant_id, cond))

    def _first(self, tenant_id: str, cond: Any) -> Device | None:
        r = self.conn.execute(self._where(tenant_id, cond)).first()
        return None if r is None else DEVICE.load_row(r)

    def _in(self, tenant_id: str, col: Any, values: Sequence[str]) -> Iterator[Device]:
        """Devices whose ``col`` is one of ``values``, in a few queries (see rows.select_in)."""
        q = select(s.devices).where(s.devices.c.tenant_id == tenant_id)
        return map(DEVICE.load_row, select_in(self.conn, q, col, values))

    def by_udid(self, tenant_id: str, udid: str) -> Device | None:
        r = _BY_UDID.first(self.conn, {"tenant_id": tenant_id, "udid": udid})
        return None if r is None else DEVICE.load(r)

    def get(self, tenant_id: str, device_id: str) -> Device | None:
        r = _GET.first(self.conn, {"tenant_id": tenant_id, "id": device_id})
        return None if r is None else DEVICE.load(r)

    def by_serial(self, tenant_id: str, serial: str) -> list[Device]:
        return [
            DEVICE.load_row(r)
            for r in self.conn.execute(self._where(tenant_id, s.devices.c.serial == serial))
        ]

    def by_ids(self, tenant_id: str, ids: Sequence[str]) -> dict[str, Device]:
        """Devices by id: {id: device}."""
        return {d.id: d for d in self._in(tenant_id, s.devices.c.id, ids)}

    def by_udids(self, tenant_id: str, udids: Sequence[str]) -> dict[str, Device]:
        """Devices by UDID (unique in a tenant): {udid: device}."""
        return {d.udid: d for d in self._in(tenant_id, s.devices.c.udid, udids)}

    def by_serials(self, tenant_id: str, serials: Sequence[str]) -> dict[str, list[Device]]:
        """Devices by serial number (not unique): {serial: [devices]}."""
        out: dict[str, list[Device]] = {}
        for d in self._in(tenant_id, s.devices.c.serial, serials):
            out.setdefault(d.serial or "", []).append(d)
        return out

    def list(self, tenant_id: str, *, limit: int = 100, offset: int = 0) -> list[Device]:
        q = (
            select(s.devices)
            .where(s.devices.c.tenant_id == tenant_id)
            .order_by(s.devices.c.created_at, s.devices.c.id)
            .limit(limit)
            .offset(offset)
        )
        return [DEVICE.load_row(r) for r in self.conn.execute(q)]

    def count(self, tenant_id: str) -> int:
        q = select(func.count()).select_from(s.devices).where(s.devices.c.tenant_id == tenant_id)
        return int(self.conn.execute(q).scalar_one())

    def update_inventory(self, tenant_id: str, device_id: str, fields: dict[str, object]) -> None:
        values = {k: v for k, v in fields.items() if k in DEVICE_FACTS or k == "last_seen_at"}
        if values:
            self.conn.execute(
                update(s.devices)
                .where(and_(s.devices.c.tenant_id == tenant_id, s.devices.c.id == device_id))
                .values(**values)
            )

    def touch(self, device_id: str, at: datetime) -> None:
        _TOUCH_P.run(self.conn, {"did": device_id, "at": at})
