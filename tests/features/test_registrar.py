"""Registrar rules (Kamailio save()/lookup(), SIP-REFERENCE §2.2-2.3), with explicit time."""

from __future__ import annotations

import pytest

from router.features.registrar import Registrar, RegistrarConfig, SaveAction, SaveResult
from router.realtime import Binding
from router.sip import Headers, Request, parse_contact_list

T0 = 1_700_000_000.0


def register(
    *contacts: str,
    user: str = "101",
    call_id: str = "call-1",
    cseq: int = 1,
    expires: int | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-r1;rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{user}@example.com>;tag=f1"),
            ("To", f"<sip:{user}@example.com>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
        ]
    )
    for c in contacts:
        headers.add("Contact", c)
    if expires is not None:
        headers.add("Expires", str(expires))
    for name, value in extra:
        headers.add(name, value)
    return Request("REGISTER", "sip:example.com", headers)


def header(result: SaveResult, name: str) -> str | None:
    return next((v for n, v in result.headers if n.lower() == name.lower()), None)


def listed(result: SaveResult) -> dict[str, tuple[int | None, float | None]]:
    value = header(result, "Contact")
    if value is None:
        return {}
    return {str(c.uri): (c.expires, c.q) for c in parse_contact_list(value)}


@pytest.fixture
def reg() -> Registrar:
    return Registrar(RegistrarConfig())


