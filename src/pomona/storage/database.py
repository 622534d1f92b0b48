"""The SQL database: the engine, the unit of work over every SQL store, and the check-in's hot read.

SQLAlchemy 2 Core, sync, on SQLite or PostgreSQL. SQLite runs in WAL mode; write transactions start
with BEGIN IMMEDIATE so that two writers never deadlock on a lock upgrade. PostgreSQL claims queue rows
with FOR UPDATE SKIP LOCKED.

Lock waits are bounded by where a transaction begins. Device requests run inline on the asyncio event
loop (http/root.py), where one long wait would freeze every request of the worker. So a transaction
begun on a thread that runs an event loop waits at most ``LOOP_LOCK_WAIT_MS`` (SQLite ``busy_timeout``,
PostgreSQL ``lock_timeout``) and then fails with :class:`pomona.ports.StorageBusyError`; it rolled back,
and the adapter runs the request again in a worker thread, where the wait is ``LOCK_WAIT_MS`` on SQLite
and unbounded on PostgreSQL, as before. The setting is changed on a pooled connection only when the
thread's bound differs from the connection's last one, so the idle check-in pays nothing for it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from pomona.domain.errors import (
    ConflictError,
    DatabaseUnavailableError,
    DataDirError,
    StorageBusyError,
    StorageUnavailableError,
)
from pomona.i18n import msg
from pomona.ports import ChannelState, ChannelTx, Sealer
from pomona.storage import schema as s
from pomona.storage import shared_sql
from pomona.storage.commands_sql import CHANNEL_ANY, CHANNEL_SKIP_NOT_NOW
from pomona.storage.hot_sql import HotReads, running_loop
from pomona.storage.rows import utc
from pomona.storage.sealed import SealReport, seal, seal_all, unseal

if TYPE_CHECKING:
    from pomona.storage.abm_sql import SqlAbmStore
    from pomona.storage.commands_sql import SqlCommandQueue
    from pomona.storage.console_sql import (
        SqlAbmListing,
        SqlAdminStore,
        SqlAuditLog,
        SqlConsoleSessionStore,
        SqlDeviceListing,
        SqlReportListing,
        SqlUserListing,
    )
    from pomona.storage.devices_sql import SqlDeviceStore
    from pomona.storage.enrollments_sql import SqlEnrollmentStore
    from pomona.storage.events_sql import SqlEventLog
    from pomona.storage.health_sql import SqlHealthStore
    from pomona.storage.history_sql import SqlHistoryStore
    from pomona.storage.policy_sql import SqlBlockStore, SqlCorporateStore, SqlGroupStore, SqlRestrictionStore
    from pomona.storage.push_sql import (
        SqlPushCertStore,
        SqlPushQueue,
        SqlPushReachability,
        SqlReEnrollmentStore,
        SqlWebhookStore,
    )
    from pomona.storage.sessions_sql import SqlPortalSessionStore
    from pomona.storage.tenants_sql import SqlApiTokenStore, SqlTenantStore
    from pomona.storage.tokens_sql import SqlCertStore, SqlEnrollmentTokenStore
    from pomona.storage.users_sql import SqlUserStore

#: Lock-wait bound of a transaction begun on an event loop's thread (then StorageBusyError).
LOOP_LOCK_WAIT_MS = 150
#: Lock-wait bound elsewhere (worker threads, the CLI): SQLite's busy_timeout; PostgreSQL waits as long
#: as it takes.
LOCK_WAIT_MS = 30_000

_PG_LOCK_NOT_AVAILABLE = "55P03"

log = logging.getLogger("pomona.storage")


def _private_sqlite_file(url: str) -> None:
    """The SQLite file and its -wal and -shm (SQLite gives those the database file's mode) readable by
    this user only: created 0600 before SQLite opens it, and an older file's mode narrowed."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if not path.parent.is_dir():
        return  # SQLite answers that itself
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


def private_dir(path: Path) -> Path:
    """``path`` created (with its parents) and made 0700: the data folder holds the database and keys.

    A folder that cannot be created or written is a DataDirError (DATA_DIR_UNUSABLE), naming the path."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    except FileExistsError:
        raise DataDirError(msg("error.data_dir.file", path=path), path=str(path)) from None
    except NotADirectoryError:
        raise DataDirError(msg("error.data_dir.in_file", path=path), path=str(path)) from None
    except OSError as exc:
        raise DataDirError(
            msg("error.data_dir.unusable", path=path, error=exc.strerror), path=str(path)
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(msg("error.data_dir.readonly", path=path), path=str(path))
    return path


def redact_url(url: str) -> str:
    """A database URL fit to print: its password (everything before '@') replaced."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'pomona.db').resolve()}"


#: The loop running on this thread, or None (cheap enough for every BEGIN).
_get_running_loop = running_loop


def _is_busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig)
        return "locked" in text or "busy" in text
    return getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


