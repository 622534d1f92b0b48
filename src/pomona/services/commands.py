"""Admin use cases over enrolled devices: inventory, enrollment history, the command queue, events."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pomona.domain.errors import InvalidInputError, NotFoundError
from pomona.domain.models import CommandStatus, Device, Enrollment, Event, QueuedCommand, Step, Tenant
from pomona.ports import UnitOfWork
from pomona.protocol.command import build_command
from pomona.protocol.errors import CommandBuildError
from pomona.services.base import ServiceBase

MAX_TARGETS = 10_000


@dataclass(frozen=True)
class DeviceView:
    device: Device
    enrollment: Enrollment | None  # the active one, if any
    history: list[Enrollment]
    commands: list[QueuedCommand]


@dataclass
class CommandService(ServiceBase):
    on_push: Callable[[], None] | None = None  # wakes this process's push worker (app.py wires it)

    def _tenant(self, uow: UnitOfWork, name_or_id: str) -> Tenant:
        t = uow.tenants.by_name(name_or_id) or uow.tenants.get(name_or_id)
        if t is None:
            raise NotFoundError(f"no tenant {name_or_id!r}")
        return t

    def _device(self, uow: UnitOfWork, tenant: Tenant, ref: str) -> Device:
        """A device by id, UDID or serial number."""
        d = uow.devices.get(tenant.id, ref) or uow.devices.by_udid(tenant.id, ref)
        if d is None:
            found = uow.devices.by_serial(tenant.id, ref)
            d = found[0] if len(found) == 1 else None
        if d is None:
            raise NotFoundError(f"no device {ref!r} in tenant {tenant.name}", device=ref)
        return d

    def list_devices(
        self, tenant_ref: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[DeviceView], int]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            out = []
            for d in uow.devices.list(t.id, limit=limit, offset=offset):
                active = uow.enrollments.active_for_udid(t.id, d.udid)
                out.append(DeviceView(d, active, [], []))
            return out, uow.devices.count(t.id)

    def device(self, tenant_ref: str, ref: str) -> DeviceView:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            d = self._device(uow, t, ref)
            history = uow.enrollments.for_device(t.id, d.id)
            active = next((e for e in history if e.status.value == "active"), None)
            return DeviceView(d, active, history, uow.commands.list_for_device(t.id, d.id, limit=50))

    def enqueue(
        self,
        tenant_ref: str,
        request_type: str,
        params: Mapping[str, object],
        devices: Sequence[str],
        *,
        push: bool = True,
    ) -> list[QueuedCommand]:
        """Queue one command for each device (by id, UDID or serial). All or nothing.

        With ``push`` (the default) the devices are pushed: a push-queue row per enrollment is written in
        the same transaction as the commands, so a command is never queued without its wake-up.
        """
        if not devices:
            raise InvalidInputError("name at least one device", field="devices")
        if len(devices) > MAX_TARGETS:
            raise InvalidInputError(f"at most {MAX_TARGETS} devices per request", field="devices")
        try:
            build_command(request_type, params)  # validate once before touching the database
        except CommandBuildError as exc:
            raise InvalidInputError(str(exc), field="params") from exc
        now = self.clock.now()
        out: list[QueuedCommand] = []
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            for ref in devices:
                d = self._device(uow, t, ref)
                active = uow.enrollments.active_for_udid(t.id, d.udid)
                if active is None:
                    raise InvalidInputError(f"device {ref} is not enrolled", field="devices", device=ref)
                cmd = build_command(request_type, params, command_uuid=str(uuid.uuid4()))
                queued = uow.commands.enqueue(
                    QueuedCommand(
                        id=0,
                        tenant_id=t.id,
                        command_uuid=cmd.command_uuid,
                        enrollment_id=active.id,
                        device_id=d.id,
                        request_type=request_type,
                        body=cmd.to_plist(),
                        status=CommandStatus.QUEUED,
                        created_at=now,
                    )
                )
                out.append(queued)
            if push:
                uow.pushes.request(t.id, [c.enrollment_id for c in out], now)
            uow.events.append(
                self.ok_event(
                    t.id,
                    Step.ADMIN,
                    detail={"action": "command.enqueue", "request_type": request_type, "count": len(out)},
                )
            )
        if push and self.on_push is not None:
            self.on_push()
        return out

    def command(self, tenant_ref: str, command_uuid: str) -> QueuedCommand:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            cmd = uow.commands.get_by_uuid(t.id, command_uuid)
            if cmd is None:
                raise NotFoundError(f"no command {command_uuid}")
            return cmd

    def events(self, tenant_ref: str, **filters: object) -> list[Event]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            return uow.events.query(t.id, **filters)  # type: ignore[arg-type]
