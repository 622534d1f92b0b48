"""The command channel's transaction over a unit of work's stores (``ports.ChannelTx``).

``MemoryDatabase`` answers ``command_channel`` and ``take_command`` with it; ``SqlDatabase`` runs the same
operations on the raw driver (storage/hot_channel.py), and the storage tests check both write the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Protocol

from pomona.domain.models import CommandStatus, Event
from pomona.ports import (
    ChannelEnrollment,
    ChannelTx,
    CommandQueue,
    DeviceStore,
    EnrollmentStore,
    HasEvents,
    ReportedCommand,
)

ChannelContext = AbstractContextManager[ChannelTx]
"""What ``command_channel`` returns."""


class ChannelStores(HasEvents, Protocol):
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def devices(self) -> DeviceStore: ...


class StoreChannel:
    """``ports.ChannelTx`` over the stores of one unit of work (its transaction is the caller's)."""

    def __init__(self, uow: ChannelStores) -> None:
        self.uow = uow

    def bound(self, fingerprint: str) -> ChannelEnrollment | None:
        found = self.uow.enrollments.active_by_fingerprint(fingerprint)
        if found is None:
            return None
        e, seen = found
        return ChannelEnrollment(
            e.id, e.tenant_id, e.udid, e.device_id, e.user_id, e.awaiting_configuration, seen
        )

    def command(self, enrollment: ChannelEnrollment, command_uuid: str) -> ReportedCommand | None:
        cmd = self.uow.commands.get_by_uuid(enrollment.tenant_id, command_uuid)
        if cmd is None or cmd.enrollment_id != enrollment.id:
            return None
        return ReportedCommand(cmd.id, cmd.enrollment_id, cmd.command_uuid, cmd.request_type)

    def record_result(
        self,
        command: ReportedCommand,
        status: CommandStatus,
        result: bytes,
        error_chain: list[dict[str, object]],
        at: datetime,
    ) -> None:
        self.uow.commands.record_result(
            command.enrollment_id, command.command_uuid, status, result, error_chain, at
        )

    def append_event(self, event: Event) -> None:
        self.uow.events.append(event)

    def next_command(self, enrollment_id: str, *, skip_not_now: bool) -> tuple[int, bytes] | None:
        cmd = self.uow.commands.next_for(enrollment_id, skip_not_now=skip_not_now)
        return None if cmd is None else (cmd.id, cmd.body)

    def mark_sent(self, command_id: int, at: datetime) -> None:
        self.uow.commands.mark_sent(command_id, at)

    def touch(self, device_id: str, at: datetime) -> None:
        self.uow.devices.touch(device_id, at)


class _Transactions(Protocol):
    def unit_of_work(self, *, readonly: bool = False) -> AbstractContextManager[ChannelStores]: ...


@contextmanager
def store_channel(db: _Transactions) -> Iterator[StoreChannel]:
    """A command-channel transaction over one unit of work of ``db``."""
    with db.unit_of_work() as uow:
        yield StoreChannel(uow)


def store_take(
    db: _Transactions, command_id: int, enrollment_id: str, device_id: str | None, at: datetime
) -> bool:
    """``CommandChannel.take_command`` over one unit of work of ``db``."""
    with db.unit_of_work() as uow:
        if not uow.commands.take(command_id, enrollment_id, at):
            return False
        if device_id is not None:
            uow.devices.touch(device_id, at)
        return True
