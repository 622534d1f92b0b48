"""The CLI's one output convention (docs/cli.md): a table for people, ``--json`` for scripts.

- A list prints a rich table (columns named from ``cli.column.*``, id or name first, times as
  ``YYYY-MM-DD HH:MM:SS`` in UTC, an absent value as ``—``), or the sentence saying it is empty; with
  ``--json`` one JSON array of objects (the shapes of ``pomona.presenters``), ``[]`` when empty.
- A stream (``events --follow``) prints JSON Lines with ``--json``: one object per line, flushed.
- One object (a show, a create, a status) prints a few sentences, or one JSON object.
- Text for people fits the terminal (``COLUMNS``, 80 when unknown): ``echo_wrapped`` wraps with a
  hanging indent and counts a CJK character as two cells.

rich is imported inside the functions that draw: start-up time matters.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from pomona.i18n import t

NONE = "—"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def is_json() -> bool:
    """--json was given (the ``common`` decorator's flag), or the deprecated ``--format json``."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    return bool(ctx.meta.get(FORMAT_JSON) or (isinstance(ctx.obj, dict) and ctx.obj.get("json")))


def dumps(data: object) -> str:
    """The one JSON style of --json: indented, UTF-8 text kept as is, times and other objects as text."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def when(value: object) -> str:
    """A time for a table: ``YYYY-MM-DD HH:MM:SS`` in UTC; ``—`` when absent; other text as is."""
    if value in (None, ""):
        return NONE
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime(TIME_FORMAT)
    return str(value)


def cell(value: object) -> str:
    """A value for a table cell: ✓ or — for a flag, — for nothing, a time formatted, else its text."""
    if isinstance(value, bool):
        return "✓" if value else NONE
    if value is None or value == "" or value == []:
        return NONE
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class Column:
    """A table column: its name (``cli.column.<name>``), the row's key or a function of the row, and
    whether it holds a time."""

    name: str
    key: str | Callable[[Mapping[str, Any]], object] | None = None
    time: bool = False
    no_wrap: bool = False

    def value(self, row: Mapping[str, Any]) -> str:
        key = self.key if self.key is not None else self.name
        raw = key(row) if callable(key) else row.get(key)
        return when(raw) if self.time else cell(raw)


def table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]], *, lang: str | None = None) -> None:
    """A rich table for people (column names in ``lang``, else the command line's language)."""
    from rich.console import Console
    from rich.table import Table

    tab = Table()
    for c in columns:
        tab.add_column(t(f"cli.column.{c.name}", lang), no_wrap=c.no_wrap, overflow="fold")  # never cut
    for r in rows:
        tab.add_row(*(c.value(r) for c in columns))
    Console().print(tab)


def emit_list(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, empty: str) -> None:
    """A list: a JSON array with --json, else a table (or ``empty``, the sentence saying there is none)."""
    if is_json():
        click.echo(dumps(list(rows)))
    elif not rows:
        click.echo(empty)
    else:
        table(columns, rows)


def emit(data: object, text: str) -> None:
    """One object: JSON with --json, else the text for people (nothing when it is empty)."""
    if is_json():
        click.echo(dumps(data))
    elif text:
        click.echo(text)


def emit_line(data: object) -> None:
    """One JSON Lines record of a stream (--json), flushed so a reading pipe sees it at once."""
    click.echo(json.dumps(data, ensure_ascii=False, default=str))
    sys.stdout.flush()


def width() -> int:
    """The terminal's width in cells: COLUMNS, else the terminal's, else 80."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def echo_wrapped(text: str, *, indent: int = 0, first: str = "") -> None:
    """Print ``first`` then ``text`` wrapped to the terminal's width, later lines indented by ``indent``
    (``pomona.services.readable.wrapped``)."""
    from pomona.services.readable import wrapped

    for line in wrapped(text, width(), indent=indent, first=first):
        click.echo(line)


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr, advanced by ``advance(done, total)``, when a person watches (a terminal,
    no --json); None otherwise (a timer's log stays clean). Used by the long commands (backup, restore,
    prune)."""
    if is_json() or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


F = TypeVar("F", bound=Callable[..., Any])


def deprecated_format(choices: list[str]) -> Callable[[F], F]:
    """The old ``--format`` option, hidden: ``--format json`` still works, as ``--json``, with a
    deprecation warning on stderr; any other value is the default output. Put it above ``common``."""

    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        click.echo(t("cli.warning", message=t("cli.warning.format_deprecated")), err=True)
        if value == "json":
            ctx.meta[FORMAT_JSON] = True

    return click.option(
        "--format",
        "_format",
        type=click.Choice(choices),
        default=None,
        hidden=True,
        expose_value=False,
        callback=callback,
        help="Deprecated: use --json.",
    )


FORMAT_JSON = "pomona.format_json"  # ctx.meta: the deprecated --format json asked for --json
