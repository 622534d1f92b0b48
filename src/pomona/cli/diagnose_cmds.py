"""CLI: `pomona diagnose` — what is wrong, how sure Pomona is, and what to do, in English or Chinese."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from pomona.cli.main import _pomona, common, main
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
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--explain", is_flag=True, help="Print the reasoning: every cause checked and what decided it.")
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
    fmt: str,
    explain: bool,
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
    ctx = click.get_current_context()
    if fmt == "json" or ctx.obj["json"]:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    render(data, lang, explain=explain)


def _evidence_line(e: dict[str, Any]) -> str:
    """One readable line per piece of evidence (the JSON form keeps every field)."""
    if e.get("kind") == "policy" and isinstance(e.get("decision"), dict):
        dec = e["decision"]
        return f"policy now: {dec.get('reason') or 'allowed'}: {dec.get('message') or ''}".strip(": ")[:200]
    if e.get("kind") == "event":
        who = " ".join(str(e[k]) for k in ("upn", "serial") if e.get(k))
        return f"{str(e.get('at', ''))[:16].replace('T', ' ')} {e.get('step')} {e.get('outcome')} {e.get('reason') or ''} {who}".strip()
    rest = ", ".join(f"{k}={v}" for k, v in e.items() if k != "kind" and v not in (None, "", [], {}))
    return f"{e.get('kind')}: {rest}"[:200]


def render(data: dict[str, Any], lang: str, *, explain: bool = False) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    con = Console()
    findings: list[dict[str, Any]] = data["findings"]
    who = data.get("upn") or (data.get("device") or {}).get("serial") or "?"
    top = findings[0]
    verdict = t(f"diagnose.verdict.{top['verdict']}", lang)
    body = [
        f"[bold]{escape(t('diagnose.answer', lang, title=top['title'], code=top['code'], verdict=verdict))}[/bold]",
        escape(str(top["cause"])),
        "",
        f"[bold]{t('diagnose.do', lang)}[/bold]",
    ]
    body += [f"  {i}. {escape(str(step))}" for i, step in enumerate(top["resolution"], start=1)]
    if top.get("device_checks"):
        body += ["", f"[bold]{t('diagnose.device_checks', lang)}[/bold]"]
        body += [f"  - {escape(str(c))}" for c in top["device_checks"]]
    if top["evidence"]:
        body += ["", f"[bold]{t('diagnose.evidence', lang)}[/bold]"]
        body += [f"  - {escape(_evidence_line(e))}" for e in top["evidence"][:6]]
    attempt = data.get("attempt")
    if attempt:
        reached = " > ".join(attempt["reached"]) or "-"
        state = t(f"diagnose.state.{attempt['state']}", lang)
        started = str(attempt["started_at"])[:16].replace("T", " ")
        body += ["", escape(t("diagnose.attempt", lang, started=started, reached=reached, state=state))]
    else:
        body += ["", escape(t("diagnose.attempt.none", lang))]
    con.print(
        Panel("\n".join(body), title=escape(t("diagnose.heading", lang, who=who, tenant=data["tenant"])))
    )
    others = [f for f in findings[1:] if f["verdict"] != "ruled_out"]
    ruled = len(findings) - 1 - len(others)
    if others or ruled:
        con.print(f"[bold]{t('diagnose.others', lang)}[/bold]")
        for f in others:
            con.print(f"  {f['code']:<32} {t('diagnose.verdict.' + str(f['verdict']), lang)}")
            con.print(f"      {escape(str(f['observed']))}")
        if ruled:
            con.print(f"  {escape(t('diagnose.ruled_out_count', lang, count=ruled))}")
    also: list[dict[str, Any]] = data.get("also_wrong") or []
    if also:
        con.print(f"[bold]{t('diagnose.also_wrong', lang)}[/bold]")
        for f in also:
            con.print(f"  {f['code']:<32} {escape(str(f['title']))}")
    if explain:
        con.print(f"[bold]{t('diagnose.explain', lang)}[/bold]")
        for x in data.get("explain") or []:
            basis = t(f"diagnose.basis.{x['basis']}", lang)
            con.print(
                f"  {x['code']:<32} {t('diagnose.verdict.' + str(x['verdict']), lang):<12} [{escape(basis)}]"
            )
            con.print(f"      {escape(str(x['why']))}")
    ask: list[str] = data.get("ask") or []
    if ask:
        con.print(f"[bold]{t('diagnose.ask', lang)}[/bold]")
        for q in ask:
            con.print(f"  - {escape(q)}")


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--lang", type=click.Choice(["en", "zh-CN"]), default=None)
@common
def health(tenant_name: str, fmt: str, lang: str | None) -> None:
    """Run every tenant-level check now and list the open findings (first and last seen)."""
    from pomona import knowledge

    lang = detect_lang(lang)
    data = _pomona().health.run(tenant_name)
    for f in data["findings"]:
        f["title"] = knowledge.text_for(f["code"], lang, tenant=tenant_name, **f["facts"]).title
    if fmt == "json" or click.get_current_context().obj["json"]:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    if not data["findings"]:
        click.echo(t("health.none", lang, tenant=tenant_name))
        return
    for f in data["findings"]:
        click.echo(
            f"[{f['severity']}] {f['code']} ({f['subject']}): {f['title']}  "
            f"{t('health.since', lang, first=f['first_seen'], last=f['last_seen'])}"
        )


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--code", "codes", multiple=True, help="A reason code (repeatable).")
@click.option("--message", default=None, help="The error as users report it; its candidate causes are used.")
@click.option("--since", default=None, help="Start of the period (ISO 8601; default: 7 days ago).")
@click.option("--until", "until_text", default=None)
@click.option("--lang", type=click.Choice(["en", "zh-CN"]), default=None)
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown")
@common
def incident(
    tenant_name: str,
    codes: tuple[str, ...],
    message: str | None,
    since: str | None,
    until_text: str | None,
    lang: str | None,
    fmt: str,
) -> None:
    """The helpdesk checklist for an incident, filled in, with suspect configuration changes."""
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
    if fmt == "json" or click.get_current_context().obj["json"]:
        click.echo(json.dumps(inc, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(p.reports.incident_markdown(inc, lang))


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
@click.option("--csv", "as_csv", is_flag=True)
@common
def report_failures(
    tenant_name: str, since: str | None, until_text: str | None, group_by: str, as_csv: bool
) -> None:
    """Enrollment failures counted by reason, platform, enrollment type, step or day."""
    from datetime import timedelta

    p = _pomona()
    now = p.clock.now()
    r = p.reports.failures(
        tenant_name,
        since=parse_time(since) or now - timedelta(days=30),
        until=parse_time(until_text) or now,
        group_by=group_by,
    )
    if as_csv:
        click.echo(p.reports.to_csv(r), nl=False)
    elif click.get_current_context().obj["json"]:
        click.echo(json.dumps(r, indent=2))
    else:
        for g in r["groups"]:  # type: ignore[attr-defined,unused-ignore]
            click.echo(f"{g['key']:<36} {g['count']:>8}")
