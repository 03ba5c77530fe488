"""``siplab fidelity``: parsing what a node sent, the facts compared, the verdict and reason in
the Markdown, and the probes against a real emulator node (local backend, no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import fidelity
from lab.cli import main
from lab.fidelity import REASONS, Outcome, Seen, ack_loss_facts, basic_facts, parse_seen, render

CHALLENGE = (
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 1.2.3.4:5;branch=z9hG4bKx\r\n"
    b'WWW-Authenticate: Digest realm="asterisk",nonce="1/abc",opaque="0123456789abcdef",'
    b'algorithm=MD5,qop="auth"\r\nl:  0\r\n\r\n'
)


def test_parse_keeps_raw_lines_and_expands_compact_names() -> None:
    seen = parse_seen(CHALLENGE, 0.25)
    assert (seen.code, seen.at) == ("401", 0.25)
    assert seen.raw("content-length") == "l:  0"
    facts = basic_facts("www-authenticate", "content-length")([seen])
    assert facts == [
        "sequence: 401",
        "challenge: algorithm=MD5, nonce=<5 chars>, opaque=<16 chars>, qop=auth, realm=asterisk",
        "raw: 'l:  0'",
    ]


def _msg(first: str, at: float, *headers: tuple[str, str]) -> Seen:
    return Seen(at, first, tuple((n, v, f"{n}: {v}") for n, v in headers))


def test_ack_loss_facts_fold_the_schedule() -> None:
    seen = [_msg("SIP/2.0 100 Trying", 0.0)]
    seen += [_msg("SIP/2.0 200 OK", t) for t in (0.01, 0.52, 1.51)]
    seen.append(_msg("BYE sip:x SIP/2.0", 32.0, ("reason", "SIP ;cause=408")))
    assert ack_loss_facts(seen) == [
        "200 sent 3 times",
        "200 offsets: 0.0, 0.5, 1.5",
        "BYE at 32.0 s",
        "BYE Reason: SIP ;cause=408",
    ]
    assert basic_facts()(seen)[0] == "sequence: 100 200x3 BYE"


def test_render_names_verdicts_and_unexplained_differences() -> None:
    same = Outcome("p1", "probe one", {"emulator": ["a"], "asterisk": ["a"]})
    known = Outcome("options-node", "opts", {"emulator": ["a"], "asterisk": ["b"]})
    odd = Outcome("p3", "probe three", {"emulator": ["a", "x"], "asterisk": ["a"]})
    text = render([same, known, odd], {"emulator": "e", "asterisk": "A 22"}, "cmd")
    assert "| p1 | probe one | same |  |" in text
    assert f"| options-node | opts | differs | {REASONS['options-node']} |" in text
    assert "| p3 | probe three | differs | **unexplained** |" in text
    assert "| 2 **≠** | x |  |" in text


def test_cli_without_run_only_reports_and_unknown_probe_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f.md"
    assert main(["fidelity", "--out", str(out)]) == 0
    assert "not generated yet" in capsys.readouterr().out
    assert main(["fidelity", "--run", "--probe", "nope", "--out", str(out)]) == 2
    assert "no probe named nope" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.lab
def test_probes_against_an_emulated_node(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The fast probes against a real emulator node give the facts measured on Asterisk 22.10
    (docs/fidelity.md), except the two named differences."""
    fast = [p for p in fidelity.PROBES if p.name != "ack-loss"]
    _, results = fidelity.probe_lab(
        "emulator", request.config.getoption("--lab-net"), tmp_path / "lab", fast
    )
    facts = {p.name: p.facts(results[p.name]) for p in fast}
    assert facts["options-node"] == ["sequence: 200", "Contact absent", "raw: 'Content-Length: 0'"]
    assert facts["invite-missing-contact"] == ["sequence: 400", "reason: None"]
    assert facts["invite-unknown-numeric"] == ["sequence: 100 404", "reason: Q.850;cause=3"]
    assert facts["invite-non-numeric"] == ["sequence: 404", "reason: None"]
    assert facts["register-expires-clamped"] == [
        "sequence: 200", "expires: 60", "Contact expires=60",
    ]  # fmt: skip
    assert facts["register-path-unsupported"] == ["sequence: 420"]
    assert facts["register-stranger"][0] == "sequence: 401"
