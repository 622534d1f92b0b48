"""The console's reports (issue 13: page 1's chart, pages 8 and 9), over
:mod:`pomona.services.console_reports`:

    GET   /console/t/{tenant}/domains            the tenant's domain, the discovery CNAMEs to create, and
                                                 what the DNS answers now (ok / missing / wrong)
    GET   /console/t/{tenant}/reports            enrollment failures: span, reason, step, platform, type;
                                                 grouped by reason, day, step, platform or type; a chart;
                                                 ``?format=csv`` downloads the groups (an attachment)
    GET   /console/t/{tenant}/reports/incident   ``?code=X``: the incident summary (`pomona incident`)

The chart (:func:`chart_svg`) is an inline SVG drawn on the server: no script, no asset, every text
escaped; a ``<title>`` and ``<desc>`` name it, and the page carries the same numbers as a table. Every
role reads these pages.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from html import escape
from typing import Final
from urllib.parse import quote, urlencode

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pomona.http.console import Console, title_of
from pomona.http.portal import translate
from pomona.ports import AdminAccount
from pomona.services.console_reports import (
    FILTERS,
    GROUPS,
    Chart,
    ConsoleReportsService,
    ReportQuery,
)
from pomona.services.reports import csv_safe

#: Stack colours (readable on white, told apart without colour by the legend's order and the table).
PALETTE: Final = ("#1f6feb", "#d1242f", "#9a6700", "#1a7f37", "#8250df", "#bf3989", "#0a7ea4", "#6e7781")
OTHER: Final = "__other__"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def chart_svg(chart: Chart, lang: str, title: str, *, top: int = 7, chart_id: str = "chart") -> Markup:
    """Enrollments per day (grey bars, upper band) and failures per day stacked by reason (lower band),
    with a legend. The ``top`` most frequent reasons get their colour; the rest are stacked as one."""

    def _(key: str, **v: object) -> str:
        return translate(lang, key, **v)

    days = chart.days
    shown = [r for r, _n in chart.reasons[:top]]
    rest = len(chart.reasons) > top
    colours = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(shown)}
    if rest:
        colours[OTHER] = PALETTE[-1]
    width, left, right = 760, 44, 8
    band_e, band_f, gap, top_pad = 70, 150, 26, 18
    legend_rows = (len(colours) + 1) // 2
    height = top_pad + band_e + gap + band_f + 22 + 18 * legend_rows + 8
    step = (width - left - right) / max(1, len(days))
    bar = max(1.0, step * 0.72)
    max_e = max([chart.enrollments.get(d, 0) for d in days] + [1])
    max_f = max([chart.day_failures(d) for d in days] + [1])
    desc = _(
        "console.chart.desc",
        days=len(days),
        first=days[0] if days else "",
        last=days[-1] if days else "",
        enrollments=chart.total_enrollments,
        failures=chart.total_failures,
    )
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{_e(chart_id)}" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" '
        f'aria-labelledby="{_e(chart_id)}-title {_e(chart_id)}-desc" '
        f'data-total-failures="{chart.total_failures}" data-total-enrollments="{chart.total_enrollments}">',
        f'<title id="{_e(chart_id)}-title">{_e(title)}</title>',
        f'<desc id="{_e(chart_id)}-desc">{_e(desc)}</desc>',
    ]
    y_e0 = top_pad + band_e  # the enrollments' baseline
    y_f0 = y_e0 + gap + band_f  # the failures' baseline
    out.append(
        f'<text x="{left}" y="{top_pad - 5}" class="chart-label">'
        f"{_e(_('console.chart.enrollments'))} ({_e(_('console.chart.max', n=max_e))})</text>"
    )
    out.append(
        f'<text x="{left}" y="{y_e0 + gap - 5}" class="chart-label">'
        f"{_e(_('console.chart.failures'))} ({_e(_('console.chart.max', n=max_f))})</text>"
    )
    for base in (y_e0, y_f0):
        out.append(f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#8c959f"/>')
    for i, d in enumerate(days):
        x = left + i * step + (step - bar) / 2
        n = chart.enrollments.get(d, 0)
        if n:
            h = max(1.0, band_e * n / max_e)
            out.append(
                f'<rect x="{x:.1f}" y="{y_e0 - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="#8c959f" '
                f'data-day="{_e(d)}" data-enrollments="{n}">'
                f"<title>{_e(d)}: {_e(_('console.chart.enrollments'))} {n}</title></rect>"
            )
        y = float(y_f0)
        per = chart.failures.get(d, {})
        stacks = [(r, per.get(r, 0)) for r in shown]
        if rest:
            stacks.append((OTHER, sum(v for r, v in per.items() if r not in colours)))
        for r, v in stacks:
            if not v:
                continue
            h = max(1.0, band_f * v / max_f)
            y -= h
            label = _("console.chart.other") if r == OTHER else r
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colours[r]}" '
                f'data-day="{_e(d)}" data-reason="{_e(r)}" data-count="{v}">'
                f"<title>{_e(d)} {_e(label)}: {v}</title></rect>"
            )
        if i % 7 == 0 or (i == len(days) - 1 and i % 7 >= 4):
            out.append(f'<text x="{x:.1f}" y="{y_f0 + 14}" class="chart-tick">{_e(d[5:])}</text>')
    ly = y_f0 + 22
    for i, r in enumerate(colours):
        lx = left + (i % 2) * (width - left) / 2
        yy = ly + (i // 2) * 18
        name = title_of(r, lang)
        label = _("console.chart.other") if r == OTHER else (f"{name} ({r})" if name != r else r)
        total = sum(n for k, n in chart.reasons if k not in shown) if r == OTHER else dict(chart.reasons)[r]
        out.append(
            f'<g class="legend" data-legend="{_e(r)}"><rect x="{lx:.1f}" y="{yy}" width="12" height="12" '
            f'fill="{colours[r]}"/><text x="{lx + 18:.1f}" y="{yy + 10}">{_e(label[:70])}: {total}</text></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above went through _e


def _day(text: str | None, default: date) -> date:
    try:
        return date.fromisoformat((text or "").strip()[:10]) if text else default
    except ValueError:
        return default


class ReportPages:
    def __init__(self, console: Console, svc: ConsoleReportsService) -> None:
        self.c = console
        self.svc = svc

    def ref(self, request: Request) -> str:
        return str(request.path_params["tenant"])

    async def domains(self, request: Request, account: AdminAccount) -> Response:
        v = await run_in_threadpool(self.svc.domains, account, self.ref(request))
        return self.c.render(request, "domains.html", account, tenant=v.tenant, v=v)

    async def reports(self, request: Request, account: AdminAccount) -> Response:
        qp = request.query_params
        first, last = self.svc.default_span()
        since, until = _day(qp.get("since"), first), _day(qp.get("until"), last)
        group = qp.get("group") or "reason"
        group = group if group in GROUPS else "reason"
        filters = {k: (qp.get(k) or "").strip()[:64] for k in FILTERS if (qp.get(k) or "").strip()}
        q = ReportQuery(since, until, group, filters)
        as_csv = qp.get("format") == "csv"
        rep = await run_in_threadpool(
            lambda: self.svc.report(account, self.ref(request), q, enrollments=not as_csv)
        )
        lang = self.c.lang(request)
        if as_csv:
            return self.csv(rep.tenant.name, rep.query, rep.groups, lang)
        title = translate(
            lang, "console.reports.chart_title", since=since.isoformat(), until=until.isoformat()
        )
        query = {"since": since.isoformat(), "until": until.isoformat(), "group": group, **filters}
        return self.c.render(
            request,
            "reports.html",
            account,
            tenant=rep.tenant,
            r=rep,
            q=q,
            groups=list(GROUPS),
            filters=list(FILTERS),
            svg=chart_svg(rep.chart, lang, title),
            chart=rep.chart,
            reason_title=lambda code: title_of(code, lang),
            csv_query=urlencode({**query, "format": "csv"}),
        )

    def csv(self, tenant: str, q: ReportQuery, groups: list[tuple[str, int]], lang: str) -> Response:
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow([q.group_by, "title" if q.group_by == "reason" else "", "count"])
        for key, n in groups:
            w.writerow([csv_safe(key), csv_safe(title_of(key, lang) if q.group_by == "reason" else ""), n])
        name = f"failures-{tenant}-{q.since.isoformat()}-{q.until.isoformat()}-by-{q.group_by}.csv"
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={
                "content-disposition": f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(name)}",
                "x-content-type-options": "nosniff",
            },
        )

    async def incident(self, request: Request, account: AdminAccount) -> Response:
        code = (request.query_params.get("code") or "").strip()[:64]
        lang = self.c.lang(request)
        if not code:
            tenant = await run_in_threadpool(self.c.svc.scope, account, self.ref(request))
            text = ""
        else:
            tenant, text = await run_in_threadpool(self.svc.incident, account, self.ref(request), code, lang)
        return self.c.render(
            request,
            "incident.html",
            account,
            tenant=tenant,
            code=code,
            code_title=title_of(code, lang) if code else "",
            summary=text,
        )


def report_routes(c: Console) -> list[Route]:
    """The pages' routes, for create_console (before its catch-all)."""
    r = ReportPages(c, c.p.console_reports)
    s = c.signed
    return [
        Route("/console/t/{tenant}/domains", s(r.domains), methods=["GET"]),
        Route("/console/t/{tenant}/reports", s(r.reports), methods=["GET"]),
        Route("/console/t/{tenant}/reports/incident", s(r.incident), methods=["GET"]),
    ]


__all__ = ["ReportPages", "chart_svg", "report_routes"]
