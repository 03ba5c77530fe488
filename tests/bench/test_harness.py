"""The bench harness measures what it says: socket drops, process-tree CPU, the replayed flow."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_core import Replay
from bench.bench_dispatch import reference_argv, uac_call_or_503
from bench.harness import (
    StepFigure,
    cpu_plot_svg,
    drops_moved,
    process_tree_cpu,
    udp_drops,
)


def test_udp_drops_sees_a_full_receive_buffer() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.77.0.31", 0))
        key = f"127.77.0.31:{rx.getsockname()[1]}"
        before = udp_drops()
        assert before[key] == 0
        for _ in range(200):
            tx.sendto(b"x" * 600, rx.getsockname())
        moved = drops_moved(before, udp_drops())
        assert moved[key] > 0
    finally:
        rx.close()
        tx.close()


def test_process_tree_cpu_counts_a_busy_grandchild() -> None:
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"
    parent = (
        "import subprocess,sys\n"
        f"subprocess.run([sys.executable,'-c',{burn!r}])\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE)
    try:
        # The grandchild has ended and been reaped: its CPU is in the parent's cutime.
        deadline_cpu = 0.0
        for _ in range(100):
            deadline_cpu = process_tree_cpu(proc.pid)
            if deadline_cpu >= 0.3:
                break
            subprocess.run([sys.executable, "-c", "import time; time.sleep(0.05)"], check=True)
        assert deadline_cpu >= 0.3
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def test_core_replay_routes_every_message_of_every_call() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench_test_"))
    replay = Replay(Path(reference_argv(folder)[-1]))
    replay.run(300, 2000.0)
    # Per call: 100 Trying + INVITE, 180, 200, ACK, BYE, 200 (BYE) = 7 messages out.
    assert replay.sent == 7 * 300
    assert replay.busy > 0
    assert not replay.core.drops


def test_overload_scenario_takes_a_503() -> None:
    xml = uac_call_or_503().xml
    assert '<recv response="503" optional="true" next="shed"/>' in xml
    assert xml.index('<label id="shed"/>') < xml.index('<label id="done"/>')


def test_plot_draws_one_point_per_step() -> None:
    def fig(router: str, rate: float, passed: bool) -> StepFigure:
        return StepFigure(
            router, rate, 5.0, int(rate * 5), int(rate * 5), 0, 0, {}, rate / 4000, 5.0,
            1.0, 1.0, rate, 0, passed, "",
        )  # fmt: skip

    svg = cpu_plot_svg([fig("a", 1000, True), fig("a", 2000, False), fig("b", 1000, True)], "t")
    assert svg.count("<circle") == 3
    assert svg.count("<polyline") == 2
    assert 'fill="white" stroke' in svg  # the failed step is hollow
