"""``siplab fidelity --run``: the emulator held against real Asterisk, message by message.

Starts a one-node lab twice on the same addresses (``127.N.0.x``, time scale 1): first with an
emulated node (local backend), then with a real Asterisk 22 container (docker backend), and sends
both the same probes straight to the node, from the router's address (the node identifies the
router endpoint by IP, so a socket on that address with another port is "the router") or from a
stranger's. Every message the node sends back is recorded (first line, arrival time, the headers
that carry behaviour); each probe's messages are reduced to *facts* (status codes in order, the
challenge's parameters, Reason, Expires, ``Content-Length`` spacing, the 2xx retransmission
schedule rounded to 0.1 s) and the two lists are compared. The verdict of a probe is ``same`` or
``differs``; every difference gets its reason from :data:`REASONS` (or ``unexplained``). The
result is written as Markdown (``docs/fidelity.md``) with the raw lines of both sides.

Not covered here (named in the file): 486/503 answers (need a callee that is busy / a full
real node), queue member state across nodes and probing (scenarios/test_asterisk_usecases.py
and test_shared_queue.py measure them).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lab.backends import LabError
from lab.labfile import LabFile
from lab.topology import PbxSpec, Topology, UsersSpec

STRANGER = 201
"""Last octet of the address no endpoint identifies (127.N.0.201)."""
_COMPACT = {"v": "via", "i": "call-id", "m": "contact", "l": "content-length", "f": "from",
            "t": "to", "k": "supported"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Seen:
    """One message the node sent, as it came off the wire."""

    at: float
    """Seconds after the probe's request was sent."""
    first: str
    headers: tuple[tuple[str, str, str], ...]
    """(lower-case full name, value, raw line)."""

    def get(self, name: str) -> str | None:
        return next((v for n, v, _ in self.headers if n == name), None)

    def raw(self, name: str) -> str | None:
        return next((r for n, _, r in self.headers if n == name), None)

    @property
    def code(self) -> str:
        """``404`` for a response, the method for a request."""
        parts = self.first.split(" ", 2)
        return parts[1] if self.first.startswith("SIP/2.0") else parts[0]


def parse_seen(data: bytes, at: float) -> Seen:
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    headers = []
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip(), line))
    return Seen(at, head[0], tuple(headers))


@dataclass(frozen=True, slots=True)
class Ctx:
    """Addresses of the lab the probes run against."""

    node: tuple[str, int]
    router: str
    stranger: str
    domain: str
    user: str
    """A provisioned user with no contact (INVITE to it; REGISTER as it)."""


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    what: str
    run: Callable[[Ctx], list[Seen]]
    facts: Callable[[list[Seen]], list[str]]


# -- the wire ---------------------------------------------------------------------------------


def _request(ctx: Ctx, src: tuple[str, int], method: str, ruri: str, to: str,
             extra: list[str], body: str = "", cseq: int = 1) -> tuple[str, dict[str, str]]:  # fmt: skip
    branch = "z9hG4bK" + hashlib.md5(f"{time.time_ns()}{method}".encode()).hexdigest()[:16]
    ids = {
        "branch": branch,
        "from": f"<sip:{ctx.user}@{ctx.domain}>;tag=fid{time.time_ns() % 10**9}",
        "call-id": f"fidelity-{time.time_ns()}@{src[0]}",
        "ruri": ruri,
        "to": to,
        "cseq": str(cseq),
    }
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: {ids['from']}",
        f"To: {to}",
        f"Call-ID: {ids['call-id']}",
        f"CSeq: {cseq} {method}",
        *extra,
        f"Content-Length: {len(body.encode())}",
    ]
    return "\r\n".join(lines) + "\r\n\r\n" + body, ids


