"""CLI: `pomona diagnose` — what is wrong, how sure Pomona is, and what to do, in English or Chinese."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import click

from pomona.cli.main import _pomona, common, main
from pomona.cli.output import deprecated_format, dumps, echo_wrapped, is_json, when
from pomona.domain.errors import InvalidInputError
from pomona.i18n import detect_lang, t


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"not a time: {text!r} (use 2026-11-26T09:30 or 2026-11-26T09:30+08:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


FAIL_ON = click.Choice(["warning", "critical", "proven"])


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", default=None, help="The user's sign-in name.")
@click.option("--serial", default=None)
@click.option("--udid", default=None)
@click.option("--imei", default=None)
@click.option(
    "--message", default=None, help="The error message as the user reported it (English or Chinese)."
)
@click.option("--at", "at_text", default=None, help="When it happened (ISO 8601; default: now).")
@click.option("--lang", type=click.Choice(["en", "zh-CN"]), default=None)
@click.option("--explain", is_flag=True, help="Print the reasoning: every cause checked and what decided it.")
@click.option(
    "--fail-on",
    type=FAIL_ON,
    default=None,
    help="Exit 1 when a cause is found: proven (the answer is proven), critical (proven or likely), "
    "warning (that, or a tenant fault listed as also wrong). Default: exit 0.",
)
@deprecated_format(["text", "json"])
@common
def diagnose(
    tenant_name: str,
    upn: str | None,
    serial: str | None,
    udid: str | None,
    imei: str | None,
    message: str | None,
    at_text: str | None,
    lang: str | None,
    explain: bool,
    fail_on: str | None,
) -> None:
    """Name the cause of an enrollment failure from the live state, and the fix for this tenant."""
    from pomona.services.diagnose import to_json

    if serial and udid:
        raise InvalidInputError("give --serial or --udid, not both")
    lang = detect_lang(lang)
    p = _pomona()
    d = p.diagnose.diagnose(
        tenant_name, upn=upn, serial=serial, udid=udid, imei=imei, message=message, at=parse_time(at_text)
    )
    data = to_json(d, lang)
    if is_json():
        click.echo(dumps(data))
    else:
        render(data, lang, explain=explain, device=serial or udid or imei)
    if fail_on is not None and diagnosis_fails(data, fail_on):
        sys.exit(1)


def diagnosis_fails(data: dict[str, Any], level: str) -> bool:
    """--fail-on for a diagnosis (docs/cli.md): proven, the answer is proven; critical, the answer is
    proven or likely (a cause was found); warning, that or a tenant fault under "also wrong"."""
    verdict = data["answer"]["verdict"]
    if level == "proven":
        return bool(verdict == "proven")
    found = verdict in ("proven", "likely") and data["answer"]["code"] != "UNKNOWN"
    if level == "critical":
        return found
    return found or bool(data.get("also_wrong"))


def _heading(data: dict[str, Any], lang: str, device: str | None) -> str:
    """Whom the diagnosis is about: the user, else the device (found, or as given), else the tenant."""
    serial = (data.get("device") or {}).get("serial") or device
    if data.get("upn"):
        return t("diagnose.heading", lang, who=data["upn"], tenant=data["tenant"])
    if serial:
        return t("diagnose.heading.device", lang, serial=serial, tenant=data["tenant"])
    return t("diagnose.heading.tenant", lang, tenant=data["tenant"])


def render(data: dict[str, Any], lang: str, *, explain: bool = False, device: str | None = None) -> None:
    """The diagnosis for people: headings and wrapped lines that fit the terminal (80 columns when it is
    not known); evidence as readable lines, never JSON."""
    from pomona.services.readable import evidence_line

    def head(text: str) -> None:
        click.echo(click.style(text, bold=True))

    findings: list[dict[str, Any]] = data["findings"]
    top = findings[0]
    colon = "：" if lang == "zh-CN" else ":"
    verdict = t(f"diagnose.verdict.{top['verdict']}", lang)
    head(_heading(data, lang, device))
    echo_wrapped(t("diagnose.answer", lang, title=top["title"], code=top["code"], verdict=verdict), indent=2)
    echo_wrapped(str(top["cause"]), indent=2, first="  ")
    if top.get("observed"):
        echo_wrapped(t("diagnose.observed", lang, observed=top["observed"]), indent=4, first="  ")
    click.echo()
    head(t("diagnose.do", lang))
    for i, step in enumerate(top["resolution"], start=1):
        echo_wrapped(str(step), indent=5, first=f"  {i}.")
    if top.get("device_checks"):
        click.echo()
        head(t("diagnose.device_checks", lang))
        for c in top["device_checks"]:
            echo_wrapped(str(c), indent=4, first="  -")
    if top["evidence"]:
        click.echo()
        head(t("diagnose.evidence", lang))
        for e in top["evidence"][:6]:
            echo_wrapped(evidence_line(e, lang), indent=4, first="  -")
    attempt = data.get("attempt")
    click.echo()
    if attempt:
        reached = " > ".join(attempt["reached"]) or "-"
        state = t(f"diagnose.state.{attempt['state']}", lang)
        started = str(attempt["started_at"])[:16].replace("T", " ")
        echo_wrapped(t("diagnose.attempt", lang, started=started, reached=reached, state=state))
    else:
        echo_wrapped(t("diagnose.attempt.none", lang))
    others = [f for f in findings[1:] if f["verdict"] != "ruled_out"]
    ruled = len(findings) - 1 - len(others)
    if others or ruled:
        click.echo()
        head(t("diagnose.others", lang))
        untold: dict[str, list[str]] = {}  # the causes the server cannot tell, by what they lack
        for f in others:
            if f["verdict"] == "unknown":
                untold.setdefault(str(f["observed"]), []).append(str(f["code"]))
                continue
            echo_wrapped(t(f"diagnose.verdict.{f['verdict']}", lang), indent=4, first=f"  {f['code']}{colon}")
            echo_wrapped(str(f["observed"]), indent=4, first="    ")
        for why, codes in untold.items():
            verdict_u = t("diagnose.verdict.unknown", lang)
            echo_wrapped(", ".join(codes), indent=4, first=f"  {verdict_u}{colon}")
            echo_wrapped(why, indent=4, first="    ")
        if ruled:
            echo_wrapped(t("diagnose.ruled_out_count", lang, count=ruled), indent=4, first="  ")
    also: list[dict[str, Any]] = data.get("also_wrong") or []
    if also:
        click.echo()
        head(t("diagnose.also_wrong", lang))
        for f in also:
            echo_wrapped(str(f["title"]), indent=4, first=f"  {f['code']}{colon}")
    if explain:
        click.echo()
        head(t("diagnose.explain", lang))
        for x in data.get("explain") or []:
            verdict_x = t(f"diagnose.verdict.{x['verdict']}", lang)
            basis = t(f"diagnose.basis.{x['basis']}", lang)
            echo_wrapped(f"{verdict_x} [{basis}]", indent=4, first=f"  {x['code']}{colon}")
            echo_wrapped(str(x["why"]), indent=4, first="    ")
    ask: list[str] = data.get("ask") or []
    if ask:
        click.echo()
        head(t("diagnose.ask", lang))
        for q in ask:
            echo_wrapped(q, indent=4, first="  -")


def finding_lines(f: Mapping[str, Any], lang: str) -> list[str]:
    """A health finding's facts for people, one per line (the expected CNAME target among them)."""
    from pomona.services.readable import facts_text

    facts: dict[str, Any] = f.get("facts") or {}
    return [facts_text({k: v}, lang) for k, v in facts.items() if v not in (None, "", [], {})]


