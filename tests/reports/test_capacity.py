"""The capacity pipeline end to end with a fake lab and a synthetic engine, and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab.labfile import LabFile, NodeRecord, write_labfile
from reports.capacity import CapacityConfig, LabFactory, run_capacity
from reports.cli import add_commands
from reports.plots import PLOT_NAMES
from reports.search import ServiceLevel, StepResult
from router.cli import UserError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class CurveEngine:
    """Holds ``knee`` calls/s, fails beyond; advances the fake clock by the step's length."""

    name = "sipp"

    def __init__(self, knee: float, clock: FakeClock) -> None:
        self.knee = knee
        self.clock = clock
        self.workdirs: list[Path] = []

    def step(
        self,
        lab: LabFile,
        rate: float,
        duration_s: float,
        *,
        workdir: Path,
        watch: Callable[[str, int], None],
    ) -> StepResult:
        assert lab.node("router").port == 5060
        self.workdirs.append(workdir)
        watch(self.name, os.getpid())
        self.clock.now += duration_s
        attempted = round(rate * duration_s)
        failed = 0 if rate <= self.knee else attempted // 10
        return StepResult(
            offered=rate,
            duration_s=duration_s,
            attempted=attempted,
            successful=attempted - failed,
            failed=failed,
            p50_ms=2.0,
            p95_ms=4.0,
            p99_ms=9.0,
            failed_by_reason={"timeout": failed} if failed else {},
        )


def fake_lab_factory(opened: list[Path]) -> LabFactory:
    @contextmanager
    def factory(run_dir: Path) -> Iterator[LabFile]:
        lab = LabFile(
            run_dir=str(run_dir),
            backend="fake",
            db="",
            users_csv="",
            events="",
            nodes=[
                NodeRecord("router", "router", "127.0.0.10", 5060, pid=os.getpid()),
                NodeRecord("pbx1", "pbx", "127.0.0.11", 5060, pid=os.getpid()),
            ],
        )
        write_labfile(lab, run_dir)
        opened.append(run_dir)
        yield lab

    return factory


def test_run_capacity_pipeline(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = CurveEngine(knee=130.0, clock=clock)
    lines: list[str] = []
    opened: list[Path] = []
    config = CapacityConfig(
        quick=True,
        level=ServiceLevel(max_failure_ratio=0.01),
        target="cps=500",
        resolution=5.0,
    )
    report = run_capacity(
        fake_lab_factory(opened),
        engine,
        config,
        tmp_path / "run",
        progress=lines.append,
        clock=clock,
        sample_interval=0.02,
    )
    run = tmp_path / "run"
    assert opened == [run]
    assert report == run / "report.html"
    summary = json.loads((run / "summary.json").read_text())
    knee = summary["knee"]["offered"]
    assert 130.0 - 5.0 - 130 * 0.15 <= knee <= 130.0
    assert summary["knee"]["confirmed"]
    assert summary["source"] == "generator"  # the fake lab wrote no events
    assert summary["max_cps"] == knee
    assert summary["hardware"]["cores"] == os.cpu_count()
    assert summary["versions"]["python"]
    assert "sizing" in summary
    capacity = json.loads((run / "capacity.json").read_text())
    assert capacity["search"]["knee"] == knee
    assert len(capacity["search"]["steps"]) == len(engine.workdirs)
    assert engine.workdirs[0] == run / "sipp" / "step-01"
    for name in PLOT_NAMES:
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000
    assert lines[0].startswith("capacity: call through reference")
    assert any("PASS" in line for line in lines)
    assert any("FAIL: failures" in line for line in lines)
    assert lines[-1].startswith("knee: ")
    assert (run / "samples.csv").exists()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="siplab")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_arguments() -> None:
    args = parse(
        [
            "capacity",
            "--quick",
            "--scenario",
            "register",
            "--router",
            "kamailio",
            "--target",
            "users=100",
            "--service-level",
            "p95=50ms",
        ]
    )
    assert args.quick
    assert args.scenario == "register"
    assert args.router == "kamailio"
    with pytest.raises(SystemExit):
        parse(["capacity", "--scenario", "video"])


