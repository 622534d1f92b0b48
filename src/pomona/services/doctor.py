"""`pomona doctor`: the deployment self-check, one line per check, each with the findings that failed it.

The checks and where their rules live (nothing is decided twice):

- ``data_folder``: the server key file and its folder are not readable by others
  (``domain.checks.key_file_findings``);
- ``database``: reachable (DATABASE_UNAVAILABLE, the start-up check's code) and its schema at the code's
  head (``migration_findings``); the checks below that read the database are skipped when it fails;
- ``public_url``: the recorded public URL answers ``/healthz`` as a device would reach it, and is https
  off this machine (``public_url_findings``, through the ``UrlProber`` port, net/probe.py);
- ``tls``: its certificate as a device verifies it: trusted chain, right name, not expired, not within
  30 days of expiry (the expiry steps of ``check_expiry``);
- ``clock``: this machine's clock against the server's ``Date`` header, 5 minutes at most
  (``clock_findings``);
- ``push_certificate`` and ``dns``, per tenant: the findings health reports
  (``HealthService.deployment_findings``: the certificate lifecycle's and the discovery CNAMEs').

A line is ``fail`` when one of its findings is critical, ``warning`` for a warning, ``ok`` with none, and
``skipped`` when it could not run (the note says why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pomona.domain.checks import Finding, Severity, clock_findings, public_url_findings
from pomona.domain.reasons import ReasonCode
from pomona.ports import Clock, UrlProber
from pomona.services.health import HealthService
from pomona.services.installation import is_plain_http_remote

CheckStatus = Literal["ok", "warning", "fail", "skipped"]
_REACH = {ReasonCode.PUBLIC_URL_UNREACHABLE, ReasonCode.PUBLIC_URL_NOT_HTTPS}


@dataclass(frozen=True)
class CheckLine:
    """One line of the report: the check, what it looked at, its status, the findings behind it."""

    check: str
    subject: str
    status: CheckStatus
    findings: tuple[Finding, ...] = ()
    note: str | None = None  # an i18n key (doctor.note.*), filled with `args`
    args: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.check,
            "subject": self.subject,
            "status": self.status,
            "note": None if self.note is None else self.note.removeprefix("doctor.note."),
            "facts": dict(self.args),
            "findings": [f.to_json() for f in self.findings],
        }


def line(
    check: str, subject: str, findings: Sequence[Finding], note: str | None = None, **args: str
) -> CheckLine:
    """The line of a check that ran: its status is its worst finding's."""
    severities = {f.severity for f in findings}
    status: CheckStatus = (
        "fail" if Severity.CRITICAL in severities else "warning" if Severity.WARNING in severities else "ok"
    )
    return CheckLine(check, subject, status, tuple(findings), note, args)


def skipped(check: str, subject: str, why: str) -> CheckLine:
    """A check that could not run; `why` is an i18n key (doctor.note.*)."""
    return CheckLine(check, subject, "skipped", (), why)


@dataclass
class Doctor:
    """The checks that need the network (through the prober) or the services."""

    prober: UrlProber
    clock: Clock

    def public_url(self, url: str) -> list[CheckLine]:
        """``public_url``, ``tls`` (https only) and ``clock``, from one probe of the URL."""
        probe = self.prober.probe(url)
        now = self.clock.now()
        found = public_url_findings(probe, now, plain_http_remote=is_plain_http_remote(url))
        lines = [line("public_url", url, [f for f in found if f.code in _REACH])]
        if urlsplit(url).scheme == "https":
            if not probe.reached:
                lines.append(skipped("tls", url, "doctor.note.unreachable"))
            else:
                tls = [f for f in found if f.code not in _REACH]
                if probe.cert_not_after is None:
                    lines.append(line("tls", url, tls))
                else:
                    expires = f"{probe.cert_not_after:%Y-%m-%d}"
                    lines.append(line("tls", url, tls, "doctor.note.expires", expires=expires))
        if not probe.reached:
            lines.append(skipped("clock", url, "doctor.note.unreachable"))
        elif probe.server_date is None:
            lines.append(skipped("clock", url, "doctor.note.no_date"))
        else:
            lines.append(line("clock", url, clock_findings(probe.server_date, now)))
        return lines

    def tenants(self, health: HealthService) -> list[CheckLine]:
        """``push_certificate`` and ``dns`` per tenant, from health's checks."""
        out: list[CheckLine] = []
        for name, push, dns in health.deployment_findings():
            out.append(line("push_certificate", name, push))
            if dns is None:
                out.append(skipped("dns", name, "doctor.note.not_discoverable"))
            else:
                out.append(line("dns", name, dns))
        return out
