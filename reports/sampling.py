"""CPU and memory of the lab's processes, sampled by PID from ``/proc``.

``/proc/<pid>/stat`` (proc(5)) gives ``utime`` and ``stime`` (fields 14 and 15, in clock ticks of
``sysconf(_SC_CLK_TCK)``) and ``rss`` (field 24, in pages). CPU use over an interval is the tick
delta divided by the elapsed time, as percent of one core: 100 means one core busy, 200 both
cores of this machine. The second field (``comm``) is in parentheses and may hold spaces or
parentheses itself, so fields are counted from the *last* ``)``.

A node can be several processes (Kamailio forks workers; SIPp is one), so a node is a list of
PIDs and, by default, every descendant of them found at each sample.

The sampler runs in one thread that it owns: :meth:`ProcessSampler.start` starts it,
:meth:`ProcessSampler.stop` joins it (also on ``with`` exit), so nothing outlives the measurement.
A thread rather than a trio task because the capacity driver and SIPp runs are synchronous; the
thread only reads small files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports.metrics import SAMPLE_DTYPES

__all__ = [
    "ProcSample",
    "ProcessSampler",
    "bottleneck_warnings",
    "descendants",
    "read_proc",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of one process."""

    pid: int
    ppid: int
    ticks: int
    """``utime + stime``, clock ticks since the process started."""
    rss: int
    """Resident set size, bytes."""


def read_proc(pid: int, *, proc_root: Path = Path("/proc")) -> ProcSample | None:
    """Read ``/proc/<pid>/stat``; None when the process is gone (or the file is unreadable)."""
    try:
        text = (proc_root / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 22:
        return None
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, rss 24.
    try:
        ppid = int(fields[1])
        ticks = int(fields[11]) + int(fields[12])
        rss = int(fields[21]) * PAGE_SIZE
    except ValueError:
        return None
    return ProcSample(pid=pid, ppid=ppid, ticks=ticks, rss=rss)


def descendants(pids: Sequence[int], *, proc_root: Path = Path("/proc")) -> list[int]:
    """``pids`` and every live process below them (by ``ppid``), roots first."""
    parent_of: dict[int, int] = {}
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            sample = read_proc(int(entry.name), proc_root=proc_root)
            if sample is not None:
                parent_of[sample.pid] = sample.ppid
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_of.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    queue = [p for p in pids if p in parent_of]
    while queue:
        pid = queue.pop(0)
        if pid in found:
            continue
        found.append(pid)
        queue.extend(sorted(children.get(pid, [])))
    return found


class ProcessSampler:
    """Samples CPU and RSS of named nodes at a fixed interval into a samples table.

    Args:
        nodes: node name -> root PIDs.
        interval: seconds between samples.
        include_children: follow each root's descendants (re-discovered every sample).
        proc_root: ``/proc``, or a fake tree in tests.
        clock: wall-clock time source (unix seconds), so rows line up with events.
    """

    def __init__(
        self,
        nodes: Mapping[str, Sequence[int]],
        *,
        interval: float = 0.5,
        include_children: bool = True,
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.nodes = {name: list(pids) for name, pids in nodes.items()}
        self.interval = interval
        self.include_children = include_children
        self.proc_root = proc_root
        self.clock = clock
        self._last: dict[int, tuple[float, int]] = {}
        self._rows: list[tuple[float, str, int, float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, node: str, pid: int) -> None:
        """Add ``pid`` to ``node`` (a process started mid-run, like one SIPp per step)."""
        with self._lock:
            self.nodes.setdefault(node, [])
            if pid not in self.nodes[node]:
                self.nodes[node].append(pid)

    def sample(self) -> int:
        """Take one sample of every node now; returns the number of rows added.

        The first reading of a PID only sets its baseline (no row): CPU is a delta.
        """
        now = self.clock()
        added: list[tuple[float, str, int, float, int]] = []
        with self._lock:
            nodes = {name: list(pids) for name, pids in self.nodes.items()}
        for node, roots in nodes.items():
            pids = descendants(roots, proc_root=self.proc_root) if self.include_children else roots
            for pid in pids:
                reading = read_proc(pid, proc_root=self.proc_root)
                if reading is None:
                    continue
                previous = self._last.get(pid)
                self._last[pid] = (now, reading.ticks)
                if previous is None or now <= previous[0]:
                    continue
                cpu = (reading.ticks - previous[1]) / CLK_TCK / (now - previous[0]) * 100.0
                added.append((now, node, pid, max(cpu, 0.0), reading.rss))
        with self._lock:
            self._rows.extend(added)
        return len(added)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        """Take the baseline sample and start sampling every ``interval`` in a thread."""
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="siplab-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> pd.DataFrame:
        """Stop the thread (one last sample first) and return the table so far."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample()
        return self.table()

    def table(self) -> pd.DataFrame:
        """Columns ``t, node, pid, cpu, rss`` with :data:`~reports.metrics.SAMPLE_DTYPES`."""
        with self._lock:
            rows = list(self._rows)
        frame = pd.DataFrame(rows, columns=list(SAMPLE_DTYPES))
        return frame.astype(SAMPLE_DTYPES)

    def __enter__(self) -> ProcessSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bottleneck_warnings(
    *,
    offered: float,
    achieved: float,
    cpu: Mapping[str, float],
    generators: Sequence[str],
    busy_pct: float = 90.0,
    idle_sut_pct: float = 50.0,
    shortfall: float = 0.95,
) -> list[str]:
    """Warnings that the load generator, not the system under test, limited a step.

    Args:
        offered: offered rate of the step.
        achieved: attempts actually started per second.
        cpu: mean CPU per node, percent of one core.
        generators: names of the load-generator nodes in ``cpu`` (e.g. ``["sipp"]``).
        busy_pct: a generator at or above this is saturated (SIPp is single-threaded).
        idle_sut_pct: the busiest system-under-test node below this is "not loaded".
        shortfall: achieved below ``shortfall * offered`` counts as falling short.
    """
    warnings: list[str] = []
    for name in generators:
        used = cpu.get(name)
        if used is not None and used >= busy_pct:
            warnings.append(
                f"load generator {name} used {used:.0f}% of a core at {offered:g}/s: the limit "
                "measured may be the generator's, not the router's"
            )
    sut = [v for k, v in cpu.items() if k not in generators]
    if offered > 0 and achieved < shortfall * offered:
        busiest = max(sut, default=0.0)
        if busiest < idle_sut_pct:
            warnings.append(
                f"achieved {achieved:.1f}/s < offered {offered:g}/s while the busiest node under "
                f"test used {busiest:.0f}% of a core: the load generator is the bottleneck"
            )
    return warnings
