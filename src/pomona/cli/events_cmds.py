"""CLI: `pomona events` — the tenant's event log (every refusal and admin action), filtered, or followed
as it grows.

--follow polls once a second for events of a greater id than the last shown. On PostgreSQL ids are
handed out at insert but become visible at commit, so a slow transaction can show an id lower than one
already read: each poll looks back over the ids of the last few polls (LOOKBACK_POLLS) and shows only
those not yet shown. The floor of that window comes from the tenant's newest event, whatever the filters,
so a poll reads a few seconds of the log, never the whole history before a rarely matching filter.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pomona.cli.diagnose_cmds import parse_time
from pomona.cli.main import _json, _pomona, common, main
from pomona.cli.output import emit_line, when
from pomona.domain.errors import InvalidInputError
from pomona.i18n import msg, t

if TYPE_CHECKING:
    from pomona.domain.models import Event

POLL_SECONDS = 1.0
LOOKBACK_POLLS = 5
PAGE = 500
DETAIL_CHARS = 48
COLUMNS = ["time", "step", "outcome", "code", "user", "device", "detail"]


def short_detail(detail: dict[str, object]) -> str:
    """The event's detail on a few dozen characters: its action or error first, then key=value pairs."""
    parts = [str(detail[k]) for k in ("action", "error") if detail.get(k) not in (None, "")]
    parts += [
        f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
        for k, v in detail.items()
        if k not in ("action", "error") and v not in (None, "")
    ]
    text = " ".join(parts).replace("\n", " ")
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def cells(e: Event) -> list[str]:
    """One event as the table's cells (times in UTC, to the second)."""
    return [
        when(e.at),
        e.step.value,
        t(f"cli.outcome.{e.outcome.value}"),
        e.reason or "—",
        e.upn or "—",
        e.serial or e.udid or "—",
        short_detail(e.detail) or "—",
    ]


def _emit_json(e: Event) -> None:
    from pomona.presenters import event_json

    emit_line(event_json(e))  # JSON Lines: a script reading the pipe sees each event as it comes


def follow_lines(e: Event, cols: int) -> list[str]:
    """One event of --follow's text output, within ``cols`` cells: the time, the outcome, the step and
    the reason code on the first line; the user, the device and the detail on the second, indented
    (cut with … where too long). A code is never cut: it is what the admin looks up."""
    from pomona.services.readable import cell_len

    time_, step, outcome, code, who, device, detail = cells(e)
    first = f"{time_}  {outcome}  {step}" + ("" if code == "—" else f"  {code}")
    second = "  " + "  ".join(x for x in (who, device, detail) if x != "—")
    out = [first]
    if second.strip():
        while cell_len(second) > cols:
            second = second[:-2] + "…"
        out.append(second)
    return out


def _emit_line(e: Event) -> None:
    from pomona.cli.output import width

    for line in follow_lines(e, width()):
        click.echo(line)
    sys.stdout.flush()


def _emit_table(events: list[Event]) -> None:
    """The events as a rich table; the reason code is never cut (it is what the admin looks up)."""
    from pomona.cli.output import Column, table

    rows = [dict(zip(COLUMNS, cells(e), strict=True)) for e in events]
    table([Column(c, no_wrap=c == "code") for c in COLUMNS], rows)


@main.command()
@click.option("--tenant", "tenant_name", required=True)
@click.option("--user", "upn", default=None, help="Only this user's events (UPN, any case).")
@click.option("--serial", default=None, help="Only this device's events, by serial number.")
@click.option("--udid", default=None, help="Only this device's events, by UDID.")
@click.option("--code", default=None, help="Only events with this reason code, e.g. DEVICE_LIMIT_REACHED.")
@click.option("--since", "since_text", default=None, help="From this time (ISO 8601; UTC unless zoned).")
@click.option("--until", "until_text", default=None, help="Before this time (ISO 8601).")
@click.option("--limit", default=100, show_default=True, help="At most this many events (the newest).")
@click.option("--follow", is_flag=True, help="Keep printing new events as they come, until Ctrl-C.")
@common
def events(
    tenant_name: str,
    upn: str | None,
    serial: str | None,
    udid: str | None,
    code: str | None,
    since_text: str | None,
    until_text: str | None,
    limit: int,
    follow: bool,
) -> None:
    """The tenant's events, oldest first: a table, or a JSON array with --json. With --follow, new events
    as they come: two short lines each, or JSON Lines (one object per line) with --json."""
    if not 1 <= limit <= 10_000:
        raise InvalidInputError(msg("error.page.limit"))
    since, until = parse_time(since_text), parse_time(until_text)
    if follow and until is not None:
        raise InvalidInputError(msg("error.events.follow"))
    if code is not None:
        code = code.strip().upper()
    filters: dict[str, Any] = {"upn": upn, "serial": serial, "udid": udid, "reason": code, "since": since}
    p = _pomona()

    def newest_id() -> int:
        latest = p.commands.events(tenant_name, limit=1)
        return (latest[0].id or 0) if latest else 0

    # The floor is read before the events shown: one written between the two reads is followed, not lost.
    start = newest_id() if follow else 0
    shown = list(reversed(p.commands.events(tenant_name, **filters, until=until, limit=limit)))
    as_json = _json()
    if as_json and not follow:
        from pomona.cli.output import dumps
        from pomona.presenters import event_json

        click.echo(dumps([event_json(e) for e in shown]))
    elif as_json:
        for e in shown:
            _emit_json(e)
    elif follow:
        for e in shown:
            _emit_line(e)
    elif not shown:
        click.echo(t("cli.events.none", tenant=tenant_name))
    else:
        _emit_table(shown)
    if not follow:
        return
    if not as_json and not shown:
        click.echo(t("cli.events.following", tenant=tenant_name), err=True)

    floor = max([start, *(e.id or 0 for e in shown)])
    try:
        follow_events(
            lambda after: p.commands.events(tenant_name, **filters, after_id=after, limit=PAGE),
            newest_id,
            _emit_json if as_json else _emit_line,
            floor,
        )
    except KeyboardInterrupt:
        return  # Ctrl-C is how a follow ends: exit 0


def follow_events(
    fetch: Callable[[int], list[Event]],
    newest_id: Callable[[], int],
    emit: Callable[[Event], None],
    floor: int,
) -> None:
    """Poll every POLL_SECONDS for ever: each event of id above the window's floor is emitted once."""
    floors: deque[int] = deque([floor], maxlen=LOOKBACK_POLLS)
    seen: set[int] = set()
    while True:
        time.sleep(POLL_SECONDS)
        top = newest_id()
        cursor = floors[0]
        while True:
            batch = fetch(cursor)
            for e in batch:
                assert e.id is not None
                top = max(top, e.id)
                if e.id not in seen:
                    seen.add(e.id)
                    emit(e)
            if len(batch) < PAGE:
                break
            cursor = batch[-1].id or cursor
        floors.append(top)
        seen = {i for i in seen if i > floors[0]}
