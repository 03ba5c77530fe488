"""Hypothesis properties of the wire layer.

* any bytes -> a message or SipParseError, nothing else (h11 fuzz/afl-server.py's invariant);
* serialize(parse(x)) parses back to an equal message, on generated well-formed messages;
* StreamFramer gives the same messages whatever the chunking.
"""

from __future__ import annotations

import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from router.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    parse_untrusted,
    serialize,
)

CORPUS = sorted((pathlib.Path(__file__).parent.parent / "data" / "rfc4475").glob("*.sip"))
SEEDS = [p.read_bytes() for p in CORPUS]

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
URI_WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()",
    min_size=1,
    max_size=10,
)
HOST = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6), min_size=1, max_size=3
).map(".".join)
PORT = st.one_of(st.none(), st.integers(1, 65535))
METHOD = st.sampled_from(
    ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "X-NEW"]
)
DISPLAY = st.one_of(
    st.none(),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\r\n"),
        min_size=1,
        max_size=10,
    ),
)
TEXT_VALUE = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs", "Cc", "Zl", "Zp"], blacklist_characters="\r\n"
    ),
    max_size=20,
).map(str.strip)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    user = draw(st.one_of(st.none(), URI_WORD))
    port = draw(PORT)
    host = draw(st.one_of(HOST, st.just("[2001:db8::1]")))
    params = draw(st.lists(st.tuples(URI_WORD, st.one_of(st.none(), URI_WORD)), max_size=3))
    out = "sip:" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")
    return out + "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool) -> str:
    display = draw(DISPLAY)
    head = f"{_quote(display)} " if display else ""
    value = f"{head}<{draw(sip_uris())}>"
    if tag:
        value += f";tag={draw(TOKEN)}"
    return value


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(METHOD)
    vias = [
        f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(HOST)}"
        + (f":{p}" if (p := draw(PORT)) else "")
        + f";branch=z9hG4bK{draw(TOKEN)}"
        + draw(st.sampled_from(["", ";rport", ";rport=5060;received=10.0.0.1"]))
        for _ in range(draw(st.integers(1, 3)))
    ]
    fields: list[tuple[str, str]] = [(draw(st.sampled_from(["Via", "v", "VIA"])), v) for v in vias]
    fields += [
        (draw(st.sampled_from(["From", "f"])), draw(name_addrs(True))),
        (draw(st.sampled_from(["To", "t"])), draw(name_addrs(draw(st.booleans())))),
        (draw(st.sampled_from(["Call-ID", "i"])), f"{draw(TOKEN)}@{draw(HOST)}"),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]
    extra = draw(st.lists(st.tuples(TOKEN.map(lambda t: "X-" + t), TEXT_VALUE), max_size=4))
    fields += extra
    fields = draw(st.permutations(fields))
    body = draw(st.binary(max_size=64))
    fields.append(("Content-Length", str(len(body))))
    headers = Headers(fields)
    if draw(st.booleans()):
        return Request(method, draw(sip_uris()), headers, body)
    status = draw(st.integers(100, 699))
    return Response(status, draw(TEXT_VALUE), headers, body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parser_any_bytes_parse_or_parse_error(data: bytes) -> None:
    try:
        parse_untrusted(data)
    except SipParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_parser_mutated_corpus_parse_or_parse_error(seed: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(seed)))
    insert = data.draw(st.binary(max_size=8))
    drop = data.draw(st.integers(0, 8))
    mutated = seed[:cut] + insert + seed[cut + drop :]
    try:
        message = parse_untrusted(mutated)
    except SipParseError:
        return
    # Whatever parsed must survive the typed accessors with SipParseError at worst.
    for attr in ("vias", "contacts", "routes", "record_routes", "expires", "content_type"):
        try:
            getattr(message, attr)
        except SipParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(messages())
def test_parser_round_trip_generated(message: Request | Response) -> None:
    parsed = parse_untrusted(serialize(message))
    assert parsed == message
    assert parse_untrusted(serialize(parsed)) == parsed
    assert parsed.cseq == message.cseq
    assert parsed.vias == message.vias
    assert parsed.from_ == message.from_
    assert parsed.to == message.to


@settings(max_examples=80, deadline=None)
@given(st.lists(messages(), min_size=1, max_size=4), st.data())
def test_framer_chunking_does_not_matter(
    batch: list[Request | Response], data: st.DataObject
) -> None:
    wires = [serialize(m) for m in batch]
    stream = b"".join(wires)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    framer = StreamFramer()
    out: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        framer.feed(stream[start:cut])
        start = cut
        while (message := framer.next_message()) is not None:
            out.append(message)
    assert out == wires
    assert [parse_untrusted(w) for w in out] == batch