#: PostgreSQL SQLSTATEs of a database that is not there for us: a connection exception (class 08), an
#: administrator's or a crash's shutdown, a server starting up (57P01-57P03, also what DROP DATABASE ...
#: WITH (FORCE) ends sessions with), a database that does not exist (3D000), a refused login (28000,
#: 28P01), no connection slot left (53300).
_PG_UNAVAILABLE = ("08", "57P01", "57P02", "57P03", "3D000", "28000", "28P01", "53300")
#: SQLite's texts for a database file that cannot be used at all (its folder gone, its disk failing).
_SQLITE_UNAVAILABLE = ("unable to open database file", "disk I/O error")


def _is_unavailable(exc: BaseException) -> bool:
    """Whether a driver error means the database did not answer (rather than refused this statement)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:  # SQLAlchemy saw a disconnect
            return True
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    if isinstance(exc, sqlite3.OperationalError):
        return any(text in str(exc) for text in _SQLITE_UNAVAILABLE)
    if type(exc).__module__.startswith("psycopg"):
        import psycopg

        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            state: str | None = getattr(exc, "sqlstate", None)
            return state is None or state.startswith(_PG_UNAVAILABLE)  # None: libpq's own (no connection)
    return False


def _first_line(exc: BaseException) -> str:
    """The driver's first line (SQLAlchemy's text adds the statement and its parameters: not for logs)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and isinstance(exc.orig, BaseException) else exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def _storage_error(exc: BaseException) -> BaseException:
    """A driver error (SQLAlchemy's, sqlite3's or psycopg's raw) as the ports' error type when it means
    something to a caller, else itself."""
    if isinstance(exc, IntegrityError):  # the driver's text names tables and columns: not for a client
        log.debug("integrity error: %s", exc.orig)
        return ConflictError(msg("error.conflict"))
    if _is_busy(exc):
        return StorageBusyError(str(exc))
    if _is_unavailable(exc):
        return StorageUnavailableError(_first_line(exc))
    return exc


#: What _storage_error() looks at in unit_of_work (SQLite raises its lock error raw from the BEGIN hook;
#: the PostgreSQL lock-wait SET is made on psycopg itself).
_DRIVER_ERRORS = (DBAPIError, sqlite3.OperationalError)


def _driver_error(exc: BaseException) -> bool:
    return isinstance(exc, _DRIVER_ERRORS) or type(exc).__module__.startswith("psycopg")


#: Seconds a new PostgreSQL connection may take (libpq's connect_timeout) unless the URL sets its own. A
#: device request opens its connection on the event loop: a database host that drops packets instead of
#: refusing would otherwise hold the loop for the kernel's TCP connect timeout (minutes).
PG_CONNECT_TIMEOUT_S: Final = 5


