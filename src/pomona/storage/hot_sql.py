"""The idle check-in's one read, on the raw driver: no SQLAlchemy execute, pool or transaction per request.

An idle device with an empty queue is most of a fleet's traffic (issue 14: SQLAlchemy's execute, connect,
begin/rollback and pool handling cost 0.19-0.23 ms of that check-in, the same SQL on the driver 0.03 ms).
:class:`HotReads` keeps one DBAPI connection per thread (the event loop's, and each worker thread's
that runs a check-in), opened on first use and closed when its thread ends or by :meth:`HotReads.close`
(``SqlDatabase.dispose``). A thread that ends takes its connection with it: worker threads come and go
(anyio's idle workers end after 10 s), and a connection each kept past its thread (and its SQLite page
cache) would add up over a server's life (issue 14, bench/memory.py).

The statement is the SQLAlchemy one (``commands_sql.CHANNEL_ANY`` / ``CHANNEL_SKIP_NOT_NOW``), compiled
once for the dialect at start-up, so schema and SQL stay in one place; its constants (the pending
statuses) are bound once too. Each request binds the fingerprint only.

- SQLite: ``sqlite3`` in autocommit (``isolation_level=None``): a lone SELECT is its own read
  transaction, the same one-statement snapshot the deferred BEGIN gave; WAL means it never waits for the
  writer. The driver's statement cache keeps it prepared. The connection takes the engine's PRAGMAs.
- PostgreSQL: ``psycopg`` in autocommit (the READ COMMITTED snapshot of one statement, as the
  ``AUTOCOMMIT`` connection before), the statement server-side prepared (``prepare=True``). A connection
  the server dropped (restart, idle timeout, a proxy) is closed and opened again once, and the read
  repeated: it changes nothing.

A result and the command take run in their own driver transactions (``storage/hot_channel.py``). The
enrollment's statements (profile, SCEP, Authenticate, TokenUpdate) run on the driver inside SQLAlchemy's
transactions: :class:`Prepared`, the last section of this module.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Select

from pomona.storage import schema as s


def running_loop() -> object | None:
    """The asyncio loop running on this thread, or None. No loop runs before asyncio is imported, and
    the CLI does not import it (start-up time, issue 14): asyncio is looked up, not imported, here."""
    events = sys.modules.get("asyncio.events")
    return None if events is None else events._get_running_loop()


_get_running_loop = running_loop
_Processor = Callable[[Any], Any] | None


class _Held:
    """A thread's connection, held in the thread's locals: when the thread ends its locals go, and the
    finalizer :meth:`HotReads._open` set on this holder closes the connection."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: Any) -> None:
        self.conn = conn


