"""Our realtime schema against the one Asterisk's own Alembic scripts create.

``tests/data/asterisk_alembic_schema.json`` is the column list (type, length) and the enum types
of the eight realtime tables, read from a PostgreSQL database after ``alembic upgrade head``
with asterisk/asterisk ``contrib/ast-db-manage/config`` (head recorded in the file). Regenerate
it the same way when Asterisk's head moves.

Checked: every column we declare exists in Asterisk's table with the same type and length
(``ps_endpoints.aors`` is TEXT on purpose: the router endpoint lists every user), every enum
column carries exactly Asterisk's values as a CHECK, a value outside them is refused on both
engines, and the store's writes work on a database created with Asterisk's real enum types
(a user's existing realtime DB).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from router.realtime import connect
from router.realtime import schema as sch

SNAPSHOT = json.loads(
    (Path(__file__).parents[1] / "data" / "asterisk_alembic_schema.json").read_text()
)
ASTERISK_TABLES = [
    sch.PS_ENDPOINTS,
    sch.PS_AUTHS,
    sch.PS_AORS,
    sch.PS_CONTACTS,
    sch.PS_ENDPOINT_ID_IPS,
    sch.PS_DOMAIN_ALIASES,
    sch.QUEUES,
    sch.QUEUE_MEMBERS,
]
DELIBERATE = {("ps_endpoints", "aors")}
"""Differences kept on purpose (see router/realtime/schema.py)."""

_PG_TYPE = {
    sch.ColumnType.INT: "integer",
    sch.ColumnType.BIGINT: "bigint",
    sch.ColumnType.FLOAT: "double precision",
    sch.ColumnType.SERIAL: "integer",
    sch.ColumnType.SERIAL_PK: "integer",
}


def _ours(column: sch.Column) -> list[object]:
    if column.type is sch.ColumnType.TEXT:
        return ["text", None] if column.length is None else ["character varying", column.length]
    return [_PG_TYPE[column.type], None]


@pytest.mark.parametrize("table", ASTERISK_TABLES, ids=lambda t: t.name)
def test_columns_match_asterisk(table: sch.Table) -> None:
    theirs = SNAPSHOT["tables"][table.name]
    problems = []
    for column in table.columns:
        if column.name not in theirs:
            problems.append(f"{column.name}: not in Asterisk's {table.name}")
            continue
        their_type, their_len = theirs[column.name]
        if their_type in SNAPSHOT["enums"]:
            if list(column.choices) != SNAPSHOT["enums"][their_type]:
                problems.append(f"{column.name}: choices {column.choices} != {their_type}")
        elif (table.name, column.name) not in DELIBERATE and _ours(column) != [
            their_type,
            their_len,
        ]:
            problems.append(
                f"{column.name}: ours {_ours(column)}, Asterisk's {theirs[column.name]}"
            )
    assert problems == []


_CHECK_FAILED = (sqlite3.IntegrityError, psycopg.errors.CheckViolation)


def test_enum_value_outside_asterisks_is_refused(db_url: str) -> None:
    with connect(db_url) as db:
        db.init_schema()
        db.provision_users(1, 100, domain="lab.test", context="from-users", seed=1)
        with pytest.raises(_CHECK_FAILED):
            db.execute("UPDATE ps_aors SET support_path = ? WHERE id = ?", ("Yes", "100"))
        with pytest.raises(_CHECK_FAILED):
            db.queue_add("q", "roundrobin", ["PJSIP/100"])
        db.execute("UPDATE ps_aors SET support_path = ? WHERE id = ?", ("yes", "100"))
        assert db.query("SELECT support_path FROM ps_aors WHERE id = ?", ("100",)) == [("yes",)]


def _asterisk_ddl() -> list[str]:
    """The eight tables with Asterisk's own PostgreSQL types (enum types included)."""
    statements = [
        f"CREATE TYPE {name} AS ENUM ({', '.join(repr(v) for v in values)})"
        for name, values in SNAPSHOT["enums"].items()
    ]
    for table in ASTERISK_TABLES:
        items = []
        for name, (typ, length) in SNAPSHOT["tables"][table.name].items():
            if name == "uniqueid":
                typ = "serial"
            elif length is not None:
                typ = f"varchar({length})"
            items.append(f"{sch.quote(name)} {typ}")
        if table.primary_key:
            items.append(f"PRIMARY KEY ({', '.join(sch.quote(c) for c in table.primary_key)})")
        items += [f"UNIQUE ({', '.join(sch.quote(c) for c in u)})" for u in table.unique]
        statements.append(f"CREATE TABLE {sch.quote(table.name)} ({', '.join(items)})")
    return statements


@pytest.fixture
def asterisk_db(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None
        for statement in _asterisk_ddl():
            # enum types are per schema too: the fixture's schema is dropped afterwards
            conn.execute(statement.replace("CREATE TYPE ", f'CREATE TYPE "{schema[0]}".'))
    return pg_url


@pytest.mark.postgres
def test_store_writes_work_on_asterisks_own_schema(asterisk_db: str) -> None:
    with connect(asterisk_db) as db:
        db.init_schema()  # adds siplab's own tables, keeps Asterisk's
        users = db.provision_users(3, 100, domain="lab.test", context="from-users", seed=1)
        db.provision_router_endpoint("127.0.0.10", contact="sip:127.0.0.10:5060")
        db.execute(
            "UPDATE ps_endpoints SET aors = ?, identify_by = ? WHERE id = ?",
            ("router," + ",".join(u.username for u in users), "ip,username", "router"),
        )
        db.execute("UPDATE ps_aors SET support_path = ? WHERE id <> ?", ("yes", "router"))
        db.queue_add("queue1", "ringall", ["PJSIP/101", "PJSIP/102"])
        assert db.queue_member_pause("queue1", "PJSIP/101", True, "lunch")
        assert [m.paused for m in db.queue_members("queue1")] == [1, 0]
        assert db.get_auth("101").auth_type == "userpass"  # type: ignore[union-attr]
        kinds = db.query(
            "SELECT udt_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?",
            ("ps_aors", "support_path"),
        )
        assert kinds == [("ast_bool_values",)]  # really Asterisk's enum type, not ours
