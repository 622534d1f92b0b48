"""Admin use cases over enrolled devices: inventory, enrollment history, the command queue, events."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pomona.domain.errors import InvalidInputError, NotFoundError
from pomona.domain.models import CommandStatus, Device, Enrollment, Event, QueuedCommand, Step, Tenant
from pomona.i18n import msg
from pomona.ports import CommandQueue, DeviceStore, EnrollmentStore, HasEvents, PushQueue, TenantStore
from pomona.protocol.command import build_command
from pomona.protocol.errors import CommandBuildError
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.release import release_command

MAX_TARGETS = 10_000


@dataclass(frozen=True)
class DeviceView:
    device: Device
    enrollment: Enrollment | None  # the active one, if any
    history: list[Enrollment]
    commands: list[QueuedCommand]


class CommandStores(HasEvents, Protocol):
    """The command service's stores: devices and their enrollments, the command queue, and the push
    queue a new command wakes its device through."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def devices(self) -> DeviceStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def pushes(self) -> PushQueue: ...


@dataclass
class CommandService(ServiceBase[CommandStores]):
    on_push: Callable[[], None] | None = None  # wakes this process's push worker (app.py wires it)

    def _tenant(self, uow: CommandStores, name_or_id: str) -> Tenant:
        t = find_tenant(uow.tenants, name_or_id)
        return t

    def _device(self, uow: CommandStores, tenant: Tenant, ref: str) -> Device:
        """A device by id, UDID or serial number."""
        d = uow.devices.get(tenant.id, ref) or uow.devices.by_udid(tenant.id, ref)
        if d is None:
            found = uow.devices.by_serial(tenant.id, ref)
            d = found[0] if len(found) == 1 else None
        if d is None:
            raise NotFoundError(msg("error.device.not_found", device=ref, tenant=tenant.name), device=ref)
        return d

    def _resolve(self, uow: CommandStores, tenant: Tenant, refs: Sequence[str]) -> dict[str, Device]:
        """Devices by id, UDID or serial number, in a few IN queries (the rules of :meth:`_device`):
        an id first, then a UDID, then a serial number held by exactly one device. Unknown refs are
        left out."""
        wanted = list(dict.fromkeys(refs))
        found: dict[str, Device] = dict(uow.devices.by_ids(tenant.id, wanted))
        rest = [r for r in wanted if r not in found]
        if rest:
            found.update(uow.devices.by_udids(tenant.id, rest))
            rest = [r for r in rest if r not in found]
        if rest:
            for serial, matches in uow.devices.by_serials(tenant.id, rest).items():
                if len(matches) == 1:
                    found[serial] = matches[0]
        return found

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
            raise InvalidInputError(msg("error.command.no_device"), field="devices")
        if len(devices) > MAX_TARGETS:
            raise InvalidInputError(msg("error.command.too_many", max=MAX_TARGETS), field="devices")
        try:
            build_command(request_type, params)  # validate once before touching the database
        except CommandBuildError as exc:
            raise InvalidInputError(str(exc), field="params") from exc
        now = self.clock.now()
        bodies = _Bodies(request_type, params)
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            # Every ref is resolved in a few IN queries, then checked in the caller's order so the first
            # bad ref is the one reported, as when they were looked up one by one.
            found = self._resolve(uow, t, devices)
            active = uow.enrollments.active_for_udids(t.id, list({d.udid for d in found.values()}))
            todo: list[QueuedCommand] = []
            for ref in devices:
                d = found.get(ref)
                if d is None:
                    raise NotFoundError(msg("error.device.not_found", device=ref, tenant=t.name), device=ref)
                e = active.get(d.udid)
                if e is None:
                    raise InvalidInputError(
                        msg("error.device.not_enrolled_ref", device=ref), field="devices", device=ref
                    )
                command_uuid, body = bodies.next()
                todo.append(
                    QueuedCommand(
                        id=0,
                        tenant_id=t.id,
                        command_uuid=command_uuid,
                        enrollment_id=e.id,
                        device_id=d.id,
                        request_type=request_type,
                        body=body,
                        status=CommandStatus.QUEUED,
                        created_at=now,
                    )
                )
            out = uow.commands.enqueue_many(todo)
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

    def release(self, tenant_ref: str, ref: str) -> QueuedCommand:
        """Release a device held at Setup Assistant by hand: queue DeviceConfigured for its active
        enrollment and push it (services/release.py). A device that no longer says it waits gets it
        all the same (the device ignores what it does not need)."""
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            t = self._tenant(uow, tenant_ref)
            d = self._device(uow, t, ref)
            e = uow.enrollments.active_for_udid(t.id, d.udid)
            if e is None:
                raise InvalidInputError(
                    msg("error.device.not_enrolled_ref", device=ref), field="device", device=ref
                )
            (cmd,) = uow.commands.enqueue_many([release_command(e, now)])
            uow.pushes.request(t.id, [e.id], now)
            uow.events.append(
                self.ok_event(
                    t.id,
                    Step.ADMIN,
                    serial=d.serial,
                    udid=d.udid,
                    enrollment_id=e.id,
                    detail={
                        "action": "device.release",
                        "command_uuid": cmd.command_uuid,
                        "awaiting_configuration": e.awaiting_configuration,
                    },
                )
            )
        if self.on_push is not None:
            self.on_push()
        return cmd

    def command(self, tenant_ref: str, command_uuid: str) -> QueuedCommand:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            cmd = uow.commands.get_by_uuid(t.id, command_uuid)
            if cmd is None:
                raise NotFoundError(msg("error.command.not_found", command=command_uuid))
            return cmd

    def pending_count(self) -> int:
        """Commands of every tenant not yet answered by their device (/metrics)."""
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.commands.pending_count()

    def events(self, tenant_ref: str, **filters: object) -> list[Event]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant_ref)
            return uow.events.query(t.id, **filters)  # type: ignore[arg-type]


class _Bodies:
    """Command bodies for one request: built once, then each copy gets its own CommandUUID.

    A UUID needs no plist escaping, so replacing a unique placeholder UUID gives the very bytes a
    fresh build would; when the placeholder is not found exactly once, every body is built anew."""

    def __init__(self, request_type: str, params: Mapping[str, object]) -> None:
        self.request_type = request_type
        self.params = params
        self.mark = str(uuid.uuid4())
        template = build_command(request_type, params, command_uuid=self.mark).to_plist()
        needle = f"<string>{self.mark}</string>".encode()
        self.template = template if template.count(self.mark.encode()) == 1 and needle in template else None

    def next(self) -> tuple[str, bytes]:
        command_uuid = str(uuid.uuid4())
        if self.template is not None:
            return command_uuid, self.template.replace(self.mark.encode(), command_uuid.encode())
        cmd = build_command(self.request_type, self.params, command_uuid=command_uuid)
        return cmd.command_uuid, cmd.to_plist()
