"""Store operations, run on SQLite and (marked ``postgres``) on PostgreSQL."""

from __future__ import annotations

import pytest

from router.realtime import (
    Binding,
    ContactRow,
    Database,
    DispatcherRow,
    MemberState,
    RealtimeError,
    connect,
)
from router.realtime import schema as sch


def _binding(ruid: str, user: str = "100", contact: str = "sip:100@10.0.0.1:5060", **kw: object):
    values: dict[str, object] = {
        "ruid": ruid,
        "username": user,
        "domain": None,
        "contact": contact,
        "expires": 1_000,
    }
    values.update(kw)
    return Binding(**values)  # type: ignore[arg-type]


def test_schema_init_is_idempotent_and_versioned(db: Database) -> None:
    db.init_schema()
    assert db.schema_version() == sch.SCHEMA_VERSION
    for table in sch.TABLES:
        assert db.count(table.name) == (1 if table.name == "siplab_meta" else 0)


def test_schema_version_mismatch_is_reported(db_url: str) -> None:
    with connect(db_url) as database:
        assert database.schema_version() is None
        database.init_schema()
    with connect(db_url) as database:
        database.execute("""UPDATE siplab_meta SET "value" = '999'""")  # a future schema
    with connect(db_url) as database, pytest.raises(RealtimeError, match="schema version 999"):
        database.init_schema()


def test_provision_users_rows(db: Database) -> None:
    users = db.provision_users(5, 200, domain="lab.test", context="users", seed=7, max_contacts=2)
    assert [u.username for u in users] == ["200", "201", "202", "203", "204"]
    assert {u.domain for u in users} == {"lab.test"}
    auth = db.get_auth("202")
    assert auth is not None
    assert (auth.auth_type, auth.username, auth.password) == ("userpass", "202", users[2].password)
    aor = db.get_aor("204")
    assert aor is not None
    assert (aor.max_contacts, aor.remove_existing) == (2, "yes")
    listed = db.list_users()
    assert [u.id for u in listed] == ["200", "201", "202", "203", "204"]
    assert listed[0].context == "users"
    assert db.get_auth("999") is None
    assert db.get_aor("999") is None
    # Same seed, same passwords; re-provisioning overwrites instead of failing.
    again = db.provision_users(5, 200, domain="lab.test", context="users", seed=7)
    assert again == users
    assert db.count("ps_endpoints") == 5


def test_provision_users_validates(db: Database) -> None:
    with pytest.raises(ValueError, match="max_contacts"):
        db.provision_users(1, 1, domain="d", context="c", max_contacts=0)
    with pytest.raises(ValueError, match=">= 0"):
        db.provision_users(-1, 1, domain="d", context="c")


def test_provision_router_endpoint(db: Database) -> None:
    db.provision_router_endpoint(
        "127.0.0.10", aors=["router"], context="from-router", contact="sip:127.0.0.10:5060"
    )
    rows = db.query('SELECT endpoint, "match" FROM ps_endpoint_id_ips')
    assert rows == [("router", "127.0.0.10")]
    endpoint = db.query("SELECT auth, identify_by, context FROM ps_endpoints")
    assert endpoint == [(None, "ip", "from-router")]
    aor = db.get_aor("router")
    assert aor is not None
    assert aor.contact == "sip:127.0.0.10:5060"


def test_location_upsert_lookup_purge(db: Database) -> None:
    db.location_upsert_many(
        [
            _binding("r1", contact="sip:100@10.0.0.1", expires=1_100, q=0.5),
            _binding("r2", contact="sip:100@10.0.0.2", expires=1_200, q=1.0),
            _binding("r3", user="101", contact="sip:101@10.0.0.3", expires=1_050),
            _binding("r4", user="102", contact="sip:102@gw", expires=0),  # permanent
        ]
    )
    assert db.location_count() == 4
    found = db.location_lookup("100", None, now=1_000.0)
    assert [b.ruid for b in found] == ["r2", "r1"]  # highest q first
    assert db.location_lookup("100", "other.domain", now=1_000.0) == []
    assert [b.ruid for b in db.location_lookup("100", None, now=1_150.0)] == ["r2"]
    # Refresh r1 (same ruid): updated in place.
    db.location_upsert_many([_binding("r1", contact="sip:100@10.0.0.1", expires=2_000, cseq=7)])
    refreshed = db.location_lookup("100", None, now=1_150.0)
    assert {b.ruid: b.cseq for b in refreshed} == {"r1": 7, "r2": 1}
    assert db.location_count() == 4
    assert db.location_purge_expired(now=1_100.0) == 1  # r3
    assert db.location_purge_expired(now=1_100.0) == 0
    assert [b.ruid for b in db.location_lookup("102", None, now=1e12)] == ["r4"]
    assert db.location_purge_expired(now=1e12) == 2  # r1, r2; r4 is permanent
    assert [b.ruid for b in db.location_all()] == ["r4"]