def _finding_cell(f: Mapping[str, Any], lang: str) -> list[str]:
    """A health finding in its table cell: the code and title, its facts, when it was seen."""
    seen = t("health.since", lang, first=when(f["first_seen"]), last=when(f["last_seen"]))
    colon = "：" if lang == "zh-CN" else ": "
    return [f"{f['code']}{colon}{f['title']}", *finding_lines(f, lang), seen]


def health_fails(findings: list[dict[str, Any]], level: str) -> bool:
    """--fail-on for health (docs/cli.md): warning, a finding of severity warning or critical; critical
    or proven, a critical finding (every health finding is observed now, so proven asks no more)."""
    wanted = {"warning": {"warning", "critical"}, "critical": {"critical"}, "proven": {"critical"}}[level]
    return any(f["severity"] in wanted for f in findings)


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--lang", type=click.Choice(["en", "zh-CN"]), default=None)
@click.option(
    "--fail-on",
    type=FAIL_ON,
    default=None,
    help="Exit 1 when a finding of this severity or above is open: warning, critical (proven: as "
    "critical). Default: exit 0.",
)
@deprecated_format(["text", "json"])
@common
def health(tenant_name: str, lang: str | None, fail_on: str | None) -> None:
    """Run every tenant-level check now and list the open findings (first and last seen)."""
    from pomona import knowledge
    from pomona.cli.output import Column, table

    lang = detect_lang(lang)
    data = _pomona().health.run(tenant_name)
    findings: list[dict[str, Any]] = data["findings"]
    for f in findings:
        f["title"] = knowledge.text_for(f["code"], lang, tenant=tenant_name, **f["facts"]).title
    if is_json():
        click.echo(dumps(data))
    elif not findings:
        click.echo(t("health.none", lang, tenant=tenant_name))
    else:
        table(
            [
                Column("severity", lambda f: t(f"health.severity.{f['severity']}", lang)),
                Column("finding", lambda f: "\n".join(_finding_cell(f, lang))),
            ],
            findings,
            lang=lang,
        )
    if fail_on is not None and health_fails(findings, fail_on):
        sys.exit(1)


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--code", "codes", multiple=True, help="A reason code (repeatable).")
@click.option("--message", default=None, help="The error as users report it; its candidate causes are used.")
@click.option("--since", default=None, help="Start of the period (ISO 8601; default: 7 days ago).")
@click.option("--until", "until_text", default=None)
@click.option("--lang", type=click.Choice(["en", "zh-CN"]), default=None)
@deprecated_format(["markdown", "json"])
@common
def incident(
    tenant_name: str,
    codes: tuple[str, ...],
    message: str | None,
    since: str | None,
    until_text: str | None,
    lang: str | None,
) -> None:
    """The helpdesk checklist for an incident, filled in, with suspect configuration changes: Markdown to
    paste into a ticket, or JSON with --json."""
    from datetime import timedelta

    from pomona import knowledge

    lang = detect_lang(lang)
    wanted = list(codes)
    if message:
        for m in knowledge.match_message(message):
            wanted += [c for c in m.codes if c not in wanted]
    if not wanted:
        raise InvalidInputError("give --code CODE or a --message Pomona recognises")
    p = _pomona()
    now = p.clock.now()
    inc = p.reports.incident(
        tenant_name,
        codes=wanted,
        since=parse_time(since) or now - timedelta(days=7),
        until=parse_time(until_text) or now,
        message=message,
    )
    if is_json():
        click.echo(dumps(inc))
    else:
        click.echo(p.reports.incident_markdown(inc, lang), nl=False)