def test_registrar_insert_uses_default_expires_and_lists_binding(reg: Registrar) -> None:
    result = reg.save(register("<sip:101@192.0.2.7:5062>"), now=T0, received="sip:192.0.2.7:5062")
    assert (result.status, result.action) == (200, SaveAction.INSERTED)
    assert listed(result) == {"sip:101@192.0.2.7:5062": (3600, None)}
    assert header(result, "Date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    (b,) = result.upserts
    assert (b.username, b.expires, b.received, b.callid, b.cseq) == (
        "101",
        int(T0) + 3600,
        "sip:192.0.2.7:5062",
        "call-1",
        1,
    )
    assert reg.lookup("101", T0 + 10) == [b]


def test_registrar_expires_param_beats_header_beats_default(reg: Registrar) -> None:
    result = reg.save(register("<sip:a@h1>;expires=120", "<sip:b@h2>", expires=300), now=T0)
    assert listed(result) == {"sip:a@h1": (120, None), "sip:b@h2": (300, None)}


def test_registrar_unparsable_expires_param_falls_back(reg: Registrar) -> None:
    result = reg.save(register("<sip:a@h1>;expires=soon", expires=200), now=T0)
    assert listed(result) == {"sip:a@h1": (200, None)}


def test_registrar_low_expires_raised_high_capped(reg: Registrar) -> None:
    result = reg.save(register("<sip:a@h1>;expires=10", "<sip:b@h2>;expires=99999"), now=T0)
    assert listed(result) == {"sip:a@h1": (60, None), "sip:b@h2": (3600, None)}


def test_registrar_min_expires_mode_1_answers_423_and_changes_nothing() -> None:
    reg = Registrar(RegistrarConfig(min_expires_mode=1))
    result = reg.save(register("<sip:a@h1>;expires=3600", "<sip:b@h2>;expires=30"), now=T0)
    assert result.status == 423
    assert header(result, "Min-Expires") == "60"
    assert header(result, "P-Registrar-Error") is not None
    assert reg.lookup("101", T0) == []


def test_registrar_expires_zero_deletes(reg: Registrar) -> None:
    first = reg.save(register("<sip:a@h1>", "<sip:b@h2>"), now=T0)
    result = reg.save(register("<sip:a@h1>;expires=0", cseq=2), now=T0 + 5)
    assert result.action is SaveAction.DELETED
    assert [b.ruid for b in result.deletes] == [first.upserts[0].ruid]
    assert list(listed(result)) == ["sip:b@h2"]


def test_registrar_star_needs_expires_zero(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>"), now=T0)
    for req in (register("*", cseq=2), register("*", cseq=2, expires=60)):
        result = reg.save(req, now=T0)
        assert result.status == 400
        assert header(result, "P-Registrar-Error") == "* used in contact and expires is not zero"
    assert len(reg.lookup("101", T0)) == 1


def test_registrar_star_must_be_alone(reg: Registrar) -> None:
    result = reg.save(register("*", "<sip:a@h1>", expires=0), now=T0)
    assert result.status == 400
    assert header(result, "P-Registrar-Error") == "* used in contact and more than 1 contact"


def test_registrar_star_removes_every_binding(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>", "<sip:b@h2>"), now=T0)
    result = reg.save(register("*", cseq=2, expires=0), now=T0 + 1)
    assert (result.status, result.action) == (200, SaveAction.DELETED)
    assert len(result.deletes) == 2
    assert header(result, "Contact") is None
    assert reg.lookup("101", T0 + 1) == []


def test_registrar_q_values_stored_listed_and_ordered(reg: Registrar) -> None:
    result = reg.save(register("<sip:low@h1>;q=0.1", "<sip:high@h2>;q=0.9"), now=T0)
    assert listed(result) == {"sip:low@h1": (3600, 0.1), "sip:high@h2": (3600, 0.9)}
    assert [b.contact for b in reg.lookup("101", T0)] == ["sip:high@h2", "sip:low@h1"]


def test_registrar_invalid_q_is_400(reg: Registrar) -> None:
    result = reg.save(register("<sip:a@h1>;q=2"), now=T0)
    assert result.status == 400
    assert header(result, "P-Registrar-Error") == "Invalid q param in contact"


def test_registrar_max_contacts_503(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>"), now=T0, max_contacts=1)
    result = reg.save(register("<sip:b@h2>", call_id="other"), now=T0, max_contacts=1)
    assert result.status == 503
    assert header(result, "P-Registrar-Error") == "Too many registered contacts"
    # Replacing the contact in one request (remove a, add b) fits.
    swap = reg.save(register("<sip:a@h1>;expires=0", "<sip:b@h2>", cseq=2), now=T0, max_contacts=1)
    assert swap.status == 200
    assert list(listed(swap)) == ["sip:b@h2"]


def test_registrar_max_contacts_zero_forbids(reg: Registrar) -> None:
    result = reg.save(register("<sip:a@h1>"), now=T0, max_contacts=0)
    assert result.status == 403


def test_registrar_lower_cseq_same_call_id_400(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>", cseq=5), now=T0)
    result = reg.save(register("<sip:a@h1>", cseq=4), now=T0 + 1)
    assert result.status == 400
    assert header(result, "P-Registrar-Error") == "Invalid CSeq number"


def test_registrar_equal_cseq_within_delay_is_retransmission(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>", cseq=5, expires=100), now=T0)
    result = reg.save(register("<sip:a@h1>", cseq=5, expires=100), now=T0 + 20)
    assert (result.status, result.action, result.changed) == (200, SaveAction.RETRANSMISSION, False)
    assert listed(result) == {"sip:a@h1": (80, None)}
    late = reg.save(register("<sip:a@h1>", cseq=5), now=T0 + 21)
    assert late.status == 400


def test_registrar_other_call_id_updates(reg: Registrar) -> None:
    first = reg.save(register("<sip:a@h1>", cseq=5), now=T0)
    result = reg.save(register("<sip:a@h1>", call_id="new", cseq=1, expires=600), now=T0 + 1)
    assert result.action is SaveAction.UPDATED
    assert result.upserts[0].ruid == first.upserts[0].ruid
    assert result.upserts[0].callid == "new"


def test_registrar_query_without_contact(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>", expires=100), now=T0)
    result = reg.save(register(cseq=2), now=T0 + 40)
    assert (result.status, result.action, result.changed) == (200, SaveAction.QUERY, False)
    assert listed(result) == {"sip:a@h1": (60, None)}


def test_registrar_path_stored_and_echoed_only_with_supported(reg: Registrar) -> None:
    path = (("Path", "<sip:edge.example.com;lr>"),)
    plain = reg.save(register("<sip:a@h1>", extra=path), now=T0)
    assert plain.upserts[0].path == "<sip:edge.example.com;lr>"
    assert header(plain, "Path") is None
    echoed = reg.save(register("<sip:a@h1>", cseq=2, extra=(*path, ("Supported", "path"))), now=T0)
    assert header(echoed, "Path") == "<sip:edge.example.com;lr>"


def test_registrar_non_sip_to_is_416(reg: Registrar) -> None:
    req = register("<sip:a@h1>")
    req.headers.set("To", "<tel:+15551234>")
    assert reg.save(req, now=T0).status == 416


def test_registrar_expiry_lookup_and_purge(reg: Registrar) -> None:
    reg.save(register("<sip:a@h1>", expires=100), now=T0)
    reg.save(register("<sip:b@h2>", expires=300, call_id="x"), now=T0)
    assert len(reg.lookup("101", T0 + 99)) == 2
    assert [b.contact for b in reg.lookup("101", T0 + 100)] == ["sip:b@h2"]
    assert reg.next_expiry() == T0 + 100
    gone = reg.purge_expired(T0 + 100)
    assert [b.contact for b in gone] == ["sip:a@h1"]
    assert reg.count() == 1
    assert reg.lookup_contact("sip:a@h1", T0 + 100) is None
    assert reg.lookup_contact("sip:b@h2", T0 + 100) is not None


def test_registrar_reregister_after_expiry_deletes_stale_row(reg: Registrar) -> None:
    old = reg.save(register("<sip:a@h1>", expires=60), now=T0).upserts[0]
    result = reg.save(register("<sip:a@h1>", cseq=2), now=T0 + 61)
    assert [b.ruid for b in result.deletes] == [old.ruid]
    assert result.upserts[0].ruid != old.ruid
    assert reg.count() == 1


def test_registrar_load_skips_expired() -> None:
    reg = Registrar(RegistrarConfig())
    live = Binding("r1", "101", None, "sip:a@h1", int(T0) + 50)
    dead = Binding("r2", "101", None, "sip:b@h1", int(T0) - 1)
    permanent = Binding("r3", "102", None, "sip:c@h1", 0)
    assert reg.load([live, dead, permanent], T0) == [dead]
    assert reg.lookup("101", T0) == [live]
    assert reg.lookup("102", T0 + 10**6) == [permanent]
