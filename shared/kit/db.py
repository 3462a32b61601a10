"""One engine per process and the unit of work every edge (request, task) opens."""

from __future__ import annotations

import logging
import random
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from shared.kit.settings import get_settings

log = logging.getLogger(__name__)

_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def init_engine(
    application_name: str, *, pool_size: int | None = None, url: str | None = None
) -> Engine:
    """Create this process's engine; `application_name` shows in pg_stat_activity."""
    global _engine, _sessions  # noqa: PLW0603 - one engine per process, by design
    settings = get_settings()
    if _engine is not None:
        _engine.dispose()
    _engine = create_engine(
        url or settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A connection killed server-side costs a reconnect, not a failed request: checked
        # at each checkout by `_check_on_checkout` (no round trip for one just used).
        pool_pre_ping=False,
        pool_timeout=10,
        connect_args=connect_args(application_name),
    )
    if settings.database_pooler == "transaction":
        event.listen(_engine, "begin", partial(_set_local_timeouts, _local_timeouts_sql()))
    event.listen(_engine, "handle_error", _connection_errors_disconnect)
    event.listen(_engine, "checkin", _note_checkin)
    event.listen(_engine, "checkout", _check_on_checkout)
    _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


LOCK_TIMEOUT_MS: Final = 10_000
IDLE_IN_TRANSACTION_TIMEOUT_MS: Final = 60_000


def _timeouts() -> dict[str, int]:
    return {
        "statement_timeout": get_settings().db_statement_timeout_ms,
        "lock_timeout": LOCK_TIMEOUT_MS,
        "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_MS,
    }


def connect_args(application_name: str) -> dict[str, Any]:
    """psycopg's connection arguments for DATABASE_URL as DATABASE_POOLER describes it.

    Straight to PostgreSQL, the timeouts are the session's, set once in the startup packet.
    Through a transaction pooler a client's session is one transaction on whichever server
    connection is free: PgBouncer refuses the startup `options` (it could not hold them to
    one client), a statement psycopg prepared on one server connection is missing on the
    next, so none is prepared, and the timeouts are set in each transaction instead
    (`_set_local_timeouts`)."""
    args: dict[str, Any] = {"application_name": application_name, "connect_timeout": 5}
    if get_settings().database_pooler == "transaction":
        args["prepare_threshold"] = None
    else:
        args["options"] = " ".join(f"-c {name}={ms}" for name, ms in _timeouts().items())
    return args


def _local_timeouts_sql() -> str:
    """The statement `_set_local_timeouts` runs, built once per engine."""
    settings = ", ".join(f"set_config('{name}', '{ms}', true)" for name, ms in _timeouts().items())
    return f"SELECT {settings}"


def _set_local_timeouts(statement: str, conn: Connection) -> None:
    """Each transaction's first statement behind a transaction pooler: the timeouts, for this
    transaction only, on the server connection it runs on (one round trip: the price of the
    pooler). Local, never session settings: those would stay on the server connection for
    whichever client gets it next. Run through the connection (a begin listener's statement
    does not begin another transaction), so a failure, such as the pooler's own refusal while
    the server restarts, is SQLAlchemy's error like any other and invalidates the
    connection."""
    dbapi = conn.connection.driver_connection
    if not isinstance(dbapi, psycopg.Connection) or dbapi.autocommit:
        return  # no transaction block to scope them to
    conn.exec_driver_sql(statement)


# SQLSTATE classes that mean the connection is gone, not the statement wrong: 08 (connection
# exception, and PgBouncer's own refusals: 08P01 "server login has been failing" while the
# server restarts), 57P01-57P03 (the server shutting down, crashed, or not yet accepting).
_DISCONNECT_SQLSTATES: Final = ("08", "57P01", "57P02", "57P03")


def _connection_errors_disconnect(context: ExceptionContext) -> None:
    """A connection that answered with one of those is dropped from the pool at once, even if
    the driver has not yet seen its socket close (a pooler sends the error, then closes)."""
    sqlstate = getattr(context.original_exception, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_DISCONNECT_SQLSTATES):
        context.is_disconnect = True


