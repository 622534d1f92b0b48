"""Discovery: the DNS CNAMEs (the rules are domain/checks.py's) and the well-known document."""

from __future__ import annotations

import json

from pomona.domain.checks import DiscoveryRecord, dns_findings
from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, note

_RECORD = {
    R.DNS_ENROLLMENT_CNAME_MISSING: DiscoveryRecord.ENROLLMENT,
    R.DNS_ENROLLMENT_CNAME_WRONG: DiscoveryRecord.ENROLLMENT,
    R.DNS_REGISTRATION_CNAME_MISSING: DiscoveryRecord.REGISTRATION,
}


def _dns(code: R) -> Checker:
    """Proven when `dns_findings` (the rule health applies too) finds `code` in the name's look-up."""

    def run(ctx: Context) -> Assessment:
        if ctx.resolver is None:
            return Assessment(code, Verdict.UNKNOWN, [], {}, note("no_resolver"))
        if not ctx.settings.discoverable:
            target = ctx.settings.enrollment_target
            return Assessment(
                code,
                Verdict.UNKNOWN,
                [{"kind": "public_url", "host": target}],
                {"expected_target": target},
                note("not_discoverable", target=target),
            )
        lk = ctx.cname(_RECORD[code])
        if not lk.answered:
            return Assessment(
                code,
                Verdict.UNKNOWN,
                [{"kind": "dns", "name": lk.name, "error": lk.error}],
                {"name": lk.name},
                note("dns_no_answer"),
            )
        evidence: list[dict[str, object]] = [
            {"kind": "dns", "name": lk.name, "cname": lk.found, "expected": lk.expected}
        ]
        facts: dict[str, object] = {"name": lk.name, "expected_target": lk.expected, "found": lk.found or ""}
        holds = any(f.code is code for f in dns_findings([lk]))
        return Assessment(
            code,
            Verdict.PROVEN if holds else Verdict.RULED_OUT,
            evidence,
            facts,
            note("cname", name=lk.name, found=lk.found, expected=lk.expected)
            if lk.found
            else note("cname_missing", name=lk.name, expected=lk.expected),
        )

    return run


def _well_known(ctx: Context) -> Assessment:
    url = ctx.settings.well_known_url.format(domain=ctx.tenant.domain)
    if ctx.fetcher is None:
        return Assessment(
            R.WELL_KNOWN_DISCOVERY_FAILED, Verdict.UNKNOWN, [], {"url": url}, note("no_http_client")
        )
    try:
        status, body = ctx.fetcher.fetch(url)
    except OSError as exc:
        return Assessment(
            R.WELL_KNOWN_DISCOVERY_FAILED,
            Verdict.PROVEN,
            [{"kind": "http", "url": url, "error": str(exc)}],
            {"url": url},
            note("unreachable", url=url),
        )
    ok = False
    if status == 200:
        try:
            doc = json.loads(body)
            ok = isinstance(doc, dict) and isinstance(doc.get("Servers"), list) and bool(doc["Servers"])
        except ValueError:
            ok = False
    v = Verdict.RULED_OUT if ok else Verdict.PROVEN
    return Assessment(
        R.WELL_KNOWN_DISCOVERY_FAILED,
        v,
        [{"kind": "http", "url": url, "status": status}],
        {"url": url},
        note("http_status", url=url, status=status),
    )


CHECKERS: dict[str, Checker] = {
    **table(
        (R.DNS_ENROLLMENT_CNAME_MISSING, R.DNS_ENROLLMENT_CNAME_WRONG, R.DNS_REGISTRATION_CNAME_MISSING), _dns
    ),
    R.WELL_KNOWN_DISCOVERY_FAILED.value: _well_known,
}
