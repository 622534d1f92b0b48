"""Releasing devices held at Setup Assistant (issue 12, "Release"; Apple: DeviceConfigured).

An ADE device whose profile has ``await_device_configured`` says ``AwaitingConfiguration`` in its
TokenUpdate and waits at Setup Assistant until the server sends DeviceConfigured
(https://developer.apple.com/documentation/devicemanagement/deviceconfiguredcommand).

- Automatic release (the check-in core, ``services/checkin/core.py``): once the configuration step is
  done, DeviceConfigured is queued in the same transaction. Done means: the enrollment awaits
  configuration and none of its commands is pending (queued, sent or NotNow), checked right after the
  TokenUpdate and after each final result (Acknowledged, Error, CommandFormatError) of a command other
  than DeviceConfigured itself. So the commands queued for the device before it is released (its
  initial commands) are answered first; a device with none is released at once. A DeviceConfigured
  the device refused is not queued again by itself (a loop in one connection): the stuck check below
  reports it, and an admin releases by hand.
- Its acknowledgement ends the hold (``enrollments.awaiting_configuration`` cleared, the command's OK
  event says ``released``); the TokenUpdate with ``AwaitingConfiguration`` false that a real device
  sends next stores the same.
- Manual release: ``CommandService.release`` (the admin API, ``pomona abm release``) and
  ``ConsoleService.release`` (the console's button) queue DeviceConfigured for the device's active
  enrollment, whether or not it still says it waits.
- Stuck: ``HealthService.flag_stuck``, a singleton job every :data:`WATCH_EVERY` seconds
  (services/jobs.py), records one failed event AWAITING_CONFIGURATION_STUCK per enrollment held past
  ``AWAITING_STUCK_AFTER``; health lists the same devices as findings, with ``pomona abm release`` as
  the fix.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final, Protocol

from pomona.domain.models import CommandStatus, Enrollment, EnrollmentStatus, QueuedCommand
from pomona.ports import CommandQueue
from pomona.protocol.command import DeviceConfigured

#: Seconds between two rounds of the stuck check (a singleton job of the server).
WATCH_EVERY: Final = 300.0
RELEASE: Final = DeviceConfigured.request_type


class ReleaseQueue(Protocol):
    @property
    def commands(self) -> CommandQueue: ...


def configuration_done(uow: ReleaseQueue, enrollment: Enrollment) -> bool:
    """Whether a held enrollment's configuration step is done: it is still active (an erase did not end
    it) and none of its commands is pending."""
    return (
        enrollment.awaiting_configuration
        and enrollment.status is EnrollmentStatus.ACTIVE
        and uow.commands.next_for(enrollment.id, skip_not_now=False) is None
    )


def release_command(enrollment: Enrollment, now: datetime) -> QueuedCommand:
    """DeviceConfigured for the enrollment, ready to queue."""
    cmd = DeviceConfigured(command_uuid=str(uuid.uuid4()))
    return QueuedCommand(
        id=0,
        tenant_id=enrollment.tenant_id,
        command_uuid=cmd.command_uuid,
        enrollment_id=enrollment.id,
        device_id=enrollment.device_id,
        request_type=cmd.request_type,
        body=cmd.to_plist(),
        status=CommandStatus.QUEUED,
        created_at=now,
    )
