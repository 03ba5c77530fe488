"""What the emulator reads and writes in the shared realtime DB, as Asterisk would.

Asterisk reads realtime tables with ``SELECT *`` and applies the pjsip.conf default to every
NULL column (SIP-REFERENCE §5.1), so the records here keep NULLs and the properties apply
the defaults, with the pjsip_config.xml value quoted next to each.

The emulator talks to the DB through the shared ``router.realtime.store.Database`` (qmark
placeholders, nested ``transaction()``): its typed operations for the siplab-owned
``queue_member_state`` table (the cross-node busy view, §5.9), and plain SQL over the Asterisk
column names for the reads that must follow pjsip.conf defaults (its records are the router's
view of those tables, not Asterisk's NULL-means-default one).

Calls are synchronous, like Asterisk's realtime drivers: a slow DB slows the node down, which
is the behaviour a capacity test should see.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from router.realtime.astcodec import ast_decode, ast_encode
from router.realtime.store import Database, connect

_TRUE = frozenset({"yes", "true", "on", "1", "y", "t"})


def ast_bool(value: object, default: bool) -> bool:
    """Asterisk's ``ast_true`` over a realtime column (NULL/empty = ``default``)."""
    if value is None or value == "":
        return default
    return str(value).strip().lower() in _TRUE


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """ps_endpoints, the columns the emulator uses."""

    id: str
    aors_text: str | None
    auth: str | None
    context: str | None
    identify_by_text: str | None
    allow_unauthenticated_options: str | None

    @property
    def aors(self) -> list[str]:
        return _split(self.aors_text)

    @property
    def identify_by(self) -> list[str]:
        """Default ``username,ip`` [AX endpoint.identify_by]."""
        return _split(self.identify_by_text) or ["username", "ip"]

    @property
    def auths(self) -> list[str]:
        return _split(self.auth)

    @property
    def dialplan_context(self) -> str:
        return self.context or "default"


@dataclass(frozen=True, slots=True)
class Auth:
    """ps_auths."""

    id: str
    auth_type: str | None
    username: str | None
    password: str | None
    md5_cred: str | None
    realm: str | None
    nonce_lifetime_value: int | None

    @property
    def nonce_lifetime(self) -> int:
        """Default 32 s [AX auth.nonce_lifetime]."""
        return self.nonce_lifetime_value if self.nonce_lifetime_value else 32


@dataclass(frozen=True, slots=True)
class Aor:
    """ps_aors with the pjsip.conf defaults [AX aor]."""

    id: str
    contact: str | None
    default_expiration_value: int | None
    max_contacts_value: int | None
    minimum_expiration_value: int | None
    maximum_expiration_value: int | None
    remove_existing_value: str | None
    support_path_value: str | None

    @property
    def default_expiration(self) -> int:
        return 3600 if self.default_expiration_value is None else self.default_expiration_value

    @property
    def max_contacts(self) -> int:
        return self.max_contacts_value or 0

    @property
    def minimum_expiration(self) -> int:
        return 60 if self.minimum_expiration_value is None else self.minimum_expiration_value

    @property
    def maximum_expiration(self) -> int:
        return 7200 if self.maximum_expiration_value is None else self.maximum_expiration_value

    @property
    def remove_existing(self) -> bool:
        return ast_bool(self.remove_existing_value, False)

    @property
    def support_path(self) -> bool:
        return ast_bool(self.support_path_value, False)

    @property
    def permanent_contacts(self) -> list[str]:
        return _split(self.contact)


@dataclass(frozen=True, slots=True)
class StoredContact:
    """ps_contacts row (one binding)."""

    id: str
    uri: str
    expiration_time: int
    path: str | None
    user_agent: str | None
    reg_server: str
    endpoint: str | None
    call_id: str | None

    @property
    def paths(self) -> list[str]:
        return _split(self.path)


@dataclass(frozen=True, slots=True)
class QueueDef:
    """queues row with app_queue defaults [AQs]."""

    name: str
    strategy_value: str | None
    timeout_value: int | None
    retry_value: int | None
    wrapuptime_value: int | None
    ringinuse_value: str | None
    penaltymemberslimit_value: int | None

    @property
    def strategy(self) -> str:
        return (self.strategy_value or "ringall").lower()

    @property
    def timeout(self) -> int:
        """Member ring time, default 15 s."""
        return 15 if self.timeout_value is None else self.timeout_value

    @property
    def retry(self) -> int:
        """Pause before ringing again, default 5 s."""
        return 5 if self.retry_value is None else self.retry_value

    @property
    def wrapuptime(self) -> int:
        return self.wrapuptime_value or 0

    @property
    def ringinuse(self) -> bool:
        """queues.conf.sample: ``ringinuse`` defaults to yes."""
        return ast_bool(self.ringinuse_value, True)

    @property
    def penaltymemberslimit(self) -> int:
        return self.penaltymemberslimit_value or 0


