"""Router part 2 over real sockets: SIPp registration storm with digest auth, durability across
kill -9, no user enumeration, brute-force blocking."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from lab.engines import SippRun, run_sipp, sipp_binary, uac_register, wait_sip_ready
from lab.procs import ManagedProcess, start_process
from lab.requires import needs
from router.realtime import connect, write_sipp_csv
from router.sip import (
    Headers,
    Request,
    Response,
    answer_challenge,
    new_branch,
    new_call_id,
    parse_challenge,
    parse_untrusted,
    serialize,
)

pytestmark = [
    pytest.mark.sipp,
    needs(sipp_binary() is not None, "SIPp (Debian sip-tester) is not installed"),
]

ROUTER = ("127.0.0.25", 5060)
UAC_IP = "127.0.0.26"
DOMAIN = "siplab.local"


def _config(tmp: Path, db_url: str) -> Path:
    cfg = tmp / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = ["udp:{ROUTER[0]}:{ROUTER[1]}"]\nevents = "{tmp / "events.jsonl"}"\n'
        'events_raw = false\n\n[dispatcher]\n[[dispatcher.destinations]]\nuri = "sip:127.0.0.27:5090"\n'
        "[dispatcher.probing]\ninterval = 0\n\n"
        f'[registrar]\ndb = "{db_url}"\nforward = "none"\nmax_failures_per_source = 5\n'
        "failure_window = 60.0\nblock_time = 60.0\n"
    )
    return cfg


def _start(tmp: Path, cfg: Path, name: str = "router") -> ManagedProcess:
    proc = start_process(
        [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)], name=name, log_dir=tmp
    )
    try:
        wait_sip_ready(ROUTER[0], ROUTER[1], timeout=15.0, alive=proc.is_running, local_ip=UAC_IP)
    except BaseException:
        proc.stop(grace=2.0)
        raise
    return proc


@pytest.fixture
def provisioned(tmp_path: Path) -> tuple[str, Path, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'realtime.db'}"
    with connect(url) as db:
        db.init_schema()
        users = db.provision_users(500, 100, domain=DOMAIN, context="default", seed=3)
    csv = tmp_path / "users.csv"
    write_sipp_csv(csv, users)
    return url, csv, {u.username: u.password for u in users}


def test_registrar_sipp_500_users_register_and_survive_kill9(
    tmp_path: Path, provisioned: tuple[str, Path, dict[str, str]]
) -> None:
    url, csv, _ = provisioned
    cfg = _config(tmp_path, url)
    router = _start(tmp_path, cfg)
    try:
        result = run_sipp(
            SippRun(
                uac_register(),
                local_ip=UAC_IP,
                remote=ROUTER,
                rate=250,
                max_calls=500,
                injection=csv,
                timeout_s=60,
                name="reg",
            ),
            tmp_path / "sipp",
        )
        assert result.successful == 500, result.failed_by_reason
        assert result.failed == 0
        with connect(url) as db:
            assert db.location_count() == 500
        # kill -9: every binding answered 200 is already in the DB.
        router.send_signal(signal.SIGKILL)
        router.wait(5.0)
    finally:
        router.stop(grace=1.0)
    with connect(url) as db:
        assert db.location_count() == 500
        users = {b.username for b in db.location_all()}
    assert users == {str(n) for n in range(100, 600)}
    restarted = _start(tmp_path, cfg, name="router2")
    restarted.stop()
    with connect(url) as db:
        assert db.location_count() == 500


class _Client:
    """A raw UDP SIP client (one socket) for exact wire comparisons."""

    opened: ClassVar[list[_Client]] = []

    def __init__(self, ip: str) -> None:
        _Client.opened.append(self)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(3.0)
        self.addr = self.sock.getsockname()

    def register(
        self,
        user: str,
        *,
        authorization: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
    ) -> Response:
        headers = [
            ("Via", f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{user}@{DOMAIN}>;tag=t{cseq}"),
            ("To", f"<sip:{user}@{DOMAIN}>"),
            ("Call-ID", call_id or new_call_id(self.addr[0])),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<sip:{user}@{self.addr[0]}:{self.addr[1]}>"),
            ("Expires", "600"),
        ]
        if authorization:
            headers.append(("Authorization", authorization))
        self.sock.sendto(serialize(Request("REGISTER", f"sip:{DOMAIN}", Headers(headers))), ROUTER)
        data, _ = self.sock.recvfrom(65535)
        msg = parse_untrusted(data)
        assert isinstance(msg, Response)
        return msg

    def attempt(self, user: str, password: str) -> Response:
        call_id = new_call_id(self.addr[0])
        challenge = self.register(user, call_id=call_id)
        assert challenge.status == 401
        ch = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
        creds = answer_challenge(ch, "REGISTER", f"sip:{DOMAIN}", user, password)
        return self.register(user, authorization=str(creds), call_id=call_id, cseq=2)


def _shape(resp: Response) -> tuple[int, str, list[str], list[str]]:
    ch = parse_challenge(resp.headers.get("WWW-Authenticate") or "") if resp.status == 401 else None
    keys = sorted(
        k
        for k in ("realm", "algorithm", "qop", "opaque", "stale")
        if ch is not None and getattr(ch, k, None)
    )
    return (
        resp.status,
        resp.reason,
        [
            name.lower()
            for name, _ in resp.headers
            if name.lower() not in ("via", "from", "to", "call-id", "cseq", "www-authenticate")
        ],
        keys,
    )


def test_registrar_sipp_no_enumeration_and_bruteforce_blocked(
    tmp_path: Path, provisioned: tuple[str, Path, dict[str, str]]
) -> None:
    url, _, passwords = provisioned
    router = _start(tmp_path, _config(tmp_path, url))
    try:
        ok = _Client("127.0.0.28").attempt("100", passwords["100"])
        assert ok.status == 200
        wrong = _Client("127.0.0.28").attempt("101", "not-the-password")
        unknown = _Client("127.0.0.29").attempt("99999", "whatever")
        assert wrong.status == unknown.status == 401
        assert _shape(wrong) == _shape(unknown)
        # A burst of wrong passwords from one source: blocked (403) before it gets far.
        attacker = _Client("127.0.0.30")
        statuses = []
        for _ in range(10):
            resp = attacker.register("102", authorization=None)
            if resp.status == 401:
                ch = parse_challenge(resp.headers.get("WWW-Authenticate") or "")
                creds = answer_challenge(ch, "REGISTER", f"sip:{DOMAIN}", "102", "guess")
                resp = attacker.register("102", authorization=str(creds), cseq=2)
            statuses.append(resp.status)
        assert 403 in statuses
        tried = statuses.index(403)
        assert tried <= 5  # max_failures_per_source
        assert all(s == 403 for s in statuses[tried:])
        # Even the right password from the blocked source is refused while the block lasts.
        assert attacker.register("102").status == 403
    finally:
        router.stop()
        for client in _Client.opened:
            client.sock.close()
