"""The realtime store: typed, synchronous operations over the shared schema.

One ``Database`` wraps one connection (``connect(url)``). Every method is one atomic unit;
``with db.transaction():`` groups several into one commit (the registrar's group commit:
the bindings of many REGISTERs, or the delete + upsert of one, reach the disk together and
the 200 OKs go out after it returns). SQL is written once with ``?`` placeholders and
``ON CONFLICT`` upserts, which both SQLite (>= 3.24) and PostgreSQL accept; the only
dialect switches are null-safe equality and auto-increment of ``queue_members.uniqueid``.

The store never reads a clock: expiry decisions take ``now`` (epoch seconds) like the core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from router.realtime import schema
from router.realtime.astcodec import ast_decode, ast_encode
from router.realtime.engine import Driver, RealtimeError, open_driver
from router.realtime.provision import generate_passwords
from router.realtime.records import (
    AorRow,
    AuthRow,
    Binding,
    ContactRow,
    DispatcherRow,
    MemberState,
    QueueMemberRow,
    QueueRow,
    UserCredential,
    UserRow,
)
from router.realtime.schema import Dialect, quote, upsert_sql

R = TypeVar("R")


def _fields(record: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(record)]


def _select(record: type[Any], table: str, rest: str = "") -> str:
    columns = ", ".join(quote(c) for c in _fields(record))
    return f"SELECT {columns} FROM {quote(table)} {rest}".rstrip()


def _values(record: object, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(getattr(record, c) for c in columns)


_BINDING_COLUMNS = _fields(Binding)
_CONTACT_COLUMNS = _fields(ContactRow)


class Database:
    """Typed access to the realtime tables over one connection (see module docstring).

    Usable from one thread at a time; the router calls it through ``trio.to_thread``.
    """

    def __init__(self, driver: Driver) -> None:
        self._db = driver

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def dialect(self) -> Dialect:
        """The engine behind this store."""
        return self._db.dialect

    @property
    def url(self) -> str:
        """The URL this store was opened with."""
        return self._db.url

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group the calls made inside into one transaction (one commit, all or nothing)."""
        with self._db.transaction():
            yield

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Raw SELECT (``?`` placeholders) for tools, reports and tests; the router and the
        emulator use the typed operations below."""
        return self._db.query(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Raw statement in its own transaction (or the caller's); returns the row count."""
        with self._db.transaction():
            return self._db.execute(sql, params)

    def _is_null_safe_eq(self, column: str) -> str:
        op = "IS" if self.dialect is Dialect.SQLITE else "IS NOT DISTINCT FROM"
        return f"{quote(column)} {op} ?"

    def _rows(self, record: type[R], sql: str, params: Sequence[Any] = ()) -> list[R]:
        return [record(*row) for row in self._db.query(sql, params)]

    def _one(self, record: type[R], sql: str, params: Sequence[Any]) -> R | None:
        rows = self._rows(record, sql, params)
        return rows[0] if rows else None

    def init_schema(self) -> None:
        """Create every table and index if missing and record the schema version.

        Safe to run concurrently from several processes and on an existing database.

        Raises:
            RealtimeError: the database holds another siplab schema version.
        """
        with self._db.transaction():
            if self.dialect is Dialect.POSTGRES:
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's
                # catalogs; serialise initialisers on an advisory lock (released at COMMIT).
                self._db.query("SELECT pg_advisory_xact_lock(5060)")
            for statement in schema.ddl(self.dialect):
                self._db.execute(statement)
            self._db.execute(
                'INSERT INTO siplab_meta ("key", "value") VALUES (?, ?) '
                'ON CONFLICT ("key") DO NOTHING',
                ("schema_version", str(schema.SCHEMA_VERSION)),
            )
        found = self.schema_version()
        if found != schema.SCHEMA_VERSION:
            raise RealtimeError(
                f"{self.url}: schema version {found}, this siplab needs {schema.SCHEMA_VERSION}"
            )

    def schema_version(self) -> int | None:
        """The siplab schema version stored in the database, or None if not initialised."""
        if self.dialect is Dialect.SQLITE:
            exists = self._db.query(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'siplab_meta'"
            )
        else:
            exists = self._db.query("SELECT 1 WHERE to_regclass('siplab_meta') IS NOT NULL")
        if not exists:
            return None
        rows = self._db.query("""SELECT "value" FROM siplab_meta WHERE "key" = 'schema_version'""")
        return int(rows[0][0]) if rows else None

    def count(self, table: str) -> int:
        """Rows in ``table`` (one of ``schema.TABLES``)."""
        if table not in {t.name for t in schema.TABLES}:
            raise ValueError(f"unknown table {table!r}")
        return int(self._db.query(f"SELECT COUNT(*) FROM {quote(table)}")[0][0])

    # --- provisioning --------------------------------------------------------------------------

    def provision_users(
        self,
        count: int,
        first: int,
        *,
        domain: str,
        context: str,
        password_len: int = 12,
        seed: int | None = None,
        max_contacts: int = 1,
        realm: str | None = None,
        allow: str = "ulaw,alaw",
    ) -> list[UserCredential]:
        """Create (or re-create) users ``first`` .. ``first+count-1`` in one transaction.

        Each user ``N`` gets ``ps_endpoints(id=N, aors=N, auth=N, context,
        identify_by='username')``, ``ps_auths(id=N, auth_type='userpass', username=N,
        password)`` and ``ps_aors(id=N, max_contacts, remove_existing='yes')`` (SIP-REFERENCE
        §4.3). Existing rows with those ids are overwritten (new passwords).

        Returns:
            The users with their plaintext passwords, in id order.
        """
        if count < 0 or first < 0:
            raise ValueError("count and first must be >= 0")
        if max_contacts < 1:
            raise ValueError("max_contacts must be >= 1 (0 forbids registration in Asterisk)")
        names = [str(first + i) for i in range(count)]
        passwords = generate_passwords(count, password_len, seed=seed)
        endpoint_cols = ("id", "aors", "auth", "context", "identify_by", "disallow", "allow")
        auth_cols = ("id", "auth_type", "username", "password", "realm")
        aor_cols = ("id", "max_contacts", "remove_existing")
        with self._db.transaction():
            self._db.upsert_many(
                "ps_endpoints",
                endpoint_cols,
                ("id",),
                [(n, n, n, context, "username", "all", allow) for n in names],
            )
            self._db.upsert_many(
                "ps_auths",
                auth_cols,
                ("id",),
                [(n, "userpass", n, pw, realm) for n, pw in zip(names, passwords, strict=True)],
            )
            self._db.upsert_many(
                "ps_aors", aor_cols, ("id",), [(n, max_contacts, "yes") for n in names]
            )
        return [UserCredential(n, pw, domain) for n, pw in zip(names, passwords, strict=True)]

    def provision_router_endpoint(
        self,
        router_ip: str,
        *,
        aors: Sequence[str] = ("router",),
        context: str = "from-router",
        endpoint_id: str = "router",
        contact: str | None = None,
        allow: str = "ulaw,alaw",
    ) -> None:
        """The endpoint Asterisk attributes the router's requests to (SIP-REFERENCE §4.3).

        No auth; identified by IP through ``ps_endpoint_id_ips(match=router_ip)``;
        ``aors`` get ``ps_aors`` rows, with ``contact`` as their permanent contact if given
        (e.g. ``sip:127.0.0.10:5060`` so ``Dial(PJSIP/101@router)`` goes through the router).
        """
        with self._db.transaction():
            self._db.execute(
                upsert_sql(
                    "ps_endpoints",
                    ("id", "aors", "auth", "context", "identify_by", "disallow", "allow"),
                    ("id",),
                ),
                (endpoint_id, ",".join(aors), None, context, "ip", "all", allow),
            )
            self._db.execute(
                upsert_sql("ps_endpoint_id_ips", ("id", "endpoint", "match"), ("id",)),
                (endpoint_id, endpoint_id, router_ip),
            )
            self._db.executemany(
                upsert_sql("ps_aors", ("id", "contact", "max_contacts"), ("id",)),
                [(aor, contact, 1) for aor in aors],
            )

    def get_auth(self, username: str) -> AuthRow | None:
        """The ps_auths row for a digest username (the row whose id equals it first)."""
        return self._one(
            AuthRow,
            _select(AuthRow, "ps_auths", "WHERE username = ? OR id = ? ORDER BY id <> ? LIMIT 1"),
            (username, username, username),
        )

    def get_aor(self, aor_id: str) -> AorRow | None:
        """The ps_aors row ``aor_id``."""
        return self._one(AorRow, _select(AorRow, "ps_aors", "WHERE id = ?"), (aor_id,))

    def list_users(self, limit: int | None = None) -> list[UserRow]:
        """Endpoints with their auth and AOR data, ordered by id (numeric ids numerically)."""
        sql = (
            "SELECT e.id, e.context, a.username, a.password, a.realm, o.max_contacts "
            "FROM ps_endpoints e LEFT JOIN ps_auths a ON a.id = e.auth "
            "LEFT JOIN ps_aors o ON o.id = e.id ORDER BY LENGTH(e.id), e.id"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return self._rows(UserRow, sql, params)

    # --- location (router registrar) -------------------------------------------------------------

    def location_upsert_many(self, bindings: Iterable[Binding]) -> int:
        """Insert or update bindings by ``ruid``, all in one transaction; returns the count."""
        rows = [_values(b, _BINDING_COLUMNS) for b in bindings]
        with self._db.transaction():
            self._db.upsert_many("location", _BINDING_COLUMNS, ("ruid",), rows)
        return len(rows)

    def location_delete(
        self, username: str, domain: str | None, contacts: Iterable[str] | None = None
    ) -> int:
        """Delete the AOR's bindings (all of them, or those with the given contact URIs)."""
        where = f"username = ? AND {self._is_null_safe_eq('domain')}"
        with self._db.transaction():
            if contacts is None:
                return self._db.execute(f"DELETE FROM location WHERE {where}", (username, domain))
            return sum(
                self._db.execute(
                    f"DELETE FROM location WHERE {where} AND contact = ?",
                    (username, domain, contact),
                )
                for contact in contacts
            )

    def location_delete_ruids(self, ruids: Iterable[str]) -> int:
        """Delete bindings by ruid; returns how many existed."""
        with self._db.transaction():
            return sum(self._db.execute("DELETE FROM location WHERE ruid = ?", (r,)) for r in ruids)

    def location_lookup(self, username: str, domain: str | None, now: float) -> list[Binding]:
        """Unexpired bindings of an AOR, highest q first, then most recently modified."""
        sql = _select(
            Binding,
            "location",
            f"WHERE username = ? AND {self._is_null_safe_eq('domain')} "
            "AND (expires > ? OR expires = 0) ORDER BY q DESC, last_modified DESC, id",
        )
        return self._rows(Binding, sql, (username, domain, now))

    def location_purge_expired(self, now: float) -> int:
        """Delete bindings with ``expires <= now`` (permanent ones, expires 0, stay)."""
        with self._db.transaction():
            return self._db.execute(
                "DELETE FROM location WHERE expires <> 0 AND expires <= ?", (now,)
            )

    def location_all(self) -> list[Binding]:
        """Every binding, expired or not, in insertion order (for reload and reports)."""
        return self._rows(Binding, _select(Binding, "location", "ORDER BY id"))

    def location_count(self) -> int:
        """Number of rows in ``location``."""
        return self.count("location")

    # --- ps_contacts (emulator nodes) -----------------------------------------------------------

    def contacts_upsert(self, contacts: Iterable[ContactRow]) -> int:
        """Insert or update contacts by (id, reg_server), in one transaction."""
        rows = [_values(c, _CONTACT_COLUMNS) for c in contacts]
        with self._db.transaction():
            self._db.upsert_many("ps_contacts", _CONTACT_COLUMNS, ("id", "reg_server"), rows)
        return len(rows)

    def contacts_for_aor(self, aor: str, now: float) -> list[ContactRow]:
        """Unexpired contacts of ``aor`` (ids ``<aor>;@...``), soonest-expiring last."""
        # Range scan on the (id, reg_server) index: ids are compared bytewise (PostgreSQL
        # column collation "C"), and "A" is the byte after "@".
        sql = _select(
            ContactRow,
            "ps_contacts",
            "WHERE id >= ? AND id < ? AND expiration_time > ? ORDER BY expiration_time DESC, id",
        )
        # Asterisk's realtime drivers store ``;`` as ``^3B`` (router.realtime.astcodec): real
        # nodes and the emulator write ``<aor>^3B@...``; rows written with a plain ``;`` (older
        # labs, direct upserts) are read too. Values come back decoded.
        enc = ast_encode(aor)
        rows = self._rows(ContactRow, sql, (f"{enc}^3B@", f"{enc}^3BA", now))
        rows += self._rows(ContactRow, sql, (f"{aor};@", f"{aor};A", now))
        rows = [_decode_contact(r) for r in rows]
        return sorted(rows, key=lambda r: (-r.expiration_time, r.id))

    def contacts_delete(self, contact_id: str, reg_server: str | None = None) -> int:
        """Delete one contact id (from every node, or only ``reg_server``'s row)."""
        with self._db.transaction():
            if reg_server is None:
                return self._db.execute("DELETE FROM ps_contacts WHERE id = ?", (contact_id,))
            return self._db.execute(
                "DELETE FROM ps_contacts WHERE id = ? AND reg_server = ?", (contact_id, reg_server)
            )

    def contacts_purge_expired(self, now: float) -> int:
        """Asterisk's expiry sweeper: delete any row with ``expiration_time <= now``."""
        with self._db.transaction():
            return self._db.execute("DELETE FROM ps_contacts WHERE expiration_time <= ?", (now,))

    def contacts_prune_on_boot(self, reg_server: str) -> int:
        """What a node does at start: delete its own ``prune_on_boot`` contacts (§5.5)."""
        with self._db.transaction():
            return self._db.execute(
                "DELETE FROM ps_contacts WHERE reg_server = ? AND prune_on_boot IN ('yes', '1', "
                "'true', 'on')",
                (reg_server,),
            )

    # --- queues ------------------------------------------------------------------------------

    def queue_add(
        self,
        name: str,
        strategy: str = "ringall",
        members: Iterable[str] = (),
        *,
        penalties: Mapping[str, int] | None = None,
        timeout: int | None = 15,
        retry: int | None = 5,
        wrapuptime: int | None = 0,
        ringinuse: str | None = "no",
        autofill: str | None = "yes",
        maxlen: int | None = 0,
        weight: int | None = 0,
        joinempty: str | None = None,
        leavewhenempty: str | None = None,
        musiconhold: str | None = None,
        context: str | None = None,
    ) -> QueueRow:
        """Create or replace a realtime queue and add ``members`` (interfaces like
        ``PJSIP/101``) in the given order, which app_queue's ``linear`` strategy follows.
        Existing members keep their ``uniqueid``; their penalty is updated."""
        row = QueueRow(
            name=name,
            strategy=strategy,
            timeout=timeout,
            retry=retry,
            wrapuptime=wrapuptime,
            ringinuse=ringinuse,
            maxlen=maxlen,
            weight=weight,
            autofill=autofill,
            joinempty=joinempty,
            leavewhenempty=leavewhenempty,
            musiconhold=musiconhold,
            context=context,
        )
        penalties = penalties or {}
        columns = _fields(QueueRow)
        member_cols = ("queue_name", "interface", "membername", "penalty", "paused")
        names = ", ".join(quote(c) for c in member_cols)
        if self.dialect is Dialect.SQLITE:
            sql = (
                f"INSERT INTO queue_members ({names}, uniqueid) VALUES (?, ?, ?, ?, ?, "
                "(SELECT COALESCE(MAX(uniqueid), 0) + 1 FROM queue_members)) "
            )
        else:
            sql = f"INSERT INTO queue_members ({names}) VALUES (?, ?, ?, ?, ?) "
        sql += "ON CONFLICT (queue_name, interface) DO UPDATE SET penalty = excluded.penalty"
        with self._db.transaction():
            self._db.execute(upsert_sql("queues", columns, ("name",)), _values(row, columns))
            for interface in members:
                membername = interface.rsplit("/", 1)[-1]
                penalty = penalties.get(interface, 0)
                self._db.execute(sql, (name, interface, membername, penalty, 0))
        return row

    def queue_get(self, name: str) -> QueueRow | None:
        """The queue row ``name``."""
        return self._one(QueueRow, _select(QueueRow, "queues", "WHERE name = ?"), (name,))

    def queue_members(self, name: str) -> list[QueueMemberRow]:
        """Members of ``name`` in the order they were added (``uniqueid``)."""
        return self._rows(
            QueueMemberRow,
            _select(QueueMemberRow, "queue_members", "WHERE queue_name = ? ORDER BY uniqueid"),
            (name,),
        )

    def queue_member_pause(
        self, name: str, interface: str, paused: bool, reason: str | None = None
    ) -> bool:
        """(Un)pause a member, as app_queue writes back on PauseQueueMember; False if absent."""
        with self._db.transaction():
            return (
                self._db.execute(
                    "UPDATE queue_members SET paused = ?, reason_paused = ? "
                    "WHERE queue_name = ? AND interface = ?",
                    (int(paused), reason if paused else None, name, interface),
                )
                > 0
            )

    # --- queue_member_state (siplab's shared busy view) -----------------------------------------

    def member_state_set(self, state: MemberState) -> None:
        """Write one member state row as given (reset, tests, reconciliation)."""
        columns = _fields(MemberState)
        values = list(_values(state, columns))
        values[columns.index("in_call")] = int(state.in_call)
        with self._db.transaction():
            self._db.execute(upsert_sql("queue_member_state", columns, ("interface",)), values)

    def member_state_get(self, interface: str) -> MemberState | None:
        """The shared state of one agent device, or None if never recorded."""
        found = self._one(
            MemberState,
            _select(MemberState, "queue_member_state", "WHERE interface = ?"),
            (interface,),
        )
        return None if found is None else dataclasses.replace(found, in_call=bool(found.in_call))

    def member_state_try_acquire(
        self,
        interface: str,
        *,
        node: str,
        call_id: str,
        now: float,
        stale_after: float | None = None,
    ) -> bool:
        """Atomically mark the agent busy for ``call_id`` unless another call holds it.

        This is the cross-node check app_queue lacks (SIP-REFERENCE §5.9): two nodes racing
        for one agent both run this upsert, and the DB lets exactly one of them win. A busy
        row older than ``stale_after`` seconds (a node that died mid-call) may be taken over.
        """
        condition = "queue_member_state.in_call = 0"
        params: list[Any] = [interface, node, call_id, now]
        if stale_after is not None:
            condition += " OR queue_member_state.updated < ?"
            params.append(now - stale_after)
        sql = (
            "INSERT INTO queue_member_state (interface, node, in_call, call_id, updated) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT (interface) DO UPDATE SET node = excluded.node, "
            "in_call = 1, call_id = excluded.call_id, updated = excluded.updated "
            f"WHERE {condition}"
        )
        with self._db.transaction():
            return self._db.execute(sql, params) > 0

    def member_state_release(self, interface: str, *, call_id: str | None, now: float) -> bool:
        """Mark the agent free at ``now`` (its wrap-up starts); only if ``call_id`` holds it
        (any call when None). Returns False when nothing was released."""
        sql = (
            "UPDATE queue_member_state SET in_call = 0, updated = ?, last_call_end = ? "
            "WHERE interface = ? AND in_call = 1"
        )
        params: list[Any] = [now, now, interface]
        if call_id is not None:
            sql += " AND call_id = ?"
            params.append(call_id)
        with self._db.transaction():
            return self._db.execute(sql, params) > 0

    def member_state_release_node(self, node: str, *, now: float) -> int:
        """Free every agent held by ``node`` (after that node crashed or restarted)."""
        with self._db.transaction():
            return self._db.execute(
                "UPDATE queue_member_state SET in_call = 0, updated = ?, last_call_end = ? "
                "WHERE node = ? AND in_call = 1",
                (now, now, node),
            )

    # --- dispatcher -----------------------------------------------------------------------------

    def dispatcher_rows(self) -> list[DispatcherRow]:
        """All rows in table order (``ORDER BY setid, id``); the dispatcher applies
        Kamailio's in-memory priority ordering (SIP-REFERENCE §1.2) itself."""
        return self._rows(DispatcherRow, _select(DispatcherRow, "dispatcher", "ORDER BY setid, id"))

    def dispatcher_set(self, rows: Iterable[DispatcherRow]) -> None:
        """Replace the whole table with ``rows`` (ids are re-assigned), atomically."""
        columns = ("setid", "destination", "flags", "priority", "attrs", "description")
        names = ", ".join(quote(c) for c in columns)
        with self._db.transaction():
            self._db.execute("DELETE FROM dispatcher")
            self._db.executemany(
                f"INSERT INTO dispatcher ({names}) VALUES (?, ?, ?, ?, ?, ?)",
                [_values(r, columns) for r in rows],
            )


def connect(url: str) -> Database:
    """Open the realtime DB at ``url`` (``sqlite:///path``, a file path, ``postgresql://``).

    Does not create tables: call ``init_schema()``.

    Raises:
        RealtimeError: bad URL or the database cannot be opened/reached.
    """
    return Database(open_driver(url))


def _decode_contact(row: ContactRow) -> ContactRow:
    """``row`` with Asterisk's ``^XX`` escapes decoded in every text field."""
    changes: dict[str, Any] = {
        f.name: ast_decode(v)
        for f in dataclasses.fields(row)
        if isinstance(v := getattr(row, f.name), str) and "^" in v
    }
    return dataclasses.replace(row, **changes) if changes else row