@dataclass(frozen=True, slots=True)
class QueueMember:
    """queue_members row."""

    interface: str
    membername: str | None
    penalty: int
    paused: bool
    uniqueid: int
    wrapuptime: int | None
    ringinuse_value: str | None


@dataclass(frozen=True, slots=True)
class SharedMemberState:
    """queue_member_state row."""

    interface: str
    node: str | None
    in_call: bool
    call_id: str | None
    last_call_end: float | None


def contact_id(aor: str, uri: str) -> str:
    """Asterisk's contact id ``<aor>;@<md5(uri)>`` [ALoc], as stored: ``<aor>^3B@<md5>``
    (realtime encoding, ``router.realtime.astcodec``; the md5 is over the decoded URI)."""
    return ast_encode(f"{aor};@{hashlib.md5(uri.encode()).hexdigest()}")


def _decoded(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(ast_decode(v) if isinstance(v, str) else v for v in row)


def _encoded(value: str | None) -> str | None:
    return None if value is None else ast_encode(value)


class PbxStore:
    """Realtime reads and writes of one node over one DB driver."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str, *, create: bool = False) -> PbxStore:
        """Open ``url``; ``create`` runs the (idempotent) schema DDL first.

        Raises:
            RealtimeError: the DB cannot be opened.
        """
        # The node's contact writes need no fsync each (a PBX is not the component whose
        # acknowledgements the lab checks for durability); holding the SQLite write lock through
        # an fsync per REGISTER made every writer sharing the file (router included) wait.
        if url.startswith("sqlite:") and "synchronous=" not in url:
            url += ("&" if "?" in url else "?") + "synchronous=normal"
        store = cls(connect(url))
        if create:
            store.create_schema()
        return store

    def create_schema(self) -> None:
        """Create the realtime tables if missing (idempotent)."""
        self.db.init_schema()

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        rows = self.db.query(sql, params)
        return rows[0] if rows else None

    # -- PJSIP objects --------------------------------------------------------------------

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = self._one(
            "SELECT id, aors, auth, context, identify_by, allow_unauthenticated_options "
            "FROM ps_endpoints WHERE id = ?",
            (endpoint_id,),
        )
        return None if row is None else Endpoint(*row)

    def auth(self, auth_id: str) -> Auth | None:
        row = self._one(
            "SELECT id, auth_type, username, password, md5_cred, realm, nonce_lifetime "
            "FROM ps_auths WHERE id = ?",
            (auth_id,),
        )
        return None if row is None else Auth(*row)

    def aor(self, aor_id: str) -> Aor | None:
        row = self._one(
            "SELECT id, contact, default_expiration, max_contacts, minimum_expiration, "
            "maximum_expiration, remove_existing, support_path FROM ps_aors WHERE id = ?",
            (aor_id,),
        )
        return None if row is None else Aor(*row)

    def identify_rows(self) -> list[tuple[str, str]]:
        """(endpoint, match) of every ps_endpoint_id_ips row with a ``match``."""
        rows = self.db.query(
            'SELECT endpoint, "match" FROM ps_endpoint_id_ips WHERE "match" IS NOT NULL'
        )
        return [(str(e), str(m)) for e, m in rows if e]

    # -- contacts -------------------------------------------------------------------------

    def contacts(self, aor: str, *, now_epoch: float) -> list[StoredContact]:
        """Live bindings of ``aor`` (any node's), soonest-expiring first, one per URI."""
        # Asterisk stores the id encoded (``101^3B@<md5>``): scan that prefix, decode the row.
        prefix = contact_id(aor, "").rpartition("@")[0] + "@"
        rows = self.db.query(
            "SELECT id, uri, expiration_time, path, user_agent, reg_server, endpoint, call_id "
            "FROM ps_contacts WHERE id >= ? AND id < ? AND expiration_time > ? "
            "ORDER BY expiration_time",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1), int(now_epoch)),
        )
        seen: dict[str, StoredContact] = {}
        for row in rows:
            contact = StoredContact(*_decoded(row))
            seen[contact.uri] = contact  # a later expiry wins
        return sorted(seen.values(), key=lambda c: c.expiration_time)

    def save_contact(
        self,
        aor: str,
        uri: str,
        *,
        expiration_time: int,
        path: str | None,
        user_agent: str | None,
        reg_server: str,
        endpoint: str,
        call_id: str,
        via: tuple[str, int] | None,
    ) -> None:
        """Insert or refresh one binding (id = ``<aor>;@md5(uri)``, this node's reg_server)."""
        cid = contact_id(aor, uri)
        via_addr, via_port = via if via is not None else (None, None)
        with self.db.transaction():
            # One binding per URI whichever node took the REGISTER before (Asterisk updates
            # by id); the newest registration owns the row.
            self.db.execute("DELETE FROM ps_contacts WHERE id = ?", (cid,))
            self.db.execute(
                "INSERT INTO ps_contacts (id, uri, expiration_time, path, user_agent, "
                "reg_server, endpoint, call_id, via_addr, via_port, qualify_frequency, "
                "prune_on_boot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'no')",
                (
                    cid,
                    ast_encode(uri),
                    expiration_time,
                    _encoded(path),
                    _encoded(user_agent),
                    ast_encode(reg_server),
                    ast_encode(endpoint),
                    ast_encode(call_id),
                    via_addr,
                    via_port,
                ),
            )

    def delete_contact(self, aor: str, uri: str) -> None:
        self.db.execute("DELETE FROM ps_contacts WHERE id = ?", (contact_id(aor, uri),))

    def delete_expired_contacts(self, now_epoch: float) -> int:
        """Asterisk's expiry sweeper deletes any expired row, whoever wrote it [AReg]."""
        return self.db.execute(
            "DELETE FROM ps_contacts WHERE expiration_time <= ?", (int(now_epoch),)
        )

    # -- queues ---------------------------------------------------------------------------

    def queue(self, name: str) -> QueueDef | None:
        row = self._one(
            "SELECT name, strategy, timeout, retry, wrapuptime, ringinuse, penaltymemberslimit "
            "FROM queues WHERE name = ?",
            (name,),
        )
        return None if row is None else QueueDef(*row)

    def queue_members(self, name: str) -> list[QueueMember]:
        """Members in the order app_queue adds them (uniqueid = insertion order)."""
        rows = self.db.query(
            "SELECT interface, membername, penalty, paused, uniqueid, wrapuptime, ringinuse "
            "FROM queue_members WHERE queue_name = ? ORDER BY uniqueid",
            (name,),
        )
        return [
            QueueMember(str(i), m, int(p or 0), bool(int(pa or 0)), int(u), w, r)
            for i, m, p, pa, u, w, r in rows
            if i and u is not None  # "A member row without uniqueid or interface is ignored"
        ]

    def member_states(self, interfaces: list[str]) -> dict[str, SharedMemberState]:
        if not interfaces:
            return {}
        marks = ", ".join("?" for _ in interfaces)
        rows = self.db.query(
            "SELECT interface, node, in_call, call_id, last_call_end FROM queue_member_state "
            f"WHERE interface IN ({marks})",
            tuple(interfaces),
        )
        return {str(i): SharedMemberState(str(i), n, bool(c), cid, e) for i, n, c, cid, e in rows}

    def claim_member(self, interface: str, *, node: str, call_id: str, now_epoch: float) -> bool:
        """Mark ``interface`` busy unless another call holds it; True when we got it."""
        return self.db.member_state_try_acquire(
            interface, node=node, call_id=call_id, now=now_epoch
        )

    def release_member(
        self, interface: str, *, call_id: str, now_epoch: float, completed: bool
    ) -> None:
        """Free ``interface`` if ``call_id`` holds it.

        ``completed``: the member talked, so its wrap-up starts now (``last_call_end``); a
        member that only rang is freed without starting a wrap-up, as in app_queue.
        """
        if completed:
            self.db.member_state_release(interface, call_id=call_id, now=now_epoch)
            return
        self.db.execute(
            "UPDATE queue_member_state SET in_call = 0, updated = ? "
            "WHERE interface = ? AND call_id = ? AND in_call = 1",
            (now_epoch, interface, call_id),
        )

    def release_node(self, node: str, *, now_epoch: float) -> int:
        """Free every member row ``node`` holds (a restarted node has no calls)."""
        return self.db.member_state_release_node(node, now=now_epoch)