def _exchange(
    ctx: Ctx,
    source: str,
    method: str,
    ruri: str,
    *,
    to: str | None = None,
    extra: list[str] | None = None,
    body: str = "",
    window: float = 2.0,
    ack_2xx: bool = True,
) -> list[Seen]:
    """Send one request, collect what comes back for ``window`` s after the final response.

    A non-2xx final is ACKed (RFC 3261 §17.1.1.3); a 2xx too unless ``ack_2xx`` is False (then
    the 2xx retransmissions and the BYE that ends them are collected, and the BYE answered 200).
    """
    seen: list[Seen] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        src = sock.getsockname()[:2]
        headers = [h.replace("{src_port}", str(src[1])) for h in extra or []]
        text, ids = _request(ctx, src, method, ruri, to or f"<{ruri}>", headers, body)
        start = time.monotonic()
        sock.sendto(text.encode(), ctx.node)
        deadline = start + window
        final_at: float | None = None
        acked = False
        while (now := time.monotonic()) < deadline:
            sock.settimeout(deadline - now)
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                break
            msg = parse_seen(data, round(time.monotonic() - start, 3))
            seen.append(msg)
            if msg.first.startswith("SIP/2.0") and int(msg.code) >= 200:
                if final_at is None:
                    final_at = msg.at
                    deadline = time.monotonic() + window
                if method == "INVITE" and (int(msg.code) >= 300 or ack_2xx) and not acked:
                    acked = int(msg.code) >= 300  # 2xx ACKs are new transactions (each resend)
                    sock.sendto(_ack(msg, ids, src).encode(), peer)
            elif not msg.first.startswith("SIP/2.0"):  # a request (BYE): answer 200, stop soon
                sock.sendto(_ok(data).encode(), peer)
                deadline = time.monotonic() + 0.5
    return seen


def _ack(resp: Seen, ids: dict[str, str], src: tuple[str, int]) -> str:
    branch = ids["branch"] if int(resp.code) >= 300 else ids["branch"] + "a"
    lines = [
        f"ACK {ids['ruri']} SIP/2.0",
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: {ids['from']}",
        f"To: {resp.get('to') or ids['to']}",
        f"Call-ID: {ids['call-id']}",
        f"CSeq: {ids['cseq']} ACK",
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def _ok(request: bytes) -> str:
    """200 to an in-dialog request: its Via, From, To, Call-ID and CSeq copied."""
    lines = ["SIP/2.0 200 OK"]
    for line in request.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")[1:]:
        name = line.partition(":")[0].strip().lower()
        if _COMPACT.get(name, name) in ("via", "from", "to", "call-id", "cseq"):
            lines.append(line)
    return "\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n"


def _sdp(host: str) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )


# -- facts ------------------------------------------------------------------------------------


def _codes(seen: list[Seen]) -> str:
    """Status codes / methods in order, consecutive retransmissions folded (``200x11``)."""
    out: list[str] = []
    for msg in seen:
        if out and out[-1].split("x")[0] == msg.code:
            n = int(out[-1].split("x")[1]) if "x" in out[-1] else 1
            out[-1] = f"{msg.code}x{n + 1}"
        else:
            out.append(msg.code)
    return "sequence: " + " ".join(out)


def _challenge(value: str | None) -> str:
    """A digest challenge's parameter names and fixed values (nonce/opaque shapes, not values)."""
    if value is None:
        return "no challenge"
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', value.partition(" ")[2]))
    shape = {k: (v if k in ("realm", "algorithm", "qop") else f"<{len(v)} chars>")
             for k, v in sorted(params.items())}  # fmt: skip
    return "challenge: " + ", ".join(f"{k}={v}" for k, v in shape.items())


def _final(seen: list[Seen]) -> Seen | None:
    return next((m for m in seen if m.first.startswith("SIP/2.0") and int(m.code) >= 200), None)


