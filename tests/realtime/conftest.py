"""Fixtures: a fresh realtime DB on SQLite (always) and PostgreSQL (``postgres`` mark)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from lab.requires import missing_tool
from router.realtime import Database, connect

from .pg import find_server, with_schema


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url, reason = find_server()
    if url is None:
        missing_tool(reason)
    return url


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    import psycopg

    schema = f"siplab_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_schema(pg_server_url, schema)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/realtime.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, once per engine."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """An initialised store on each engine."""
    database = connect(db_url)
    database.init_schema()
    try:
        yield database
    finally:
        database.close()