def test_location_domain_and_delete(db: Database) -> None:
    db.location_upsert_many(
        [
            _binding("a", domain="lab", contact="sip:100@1"),
            _binding("b", domain="lab", contact="sip:100@2"),
            _binding("c", domain=None, contact="sip:100@3"),
        ]
    )
    assert len(db.location_lookup("100", "lab", now=0)) == 2
    assert db.location_delete("100", "lab", contacts=["sip:100@2", "sip:nope"]) == 1
    assert [b.ruid for b in db.location_lookup("100", "lab", now=0)] == ["a"]
    assert db.location_delete("100", None) == 1
    assert db.location_delete_ruids(["a", "zzz"]) == 1
    assert db.location_count() == 0


def test_location_full_binding_round_trip(db: Database) -> None:
    binding = Binding(
        ruid="uloc-1",
        username="100",
        domain="lab",
        contact="sip:100@192.168.1.5:5060;transport=udp",
        expires=1_700_000_000,
        q=0.8,
        callid="abc@host",
        cseq=42,
        last_modified=1_699_999_000,
        received="sip:203.0.113.5:40000",
        path="<sip:127.0.0.10;lr>",
        flags=1,
        cflags=64,
        user_agent="SIPp",
        socket="udp:127.0.0.10:5060",
        methods=8191,
        instance="<urn:uuid:1>",
        reg_id=1,
        server_id=2,
        connection_id=3,
        keepalive=1,
        partition=0,
    )
    db.location_upsert_many([binding])
    assert db.location_all() == [binding]


def _failing_batch(db: Database) -> None:
    with db.transaction():
        db.location_upsert_many([_binding("x1")])
        db.location_delete("100", None)
        db.location_upsert_many([_binding("x2")])
        raise RuntimeError("registrar failed mid-batch")


def test_location_group_commit_is_atomic(db: Database) -> None:
    with pytest.raises(RuntimeError, match="mid-batch"):
        _failing_batch(db)
    assert db.location_count() == 0
    with db.transaction():
        db.location_upsert_many([_binding("x1")])
        db.location_upsert_many([_binding("x2")])
    assert db.location_count() == 2


def test_contacts_for_aor_prefix_and_expiry(db: Database) -> None:
    rows = [
        ContactRow("101;@aaa", "sip:101@1.1.1.1", 500, endpoint="101", reg_server="pbx1"),
        ContactRow("101;@aaa", "sip:101@1.1.1.1", 600, endpoint="101", reg_server="pbx2"),
        ContactRow("101;@bbb", "sip:101@2.2.2.2", 100, endpoint="101", reg_server="pbx1"),
        ContactRow("1010;@ccc", "sip:1010@3.3.3.3", 900, endpoint="1010", reg_server="pbx1"),
        ContactRow("10;@ddd", "sip:10@4", 900, reg_server="pbx1", prune_on_boot="yes"),
    ]
    db.contacts_upsert(rows)
    found = db.contacts_for_aor("101", now=200)
    assert [(c.id, c.reg_server) for c in found] == [("101;@aaa", "pbx2"), ("101;@aaa", "pbx1")]
    assert found[0].aor == "101"
    assert [c.id for c in db.contacts_for_aor("10", now=0)] == ["10;@ddd"]
    # Upsert on (id, reg_server) updates in place.
    db.contacts_upsert([ContactRow("101;@aaa", "sip:101@1.1.1.1", 700, reg_server="pbx1")])
    assert db.count("ps_contacts") == 5
    assert db.contacts_delete("101;@aaa", "pbx2") == 1
    assert db.contacts_purge_expired(now=150) == 1
    assert db.contacts_prune_on_boot("pbx1") == 1
    assert db.contacts_delete("101;@aaa") == 1
    assert [c.id for c in db.contacts_for_aor("1010", now=0)] == ["1010;@ccc"]