def _with_connect_timeout(url: str) -> str:
    """``url`` with ``connect_timeout`` set to :data:`PG_CONNECT_TIMEOUT_S`, unless it names one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if "connect_timeout" in parsed.query:
        return url
    return parsed.update_query_dict({"connect_timeout": str(PG_CONNECT_TIMEOUT_S)}).render_as_string(
        hide_password=False
    )


class SqlDatabase:
    """An engine plus the unit-of-work factory. One per process."""

    def __init__(self, url: str, *, pool_size: int = 8, sealer: Sealer | None = None) -> None:
        self.url = url
        self.display_url = redact_url(url)  # as given, its password hidden: for messages
        self.sealer = sealer  # seals the secrets the stores write (storage/sealed.py); None: plaintext
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            try:
                _private_sqlite_file(url)
            except OSError as exc:
                raise DatabaseUnavailableError(
                    msg("error.database.create", url=url, error=exc.strerror)
                ) from None
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": LOCK_WAIT_MS / 1000},
                pool_size=pool_size,
                hide_parameters=True,  # an error's text goes to the log: no values (tokens, secrets)
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
            event.listen(self.engine, "checkin", _sqlite_on_checkin)
        else:
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            self.url = url
            try:
                url = _with_connect_timeout(url)
                self.engine = create_engine(
                    url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, hide_parameters=True
                )
            except (ArgumentError, NoSuchModuleError, ValueError):
                raise DatabaseUnavailableError(msg("error.database.url", url=self.display_url)) from None
        pragmas = [f"PRAGMA {p}" for p in _SQLITE_PRAGMAS if not p.startswith("journal_mode")]
        loop = [f"PRAGMA busy_timeout={LOOP_LOCK_WAIT_MS}"]
        self.hot = HotReads(self.engine, {False: CHANNEL_ANY, True: CHANNEL_SKIP_NOT_NOW}, pragmas, loop)
        self._hot_channel: Any = None  # storage/hot_channel.py, loaded on first use (not by the CLI)

    @classmethod
    def for_tests(cls, url: str) -> SqlDatabase:
        return cls(url)

    def create_all(self) -> None:
        """Apply the Alembic migrations up to head (after :meth:`check_reachable`); at the head already,
        one SELECT and no Alembic (storage/migrate.py)."""
        from pomona.storage.migrate import upgrade_if_needed

        self.check_reachable()
        upgrade_if_needed(self.engine)

    def check_reachable(self) -> None:
        """One connection opened and closed, or DATABASE_UNAVAILABLE with the driver's first line: refused,
        unknown host, authentication, a file that cannot be opened (the URL's password is not shown)."""
        try:
            with self.engine.connect():
                pass
        except (OperationalError, InterfaceError, sqlite3.OperationalError) as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            raise DatabaseUnavailableError(
                msg("error.database.open", url=self.display_url, error=first)
            ) from exc

    @contextmanager
    def unit_of_work(self, *, readonly: bool = False) -> Iterator[SqlUnitOfWork]:
        try:
            conn = self.engine.connect()
        except _DRIVER_ERRORS as exc:  # no connection: the database is away (StorageUnavailableError)
            if (err := _storage_error(exc)) is not exc:
                raise err from exc
            raise
        try:
            if self.is_sqlite:
                conn.info["sqlite_readonly"] = readonly  # read by _sqlite_on_begin
            else:
                _pg_lock_wait(conn)
            with conn.begin():
                yield SqlUnitOfWork(conn, self.sealer)
        except BaseException as exc:
            if not self.is_sqlite and not conn.invalidated:  # (a connection lost is opened again afresh)
                conn.info.pop("lock_wait_ms", None)  # the rollback undid a SET made in the transaction
            if _driver_error(exc) and (err := _storage_error(exc)) is not exc:
                if isinstance(err, StorageUnavailableError) and not conn.invalidated:
                    conn.invalidate()  # not back to the pool (its reset would log a traceback)
                raise err from exc
            raise
        finally:
            conn.close()

    def channel_state(self, fingerprint: str, *, skip_not_now: bool) -> ChannelState | None:
        """The command channel's hot read, in one statement outside any transaction: the active
        enrollment bound to this identity, the device's last check-in, and the next command, if any.
        On the raw driver, prepared, over a connection kept per thread (storage/hot_sql.py).
        """
        with _hot_errors():
            r = self.hot.row(skip_not_now, fingerprint)
        if r is None:
            return None
        seen = r[4] if self.hot.ts is None or r[4] is None else self.hot.ts(r[4])
        return ChannelState(r[0], r[1], r[2], r[3], utc(seen), r[5], None if r[6] is None else bytes(r[6]))

    def take_command(self, command_id: int, enrollment_id: str, device_id: str | None, at: datetime) -> bool:
        """The idle read's command marked sent (and the device seen), on the raw driver
        (storage/hot_channel.py)."""
        with _hot_errors():
            return bool(self._channel().take(command_id, enrollment_id, device_id, at))

    @contextmanager
    def command_channel(self) -> Iterator[ChannelTx]:
        """A command-channel transaction on the raw driver (storage/hot_channel.py)."""
        with _hot_errors(), self._channel().transaction() as tx:
            yield tx

    def _channel(self) -> Any:
        channel = self._hot_channel
        if channel is None:
            from pomona.storage.hot_channel import HotChannel

            channel = self._hot_channel = HotChannel(self.hot, self.engine, LOOP_LOCK_WAIT_MS)
        return channel

    def settings_get(self, key: str) -> bytes | None:
        """A server-wide setting; every one is sealed at rest (context ``setting:<key>``)."""
        with self.unit_of_work(readonly=True) as uow:
            row = uow.conn.execute(select(s.settings.c.value).where(s.settings.c.key == key)).first()
        return None if row is None else unseal(self.sealer, bytes(row[0]), f"setting:{key}")

    def settings_put(self, key: str, value: bytes) -> None:
        """Set a setting: one upsert, so that processes starting together on a new database (each
        `pomona serve` records its public URL) do not collide on the first insert (ALREADY_EXISTS)."""
        sealed = seal(self.sealer, value, f"setting:{key}")
        stmt = self._settings_upsert().values(key=key, value=sealed)
        with self.unit_of_work() as uow:
            uow.conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": sealed}))

    def settings_add(self, key: str, value: bytes) -> bytes:
        sealed = seal(self.sealer, value, f"setting:{key}")
        with self.unit_of_work() as uow:
            uow.conn.execute(
                self._settings_upsert()
                .values(key=key, value=sealed)
                .on_conflict_do_nothing(index_elements=["key"])
            )
        stored = self.settings_get(key)
        assert stored is not None
        return stored

    def _settings_upsert(self) -> Any:
        """``INSERT INTO settings`` in this database's dialect, with its ``ON CONFLICT`` clauses."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        return upsert(s.settings)

    # --- state shared between processes (storage/shared_sql.py; ports.Leases, ports.SharedLimits) ---
    def lease_acquire(self, name: str, holder: str, now: datetime, ttl: float) -> bool:
        with self.unit_of_work() as uow:
            if not self.is_sqlite:  # a renewal lost in a database crash is renewed again in seconds
                uow.conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            return shared_sql.lease_acquire(uow.conn, name, holder, now, ttl)

    def lease_release(self, name: str, holder: str) -> None:
        with self.unit_of_work() as uow:
            shared_sql.lease_release(uow.conn, name, holder)

    def lease_holder(self, name: str, now: datetime) -> str | None:
        with self.unit_of_work(readonly=True) as uow:
            return shared_sql.lease_holder(uow.conn, name, now)

    def limit_hits(self, key: str, now: datetime, window: float) -> tuple[int, datetime] | None:
        with self.unit_of_work(readonly=True) as uow:
            return shared_sql.limit_hits(uow.conn, key, now, window)

    def limit_fail(self, key: str, now: datetime, window: float, limit: int) -> None:
        with self.unit_of_work() as uow:
            if not self.is_sqlite:  # a count lost in a database crash is harmless: no wait for the WAL
                uow.conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            shared_sql.limit_fail(uow.conn, key, now, window, limit)

    def limit_reset(self, key: str) -> None:
        with self.unit_of_work() as uow:
            shared_sql.limit_reset(uow.conn, key)

    def limit_purge(self, before: datetime) -> int:
        with self.unit_of_work() as uow:
            return shared_sql.limit_purge(uow.conn, before)

    def totp_claim(self, user_id: str, step: int) -> bool:
        with self.unit_of_work() as uow:
            return shared_sql.totp_claim(uow.conn, user_id, step)

    def seal_at_rest(self, *, verify_current: bool = True) -> SealReport:
        """Seal every plaintext secret and re-seal those under an older server key, in one transaction
        (storage/sealed.py). Run at every start-up (idempotent); a value no server key opens raises
        ServerKeyError (SERVER_KEY_MISMATCH) and nothing is changed."""
        if self.sealer is None:
            return SealReport()
        with self.unit_of_work() as uow:
            return seal_all(uow.conn, self.sealer, verify_current=verify_current)

    def dispose(self) -> None:
        self.hot.close()
        self.engine.dispose()


#: Each SQLite connection's page cache, in KiB (SQLite's default: 2,000). In WAL mode a connection drops
#: its cache whenever another one wrote since its last transaction, so past one transaction's own reads
#: a larger cache seldom helps, and the server's connections together must fit the page slab
#: (pomona.heap.SQLITE_SLAB_PAGES, 1,024 pages): four full caches of about 240 pages do. Pages past it come
#: from malloc: with the default caches, a health round beside the soak's traffic overflowed the slab and
#: RSS stepped up by 2.3 MB (bench/memory.py).
SQLITE_CACHE_KIB = 1024

#: Every SQLite connection's settings (the hot reads' connections too, but journal_mode: set once).
_SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    f"busy_timeout={LOCK_WAIT_MS}",
    f"cache_size=-{SQLITE_CACHE_KIB}",
)


@contextmanager
def _hot_errors() -> Iterator[None]:
    """The raw driver's errors as ``unit_of_work`` gives them: a lock wait past its bound is
    StorageBusyError (the request runs again in a worker thread), a database that did not answer
    StorageUnavailableError."""
    try:
        yield
    except Exception as exc:  # also psycopg's own errors (the raw driver)
        if not _driver_error(exc) or (err := _storage_error(exc)) is exc:
            raise
        raise err from exc


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
    cur = dbapi_conn.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_on_checkin(dbapi_conn: Any, _record: Any) -> None:
    """A connection back in the pool lets its page cache go (``PRAGMA shrink_memory``). Each keeps up to
    2 MB of pages after its last unit of work, and the pool grows to as many connections as ever ran at
    once (a health round beside console pages and commands: five at 100,000 devices); idle, they held
    their caches, and RSS rose in steps (issue 14, bench/memory.py). Little is lost: in WAL mode a
    connection drops its whole cache anyway when its next transaction finds another one wrote since."""
    dbapi_conn.execute("PRAGMA shrink_memory")


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    # Straight on the driver connection: the same statement without a trip through the engine's
    # execution machinery (twice per check-in).
    driver = conn.connection.driver_connection
    assert driver is not None
    info = conn.info
    wait = LOCK_WAIT_MS if _get_running_loop() is None else LOOP_LOCK_WAIT_MS
    if info.get("lock_wait_ms", LOCK_WAIT_MS) != wait:
        driver.execute(f"PRAGMA busy_timeout={wait}")
        info["lock_wait_ms"] = wait
    driver.execute("BEGIN" if info.get("sqlite_readonly") else "BEGIN IMMEDIATE")


def _pg_lock_wait(conn: Connection) -> None:
    """Set the connection's lock_timeout to this thread's bound, if it is not that already. Straight on
    the driver (no engine events on PostgreSQL: they would tax every statement): a session-level SET,
    made in the transaction that starts now, kept after its commit and undone by its rollback (then
    unit_of_work forgets what was set)."""
    wait = 0 if _get_running_loop() is None else LOOP_LOCK_WAIT_MS  # 0: no bound
    info = conn.info
    if info.get("lock_wait_ms", 0) != wait:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.execute(f"SET lock_timeout = {wait}")
        info["lock_wait_ms"] = wait


_S = TypeVar("_S")


class _Store(Generic[_S]):
    """A store of the unit of work, made over its connection on first use and then kept (a check-in
    touches two or three of them). Its class is imported from ``pomona.storage.<module>`` when a unit of
    work first uses it: a CLI command imports the stores it reads, not all of them (start-up, issue 14)."""

    def __init__(self, module: str, cls: str) -> None:
        self.module = module
        self.cls = cls
        self.make: Callable[[Connection], _S] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def load(self) -> Callable[[Connection], _S]:
        if self.make is None:
            import importlib

            self.make = getattr(importlib.import_module(f"pomona.storage.{self.module}"), self.cls)
        return self.make

    def __get__(self, uow: SqlUnitOfWork, owner: type | None = None) -> _S:
        store = (self.make or self.load())(uow.conn)
        uow.__dict__[self.name] = store
        return store


class SqlUnitOfWork:
    """The stores over one transaction's connection."""

    @classmethod
    def load_stores(cls) -> None:
        """Import every store now (the server, before it serves: no import on a request's thread)."""
        for member in vars(cls).values():
            if isinstance(member, _Store):
                member.load()

    def __init__(self, conn: Connection, sealer: Sealer | None = None) -> None:
        self.conn = conn
        self.sealer = sealer

    @property
    def tenants(self) -> SqlTenantStore:
        from pomona.storage.tenants_sql import SqlTenantStore

        store = SqlTenantStore(self.conn, self.sealer)
        self.__dict__["tenants"] = store  # not a data descriptor: the next read finds the instance's
        return store

    @property
    def abm(self) -> SqlAbmStore:
        from pomona.storage.abm_sql import SqlAbmStore

        store = SqlAbmStore(self.conn, self.sealer)
        self.__dict__["abm"] = store
        return store

    @property
    def abm_view(self) -> SqlAbmStore:
        return self.abm  # the same store; readers of the view (ports.AbmView) see no secrets

    api_tokens: _Store[SqlApiTokenStore] = _Store("tenants_sql", "SqlApiTokenStore")
    users: _Store[SqlUserStore] = _Store("users_sql", "SqlUserStore")
    enrollment_tokens: _Store[SqlEnrollmentTokenStore] = _Store("tokens_sql", "SqlEnrollmentTokenStore")
    certs: _Store[SqlCertStore] = _Store("tokens_sql", "SqlCertStore")
    devices: _Store[SqlDeviceStore] = _Store("devices_sql", "SqlDeviceStore")
    enrollments: _Store[SqlEnrollmentStore] = _Store("enrollments_sql", "SqlEnrollmentStore")
    commands: _Store[SqlCommandQueue] = _Store("commands_sql", "SqlCommandQueue")
    events: _Store[SqlEventLog] = _Store("events_sql", "SqlEventLog")
    history: _Store[SqlHistoryStore] = _Store("history_sql", "SqlHistoryStore")
    groups: _Store[SqlGroupStore] = _Store("policy_sql", "SqlGroupStore")
    restrictions: _Store[SqlRestrictionStore] = _Store("policy_sql", "SqlRestrictionStore")
    corporate: _Store[SqlCorporateStore] = _Store("policy_sql", "SqlCorporateStore")
    blocks: _Store[SqlBlockStore] = _Store("policy_sql", "SqlBlockStore")
    pushes: _Store[SqlPushQueue] = _Store("push_sql", "SqlPushQueue")
    reachability: _Store[SqlPushReachability] = _Store("push_sql", "SqlPushReachability")
    push_certs: _Store[SqlPushCertStore] = _Store("push_sql", "SqlPushCertStore")
    reenrollments: _Store[SqlReEnrollmentStore] = _Store("push_sql", "SqlReEnrollmentStore")
    webhooks: _Store[SqlWebhookStore] = _Store("push_sql", "SqlWebhookStore")
    health: _Store[SqlHealthStore] = _Store("health_sql", "SqlHealthStore")
    portal_sessions: _Store[SqlPortalSessionStore] = _Store("sessions_sql", "SqlPortalSessionStore")
    admins: _Store[SqlAdminStore] = _Store("console_sql", "SqlAdminStore")
    console_sessions: _Store[SqlConsoleSessionStore] = _Store("console_sql", "SqlConsoleSessionStore")
    audit: _Store[SqlAuditLog] = _Store("console_sql", "SqlAuditLog")
    device_listing: _Store[SqlDeviceListing] = _Store("console_sql", "SqlDeviceListing")
    user_listing: _Store[SqlUserListing] = _Store("console_sql", "SqlUserListing")
    abm_listing: _Store[SqlAbmListing] = _Store("console_sql", "SqlAbmListing")
    report_listing: _Store[SqlReportListing] = _Store("console_sql", "SqlReportListing")
