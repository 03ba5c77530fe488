"""Connections: URL parsing and the two drivers (SQLite, PostgreSQL via psycopg 3).

A driver is a thin DB-API wrapper with one extra duty, transactions that can be grouped:
``transaction()`` opens BEGIN/COMMIT, and a nested ``transaction()`` joins the outer one, so
the registrar can wrap several store calls (delete old bindings, upsert new ones) into one
commit, and every store call on its own is still atomic.

SQLite durability choice. The requirement is "a binding the registrar acknowledged survives a
``kill -9`` of the router". In WAL mode a COMMIT appends the frames to the ``-wal`` file with
``write()`` before returning; the OS page cache keeps them if the process dies, so
``synchronous=NORMAL`` already meets that requirement and only loses the last commits on power
loss or kernel crash. We default to ``synchronous=FULL`` (fsync of the WAL at every commit)
anyway, so that a hard-stopped VM or container host does not lose acknowledged bindings
either, and grouped commits keep the fsync cost per REGISTER small. ``?synchronous=normal`` in the URL selects the cheaper mode.
``busy_timeout`` (default 10 s, ``?busy_timeout_ms=``) lets the router and several emulator
processes share one file; writers take the lock up front with ``BEGIN IMMEDIATE`` so that a
reader-turned-writer never deadlocks into an immediate SQLITE_BUSY.

Threads: the router calls the store through ``trio.to_thread.run_sync``, which may use a
different worker thread each time. The SQLite connection is opened with
``check_same_thread=False`` and every driver call holds a lock, so one store object is safe
to use from one thread at a time (and merely serialises if misused concurrently).
"""

from __future__ import annotations

import abc
import sqlite3
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from router.realtime.schema import Dialect, quote, upsert_sql

Params = Sequence[Any]


def db_errors() -> tuple[type[Exception], ...]:
    """Driver exceptions an operation may raise, for callers that map them at their edge.

    psycopg is imported only by a PostgreSQL connection (it costs ~100 ms), and its errors
    cannot occur before that, so it is included only once loaded.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


class RealtimeError(Exception):
    """A realtime DB problem a user can act on (bad URL, unreachable server, schema mismatch)."""


class Driver(Protocol):
    """What the store needs from a DB connection."""

    dialect: Dialect
    url: str

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (``?`` placeholders); returns the affected row count."""
        ...

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement per row, inside the current transaction."""
        ...

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a SELECT and fetch every row."""
        ...

    def upsert_many(
        self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Params]
    ) -> None:
        """Insert-or-update ``rows`` by ``key`` in one transaction (bulk-optimised)."""
        ...

    def transaction(self) -> Any:
        """Context manager: BEGIN ... COMMIT (ROLLBACK on error); nested calls join."""
        ...

    def close(self) -> None: ...


class _Base(abc.ABC):
    """Locking and transaction nesting shared by both drivers."""

    dialect: Dialect
    url: str

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0

    @abc.abstractmethod
    def _begin(self) -> None: ...

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None: ...

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            self._commit()

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Params]) -> None: ...

    def upsert_many(
        self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Params]
    ) -> None:
        with self.transaction():
            self.executemany(upsert_sql(table, columns, key), rows)