def basic_facts(*headers: str) -> Callable[[list[Seen]], list[str]]:
    """The code sequence plus, for the final response, each of ``headers`` (value or absent);
    ``content-length`` is compared as the raw line (its spacing)."""

    def facts(seen: list[Seen]) -> list[str]:
        out = [_codes(seen)]
        final = _final(seen)
        for name in headers:
            if final is None:
                continue
            if name == "www-authenticate":
                out.append(_challenge(final.get(name)))
            elif name == "content-length":
                out.append(f"raw: {final.raw(name)!r}")
            elif name == "contact-expires":
                m = re.search(r"expires=(\d+)", final.get("contact") or "")
                out.append(f"Contact expires={m.group(1) if m else 'absent'}")
            elif name == "contact":
                out.append("Contact present" if final.get(name) else "Contact absent")
            else:
                out.append(f"{name}: {final.get(name)}")
        return out

    return facts


def ack_loss_facts(seen: list[Seen]) -> list[str]:
    oks = [m.at for m in seen if m.code == "200"]
    bye = next((m for m in seen if m.code == "BYE"), None)
    first = oks[0] if oks else 0.0
    out = [
        f"200 sent {len(oks)} times",
        "200 offsets: " + ", ".join(f"{t - first:.1f}" for t in oks),
    ]
    if bye is None:
        out.append("no BYE")
    else:
        out += [f"BYE at {bye.at - first:.1f} s", f"BYE Reason: {bye.get('reason')}"]
    return out


# -- probes -----------------------------------------------------------------------------------


def _node_uri(ctx: Ctx, user: str = "") -> str:
    return f"sip:{user + '@' if user else ''}{ctx.node[0]}:{ctx.node[1]}"


def _invite_headers(ctx: Ctx) -> list[str]:
    # the BYE that ends an un-ACKed call goes to this Contact: the probe's own socket
    contact = f"Contact: <sip:{ctx.user}@{ctx.router}:" + "{src_port}>"
    return ["Content-Type: application/sdp", contact]


def _register(ctx: Ctx, source: str, extra: list[str], expires: int = 10) -> list[Seen]:
    contact = f"<sip:{ctx.user}@{source}:5999>"
    aor = f"<sip:{ctx.user}@{ctx.domain}>"
    path = [f"Path: <sip:{ctx.router}:5060;lr>"] if source == ctx.router else []
    seen = _exchange(ctx, source, "REGISTER", f"sip:{ctx.domain}", to=aor,
                     extra=[f"Contact: {contact}", f"Expires: {expires}", *path, *extra],
                     window=0.5)  # fmt: skip
    if any(m.code == "200" for m in seen):  # leave no contact behind
        _exchange(ctx, source, "REGISTER", f"sip:{ctx.domain}", to=aor,
                  extra=[f"Contact: {contact}", "Expires: 0", *path, *extra], window=0.3)  # fmt: skip
    return seen


PROBES: list[Probe] = [
    Probe("options-node", "OPTIONS sip:node from the router",
          lambda c: _exchange(c, c.router, "OPTIONS", _node_uri(c), window=0.5),
          basic_facts("contact", "content-length")),
    Probe("options-stranger", "OPTIONS sip:node from an unknown address",
          lambda c: _exchange(c, c.stranger, "OPTIONS", _node_uri(c), window=0.5),
          basic_facts("www-authenticate")),
    Probe("options-extension", "OPTIONS sip:999@node (matches the dialplan's _X.)",
          lambda c: _exchange(c, c.router, "OPTIONS", _node_uri(c, "999"), window=0.5),
          basic_facts()),
    Probe("invite-missing-contact", "INVITE sip:600@node without a Contact header",
          lambda c: _exchange(c, c.router, "INVITE", _node_uri(c, "600"),
                              extra=["Content-Type: application/sdp"], body=_sdp(c.router),
                              window=1.0),
          basic_facts("reason")),
    Probe("invite-unknown-numeric", "INVITE sip:999@node (no such user, numeric)",
          lambda c: _exchange(c, c.router, "INVITE", _node_uri(c, "999"),
                              extra=_invite_headers(c), body=_sdp(c.router),
                              window=1.0),
          basic_facts("reason")),
    Probe("invite-non-numeric", "INVITE sip:abc@node (no extension)",
          lambda c: _exchange(c, c.router, "INVITE", _node_uri(c, "abc"),
                              extra=_invite_headers(c), body=_sdp(c.router),
                              window=1.0),
          basic_facts("reason")),
    Probe("invite-user-no-contact", "INVITE to a provisioned user with no contact",
          lambda c: _exchange(c, c.router, "INVITE", _node_uri(c, c.user),
                              extra=_invite_headers(c), body=_sdp(c.router),
                              window=1.0),
          basic_facts("reason")),
    Probe("register-expires-clamped", "forwarded REGISTER, Path + Supported: path, Expires: 10",
          lambda c: _register(c, c.router, ["Supported: path"]),
          basic_facts("expires", "contact-expires")),
    Probe("register-path-unsupported", "forwarded REGISTER with Path, no Supported: path",
          lambda c: _register(c, c.router, []),
          basic_facts()),
    Probe("register-stranger", "REGISTER from an unknown address",
          lambda c: _register(c, c.stranger, []),
          basic_facts("www-authenticate")),
    Probe("ack-loss", "INVITE sip:600@node answered 200, never ACKed (33 s)",
          lambda c: _exchange(c, c.router, "INVITE", _node_uri(c, "600"),
                              extra=_invite_headers(c),
                              body=_sdp(c.router), window=34.0, ack_2xx=False),
          ack_loss_facts),
]  # fmt: skip

