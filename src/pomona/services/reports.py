"""Failure reports and incident summaries: the founding document's checklist, filled in from the log.

The incident summary goes beyond the document: it lists configuration changes in the hour before the
first failure (certificate uploaded, restriction edited, licences changed...) as suspects, from the
audit log (every admin action leaves an `admin` event with its action).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pomona.domain.errors import InvalidInputError
from pomona.domain.models import Step
from pomona.domain.policy import platform_from_detail
from pomona.i18n import msg
from pomona.ports import HasEvents, TenantStore
from pomona.services.base import ServiceBase, find_tenant

GROUPS = ("reason", "platform", "type", "step", "day")
SUSPECT_WINDOW = timedelta(hours=1)
#: The steps whose events count as attempts to enroll (the incident's "attempting" users and devices).
ATTEMPTS = tuple(s.value for s in (Step.PORTAL, Step.PROFILE, Step.SCEP, Step.AUTHENTICATE))
_WHERE = {
    Step.PORTAL: "portal",
    Step.PROFILE: "profile download",
    Step.SCEP: "profile installation (SCEP)",
    Step.AUTHENTICATE: "profile installation (Authenticate)",
    Step.TOKENUPDATE: "profile installation (TokenUpdate)",
    Step.COMMAND: "management (command channel)",
    Step.CHECKOUT: "profile removal",
    Step.ADMIN: "admin",
}


class ReportStores(HasEvents, Protocol):
    """The report service's stores: the tenant and its event log, read only."""

    @property
    def tenants(self) -> TenantStore: ...


#: What a spreadsheet takes for a formula at the start of a cell (and a tab or CR before one).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab, a carriage return)
    gets a leading apostrophe."""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


@dataclass
class ReportService(ServiceBase[ReportStores]):
    def failures(
        self, tenant_ref: str, *, since: datetime, until: datetime, group_by: str = "reason"
    ) -> dict[str, object]:
        if group_by not in GROUPS:
            raise InvalidInputError(msg("error.report.group_by", choices=", ".join(GROUPS)), field="group_by")
        if until < since:
            raise InvalidInputError(msg("error.report.until"), field="until")
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
            rows = uow.events.failure_report(t.id, since, until, group_by)
            top = rows if group_by == "reason" else uow.events.failure_report(t.id, since, until, "reason")
        total = sum(n for _, n in rows)
        return {
            "tenant": t.name,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "group_by": group_by,
            "total": total,
            "groups": [{"key": k, "count": n} for k, n in rows],
            "top_reasons": [{"reason": k, "count": n} for k, n in top[:5]],
        }

    @staticmethod
    def to_csv(report: dict[str, object]) -> str:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow([report["group_by"], "count"])
        for g in report["groups"]:  # type: ignore[attr-defined]
            w.writerow([csv_safe(g["key"]), g["count"]])
        return out.getvalue()

    def incident(
        self,
        tenant_ref: str,
        *,
        codes: list[str],
        since: datetime,
        until: datetime,
        message: str | None = None,
    ) -> dict[str, object]:
        """The helpdesk checklist for failures with these codes since `since`."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant_ref)
            facts = uow.events.incident_facts(t.id, codes, ATTEMPTS, since, until)
            counted = [facts.failures[c] for c in codes if c in facts.failures]
            first = min(c[1] for c in counted) if counted else None
            changes = []
            if first is not None:
                changes = [
                    e
                    for e in uow.events.query(t.id, since=first - SUSPECT_WINDOW, until=first, limit=500)
                    if e.step is Step.ADMIN
                ]
        sample = [e for c in codes for e in facts.samples.get(c, [])]
        sample.sort(key=lambda e: e.at)
        platforms = sorted({platform_from_detail(detail) for _, detail in facts.kinds})
        types = sorted({str(detail.get("type") or "byod") for _, detail in facts.kinds})
        where = {_WHERE.get(Step(step), step) for step, _ in facts.kinds}
        return {
            "tenant": t.name,
            "codes": codes,
            "exact_error": message or ", ".join(codes),
            "where_seen": sorted(where),
            "first_occurrence": None if first is None else first.isoformat(),
            "last_occurrence": None if not counted else max(c[2] for c in counted).isoformat(),
            "failures": sum(c[0] for c in counted),
            "platforms": platforms,
            "affected_users": facts.failing_users,
            "attempting_users": facts.attempting_users,
            "affected_devices": facts.failing_devices,
            "attempting_devices": facts.attempting_devices,
            "mdm_authority": t.mdm_authority,
            "enrollment_types": types,
            "suspect_changes": [
                {
                    "at": e.at.isoformat(),
                    "action": e.detail.get("action"),
                    "detail": {k: v for k, v in e.detail.items() if k != "action"},
                    "event_id": e.id,
                }
                for e in changes
            ],
            "sample_events": [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "upn": e.upn,
                    "serial": e.serial,
                    "reason": e.reason,
                    "step": e.step.value,
                }
                for e in sample[:10]
            ],
        }

    @staticmethod
    def incident_markdown(inc: dict[str, object], lang: str, width: int = 80) -> str:
        """The incident checklist as Markdown to paste into a ticket: list items wrapped at ``width``
        cells (continued two spaces in), details as ``label: value`` lines (pomona.services.readable)."""
        from pomona.i18n import t
        from pomona.services.readable import facts_text, value_text, wrapped

        def item(text: str) -> list[str]:
            return wrapped(text, width, indent=2, first="-")

        def line(key: str, value: object) -> list[str]:
            return item(f"**{t('incident.' + key, lang)}**: {value}")

        def listed(key: str) -> str:
            values: list[str] = inc[key]  # type: ignore[assignment]
            return ", ".join(values) or "—"

        lines = [f"# {t('incident.title', lang, tenant=inc['tenant'])}", ""]
        lines += line("exact_error", f"`{inc['exact_error']}`")
        lines += line("where_seen", listed("where_seen"))
        lines += line("first_occurrence", value_text(inc["first_occurrence"], lang))
        lines += line("platforms", listed("platforms"))
        lines += line(
            "users", t("incident.out_of", lang, n=inc["affected_users"], total=inc["attempting_users"])
        )
        lines += line(
            "devices", t("incident.out_of", lang, n=inc["affected_devices"], total=inc["attempting_devices"])
        )
        lines += line("mdm_authority", inc["mdm_authority"] or t("incident.not_set", lang))
        lines += line("enrollment_types", listed("enrollment_types"))
        lines += ["", f"## {t('incident.suspects', lang)}", ""]
        suspects: list[dict[str, object]] = inc["suspect_changes"]  # type: ignore[assignment]
        if not suspects:
            lines.append(t("incident.no_suspects", lang))
        for s in suspects:
            detail: dict[str, object] = s["detail"]  # type: ignore[assignment]
            rest = facts_text(detail, lang)
            lines += item(f"{value_text(s['at'], lang)} `{s['action']}`" + (f" ({rest})" if rest else ""))
        lines += ["", f"## {t('incident.samples', lang)}", ""]
        for e in inc["sample_events"]:  # type: ignore[attr-defined]
            who = " ".join(str(x) for x in (e["upn"], e["serial"]) if x)
            lines += item(
                f"#{e['id']} {value_text(e['at'], lang)} `{e['reason']}` ({e['step']}) {who}".rstrip()
            )
        return "\n".join(lines) + "\n"
