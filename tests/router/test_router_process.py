"""The router as users run it: `siplab router --config`, HTTP metrics/status, SIGTERM, bad config."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lab.engines import wait_sip_ready
from lab.procs import start_process
from router.sip import Headers, Request, new_branch, parse_untrusted, serialize

ROUTER = ("127.0.0.27", 5062)
HTTP = ("127.0.0.27", 8082)


def _config(tmp: Path) -> Path:
    cfg = tmp / "router.toml"
    cfg.write_text(
        f'[router]\nlisten = ["udp:{ROUTER[0]}:{ROUTER[1]}", "tcp:{ROUTER[0]}:{ROUTER[1]}"]\n'
        f'events = "{tmp / "events.jsonl"}"\nhttp = "{HTTP[0]}:{HTTP[1]}"\n\n'
        '[dispatcher]\n[[dispatcher.destinations]]\nuri = "sip:127.0.0.28:5099"\n'
        "[dispatcher.probing]\ninterval = 0.5\ntimeout = 0.3\n"
    )
    return cfg


def _options(sock: socket.socket) -> bytes:
    host, port = sock.getsockname()[:2]
    req = Request(
        "OPTIONS",
        f"sip:{ROUTER[0]}:{ROUTER[1]}",
        Headers(
            [
                ("Via", f"SIP/2.0/UDP {host}:{port};branch={new_branch()};rport"),
                ("Max-Forwards", "70"),
                ("From", "<sip:probe@127.0.0.1>;tag=p1"),
                ("To", f"<sip:{ROUTER[0]}>"),
                ("Call-ID", "metrics-test"),
                ("CSeq", "1 OPTIONS"),
            ]
        ),
    )
    return serialize(req)


def test_router_process_metrics_status_and_graceful_sigterm(tmp_path: Path) -> None:
    proc = start_process(
        [sys.executable, "-m", "router.cli", "router", "--config", str(_config(tmp_path))],
        name="router",
        log_dir=tmp_path,
    )
    try:
        wait_sip_ready(*ROUTER, timeout=15.0, alive=proc.is_running)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(3)
            sock.sendto(b"garbage that is not SIP\r\n\r\n", ROUTER)
            sock.sendto(_options(sock), ROUTER)
            reply = parse_untrusted(sock.recvfrom(65535)[0])
        assert getattr(reply, "status", None) == 200
        metrics = (
            urllib.request.urlopen(f"http://{HTTP[0]}:{HTTP[1]}/metrics", timeout=5).read().decode()
        )
        assert 'siplab_requests_total{method="OPTIONS"}' in metrics
        assert "siplab_drops_total{reason=" in metrics
        assert "siplab_dispatcher_destination_up{" in metrics
        assert 'siplab_active_transactions{kind="server_non_invite"}' in metrics
        status = json.loads(
            urllib.request.urlopen(f"http://{HTTP[0]}:{HTTP[1]}/status", timeout=5).read()
        )
        assert status["dispatcher"][0]["uri"] == "sip:127.0.0.28:5099"
        assert sum(status["drops"].values()) >= 1
        # The destination does not exist: probing marks it inactive within interval + timeout.
        deadline = time.monotonic() + 5.0
        while status["dispatcher"][0]["flags"][0] != "I" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = json.loads(
                urllib.request.urlopen(f"http://{HTTP[0]}:{HTTP[1]}/status", timeout=5).read()
            )
        assert status["dispatcher"][0]["flags"][0] == "I"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10.0) == 0
    finally:
        proc.stop(grace=2.0)
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "stopped"
    assert any(e.get("event") == "drop" for e in lines)
    # The dead dispatcher destination was probed and marked down, and that is an event.
    assert any(e.get("event") == "dispatcher_state" and e.get("went_down") for e in lines)


def test_router_process_bad_config_names_file_field_reason(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[dispatcher]\nalgorithm = "nonsense"\n')
    out = subprocess.run(
        [sys.executable, "-m", "router.cli", "router", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"siplab: error: {cfg}: dispatcher.algorithm: ")
    assert "Traceback" not in out.stderr