REASONS: dict[str, str] = {
    "options-node": (
        "cosmetic, kept: Asterisk (pjsip's printer) writes `Content-Length:  0` with two spaces; "
        "the emulator serializes with the router's own `router.sip` printer (one space), which "
        "every router test relies on. Both parse the same (RFC 3261 §7.3.1 allows any LWS)."
    ),
    "register-expires-clamped": (
        "rounding, kept: Asterisk computes the Contact's `expires` as the time left until the "
        "stored expiration when it builds the 200, truncated to whole seconds (60 s minus the "
        "few ms spent: 59); the emulator writes the clamped value (60). The `Expires` header and "
        "the stored expiration agree."
    ),
}
"""probe name -> why the emulator differs there (kept when the difference is accepted)."""


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    probe: str
    what: str
    facts: dict[str, list[str]] = field(default_factory=dict)
    """kind (emulator / asterisk) -> facts."""
    raw: dict[str, list[Seen]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        values = list(self.facts.values())
        return "same" if all(v == values[0] for v in values) else "differs"


def topology_for(kind: str, net: int) -> Topology:
    return replace(
        Topology(net=net, pbx=[PbxSpec(kind=kind)], faults=[], users=UsersSpec(count=5)),  # type: ignore[arg-type]
        queues=[],
    )


def probe_lab(kind: str, net: int, run_dir: Path, probes: list[Probe]) -> tuple[str, dict[str, list[Seen]]]:  # fmt: skip
    """Start a one-node lab of ``kind``, run ``probes``, take it down: (node version, results)."""
    from lab.backends.local import LocalBackend
    from lab.docker.backend import DockerBackend

    topology = topology_for(kind, net)
    backend: Any = DockerBackend() if kind == "asterisk" else LocalBackend()
    lab: LabFile = backend.up(topology, run_dir)
    try:
        node = lab.node("pbx1")
        ctx = Ctx(
            node=(node.host, node.port),
            router=lab.node("router").host,
            stranger=f"127.{net}.0.{STRANGER}",
            domain=topology.users_domain,
            user=str(topology.users.first + 1),
        )
        results = {p.name: p.run(ctx) for p in probes}
        return node.version or "emulator (lab/pbx)", results
    finally:
        backend.down(lab)


def compare(runs: dict[str, dict[str, list[Seen]]], probes: list[Probe]) -> list[Outcome]:
    return [
        Outcome(
            p.name,
            p.what,
            facts={kind: p.facts(r[p.name]) for kind, r in runs.items()},
            raw={kind: r[p.name] for kind, r in runs.items()},
        )
        for p in probes
    ]


def render(outcomes: list[Outcome], versions: dict[str, str], command: str) -> str:
    lines = [
        "# Fidelity: the emulator against real Asterisk, message by message",
        "",
        f"Generated by `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); do "
        "not edit by hand. Each probe is sent straight to a one-node lab's node (from the "
        "router's address unless it says otherwise), time scale 1, once with each kind of node; "
        "facts are compared exactly (see `lab/fidelity.py`).",
        "",
        *[f"- {kind}: {version}" for kind, version in versions.items()],
        "",
        "| probe | what | verdict | reason |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        reason = "" if o.verdict == "same" else REASONS.get(o.probe, "**unexplained**")
        lines.append(f"| {o.probe} | {o.what} | {o.verdict} | {reason} |")
    lines += ["", "## Facts per probe", ""]
    for o in outcomes:
        lines += [f"### {o.probe} ({o.verdict})", "", "| fact | " + " | ".join(o.facts) + " |",
                  "|---|" + "---|" * len(o.facts)]  # fmt: skip
        rows = max(len(v) for v in o.facts.values())
        for i in range(rows):
            cells = [(v[i] if i < len(v) else "") for v in o.facts.values()]
            mark = "" if len(set(cells)) == 1 else " **≠**"
            lines.append(f"| {i + 1}{mark} | " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
        for kind, seen in o.raw.items():
            firsts = "; ".join(f"+{m.at:.2f}s {m.first}" for m in seen[:14])
            lines.append(f"- {kind}: {firsts or 'nothing received'}")
        lines.append("")
    lines += [
        "## Not compared here",
        "",
        "- 486 (busy callee) and 503 (full node) answers: need a busy phone behind the node / "
        "a real node at its channel limit; not probed.",
        "- Queue member state across nodes, probing out/in, registration forwarding to every "
        "node: measured by `pytest scenarios -m asterisk` (docs/asterisk-measurements.md).",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cmd_fidelity(args: argparse.Namespace) -> int:
    from router.cli import UserError

    out = Path(args.out)
    if not args.run:
        print(f"{out}: {'exists' if out.exists() else 'not generated yet'}; "
              "run `siplab fidelity --run` to (re)generate it")  # fmt: skip
        return 0
    probes = [p for p in PROBES if not args.probe or p.name in args.probe]
    unknown = set(args.probe or []) - {p.name for p in PROBES}
    if unknown:
        raise UserError(f"--probe: no probe named {', '.join(sorted(unknown))} "
                       f"(probes: {', '.join(p.name for p in PROBES)})")  # fmt: skip
    runs: dict[str, dict[str, list[Seen]]] = {}
    versions: dict[str, str] = {}
    for kind in ("emulator", "asterisk"):
        print(f"fidelity: {kind} node, {len(probes)} probes ...", flush=True)
        try:
            versions[kind], runs[kind] = probe_lab(kind, args.net, Path(args.dir) / kind, probes)
        except LabError as exc:  # a node that cannot start: named, no traceback, nothing left
            raise UserError(f"fidelity ({kind} lab): {exc}") from None
    outcomes = compare(runs, probes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(outcomes, versions, "siplab fidelity --run"), encoding="utf-8")
    for o in outcomes:
        print(f"  {o.probe:28} {o.verdict}")
    print(f"fidelity: {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fidelity", help="emulator vs real Asterisk, message by message")
    p.add_argument("--run", action="store_true", help="start both labs and probe them")
    p.add_argument("--net", type=int, default=0, help="lab net N (127.N.0.x)")
    p.add_argument("--dir", default="runs/fidelity", help="run folder of the two labs")
    p.add_argument("--out", default="docs/fidelity.md", help="Markdown file to write")
    p.add_argument("--probe", action="append", help="run only this probe (repeatable)")
    p.set_defaults(func=cmd_fidelity)


__all__ = ["PROBES", "REASONS", "Outcome", "Seen", "add_commands", "compare", "parse_seen",
           "render"]  # fmt: skip