class SqliteDriver(_Base):
    """SQLite in WAL mode, autocommit outside explicit transactions."""

    dialect = Dialect.SQLITE

    def __init__(
        self,
        path: str,
        *,
        url: str | None = None,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> None:
        super().__init__()
        self.url = url if url is not None else f"sqlite:///{path}"
        self.path = path
        # isolation_level=None: the sqlite3 module issues no implicit BEGIN; we do it ourselves.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path != ":memory:":
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RealtimeError(f"{path}: cannot switch to WAL journal (got {mode})")
        self._conn.execute(f"PRAGMA synchronous = {synchronous}")

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with self._lock:
            self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresDriver(_Base):
    """PostgreSQL through psycopg 3, autocommit outside explicit transactions."""

    dialect = Dialect.POSTGRES

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        super().__init__()
        import psycopg

        self.url = url
        self._psycopg = psycopg
        self._conn = psycopg.connect(
            url, autocommit=True, connect_timeout=max(1, round(connect_timeout))
        )

    @staticmethod
    def _sql(sql: str) -> str:
        # The store writes qmark placeholders; no statement of ours has a literal "?" or "%".
        return sql.replace("?", "%s")

    def _begin(self) -> None:
        self._conn.execute("BEGIN")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if not self._conn.closed:
            self._conn.execute("ROLLBACK")

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock:
            return self._conn.execute(self._sql(sql), params).rowcount

    def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        with self._lock, self._conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), list(rows))

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(self._sql(sql), params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def upsert_many(
        self, table: str, columns: Sequence[str], key: Sequence[str], rows: Sequence[Params]
    ) -> None:
        """Small batches: pipelined executemany. Large ones: COPY into a temporary table,
        then one ``INSERT ... SELECT ... ON CONFLICT`` (10x faster for 100,000 rows)."""
        if len(rows) < _COPY_THRESHOLD:
            super().upsert_many(table, columns, key, rows)
            return
        # One statement may not touch a row twice: keep the last row per key, as the
        # row-by-row path would end up with.
        positions = [list(columns).index(k) for k in key]
        unique = list({tuple(row[p] for p in positions): row for row in rows}.values())
        names = ", ".join(quote(c) for c in columns)
        staging = f"_siplab_bulk_{table}"
        with self.transaction(), self._lock:
            self._conn.execute(
                f"CREATE TEMP TABLE {quote(staging)} ON COMMIT DROP AS "
                f"SELECT {names} FROM {quote(table)} WITH NO DATA"
            )
            with self._conn.cursor() as cursor:
                with cursor.copy(f"COPY {quote(staging)} ({names}) FROM STDIN") as copy:
                    for row in unique:
                        copy.write_row(row)
                cursor.execute(upsert_sql(table, columns, key, select_from=staging))
            self._conn.execute(f"DROP TABLE {quote(staging)}")


_COPY_THRESHOLD = 1000


def sqlite_path(url: str) -> str | None:
    """The file path of a SQLite URL or bare path, or None if ``url`` is not SQLite.

    ``sqlite:///var/lib/x.db`` and ``sqlite:////var/lib/x.db`` both mean ``/var/lib/x.db``
    (the URL path); ``sqlite:relative.db``, ``relative.db`` and ``/abs/x.db`` are paths as
    written; ``:memory:`` is an in-memory database (one connection only).
    """
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:") :].split("?", 1)[0]
        if rest.startswith("//"):
            rest = rest[2:]  # empty authority
            while rest.startswith("//"):
                rest = rest[1:]
        return urllib.parse.unquote(rest)
    if "://" in url:
        return None
    return url


def open_driver(url: str) -> Driver:
    """Open a driver for ``url``.

    Raises:
        RealtimeError: unknown scheme, empty path, or the database cannot be opened/reached.
    """
    if url.startswith(("postgresql://", "postgres://")):
        try:
            return PostgresDriver(url)
        except Exception as exc:  # psycopg.OperationalError and friends; psycopg may be absent
            raise RealtimeError(f"cannot connect to {redact_url(url)}: {_one_line(exc)}") from exc
    path = sqlite_path(url)
    if path is None:
        raise RealtimeError(
            f"unsupported database URL {redact_url(url)!r} (use sqlite:///path, a file path, "
            "or postgresql://...)"
        )
    if not path:
        raise RealtimeError(f"database URL {url!r} has no file path")
    options = urllib.parse.parse_qs(url.split("?", 1)[1]) if "?" in url else {}
    synchronous = options.get("synchronous", ["FULL"])[0].upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise RealtimeError(f"{url}: synchronous must be full, normal or extra")
    try:
        busy = int(options.get("busy_timeout_ms", ["10000"])[0])
        return SqliteDriver(path, url=url, synchronous=synchronous, busy_timeout_ms=busy)
    except ValueError as exc:
        raise RealtimeError(f"{url}: busy_timeout_ms must be an integer") from exc
    except sqlite3.Error as exc:
        raise RealtimeError(f"cannot open SQLite database {path}: {exc}") from exc


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
