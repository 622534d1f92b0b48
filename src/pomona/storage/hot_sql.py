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
# Statements on the driver: DriverStatement, compiled once; Prepared, inside a unit of work
# ==========================================================================================================
#
# A full enrollment runs some thirty statements through the stores; SQLAlchemy spent 50-60 us building,
# keying and compiling each one (SQLite: a store's get 64 us, the same SQL on the driver 3 us; PostgreSQL
# 116 us against 23 us prepared). :class:`DriverStatement` is how a SQLAlchemy Core statement runs on a
# DBAPI connection (sqlite3, psycopg): the enrollment's statements (:class:`Prepared`) and the command
# channel's transactions (storage/hot_channel.py) both run through it.
#
# - Compiled once per dialect, so schema and SQL stay in the stores' statements. Its constants (statuses,
#   a LIMIT) are bound once; bind and result values go through the type processors SQLAlchemy itself
#   would apply (SQLite: timestamps as text, booleans as integers), so what is written and read back is
#   the same.
# - Called with the bind parameters by name (a mapping: the stores), or with a sequence of values in the
#   order of the ``names`` it was compiled with (the command channel: no dict per call).
# - PostgreSQL: server-side prepared (``prepare=True``), as the idle check-in's read.
# - A driver error comes out as the driver's; :class:`Prepared` raises it as SQLAlchemy's
#   (``DBAPIError.instance``: IntegrityError, OperationalError), so the callers' and the unit of work's
#   handling (a lock wait is StorageBusyError) are unchanged.
#
# :class:`Prepared` keeps what the stores say (the statement, named bind parameters) and runs it on the
# driver connection the unit of work already holds, inside its transaction: the unit of work still begins,
# commits and rolls back as before (BEGIN IMMEDIATE, lock waits, StorageBusyError), and every event of a
# step is still written in its transaction. A connection outside a transaction (nothing begun yet) runs the
# statement through SQLAlchemy, which begins one as it always did: the driver alone would run it in
# autocommit.


