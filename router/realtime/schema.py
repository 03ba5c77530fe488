"""The realtime schema: one declaration, DDL generated per engine.

Three owners share one database, so every table says whose it is:

* **Asterisk** (PJSIP realtime + realtime queues, alembic head 2285f2ace275, SIP-REFERENCE §5):
  ``ps_endpoints``, ``ps_auths``, ``ps_aors``, ``ps_contacts``, ``ps_endpoint_id_ips``,
  ``ps_domain_aliases``, ``queues``, ``queue_members``. Table and column names are Asterisk's,
  so a real Asterisk (``extconfig.conf``: ``ps_endpoints => pgsql,asterisk``) reads the same rows
  the emulator does. Only the columns that matter to the lab are declared; realtime reads
  ``SELECT *`` and takes the pjsip.conf default for any column that is absent or NULL
  (SIP-REFERENCE §5.1: "No DB defaults on these tables"). Compared column by column with the
  PostgreSQL schema Asterisk's own Alembic scripts create (head 2285f2ace275; snapshot and test
  in tests/realtime/test_asterisk_schema.py): same names, lengths and numeric types; the one
  deliberate difference is ``ps_endpoints.aors`` (TEXT, not VARCHAR(2048), see below).
  Asterisk's enum types (``ast_bool_values``, ``yesno_values``, ...) are VARCHAR here with a
  CHECK holding the same values (``Column.choices``), so a value Asterisk would refuse is
  refused here too and one DDL serves SQLite as well; siplab also works on a database created
  by Asterisk's scripts (real enum types), since it only ever writes those values.
* **Kamailio** (``utils/kamctl/*-create.sql``): ``location`` (usrloc version 9) and
  ``dispatcher`` (version 4), so Kamailio as the router under test can share the DB.
  ``location.expires`` and ``last_modified`` are **BIGINT epoch seconds**, which is what usrloc
  reads with ``expires_type=1`` (SIP-REFERENCE §2.4); the stock MySQL DATETIME form is not
  used. ``expires = 0`` means a permanent binding, as in usrloc.
* **siplab** itself: ``siplab_meta`` (schema version) and ``queue_member_state`` (the shared
  "who is on a call" view that Asterisk keeps per node in memory, SIP-REFERENCE §5.9; the
  emulator nodes share it through this table so two nodes cannot ring one busy agent).

Engine differences are confined to ``ColumnType.sql``: auto-increment keys
(``INTEGER PRIMARY KEY AUTOINCREMENT`` vs ``SERIAL``), floating point (SQLite ``REAL`` is
8 bytes; PostgreSQL ``REAL`` is 4, so ``DOUBLE PRECISION``) and the byte-order collation of
``ps_contacts.id`` (see ``Column.binary_collation``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Dialect(enum.Enum):
    """The SQL engines the store speaks."""

    SQLITE = "sqlite"
    POSTGRES = "postgresql"


class ColumnType(enum.Enum):
    """Portable column types; ``sql()`` renders one for a dialect."""

    TEXT = "text"  # VARCHAR(length) or TEXT when length is None
    INT = "int"
    BIGINT = "bigint"
    FLOAT = "float"
    SERIAL_PK = "serial_pk"  # auto-increment integer primary key
    SERIAL = "serial"  # auto-increment integer that is not the key (queue_members.uniqueid)

    def sql(self, dialect: Dialect, length: int | None) -> str:
        """The type (and, for SERIAL_PK, key clause) in ``dialect``."""
        sqlite = dialect is Dialect.SQLITE
        match self:
            case ColumnType.TEXT:
                return "TEXT" if length is None else f"VARCHAR({length})"
            case ColumnType.INT:
                return "INTEGER"
            case ColumnType.BIGINT:
                return "BIGINT"
            case ColumnType.FLOAT:
                return "REAL" if sqlite else "DOUBLE PRECISION"
            case ColumnType.SERIAL_PK:
                return "INTEGER PRIMARY KEY AUTOINCREMENT" if sqlite else "SERIAL PRIMARY KEY"
            case ColumnType.SERIAL:
                # SQLite auto-increments only the rowid key; the store fills this column with
                # MAX()+1 inside the write transaction (SQLite writers are serialised).
                return "INTEGER" if sqlite else "SERIAL"


@dataclass(frozen=True, slots=True)
class Column:
    """One column declaration."""

    name: str
    """Column name, exactly as Asterisk/Kamailio spell it."""
    type: ColumnType = ColumnType.TEXT
    """Portable type."""
    length: int | None = 80
    """VARCHAR length for TEXT columns (None = unbounded TEXT)."""
    not_null: bool = False
    """NOT NULL constraint."""
    default: str | None = None
    """SQL literal for DEFAULT, already quoted (e.g. ``"''"``, ``"0"``)."""
    binary_collation: bool = False
    """Compare bytewise (PostgreSQL ``COLLATE "C"``; SQLite's default already is), so that a
    prefix can be found with a range scan on the index."""
    choices: tuple[str, ...] = ()
    """The values of Asterisk's enum type for this column (a CHECK constraint; NULL allowed)."""

    def ddl(self, dialect: Dialect) -> str:
        parts = [quote(self.name), self.type.sql(dialect, self.length)]
        if self.binary_collation and dialect is Dialect.POSTGRES:
            parts.append('COLLATE "C"')
        if self.not_null:
            parts.append("NOT NULL")
        if self.default is not None:
            parts.append(f"DEFAULT {self.default}")
        if self.choices:
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in self.choices)
            parts.append(f"CHECK ({quote(self.name)} IN ({values}))")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Table:
    """One table: columns, keys, indexes."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    """Composite or plain key; empty when a SERIAL_PK column is the key."""
    unique: tuple[tuple[str, ...], ...] = ()
    """UNIQUE constraints."""
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(index name, columns)."""

    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def ddl(self, dialect: Dialect) -> list[str]:
        """CREATE TABLE / CREATE INDEX statements, idempotent (IF NOT EXISTS)."""
        items = [c.ddl(dialect) for c in self.columns]
        if self.primary_key:
            items.append(f"PRIMARY KEY ({_names(self.primary_key)})")
        items.extend(f"UNIQUE ({_names(cols)})" for cols in self.unique)
        body = ",\n  ".join(items)
        statements = [f"CREATE TABLE IF NOT EXISTS {quote(self.name)} (\n  {body}\n)"]
        statements.extend(
            f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(self.name)} ({_names(cols)})"
            for name, cols in self.indexes
        )
        return statements


