"""What every SQL store shares: timestamps read back in UTC, domain records to and from rows, IN lists.

A :class:`RecordCodec` maps a frozen domain dataclass to its table by field name, so a store names a
record's columns once (in schema.py) instead of once per insert and once per mapper.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Row, Select, any_, bindparam

IN_CHUNK = 500  # ids per IN list or multi-row INSERT: well under SQLite's and PostgreSQL's bind limits

_T = TypeVar("_T")
_R = TypeVar("_R")


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive: they were written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc_req(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def select_in(conn: Connection, stmt: Select[Any], col: Any, values: Sequence[Any]) -> Iterator[Any]:
    """The rows of ``stmt`` whose ``col`` is in ``values``: on PostgreSQL one ``= ANY(array)`` (one bind
    parameter, one plan, one scan), on SQLite IN lists of at most IN_CHUNK."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY  # not at import: SQLite never loads the dialect

        yield from conn.execute(stmt.where(col == any_(bindparam(None, list(values), type_=ARRAY(col.type)))))
        return
    for part in chunks(values):
        yield from conn.execute(stmt.where(col.in_(part)))


def _json_dump(value: Any) -> str | None:
    return json.dumps(value, default=str) if value else None


def _loader(hint: Any) -> tuple[Callable[[Any], Any] | None, bool]:
    """(converter of a column value to the field's type, or None when it is taken as it is; nullable)."""
    args = typing.get_args(hint)
    nullable = isinstance(hint, types.UnionType) and type(None) in args
    if nullable:
        (hint,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(hint) or hint
    if origin is datetime:
        return utc_req, nullable
    if origin in (list, dict):
        empty = origin

        def from_json(v: Any) -> Any:
            return json.loads(v) if v else empty()

        return from_json, False  # NULL (and "") read back as the empty list or dict
    if isinstance(origin, type) and issubclass(origin, (Enum, bytes, bool, int)):
        return origin, nullable
    return None, nullable


class RecordCodec(Generic[_R]):
    """A frozen dataclass to and from a row, by field name: enums by value, lists and dicts as JSON text,
    binary columns as bytes, timestamps in UTC. ``skip`` names fields that are not columns (or that the
    database assigns, such as an autoincrement id, on :meth:`dump`)."""

    def __init__(self, cls: type[_R], *, skip: Collection[str] = ()) -> None:
        self.cls = cls
        hints = typing.get_type_hints(cls)
        self.fields = tuple(f for f in cls.__dataclass_fields__ if f not in skip)  # type: ignore[attr-defined]
        self._plain: list[str] = []  # taken as they are
        self._always: list[tuple[str, Callable[[Any], Any]]] = []  # converted, NULL included
        self._nullable: list[tuple[str, Callable[[Any], Any]]] = []  # converted unless NULL
        self._json: list[str] = []
        self._enums: list[str] = []
        for name in self.fields:
            conv, nullable = _loader(hints[name])
            if conv is None:
                self._plain.append(name)
            else:
                (self._nullable if nullable else self._always).append((name, conv))
            origin = typing.get_origin(hints[name]) or hints[name]
            if origin in (list, dict):
                self._json.append(name)
            elif conv is not None and isinstance(conv, type) and issubclass(conv, Enum):
                self._enums.append(name)

    def load(self, m: Mapping[Any, Any]) -> _R:
        values = {name: m[name] for name in self._plain}
        for name, conv in self._always:
            values[name] = conv(m[name])
        for name, conv in self._nullable:
            v = m[name]
            values[name] = None if v is None else conv(v)
        return self.cls(**values)

    def load_row(self, r: Row[Any]) -> _R:
        return self.load(r._mapping)

    def dump(self, record: _R, **extra: object) -> dict[str, Any]:
        """The record's column values (plus ``extra`` columns that are not fields, e.g. a token hash)."""
        values = {name: getattr(record, name) for name in self.fields}
        for name in self._json:
            values[name] = _json_dump(values[name])
        for name in self._enums:
            v = values[name]
            values[name] = None if v is None else v.value
        values.update(extra)
        return values
