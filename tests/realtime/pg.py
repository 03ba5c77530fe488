"""Find (or start) a PostgreSQL server for the ``postgres``-marked tests.

Order:
1. ``SIPLAB_TEST_PG_URL`` if set: used as is; unreachable means skip, with the reason.
2. Otherwise, when running as root on a machine with Debian's ``postgresql-common``
   (``pg_ctlcluster``): start the first cluster ``pg_lsclusters`` lists if it is down, create
   role ``siplab`` (password ``siplab``) and database ``siplab_test`` if missing, and use
   ``postgresql://siplab:siplab@127.0.0.1:<port>/siplab_test``. The cluster is left running.
3. Otherwise: skip, saying how to provide a server.

Each test then works in its own schema (``search_path`` set through the URL's ``options``),
dropped afterwards, so parallel runs against one server do not see each other's rows.

Run ``python tests/realtime/pg.py`` to print the URL it would use (or the reason it has none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse

ENV = "SIPLAB_TEST_PG_URL"
ROLE = "siplab"
DATABASE = "siplab_test"


def _reachable(url: str) -> str | None:
    """None if a connection works, else the error text."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


def _psql(port: str, sql: str) -> str:
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-p", port, "-v", "ON_ERROR_STOP=1",
         "-Atc", sql],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return result.stdout.strip()


def _start_local_cluster() -> tuple[str | None, str]:
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30
    )
    lines = [line.split() for line in listing.stdout.splitlines() if line.strip()]
    if not lines:
        return None, "pg_ctlcluster exists but pg_lsclusters lists no cluster"
    version, name, port, status = lines[0][:4]
    if status != "online":
        started = subprocess.run(
            ["pg_ctlcluster", version, name, "start"], capture_output=True, text=True, timeout=120
        )
        if started.returncode != 0:
            return None, f"pg_ctlcluster {version} {name} start failed: {started.stderr.strip()}"
    try:
        _psql(
            port,
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{ROLE}'; END IF; END$$;",
        )
        if _psql(port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
            _psql(port, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"cannot prepare role/database on cluster {version}/{name}: {exc}"
    url = f"postgresql://{ROLE}:{ROLE}@127.0.0.1:{port}/{DATABASE}"
    error = _reachable(url)
    if error is not None:
        return None, f"started cluster {version}/{name} but cannot connect: {error}"
    return url, ""


def find_server() -> tuple[str | None, str]:
    """(URL, "") of a usable server, or (None, reason to skip)."""
    url = os.environ.get(ENV)
    if url:
        error = _reachable(url)
        if error is not None:
            return None, f"{ENV} is set but the server is unreachable: {error}"
        return url, ""
    if os.geteuid() != 0 or shutil.which("pg_ctlcluster") is None:
        return None, (
            f"no PostgreSQL: set {ENV}=postgresql://user:pw@host/db, or run as root with "
            "the postgresql package installed (pg_ctlcluster)"
        )
    return _start_local_cluster()


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``search_path`` set to ``schema`` (libpq ``options``)."""
    option = urllib.parse.quote(f"-csearch_path={schema}")
    return f"{url}{'&' if '?' in url else '?'}options={option}"


if __name__ == "__main__":
    found, why = find_server()
    print(found if found is not None else f"none: {why}")