def quote(identifier: str) -> str:
    """Double-quote an identifier (``match``, ``partition`` and ``100rel`` need it)."""
    return '"' + identifier.replace('"', '""') + '"'


def upsert_sql(
    table: str, columns: Sequence[str], key: Sequence[str], *, select_from: str | None = None
) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` (SQLite >= 3.24 and PostgreSQL).

    Values come from ``?`` placeholders, or from ``SELECT columns FROM select_from``.
    """
    names = _names(tuple(columns))
    if select_from is None:
        source = "VALUES (" + ", ".join("?" for _ in columns) + ")"
    else:
        source = f"SELECT {names} FROM {quote(select_from)}"
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in key)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return (
        f"INSERT INTO {quote(table)} ({names}) {source} ON CONFLICT ({_names(tuple(key))}) {action}"
    )


def _names(columns: tuple[str, ...]) -> str:
    return ", ".join(quote(c) for c in columns)


def _text(
    name: str, length: int | None = 80, *, not_null: bool = False, default: str | None = None
) -> Column:
    return Column(name, ColumnType.TEXT, length, not_null=not_null, default=default)


def _int(name: str, default: str | None = None, *, not_null: bool = False) -> Column:
    return Column(name, ColumnType.INT, None, not_null=not_null, default=default)


_T = ColumnType
# Asterisk's PostgreSQL enum types (contrib/ast-db-manage), as CHECKed VARCHAR columns.
AST_BOOL_VALUES = ("0", "1", "off", "on", "false", "true", "no", "yes")
YESNO_VALUES = ("yes", "no")
PJSIP_AUTH_TYPE_VALUES = ("md5", "userpass", "google_oauth")
PJSIP_DTMF_MODE_VALUES = ("rfc4733", "inband", "info", "auto", "auto_info")
PJSIP_TIMER_VALUES = ("forced", "no", "required", "yes")
PJSIP_100REL_VALUES = ("no", "required", "peer_supported", "yes")
QUEUE_STRATEGY_VALUES = (
    "ringall",
    "leastrecent",
    "fewestcalls",
    "random",
    "rrmemory",
    "linear",
    "wrandom",
    "rrordered",
)
QUEUE_AUTOPAUSE_VALUES = ("yes", "no", "all")
_BOOL = 5


def _enum(name: str, choices: tuple[str, ...], length: int = _BOOL) -> Column:
    return Column(name, ColumnType.TEXT, length, choices=choices)


def _bools(*names: str) -> tuple[Column, ...]:
    """``ast_bool_values`` columns."""
    return tuple(_enum(n, AST_BOOL_VALUES) for n in names)


def _yesno(*names: str) -> tuple[Column, ...]:
    """``yesno_values`` columns (the queues table)."""
    return tuple(_enum(n, YESNO_VALUES) for n in names)


PS_ENDPOINTS = Table(
    "ps_endpoints",
    (
        _text("id", 255, not_null=True),
        _text("transport", 40),
        # Asterisk declares VARCHAR(2048); unbounded here because the lab's `router` endpoint
        # lists every user's AOR (see lab/backends/render.py), which outgrows 2048 characters.
        _text("aors", None),
        _text("auth", 255),
        _text("outbound_auth", 255),
        _text("context", 40),
        _text("disallow", 200),
        _text("allow", 200),
        _text("identify_by", 80),
        *_bools("direct_media", "force_rport", "rewrite_contact", "rtp_symmetric"),
        _enum("dtmf_mode", PJSIP_DTMF_MODE_VALUES, 40),
        _enum("timers", PJSIP_TIMER_VALUES, 40),
        _int("timers_min_se"),
        _int("timers_sess_expires"),
        _enum("100rel", PJSIP_100REL_VALUES, 40),
        _text("callerid", 40),
        _text("from_user", 40),
        _text("from_domain", 40),
        *_bools("send_pai", "allow_unauthenticated_options", "inband_progress"),
        _text("outbound_proxy", 255),
        _text("mailboxes", 40),
        _int("device_state_busy_at"),
        _text("deny", 95),
        _text("permit", 95),
        _text("acl", 40),
        _text("contact_deny", 95),
        _text("contact_permit", 95),
        _text("contact_acl", 40),
        _text("language", 40),
        _text("accountcode", 80),
        _text("set_var", None),
        _text("tenantid", 80),
        _int("rtp_port_start"),
        _int("rtp_port_end"),
        _text("follow_redirect_methods", 95),
    ),
    primary_key=("id",),
)

PS_AUTHS = Table(
    "ps_auths",
    (
        _text("id", 255, not_null=True),
        _enum("auth_type", PJSIP_AUTH_TYPE_VALUES, 20),  # pjsip_auth_type_values_v2
        _int("nonce_lifetime"),
        _text("md5_cred", 40),
        _text("password", 80),
        _text("realm", 255),
        _text("username", 40),
        _text("refresh_token", 255),
        _text("oauth_clientid", 255),
        _text("oauth_secret", 255),
        _text("password_digest", 1024),
        _text("supported_algorithms_uas", 1024),
        _text("supported_algorithms_uac", 1024),
    ),
    primary_key=("id",),
    # siplab addition: the router looks credentials up by digest username.
    indexes=(("ps_auths_username_idx", ("username",)),),
)

PS_AORS = Table(
    "ps_aors",
    (
        _text("id", 255, not_null=True),
        _text("contact", 255),
        _int("default_expiration"),
        _text("mailboxes", 80),
        _int("max_contacts"),
        _int("minimum_expiration"),
        _int("maximum_expiration"),
        *_bools("remove_existing", "remove_unavailable"),
        _int("qualify_frequency"),
        Column("qualify_timeout", _T.FLOAT, None),
        *_bools("qualify_2xx_only", "authenticate_qualify", "support_path"),
        _text("outbound_proxy", 255),
        _text("voicemail_extension", 40),
    ),
    primary_key=("id",),
    indexes=(("ps_aors_qualifyfreq_contact", ("qualify_frequency", "contact")),),
)

PS_CONTACTS = Table(
    "ps_contacts",
    (
        # Asterisk contact id = "<aor>;@<md5(uri)>" (SIP-REFERENCE §5.5).
        Column("id", _T.TEXT, 255, not_null=True, binary_collation=True),
        _text("uri", 511),
        Column("expiration_time", _T.BIGINT, None),
        _int("qualify_frequency"),
        _text("outbound_proxy", 255),
        _text("path", None),
        _text("user_agent", 255),
        Column("qualify_timeout", _T.FLOAT, None),
        # Nullable as in Asterisk (a real node may write NULL), but siplab writes '' rather
        # than NULL so the (id, reg_server) upsert key also holds for single-node rows:
        # NULLs never conflict in a UNIQUE constraint.
        _text("reg_server", 255, default="''"),
        *_bools("authenticate_qualify", "prune_on_boot", "qualify_2xx_only"),
        _text("via_addr", 40),
        _int("via_port"),
        _text("call_id", 255),
        _text("endpoint", 255),
    ),
    unique=(("id", "reg_server"),),
    indexes=(("ps_contacts_qualifyfreq_exp", ("qualify_frequency", "expiration_time")),),
)

PS_ENDPOINT_ID_IPS = Table(
    "ps_endpoint_id_ips",
    (
        _text("id", 255, not_null=True),
        _text("endpoint", 255),
        _text("match", 80),
        *_bools("srv_lookups"),
        _text("match_header", 255),
        _text("match_request_uri", 255),
    ),
    primary_key=("id",),
)

PS_DOMAIN_ALIASES = Table(
    "ps_domain_aliases",
    (_text("id", 255, not_null=True), _text("domain", 255)),
    primary_key=("id",),
)

QUEUES = Table(
    "queues",
    (
        _text("name", 128, not_null=True),
        _text("musiconhold", 128),
        _text("announce", 128),
        _text("context", 128),
        _int("timeout"),
        *_yesno("ringinuse", "setinterfacevar", "setqueuevar", "setqueueentryvar"),
        _int("announce_frequency"),
        _text("announce_holdtime", 128),
        _int("retry"),
        _int("wrapuptime"),
        _int("penaltymemberslimit"),
        *_yesno("autofill"),
        _enum("autopause", QUEUE_AUTOPAUSE_VALUES),
        _int("autopausedelay"),
        *_yesno("autopausebusy", "autopauseunavail"),
        _int("maxlen"),
        _int("servicelevel"),
        _enum("strategy", QUEUE_STRATEGY_VALUES, 20),
        _text("joinempty", 128),
        _text("leavewhenempty", 128),
        *_yesno("reportholdtime"),
        _int("memberdelay"),
        _int("weight"),
        *_yesno("timeoutrestart"),
        _text("defaultrule", 128),
        _text("timeoutpriority", 128),
    ),
    primary_key=("name",),
)

QUEUE_MEMBERS = Table(
    "queue_members",
    (
        _text("queue_name", 80, not_null=True),
        _text("interface", 80, not_null=True),
        _text("membername", 80),
        _text("state_interface", 80),
        _int("penalty"),
        _int("paused"),
        # MySQL AUTO_INCREMENT in Asterisk; app_queue ignores a member without it.
        Column("uniqueid", _T.SERIAL, None, not_null=True),
        _int("wrapuptime"),
        *_bools("ringinuse"),
        _text("reason_paused", 80),
    ),
    primary_key=("queue_name", "interface"),
    unique=(("uniqueid",),),
)

LOCATION = Table(
    "location",
    (
        Column("id", _T.SERIAL_PK, None),
        _text("ruid", 64, not_null=True, default="''"),
        _text("username", 64, not_null=True, default="''"),
        _text("domain", 64),
        _text("contact", 512, not_null=True, default="''"),
        _text("received", 128),
        _text("path", 512),
        # Epoch seconds (usrloc expires_type=1); 0 = permanent.
        Column("expires", _T.BIGINT, None, not_null=True, default="0"),
        Column("q", _T.FLOAT, None, not_null=True, default="1.0"),
        _text("callid", 255, not_null=True, default="'Default-Call-ID'"),
        _int("cseq", "1", not_null=True),
        Column("last_modified", _T.BIGINT, None, not_null=True, default="0"),
        _int("flags", "0", not_null=True),
        _int("cflags", "0", not_null=True),
        _text("user_agent", 255, not_null=True, default="''"),
        _text("socket", 64),
        _int("methods"),
        _text("instance", 255),
        _int("reg_id", "0", not_null=True),
        _int("server_id", "0", not_null=True),
        _int("connection_id", "0", not_null=True),
        _int("keepalive", "0", not_null=True),
        _int("partition", "0", not_null=True),
    ),
    unique=(("ruid",),),
    indexes=(
        ("account_contact_idx", ("username", "domain", "contact")),
        ("expires_idx", ("expires",)),
        ("connection_idx", ("server_id", "connection_id")),
    ),
)

DISPATCHER = Table(
    "dispatcher",
    (
        Column("id", _T.SERIAL_PK, None),
        _int("setid", "0", not_null=True),
        _text("destination", 192, not_null=True, default="''"),
        _int("flags", "0", not_null=True),
        _int("priority", "0", not_null=True),
        _text("attrs", 128, not_null=True, default="''"),
        _text("description", 64, not_null=True, default="''"),
    ),
)

# --- siplab's own tables ------------------------------------------------------------------------

SIPLAB_META = Table(
    "siplab_meta",
    (_text("key", 64, not_null=True), _text("value", 255)),
    primary_key=("key",),
)

QUEUE_MEMBER_STATE = Table(
    "queue_member_state",
    (
        _text("interface", 80, not_null=True),  # e.g. "PJSIP/101", as in queue_members
        _text("node", 80),  # emulator node holding the call
        _int("in_call", "0", not_null=True),  # 1 while the agent is on a call on any node
        _text("call_id", 255),
        Column("updated", _T.FLOAT, None),  # epoch seconds of the last change
        Column("last_call_end", _T.FLOAT, None),  # for wrapuptime and leastrecent
    ),
    primary_key=("interface",),
)

SCHEMA_VERSION = 1

TABLES: tuple[Table, ...] = (
    SIPLAB_META,
    PS_ENDPOINTS,
    PS_AUTHS,
    PS_AORS,
    PS_CONTACTS,
    PS_ENDPOINT_ID_IPS,
    PS_DOMAIN_ALIASES,
    QUEUES,
    QUEUE_MEMBERS,
    LOCATION,
    DISPATCHER,
    QUEUE_MEMBER_STATE,
)


def ddl(dialect: Dialect) -> list[str]:
    """Every statement that creates the schema in ``dialect``, in order."""
    return [statement for table in TABLES for statement in table.ddl(dialect)]