class HotReads:
    """Per-thread raw connections and the prepared channel reads of one database."""

    def __init__(
        self,
        engine: Engine,
        statements: dict[bool, Select[Any]],
        pragmas: list[str],
        loop_pragmas: Sequence[str] = (),
    ) -> None:
        dialect = engine.dialect
        self.is_sqlite = dialect.name == "sqlite"
        self._url = engine.url
        self._pragmas = pragmas
        self._loop_pragmas = list(loop_pragmas)
        self._local = threading.local()
        self._all: list[Any] = []  # every connection opened, to close them all at dispose
        self._lock = threading.Lock()
        # key -> (sql, named constants) or (sql, positional constants before and after the fingerprint)
        self._named: dict[bool, tuple[str, dict[str, Any]]] = {}
        self._positional: dict[bool, tuple[str, tuple[Any, ...], tuple[Any, ...]]] = {}
        for key, stmt in statements.items():
            compiled = stmt.compile(dialect=dialect)
            constants = compiled.construct_params({"fp": ""})
            if compiled.positiontup:  # sqlite3: qmark, in the order the statement names them
                order = list(compiled.positiontup)
                at = order.index("fp")
                values = tuple(constants[name] for name in order)
                self._positional[key] = (compiled.string, values[:at], values[at + 1 :])
            else:  # psycopg: named
                self._named[key] = (compiled.string, {k: v for k, v in constants.items() if k != "fp"})
        ts = s.devices.c.last_seen_at.type.dialect_impl(dialect)
        self.ts: _Processor = ts.result_processor(dialect, None)

    def params(self, key: bool, fingerprint: str) -> tuple[str, Any]:
        """The statement and its parameters for this identity."""
        if self.is_sqlite:
            sql, before, after = self._positional[key]
            return sql, (*before, fingerprint, *after)
        sql, constants = self._named[key]
        return sql, {**constants, "fp": fingerprint}

    def row(self, key: bool, fingerprint: str) -> tuple[Any, ...] | None:
        """The channel read's row (raw driver values) for this identity, or None."""
        sql, params = self.params(key, fingerprint)
        conn = self._conn()
        if self.is_sqlite:
            row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
            return row
        import psycopg

        try:
            return conn.execute(sql, params, prepare=True).fetchone()  # type: ignore[no-any-return]
        except (psycopg.OperationalError, psycopg.InterfaceError):
            self._drop(conn)  # the server dropped it: open another and read again (a read changes nothing)
            return self._conn().execute(sql, params, prepare=True).fetchone()  # type: ignore[no-any-return]

    def _conn(self) -> Any:
        held = getattr(self._local, "held", None)
        if held is None or (not self.is_sqlite and held.conn.closed):
            conn = self._open()
            held = _Held(conn)
            weakref.finalize(held, self._drop_quietly, conn)  # runs when this thread's locals go
            self._local.held = held
        return held.conn

    def open_connections(self) -> int:
        """How many connections are open now (one per thread that read and is still running)."""
        with self._lock:
            return len(self._all)

    def _open(self) -> Any:
        conn: Any
        if self.is_sqlite:
            conn = sqlite3.connect(
                self._url.database or "",
                check_same_thread=False,  # close() may come from another thread
                isolation_level=None,  # autocommit: a lone SELECT is its own read transaction
                cached_statements=16,
            )
            # A thread keeps its connection: one that runs an event loop gets the loop's short lock wait.
            on_loop = _get_running_loop() is not None
            for pragma in self._pragmas + (self._loop_pragmas if on_loop else []):
                conn.execute(pragma)
        else:
            import psycopg

            dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = psycopg.connect(dsn, autocommit=True)
        with self._lock:
            self._all.append(conn)
        return conn

    def _drop(self, conn: Any) -> None:
        self._drop_quietly(conn)
        held = getattr(self._local, "held", None)
        if held is not None and held.conn is conn:
            self._local.held = None

    def _drop_quietly(self, conn: Any) -> None:
        """``conn`` closed and forgotten (its thread ended, or the server dropped it)."""
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
            pass

    def close(self) -> None:
        """Close every thread's connection; a thread that reads again afterwards opens a new one."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        self._local = threading.local()


# ==========================================================================================================
# Enrollment: prepared statements inside a unit of work (profile, SCEP, Authenticate, TokenUpdate)
# ==========================================================================================================
#
# A full enrollment runs some thirty statements through the stores; SQLAlchemy spent 50-60 us building,
# keying and compiling each one (SQLite: a store's get 64 us, the same SQL on the driver 3 us; PostgreSQL
# 116 us against 23 us prepared). :class:`Prepared` keeps what the stores say (the SQLAlchemy Core
# statement, named bind parameters) and runs it on the driver connection the unit of work already holds,
# inside its transaction: the unit of work still begins, commits and rolls back as before (BEGIN
# IMMEDIATE, lock waits, StorageBusyError), and every event of a step is still written in its transaction.
#
# - Compiled once per dialect. Bind and result values go through the type processors SQLAlchemy itself
#   would apply (SQLite: timestamps as text, booleans as integers), so what is written and read back is
#   the same.
# - PostgreSQL: server-side prepared (``prepare=True``), as the idle check-in's read.
# - A driver error comes out as SQLAlchemy's (``DBAPIError.instance``: IntegrityError, OperationalError),
#   so the callers' and the unit of work's handling (a lock wait is StorageBusyError) are unchanged.
# - A connection outside a transaction (nothing begun yet) runs the statement through SQLAlchemy, which
#   begins one as it always did: the driver alone would run it in autocommit.


class _Compiled:
    __slots__ = (
        "sql",
        "order",
        "defaults",
        "binds",
        "columns",
        "keys",
        "results",
        "dialect",
        "dbapi_error",
        "is_sqlite",
    )

    def __init__(self, stmt: Any, dialect: Any) -> None:
        from sqlalchemy.sql.elements import BindParameter

        compiled = stmt.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.is_sqlite = dialect.name == "sqlite"
        self.order: list[str] | None = list(compiled.positiontup) if compiled.positiontup else None
        binds: dict[str, BindParameter[Any]] = compiled.binds
        self.defaults: dict[str, Any] = {k: b.value for k, b in binds.items() if not b.required}
        self.binds: dict[str, Callable[[Any], Any]] = {}
        for name, bind in binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.binds[name] = proc
        self.columns = list(getattr(stmt, "selected_columns", ()))
        self.keys: tuple[str, ...] = tuple(c.key for c in self.columns)
        self.results: list[tuple[int, Callable[[Any], Any]]] | None = None  # at the first rows read
        self.dialect = dialect
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def result_processors(self, description: Sequence[Any]) -> list[tuple[int, Callable[[Any], Any]]]:
        """The columns' result processors, given the driver's column types (as SQLAlchemy passes them:
        psycopg's numeric processors depend on the type the server answered)."""
        out = []
        for i, c in enumerate(self.columns):
            proc = c.type.dialect_impl(self.dialect).result_processor(self.dialect, description[i][1])
            if proc is not None:
                out.append((i, proc))
        self.results = out
        return out

    def params(self, given: dict[str, Any]) -> Any:
        values = {**self.defaults, **given} if self.defaults else given
        for name, proc in self.binds.items():
            if name in values:
                values[name] = proc(values[name])
        if self.order is not None:
            return tuple(values[name] for name in self.order)
        return values

    def mapping(self, row: Sequence[Any], description: Sequence[Any]) -> dict[str, Any]:
        results = self.results if self.results is not None else self.result_processors(description)
        if results:
            values = list(row)
            for i, proc in results:
                values[i] = proc(values[i])
            return dict(zip(self.keys, values, strict=True))
        return dict(zip(self.keys, row, strict=True))


class Prepared:
    """A Core statement run on the driver connection of a unit of work (see the section's comment).

    ``first``/``all`` answer rows as dicts keyed by the selected columns' keys (what RecordCodec.load
    reads); ``run`` answers the affected row count."""

    __slots__ = ("stmt", "_compiled")

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def _cursor(self, conn: Any, params: dict[str, Any]) -> tuple[Any, _Compiled] | None:
        if not conn.in_transaction():
            return None
        dialect = conn.dialect
        c = self._compiled.get(dialect.name)
        if c is None:
            c = self._compiled[dialect.name] = _Compiled(self.stmt, dialect)
        driver = conn.connection.driver_connection
        bound = c.params(params)
        try:
            if c.is_sqlite:
                return driver.execute(c.sql, bound), c
            return driver.execute(c.sql, bound, prepare=True), c
        except c.dbapi_error as exc:
            from sqlalchemy.exc import DBAPIError

            raise DBAPIError.instance(c.sql, bound, exc, c.dbapi_error, dialect=dialect) from exc

    def first(self, conn: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        found = self._cursor(conn, params)
        if found is None:
            r = conn.execute(self.stmt, params).first()
            return None if r is None else dict(r._mapping)
        cursor, c = found
        row = cursor.fetchone()
        return None if row is None else c.mapping(row, cursor.description)

    def all(self, conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        found = self._cursor(conn, params)
        if found is None:
            return [dict(r._mapping) for r in conn.execute(self.stmt, params)]
        cursor, c = found
        return [c.mapping(row, cursor.description) for row in cursor.fetchall()]

    def run(self, conn: Any, params: dict[str, Any]) -> int:
        found = self._cursor(conn, params)
        if found is None:
            return int(conn.execute(self.stmt, params).rowcount)
        return int(found[0].rowcount)
