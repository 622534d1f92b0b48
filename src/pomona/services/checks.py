"""The tenant checks' I/O side: the facts they need, gathered through the ports, and the check callables
one service hands another through its constructor.

The rules (thresholds, severities, which code) are pure and live in `pomona.domain.checks`; this module
only asks the DNS and adapts other services' answers. A `TenantCheck` is what a service offers to health
and diagnose: ``(tenant id or name, now) -> findings``. The certificate lifecycle's is
`ApnsLifecycle.check`; push reachability's is `unresponsive_check(PushService.unresponsive)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pomona.domain.checks import CnameLookup, DiscoveryRecord, Finding, unresponsive_findings
from pomona.ports import Resolver

TenantCheck = Callable[[str, datetime], Sequence[Finding]]


class UnresponsiveSource(Protocol):
    """PushService.unresponsive: the devices that left accepted pushes unanswered, one row each (only
    the given enrollments' when `enrollment_ids` is given)."""

    def __call__(
        self, tenant: str, now: datetime, enrollment_ids: Sequence[str] | None = None, /
    ) -> Sequence[Mapping[str, object]]: ...


class DeviceCheck(Protocol):
    """A tenant check that can be narrowed to some enrollments (a diagnosis reads one device's)."""

    def __call__(
        self, tenant: str, now: datetime, enrollment_ids: Sequence[str] | None = None, /
    ) -> Sequence[Finding]: ...


@dataclass(frozen=True)
class DiscoverySettings:
    """Where devices must be sent by the tenant's domain (the DNS and well-known checks)."""

    enrollment_target: str  # what EnterpriseEnrollment.<domain> must be a CNAME of
    registration_target: str  # what EnterpriseRegistration.<domain> must be a CNAME of
    well_known_url: str = "https://{domain}/.well-known/com.apple.remotemanagement"

    def target(self, record: DiscoveryRecord) -> str:
        return self.enrollment_target if record is DiscoveryRecord.ENROLLMENT else self.registration_target

    @property
    def discoverable(self) -> bool:
        """Whether a CNAME can send devices to the server: its public name is a DNS name, not an address
        (an IP address or localhost, as in a test set-up, cannot be a CNAME's target)."""
        return _is_public_name(self.enrollment_target) and _is_public_name(self.registration_target)


def _is_public_name(host: str) -> bool:
    import ipaddress

    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and host != "localhost" and not host.endswith(".localhost") and "." in host
    return False


def lookup_cnames(
    resolver: Resolver,
    domain: str,
    settings: DiscoverySettings,
    records: Iterable[DiscoveryRecord] = tuple(DiscoveryRecord),
) -> list[CnameLookup]:
    """Ask the DNS for the discovery CNAMEs of `domain` (all of them, enrollment first, unless `records`
    names some). A name server that does not answer (LookupError) is kept as the look-up's error."""
    out = []
    for record in records:
        name = f"{record.value}.{domain}"
        expected = settings.target(record)
        try:
            out.append(CnameLookup(record, name, expected, resolver.cname(name)))
        except LookupError as exc:
            out.append(CnameLookup(record, name, expected, None, str(exc)))
    return out


def unresponsive_check(source: UnresponsiveSource) -> DeviceCheck:
    """DEVICE_UNRESPONSIVE findings from the push service's reachability rows."""

    def check(tenant: str, now: datetime, enrollment_ids: Sequence[str] | None = None, /) -> list[Finding]:
        return unresponsive_findings(source(tenant, now, enrollment_ids))

    return check