class DriverStatement:
    """A Core statement compiled for one dialect and run on a DBAPI connection as SQLAlchemy sends it.

    With ``names``, a call gives a sequence of values in that order (an insert without ``.values()``
    takes those columns); without, a mapping of the statement's unbound parameters by name."""

    __slots__ = (
        "sql",
        "prepare",
        "keys",
        "dbapi_error",
        "_tuple",
        "_by_name",
        "_slots",
        "_constants",
        "_columns",
        "_results",
        "_dialect",
    )

    def __init__(self, stmt: Any, dialect: Any, names: Sequence[str] | None = None) -> None:
        compiled = stmt.compile(
            dialect=dialect, column_keys=list(names) if names is not None and stmt.is_insert else None
        )
        self.sql: str = compiled.string
        self.prepare = dialect.name != "sqlite"  # psycopg: server-side prepared
        procs: dict[str, _Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in compiled.bind_names.items()
        }
        # where a call's value is: its index in ``names``, or its name in the mapping
        at: dict[str, int | str]
        if names is not None:
            at = {name: i for i, name in enumerate(names)}
        else:
            at = {name: name for bind, name in compiled.bind_names.items() if bind.required}
        self._constants: dict[str, Any] = {}  # the other parameters' values, processed once
        for name, value in compiled.construct_params(dict.fromkeys(at)).items():
            if name not in at:
                proc = procs.get(name)
                self._constants[name] = value if proc is None else proc(value)
        self._tuple = bool(compiled.positiontup)  # sqlite3 (qmark) takes a tuple, psycopg a dict
        self._by_name = names is None
        self._slots: tuple[tuple[Any, ...], ...]
        if self._tuple:  # per position: (where the call's value is, its processor) or (None, the constant)
            self._slots = tuple(
                (at[name], procs.get(name)) if name in at else (None, self._constants[name])
                for name in compiled.positiontup or ()
            )
        elif self._by_name:  # the mapping over the constants, then (name, processor) where there is one
            self._slots = tuple((name, proc) for name in at if (proc := procs.get(name)) is not None)
        else:  # (name, index, processor) per value, set over a copy of the constants
            self._slots = tuple((name, i, procs.get(name)) for name, i in at.items())
        self._columns = list(getattr(stmt, "selected_columns", ()))
        self.keys: tuple[str, ...] = tuple(c.key for c in self._columns)
        self._results: list[tuple[int, Callable[[Any], Any]]] | None = None  # at the first rows read
        self._dialect = dialect
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error

    def params(self, given: Any) -> Any:
        """The driver's parameters for a call's values: a tuple (qmark) or a dict (pyformat). A mapping
        given for a statement without constants is processed in place, not copied (the stores pass a
        fresh one)."""
        if self._tuple:
            return tuple([x if w is None else given[w] if x is None else x(given[w]) for w, x in self._slots])
        if self._by_name:
            out = {**self._constants, **given} if self._constants else given
            for name, proc in self._slots:
                out[name] = proc(out[name])
            return out
        out = self._constants.copy()
        for name, i, proc in self._slots:
            out[name] = given[i] if proc is None else proc(given[i])
        return out

    def run(self, conn: Any, params: Any) -> Any:
        """The driver's cursor for this statement run with :meth:`params`' parameters on a DBAPI connection.
        A driver error is the driver's (:meth:`sqlalchemy_error` says it as SQLAlchemy would)."""
        if self.prepare:
            return conn.execute(self.sql, params, prepare=True)
        return conn.execute(self.sql, params)

    def sqlalchemy_error(self, exc: Exception, params: Any) -> Exception:
        """A driver error of :meth:`run` as SQLAlchemy raises it (IntegrityError, OperationalError)."""
        from sqlalchemy.exc import DBAPIError

        return DBAPIError.instance(self.sql, params, exc, self.dbapi_error, dialect=self._dialect)

    def _result_processors(self, description: Sequence[Any]) -> list[tuple[int, Callable[[Any], Any]]]:
        """The columns' result processors, given the driver's column types (as SQLAlchemy passes them:
        psycopg's numeric processors depend on the type the server answered)."""
        out = []
        for i, c in enumerate(self._columns):
            proc = c.type.dialect_impl(self._dialect).result_processor(self._dialect, description[i][1])
            if proc is not None:
                out.append((i, proc))
        self._results = out
        return out

    def row(self, cursor: Any) -> Sequence[Any] | None:
        """The cursor's next row with the result processors applied, or None."""
        raw = cursor.fetchone()
        if raw is None:
            return None
        results = self._results if self._results is not None else self._result_processors(cursor.description)
        if not results:
            return raw  # type: ignore[no-any-return]
        values = list(raw)
        for i, proc in results:
            values[i] = proc(values[i])
        return values

    def rows(self, cursor: Any) -> list[Sequence[Any]]:
        """The cursor's remaining rows with the result processors applied."""
        raw: list[Sequence[Any]] = cursor.fetchall()
        results = self._results if self._results is not None else self._result_processors(cursor.description)
        if not results:
            return raw
        out: list[Sequence[Any]] = []
        for r in raw:
            values = list(r)
            for i, proc in results:
                values[i] = proc(values[i])
            out.append(values)
        return out


class Prepared:
    """A Core statement run on the driver connection of a unit of work (see the section's comment).

    ``first``/``all`` answer rows as dicts keyed by the selected columns' keys (what RecordCodec.load
    reads); ``run`` answers the affected row count."""

    __slots__ = ("stmt", "_compiled")

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[str, DriverStatement] = {}

    def _cursor(self, conn: Any, params: dict[str, Any]) -> tuple[Any, DriverStatement] | None:
        if not conn.in_transaction():
            return None
        dialect = conn.dialect
        c = self._compiled.get(dialect.name)
        if c is None:
            c = self._compiled[dialect.name] = DriverStatement(self.stmt, dialect)
        driver = conn.connection.driver_connection
        bound = c.params(params)
        try:
            return c.run(driver, bound), c
        except c.dbapi_error as exc:
            raise c.sqlalchemy_error(exc, bound) from exc

    def first(self, conn: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        found = self._cursor(conn, params)
        if found is None:
            r = conn.execute(self.stmt, params).first()
            return None if r is None else dict(r._mapping)
        cursor, c = found
        row = c.row(cursor)
        return None if row is None else dict(zip(c.keys, row, strict=True))

    def all(self, conn: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
        found = self._cursor(conn, params)
        if found is None:
            return [dict(r._mapping) for r in conn.execute(self.stmt, params)]
        cursor, c = found
        return [dict(zip(c.keys, row, strict=True)) for row in c.rows(cursor)]

    def run(self, conn: Any, params: dict[str, Any]) -> int:
        found = self._cursor(conn, params)
        if found is None:
            return int(conn.execute(self.stmt, params).rowcount)
        return int(found[0].rowcount)
