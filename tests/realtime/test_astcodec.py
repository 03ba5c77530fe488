"""Asterisk's realtime encoding of ``;`` and ``^``, and ps_contacts rows shared between real
Asterisk nodes, the emulator and the router's reads (docs/asterisk-measurements.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lab.pbx.store import PbxStore, contact_id
from router.realtime.astcodec import ast_decode, ast_encode
from router.realtime.records import ContactRow
from router.realtime.store import Database, connect

URI = "sip:101@127.0.0.1:5062;transport=UDP"
MD5 = hashlib.md5(URI.encode()).hexdigest()


def test_encode_matches_what_asterisk_stored() -> None:
    assert ast_encode(f"101;@{MD5}") == f"101^3B@{MD5}"
    assert ast_encode("<sip:127.30.0.10:5060;lr>") == "<sip:127.30.0.10:5060^3Blr>"
    assert ast_encode("a^b") == "a^5Eb"
    assert ast_encode("plain") == "plain"


def test_decode_inverts_encode() -> None:
    for value in (URI, "a^b;c;;^", "^zz no escape", ""):
        assert ast_decode(ast_encode(value)) == value
    assert ast_decode("x^3by") == "x;y"  # lower-case hex decodes too


def test_emulator_writes_contacts_as_asterisk_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rt.db'}"
    store = PbxStore.open(url, create=True)
    store.save_contact(
        "101",
        URI,
        expiration_time=4_000_000_000,
        path="<sip:127.30.0.10:5060;lr>",
        user_agent="phone; v1",
        reg_server="pbx2",
        endpoint="101",
        call_id="c1",
        via=None,
    )
    assert contact_id("101", URI) == f"101^3B@{MD5}"
    raw = store.db.query("SELECT id, uri, path, user_agent FROM ps_contacts")
    assert raw == [
        (f"101^3B@{MD5}", "sip:101@127.0.0.1:5062^3Btransport=UDP",
         "<sip:127.30.0.10:5060^3Blr>", "phone^3B v1"),
    ]  # fmt: skip
    # The emulator reads its rows back decoded, and so does the router's store.
    (seen,) = store.contacts("101", now_epoch=0)
    assert (seen.uri, seen.paths) == (URI, ["<sip:127.30.0.10:5060;lr>"])
    db: Database = connect(url)
    (row,) = db.contacts_for_aor("101", now=0)
    assert (row.id, row.uri, row.aor) == (f"101;@{MD5}", URI, "101")
    store.delete_contact("101", URI)
    assert db.contacts_for_aor("101", now=0) == []
    db.close()
    store.close()


def test_router_store_reads_rows_a_real_node_wrote(db: Database) -> None:
    """A row as res_config_pgsql writes it (encoded) next to a plain one: both found, decoded,
    and an AOR that is a prefix of another (10 / 101) does not see the other's rows."""
    db.contacts_upsert(
        [
            ContactRow(f"101^3B@{MD5}", "sip:101@h^3Btransport=UDP", 900, reg_server="pbx1",
                       path="<sip:r^3Blr>"),
            ContactRow("101;@bbb", "sip:101@2.2.2.2", 800, reg_server="pbx2"),
            ContactRow("10^3B@ccc", "sip:10@h", 900, reg_server="pbx1"),
        ]
    )  # fmt: skip
    rows = db.contacts_for_aor("101", now=0)
    assert [(r.id, r.uri, r.path) for r in rows] == [
        (f"101;@{MD5}", "sip:101@h;transport=UDP", "<sip:r;lr>"),
        ("101;@bbb", "sip:101@2.2.2.2", None),
    ]
    assert [r.id for r in db.contacts_for_aor("10", now=0)] == ["10;@ccc"]
