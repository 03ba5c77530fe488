"""The PostgreSQL the lab starts itself (issue 6), and Kamailio on it.

Two labs on net 76 (127.76.0.x), one after the other: the reference router with
``[db] kind = "postgres"`` (the db node, its PID, provisioning, readiness, a clean ``down``),
then Kamailio in the router's seat with no DB given, which defaults to the lab's PostgreSQL: a
200-user SIPp registration storm all succeeds (on SQLite a third failed with "database is
locked", ``differences.sqlite_concurrency``), and a PBX node's ``Dial(PJSIP/301)`` reaches the
registered phone back through Kamailio (Path).

Run folders are made below /tmp, not in pytest's tmp_path: PostgreSQL runs as the ``postgres``
user when the suite runs as root, and pytest's ``/tmp/pytest-of-<user>`` is mode 0700.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from lab.backends import get_backend
from lab.backends.local import options_ping, proc_state
from lab.backends.postgres import postgres_bindir
from lab.engines import SippRun, run_sipp, sipp_binary, uac_register
from lab.labfile import read_labfile
from lab.pytest_plugin import Lab
from lab.requires import missing_tool, needs
from lab.routers.kamailio import kamailio_binary
from lab.topology import DbSpec, RouterSpec, Topology, default_topology
from lab.ua.ua import open_ua
from router.realtime import connect
from router.realtime.astcodec import ast_encode
from router.sip import Request

NET = 76

pytestmark = [
    pytest.mark.lab,
    pytest.mark.postgres,
    needs(
        postgres_bindir() is not None, "PostgreSQL (initdb, postgres) missing (Debian postgresql)"
    ),
]


def _topology(**changes: object) -> Topology:
    t = default_topology(pbx=2)
    t = replace(
        t,
        users=replace(t.users, count=220),
        timers=replace(t.timers, time_scale=0.5),
        net=NET,
    )
    return replace(t, **changes)  # type: ignore[arg-type]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="siplab-pg-", dir="/tmp"))
    path.chmod(0o755)  # the postgres user must reach <run>/pgdata
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def test_lab_up_with_db_kind_postgres_runs_provisions_and_stops_it(run_dir: Path) -> None:
    topology = _topology(
        db=DbSpec(kind="postgres"), users=replace(default_topology().users, count=20)
    )
    backend = get_backend("local")
    lab = Lab(backend, backend.up(topology, run_dir), topology)
    try:
        written = read_labfile(run_dir)
        db = written.node("db")
        assert (db.role, db.kind, db.host, db.port) == ("db", "postgresql", f"127.{NET}.0.5", 5432)
        assert db.pid
        assert backend.node_state(db).value == "up"
        assert Path(f"/proc/{db.pid}/comm").read_text().strip() == "postgres"
        assert written.db == f"postgresql://siplab:siplab@127.{NET}.0.5:5432/siplab"
        assert written.nodes[0].name == "db"  # started first

        store = connect(written.db)
        try:
            assert store.query("SELECT count(*) FROM ps_auths")[0][0] == 20
            assert store.query("SELECT count(*) FROM dispatcher")[0][0] == 2
            assert store.query("SHOW fsync")[0][0] == "on"  # durability claim holds
        finally:
            store.close()
        assert len(Path(written.users_csv).read_text().splitlines()) == 21  # header + users
        host, port = lab.router.host, lab.router.port
        assert options_ping(host, port, source=topology.generator_host(0), timeout=2.0) == 200
    finally:
        lab.down()
    assert proc_state(db.pid) is proc_state(None)  # DOWN
    assert _group_alive(db.pid) == []
    assert not (run_dir / "pgdata" / "postmaster.pid").exists()
    assert list((run_dir / "pgsock").iterdir()) == []
    assert all(n.pid is None for n in read_labfile(run_dir).nodes)


def test_run_folder_in_a_private_home_gets_a_cluster_postgres_can_reach() -> None:
    """A clone in root's home (mode 0700): the ``postgres`` user cannot reach a data folder
    below it, so the lab puts the cluster in a per-run folder of its own, records it in
    lab.json (the db node's cwd), and removes it at ``down``; the lab works as usual."""
    private = Path(tempfile.mkdtemp(prefix="siplab-home-", dir="/tmp"))  # mkdtemp: mode 0700
    run_dir = private / "clone" / "runs" / "lab"
    topology = _topology(
        db=DbSpec(kind="postgres"), users=replace(default_topology().users, count=20)
    )
    backend = get_backend("local")
    try:
        lab = Lab(backend, backend.up(topology, run_dir), topology)
        try:
            db = read_labfile(run_dir).node("db")
            data_dir = Path(db.cwd)
            if os.geteuid() == 0:  # postgres runs as the `postgres` user: outside the home
                assert not data_dir.is_relative_to(private), data_dir
            assert (data_dir / "PG_VERSION").is_file()
            assert Path(db.log) == run_dir / "logs" / "db.log"  # the log stays in the run
            assert _count(lab, "SELECT count(*) FROM ps_auths") == 20
        finally:
            lab.down()
        if os.geteuid() == 0:
            assert not data_dir.parent.exists()
        assert _group_alive(db.pid or 0) == []
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.fixture
def kamailio_lab(run_dir: Path) -> Iterator[Lab]:
    if kamailio_binary() is None:
        missing_tool("Kamailio not installed (Debian package kamailio)")
    topology = _topology(router=RouterSpec(kind="kamailio"))
    assert topology.lab_postgres  # the Kamailio default
    backend = get_backend("local")
    lab = Lab(backend, backend.up(topology, run_dir), topology)
    try:
        yield lab
    finally:
        lab.down()


def _count(lab: Lab, sql: str) -> int:
    store = connect(lab.db_url)
    try:
        return int(store.query(sql)[0][0])
    finally:
        store.close()


@pytest.mark.kamailio
@pytest.mark.sipp
@needs(sipp_binary() is not None, "SIPp not installed (Debian package sip-tester)")
async def test_kamailio_on_lab_postgres_takes_a_registration_storm(kamailio_lab: Lab) -> None:
    lab = kamailio_lab
    assert lab.node("db").pid
    assert lab.db_url.startswith("postgresql://")
    # The lab hands Kamailio its settings as -A defines (docs/kamailio-contract.md).
    argv = shlex.split((lab.run_dir / "kamailio" / "kamailio.argv").read_text())
    defines = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-A"]
    assert any(
        d.startswith(("DB_URL=postgres://siplab:siplab@", 'DB_URL="postgres://siplab:siplab@'))
        for d in defines
    ), defines
    assert "CHILDREN=4" in defines, defines

    # 1. 200 users of the lab's users.csv at 200/s: REGISTER, 401, REGISTER with digest, 200
    run = SippRun(
        uac_register(600),
        local_ip=lab.topology.generator_host(0),
        remote=lab.entry(),
        rate=200,
        max_calls=200,
        injection=lab.users_csv,
        timeout_s=20,
        name="storm200",
    )
    result = run_sipp(run, lab.run_dir / "storm200")
    assert (result.successful, result.failed) == (200, 0)
    assert _count(lab, "SELECT count(*) FROM location") == 200
    # every registration was forwarded to the nodes with the router's Path (uac_req_send is
    # asynchronous: the nodes store them shortly after the phones' 200s)
    # (stored as Asterisk's realtime driver stores it: ';' as '^3B', router/realtime/astcodec.py)
    path = ast_encode(f"<sip:{lab.router.host}:{lab.router.port};lr>")
    sql = f"SELECT count(DISTINCT id) FROM ps_contacts WHERE path = '{path}'"
    for _ in range(50):
        if _count(lab, sql) >= 200:
            break
        await trio.sleep(0.2)
    assert _count(lab, sql) == 200

    # 2. a PBX node calls a registered phone: extension 301 -> Dial(PJSIP/301) -> Path ->
    # Kamailio lookup("location") -> the phone. (Users 100..299 are bound to the storm's
    # contact already; a second contact would exceed ps_aors.max_contacts = 1:
    # 503, from either router.)
    users = dict(re.findall(r"username=(\S+) password=(\S+)\]", lab.users_csv.read_text()))
    phone_ip, caller_ip = lab.topology.generator_host(1), lab.topology.generator_host(2)
    async with (
        open_ua(
            local=(phone_ip, 0), proxy=lab.entry(), user="301", password=users["301"],
            domain=lab.topology.users_domain,
        ) as phone,
        open_ua(local=(caller_ip, 0), proxy=lab.entry(), user="302", password=users["302"],
                domain=lab.topology.users_domain) as caller,
    ):  # fmt: skip
        assert (await phone.register(600)).status == 200
        # The forward to the nodes is asynchronous: wait until a node stored 301's contact.
        for _ in range(50):
            if _count(lab, "SELECT count(*) FROM ps_contacts WHERE substr(id, 1, 4) = '301;'") >= 1:
                break
            await trio.sleep(0.1)
        phone.auto_answer()
        call = await caller.call("301", timeout=10.0)
        answer = await call.wait_answered()
        assert answer.status == 200
        # the INVITE came back through Kamailio (lookup of the Path'd binding), from a PBX node
        invites = [
            m for m in phone.messages
            if m.direction == "in" and isinstance(m.message, Request) and m.message.method == "INVITE"
        ]  # fmt: skip
        assert invites
        assert invites[0].peer == lab.entry()
        assert invites[0].message.request_uri.host == phone_ip
        await call.hangup()
