"""/proc sampling on a fake proc tree (exact numbers) and on this very process (real /proc)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from reports.metrics import SAMPLE_DTYPES
from reports.sampling import (
    CLK_TCK,
    PAGE_SIZE,
    ProcessSampler,
    bottleneck_warnings,
    descendants,
    read_proc,
)


def write_stat(root: Path, pid: int, ppid: int, utime: int, stime: int, rss_pages: int) -> None:
    # comm with a space and a ')' to check fields are counted from the last ')'
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 8
    fields.append(str(rss_pages))
    fields += ["0"] * 20
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / str(pid) / "stat").write_text(f"{pid} (kam ail) x) " + " ".join(fields) + "\n")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_read_proc_fields(tmp_path: Path) -> None:
    write_stat(tmp_path, 10, 1, utime=30, stime=12, rss_pages=100)
    sample = read_proc(10, proc_root=tmp_path)
    assert sample is not None
    assert (sample.pid, sample.ppid, sample.ticks, sample.rss) == (10, 1, 42, 100 * PAGE_SIZE)
    assert read_proc(11, proc_root=tmp_path) is None


def test_descendants_follow_ppid(tmp_path: Path) -> None:
    write_stat(tmp_path, 10, 1, 0, 0, 1)
    write_stat(tmp_path, 11, 10, 0, 0, 1)
    write_stat(tmp_path, 12, 11, 0, 0, 1)
    write_stat(tmp_path, 20, 1, 0, 0, 1)
    assert descendants([10], proc_root=tmp_path) == [10, 11, 12]
    assert descendants([99], proc_root=tmp_path) == []


def test_sampler_cpu_is_tick_delta_over_time(tmp_path: Path) -> None:
    clock = Clock()
    write_stat(tmp_path, 10, 1, 0, 0, 100)  # kamailio main
    write_stat(tmp_path, 11, 10, 0, 0, 50)  # a worker
    write_stat(tmp_path, 20, 1, 0, 0, 10)  # sipp
    sampler = ProcessSampler({"kamailio": [10], "sipp": [20]}, proc_root=tmp_path, clock=clock)
    assert sampler.sample() == 0  # baseline only
    clock.now += 2.0
    write_stat(tmp_path, 11, 10, CLK_TCK, 0, 60)  # one second of CPU in two seconds
    write_stat(tmp_path, 20, 1, CLK_TCK // 2, CLK_TCK // 2, 10)
    assert sampler.sample() == 3
    table = sampler.table()
    assert {c: str(t) for c, t in table.dtypes.items()} == SAMPLE_DTYPES
    by_pid = table.set_index("pid")
    assert by_pid.loc[10, "cpu"] == pytest.approx(0.0)
    assert by_pid.loc[11, "cpu"] == pytest.approx(50.0)
    assert by_pid.loc[20, "cpu"] == pytest.approx(50.0)
    assert by_pid.loc[11, "rss"] == 60 * PAGE_SIZE
    assert by_pid.loc[11, "node"] == "kamailio"


def test_sampler_thread_on_real_process() -> None:
    with ProcessSampler({"self": [os.getpid()]}, interval=0.05) as sampler:
        deadline = time.monotonic() + 1.5  # >= 3 samples even when the machine is busy
        while time.monotonic() < deadline:
            sum(range(10_000))  # keep a core busy
    table = sampler.table()
    assert len(table) >= 3
    assert table["cpu"].mean() > 20.0
    assert (table["rss"] > 0).all()
    assert not any(t.name == "siplab-sampler" for t in threading.enumerate())


def test_bottleneck_warnings() -> None:
    busy = bottleneck_warnings(
        offered=1000, achieved=990, cpu={"sipp": 97.0, "router": 60.0}, generators=["sipp"]
    )
    assert len(busy) == 1
    assert "sipp used 97% of a core" in busy[0]
    short = bottleneck_warnings(
        offered=1000, achieved=600, cpu={"sipp": 40.0, "router": 20.0}, generators=["sipp"]
    )
    assert len(short) == 1
    assert "load generator is the bottleneck" in short[0]
    # falling short while the router is busy is the router's limit, not a warning
    assert not bottleneck_warnings(
        offered=1000, achieved=600, cpu={"sipp": 40.0, "router": 99.0}, generators=["sipp"]
    )