def test_cli_pbx_kind_and_count() -> None:
    assert parse(["capacity"]).pbx == ("emulator", 3)
    assert parse(["capacity", "--pbx", "2"]).pbx == ("emulator", 2)
    assert parse(["capacity", "--pbx", "asterisk"]).pbx == ("asterisk", 3)
    assert parse(["capacity", "--pbx", "asterisk:1"]).pbx == ("asterisk", 1)
    for bad in ("sipp", "asterisk:x", "0", "asterisk:0"):
        with pytest.raises(SystemExit):
            parse(["capacity", "--pbx", bad])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--service-level", "latency=5"], "'latency': unknown field"),
        (["--target", "cps=x"], "target: cps: 'x' is not a number"),
        (["--compare", "/nonexistent/run"], "--compare: /nonexistent/run/summary.json"),
    ],
)
def test_cli_user_errors_name_the_field(extra: list[str], message: str) -> None:
    args = parse(["capacity", *extra])
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        args.func(args)


def test_cli_report_rebuilds(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "run_small"
    args = parse(["report", str(data), "--out", str(tmp_path)])
    assert args.func(args) == 0
    assert (tmp_path / "report.html").exists()
    missing = parse(["report", str(tmp_path / "nope")])
    with pytest.raises(UserError, match="not a run folder"):
        missing.func(missing)


def test_record_evidence_of_a_bounded_run(tmp_path: Path) -> None:
    """A capacity run's evidence: ladders of the failed calls in the capture, the calls the
    router dispatched per node, sizes in evidence.json; the report shows the distribution."""
    from lab.capture import CaptureState
    from lab.evidence import udp_frame
    from lab.wire import merge_pcaps
    from reports.capacity import record_evidence
    from router.sip import Headers, Request, make_response, serialize

    router, pbx1, pbx2, phone = "127.9.0.10", "127.9.0.11", "127.9.0.12", "127.9.0.120"
    write_labfile(
        LabFile(
            run_dir=str(tmp_path),
            backend="local",
            db="sqlite:///x",
            users_csv="",
            events=str(tmp_path / "events.jsonl"),
            nodes=[
                NodeRecord("pbx1", "pbx", pbx1, 5060),
                NodeRecord("pbx2", "pbx", pbx2, 5060),
                NodeRecord("router", "router", router, 5060),
            ],
        )
    )
    frames = []
    for i, (node, status) in enumerate([(pbx1, 200), (pbx2, 503), (pbx1, 200)]):
        headers = Headers(
            [
                ("Via", f"SIP/2.0/UDP {phone}:5060;branch=z9hG4bK{i}"),
                ("From", "<sip:u@lab>;tag=a"),
                ("To", "<sip:600@lab>"),
                ("Call-ID", f"call-{i}"),
                ("CSeq", "1 INVITE"),
            ]
        )
        invite = Request("INVITE", "sip:600@lab", headers)
        answer = serialize(make_response(invite, status))
        frames += [
            udp_frame(f"{phone}:5060", f"{router}:5060", serialize(invite)),
            udp_frame(f"{router}:5060", f"{node}:5060", serialize(invite)),
            udp_frame(f"{node}:5060", f"{router}:5060", answer),
            udp_frame(f"{router}:5060", f"{phone}:5060", answer),
        ]
    part = tmp_path / "part.pcap"
    with part.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for n, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 100 + n, 0, len(frame), len(frame)) + frame)
    merge_pcaps([part], tmp_path / "capture.pcap")
    state = CaptureState(None, [], str(tmp_path / "capture.pcap"), 9, ring_mb=20, ring_files=5)
    (tmp_path / "capture.json").write_text(json.dumps(dataclasses.asdict(state)))
    info = record_evidence(tmp_path)
    assert info["capture_bound_mb"] == 100
    assert info["failed_calls_in_window"] == 1
    assert info["ladders"] == 1
    assert info["window_distribution"] == {"pbx1": 2, "pbx2": 1}
    assert (tmp_path / "ladders" / "call-1.svg").is_file()
    assert json.loads((tmp_path / "evidence.json").read_text()) == info