@main.group()
def report() -> None:
    """Reports over the event log."""


@report.command("failures")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--since", default=None, help="ISO 8601; default 30 days ago.")
@click.option("--until", "until_text", default=None)
@click.option(
    "--group-by", type=click.Choice(["reason", "platform", "type", "step", "day"]), default="reason"
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a header line, then key,count).")
@common
def report_failures(
    tenant_name: str, since: str | None, until_text: str | None, group_by: str, as_csv: bool
) -> None:
    """Enrollment failures counted by reason, platform, enrollment type, step or day: a table, CSV with
    --csv, or the whole report (period, total, groups, top reasons) as one JSON object with --json."""
    from datetime import timedelta

    from pomona.cli.output import Column, table

    p = _pomona()
    now = p.clock.now()
    r = p.reports.failures(
        tenant_name,
        since=parse_time(since) or now - timedelta(days=30),
        until=parse_time(until_text) or now,
        group_by=group_by,
    )
    groups: list[dict[str, Any]] = r["groups"]
    if as_csv:
        click.echo(p.reports.to_csv(r), nl=False)
    elif is_json():
        click.echo(dumps(r))
    elif not groups:
        click.echo(t("cli.report.none", tenant=tenant_name))
    else:
        table([Column(group_by, "key"), Column("count")], groups)
