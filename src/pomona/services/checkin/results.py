"""What an acknowledged command changes besides its own status: one hook per command class.

The registry is keyed by the command classes of ``protocol/command.py`` (the same classes
``COMMAND_TYPES`` lists); a command with no hook changes nothing else. A hook runs in the transaction
that stores the result. Adding a side effect to a command: write its hook here and register it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final, Protocol

from pomona.domain.models import Enrollment, EnrollmentStatus
from pomona.ports import CommandQueue, DeviceStore, EnrollmentStore
from pomona.protocol.command import (
    Command,
    CommandReport,
    DeviceConfigured,
    DeviceInformation,
    EraseDevice,
    decode_inventory,
)


class ResultStores(Protocol):
    """What a hook may change, in the transaction that stores the result (a hook that needs another
    store adds it here, and the check-in core's stores include it)."""

    @property
    def devices(self) -> DeviceStore: ...
    @property
    def enrollments(self) -> EnrollmentStore: ...
    @property
    def commands(self) -> CommandQueue: ...


ResultHook = Callable[[ResultStores, Enrollment, CommandReport, datetime], None]
"""``hook(uow, enrollment, report, now)``: apply an Acknowledged result."""


def update_inventory(uow: ResultStores, enrollment: Enrollment, report: CommandReport, now: datetime) -> None:
    """DeviceInformation: the answers Pomona keeps become the device's inventory."""
    facts = decode_inventory(report)
    if facts is not None:
        fields: dict[str, object] = {"last_seen_at": now, **facts}
        uow.devices.update_inventory(enrollment.tenant_id, enrollment.device_id, fields)


def end_awaiting(uow: ResultStores, enrollment: Enrollment, report: CommandReport, now: datetime) -> None:
    """DeviceConfigured: the device leaves Setup Assistant, so the enrollment no longer awaits
    configuration (services/release.py)."""
    uow.enrollments.set_awaiting_configuration(enrollment.id, False)


def end_erased(uow: ResultStores, enrollment: Enrollment, report: CommandReport, now: datetime) -> None:
    """EraseDevice: the device wipes itself and its identity with it, so its enrollment ends here."""
    uow.enrollments.end(enrollment.id, EnrollmentStatus.REMOVED, now)
    uow.commands.cancel_pending(enrollment.id)


RESULT_HOOKS: Final[Mapping[type[Command], ResultHook]] = {
    DeviceInformation: update_inventory,
    DeviceConfigured: end_awaiting,
    EraseDevice: end_erased,
}
"""The side effect of an Acknowledged result, by command class."""

_BY_REQUEST_TYPE: Final[Mapping[str, ResultHook]] = {
    cls.request_type: hook for cls, hook in RESULT_HOOKS.items()
}


def result_hook(request_type: str) -> ResultHook | None:
    """The hook of a stored command's ``RequestType``, or None."""
    return _BY_REQUEST_TYPE.get(request_type)