# A pooled connection idle longer than this is pinged (a round trip) before use; one idle for
# less is checked locally only.
PING_AFTER_IDLE_S: Final = 10.0


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_on_checkout(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Hand out only a live connection, without a round trip for one just used.

    A connection idle in the pool has nothing to read: PostgreSQL sends a terminated
    backend's FATAL and closes the socket, so a readable socket means a dead connection
    (a restart, `pg_terminate_backend`), seen with one non-blocking poll. One idle for
    longer than PING_AFTER_IDLE_S also gets a real ping, for a peer that vanished silently.
    Either failing: the pool drops it and connects anew."""
    if "idle_since" not in record.info:
        # Just connected: nothing was ever read from it but the server's answers to the login.
        # A pooler's refusal waiting on it is met by the first statement, as the outage it is.
        return
    idle = time.monotonic() - record.info["idle_since"]
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        raise DisconnectionError("the server closed the idle connection")
    if idle > PING_AFTER_IDLE_S:
        try:
            alive = _engine is not None and _engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("the idle connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("the idle connection failed its ping")


def engine() -> Engine:
    """This process's engine, created on first use with a generic name."""
    if _engine is None:
        init_engine("publisher")
    assert _engine is not None
    return _engine


def new_session() -> Session:
    """A session on this process's engine; the caller closes it."""
    if _sessions is None:
        init_engine("publisher")
    assert _sessions is not None
    return _sessions()


def driver_connection(session: Session) -> psycopg.Connection[Any]:
    """The psycopg connection under the session's transaction, for the few statements every
    post runs (shared/publishing/posts.py, shared/events.py): they commit or roll back with
    the session, without SQLAlchemy's statement machinery on the way. Unflushed ORM changes
    are the caller's to flush first."""
    conn = session.connection().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


_AFTER_COMMIT: Final = "publisher.after_commit"


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run `fn` once the session's transaction (a `transaction()`) has committed; never
    before, never on rollback. For domain code that holds only the session."""
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


@dataclass
class Tx:
    """A session plus the side effects (task sends, revokes) owed once it commits."""

    session: Session

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` only once the transaction has committed; never before, never on rollback."""
        after_commit(self.session, fn)


@contextmanager
def transaction() -> Iterator[Tx]:
    """One short transaction: commit on success, roll back on error, then run after-commit work."""
    session = new_session()
    tx = Tx(session)
    try:
        yield tx
        session.commit()
        owed: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
    except BaseException:
        session.rollback()
        raise
    finally:
        session.info.pop(_AFTER_COMMIT, None)
        session.close()
    for fn in owed:
        try:
            fn()
        except Exception:
            # Broker side effects are courtesies: the dispatcher re-sends what a failed send
            # missed, and the fencing token disarms what a failed revoke left behind.
            log.exception("after-commit action failed")


T = TypeVar("T")


def is_connection_error(exc: BaseException) -> bool:
    """A lost or refused connection (server restart, pg_terminate_backend), not a bad query;
    also a transaction PostgreSQL rolled back to break a deadlock (psycopg's
    TransactionRollback is an OperationalError), which is as safe to run again."""
    return isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def run_in_transaction(fn: Callable[[Tx], T], *, attempts: int = 6, max_delay: float = 2.0) -> T:
    """`fn` in one transaction, run again when the connection dies under it.

    Only for work that is safe to repeat: the worker's transitions recognise their own
    earlier commit (same owner and token), so a commit whose answer was lost is not undone.
    """
    for attempt in range(attempts):
        try:
            with transaction() as tx:
                return fn(tx)
        except Exception as exc:
            if not is_connection_error(exc) or attempt == attempts - 1:
                raise
            delay = min(max_delay, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)
            log.warning(
                "database connection lost (%s); retrying in %.2fs", type(exc).__name__, delay
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    target = make_url(url)
    name = target.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", pool_size=1
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Drop the database named in `url`, closing its connections first (tests, chaos runs)."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(target.database or "")
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()