def test_queue_add_members_and_pause(db: Database) -> None:
    queue = db.queue_add(
        "support",
        "rrordered",
        ["PJSIP/101", "PJSIP/102", "PJSIP/103"],
        penalties={"PJSIP/103": 2},
        wrapuptime=5,
    )
    assert db.queue_get("support") == queue
    assert db.queue_get("nope") is None
    members = db.queue_members("support")
    assert [m.interface for m in members] == ["PJSIP/101", "PJSIP/102", "PJSIP/103"]
    assert [m.membername for m in members] == ["101", "102", "103"]
    assert members[2].penalty == 2
    assert len({m.uniqueid for m in members}) == 3
    db.queue_add("sales", "ringall", ["PJSIP/101"])
    sales = db.queue_members("sales")
    assert sales[0].uniqueid not in {m.uniqueid for m in members}
    # Re-adding keeps uniqueid and updates penalty.
    db.queue_add("support", "rrordered", ["PJSIP/101"], penalties={"PJSIP/101": 1})
    again = db.queue_members("support")
    assert again[0].uniqueid == members[0].uniqueid
    assert again[0].penalty == 1
    assert db.queue_member_pause("support", "PJSIP/102", True, "lunch")
    paused = db.queue_members("support")[1]
    assert (paused.paused, paused.reason_paused) == (1, "lunch")
    assert db.queue_member_pause("support", "PJSIP/102", False)
    assert db.queue_members("support")[1].paused == 0
    assert not db.queue_member_pause("support", "PJSIP/999", True)


def test_member_state_acquire_release(db: Database) -> None:
    assert db.member_state_get("PJSIP/101") is None
    assert db.member_state_try_acquire("PJSIP/101", node="pbx1", call_id="c1", now=10.0)
    assert not db.member_state_try_acquire("PJSIP/101", node="pbx2", call_id="c2", now=11.0)
    state = db.member_state_get("PJSIP/101")
    assert state == MemberState("PJSIP/101", "pbx1", True, "c1", 10.0, None)
    assert not db.member_state_release("PJSIP/101", call_id="c2", now=12.0)
    assert db.member_state_release("PJSIP/101", call_id="c1", now=20.0)
    freed = db.member_state_get("PJSIP/101")
    assert freed is not None
    assert (freed.in_call, freed.last_call_end) == (False, 20.0)
    assert db.member_state_try_acquire("PJSIP/101", node="pbx2", call_id="c3", now=21.0)
    # A node that died mid-call: taken over only after stale_after, or by release_node.
    assert not db.member_state_try_acquire(
        "PJSIP/101", node="pbx3", call_id="c4", now=50.0, stale_after=60.0
    )
    assert db.member_state_try_acquire(
        "PJSIP/101", node="pbx3", call_id="c4", now=90.0, stale_after=60.0
    )
    assert db.member_state_release_node("pbx3", now=91.0) == 1
    db.member_state_set(MemberState("PJSIP/102", "pbx1", True, "c9", 1.0, None))
    got = db.member_state_get("PJSIP/102")
    assert got is not None
    assert got.in_call is True


def test_member_state_race_between_connections(db_url: str) -> None:
    with connect(db_url) as first, connect(db_url) as second:
        first.init_schema()
        wins = [
            first.member_state_try_acquire("PJSIP/7", node="pbx1", call_id="a", now=1.0),
            second.member_state_try_acquire("PJSIP/7", node="pbx2", call_id="b", now=1.0),
        ]
    assert wins == [True, False]


def test_dispatcher_set_and_rows(db: Database) -> None:
    db.dispatcher_set(
        [
            DispatcherRow(1, "sip:127.0.0.11:5060", flags=8, priority=10, attrs="duid=pbx1"),
            DispatcherRow(1, "sip:127.0.0.12:5060", attrs="duid=pbx2;weight=50"),
            DispatcherRow(2, "sip:127.0.0.13:5060", description="backup"),
        ]
    )
    rows = db.dispatcher_rows()
    assert [(r.setid, r.destination, r.flags, r.priority) for r in rows] == [
        (1, "sip:127.0.0.11:5060", 8, 10),
        (1, "sip:127.0.0.12:5060", 0, 0),
        (2, "sip:127.0.0.13:5060", 0, 0),
    ]
    assert all(r.id is not None for r in rows)
    db.dispatcher_set([DispatcherRow(3, "sip:127.0.0.14")])
    assert [r.destination for r in db.dispatcher_rows()] == ["sip:127.0.0.14"]


def test_count_rejects_unknown_table(db: Database) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        db.count("sqlite_master")
