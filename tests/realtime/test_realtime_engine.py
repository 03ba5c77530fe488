"""URLs, SQLite durability under kill -9, and several processes sharing one file."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from router.realtime import Binding, RealtimeError, connect
from router.realtime.engine import redact_url, sqlite_path
from router.realtime.schema import Dialect, ddl


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:////var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:///tmp/a%20b.db?synchronous=normal", "/tmp/a b.db"),
        ("sqlite:rel.db", "rel.db"),
        ("rel/x.db", "rel/x.db"),
        ("/abs/x.db", "/abs/x.db"),
        (":memory:", ":memory:"),
        ("postgresql://u@h/db", None),
    ],
)
def test_engine_sqlite_path(url: str, path: str | None) -> None:
    assert sqlite_path(url) == path


def test_engine_bad_urls() -> None:
    with pytest.raises(RealtimeError, match="unsupported database URL"):
        connect("mysql://root@localhost/asterisk")
    with pytest.raises(RealtimeError, match="no file path"):
        connect("sqlite://")
    with pytest.raises(RealtimeError, match="synchronous"):
        connect("sqlite:///tmp/x.db?synchronous=off")
    with pytest.raises(RealtimeError, match="cannot open SQLite"):
        connect("sqlite:///nonexistent-dir/sub/x.db")
    with pytest.raises(RealtimeError, match=r"cannot connect to postgresql://u:\*\*\*@"):
        connect("postgresql://u:secret@127.0.0.1:1/db")


def test_engine_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_engine_ddl_differs_only_where_declared() -> None:
    sqlite = "\n".join(ddl(Dialect.SQLITE))
    postgres = "\n".join(ddl(Dialect.POSTGRES))
    assert '"id" INTEGER PRIMARY KEY AUTOINCREMENT' in sqlite
    assert '"id" SERIAL PRIMARY KEY' in postgres
    assert '"qualify_timeout" DOUBLE PRECISION' in postgres
    assert "AUTOINCREMENT" not in postgres
    assert 'COLLATE "C"' in postgres
    assert 'COLLATE "C"' not in sqlite
    assert '"expires" BIGINT' in sqlite


def test_engine_wal_and_pragmas(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path}/p.db") as db:
        assert db.query("PRAGMA journal_mode") == [("wal",)]
        assert db.query("PRAGMA synchronous") == [(2,)]  # FULL
        assert db.query("PRAGMA busy_timeout") == [(10000,)]
    with connect(f"sqlite:///{tmp_path}/p.db?synchronous=normal&busy_timeout_ms=250") as db:
        assert db.query("PRAGMA synchronous") == [(1,)]
        assert db.query("PRAGMA busy_timeout") == [(250,)]


_CHILD = """
import os, signal, sys
from router.realtime import Binding, connect
db = connect(sys.argv[1])
for batch in range(5):
    db.location_upsert_many(
        Binding(f"r{batch}-{i}", str(i), None, f"sip:{i}@10.0.0.{batch}", expires=10**10)
        for i in range(40)
    )
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("synchronous", ["full", "normal"])
def test_engine_bindings_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    """A child commits, then SIGKILLs itself at once: a fresh connection sees every row.

    ``normal`` is included to back the claim in ``engine.py`` that WAL + NORMAL also survives
    a process kill (it only risks power loss)."""
    url = f"sqlite:///{tmp_path}/dur.db?synchronous={synchronous}"
    with connect(url) as db:
        db.init_schema()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout == "committed\n"
    # The rows are still in the WAL (no clean close checkpointed them).
    assert (tmp_path / "dur.db-wal").stat().st_size > 0
    with connect(url) as db:
        assert db.location_count() == 200
        assert len(db.location_lookup("39", None, now=0)) == 5


def test_engine_writer_waits_for_busy_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/busy.db"
    with connect(url) as holder, connect(url) as waiter:
        holder.init_schema()
        locked = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with holder.transaction():
                holder.location_upsert_many([Binding("a", "1", None, "sip:1@h", expires=9)])
                locked.set()
                release.wait(10)

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            assert locked.wait(10)
            threading.Timer(0.3, release.set).start()
            started = time.perf_counter()
            waiter.location_upsert_many([Binding("b", "2", None, "sip:2@h", expires=9)])
            waited = time.perf_counter() - started
        finally:
            release.set()
            thread.join(10)
        assert waited >= 0.2
        assert waiter.location_count() == 2


_WRITER = """
import sys
from router.realtime import Binding, connect
db = connect(sys.argv[1])
node = sys.argv[2]
for i in range(60):
    db.location_upsert_many([Binding(f"{node}-{i}", node, None, f"sip:{i}@h", expires=10**10)])
    db.member_state_try_acquire("PJSIP/shared", node=node, call_id=f"{node}-{i}", now=float(i))
"""


def test_engine_router_and_three_nodes_share_one_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db?synchronous=normal"
    with connect(url) as db:
        db.init_schema()
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(_WRITER), url, node])
        for node in ("router", "pbx1", "pbx2", "pbx3")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]
    with connect(url) as db:
        assert db.location_count() == 240
        state = db.member_state_get("PJSIP/shared")
        assert state is not None
        assert state.in_call
        assert state.call_id == f"{state.node}-0"  # exactly one node ever acquired it
