"""SIPp as a typed traffic engine: build a command line, run it, parse what it wrote.

SIPp (Debian package ``sip-tester``) is driven only through files, never through its
interactive screen:

- ``-trace_stat -stf <name>_stat.csv -fd 1``: one ';'-separated row of counters per second plus a
  final row at exit; the cumulative ``(C)`` columns of the last row are the run's totals.
- ``-trace_counts``: per scenario element, how many messages were sent/received/retransmitted/
  timed out/unexpected (``<stem>_<pid>_counts.csv``). A UAS's "calls answered" is the count of
  its ``INVITE`` receive element.
- ``-trace_rtt -rtt_freq 1``: one row per completed response-time measurement
  (``<stem>_<pid>_rtt.csv``, integer milliseconds), from which p50/p95/p99 setup delay come.
- ``-trace_err -error_file``: unexpected messages, for diagnosis.

Safety rules of the lab, enforced here: every address on the command line must be in
127.0.0.0/8 (:func:`~lab.engines.probe.require_loopback`), the control socket is
``-ci 127.0.0.1``, a UAC run always has a bounded ``-m`` and a ``-timeout``, and the process is
killed by PID if it outlives that timeout by :attr:`SippRun.kill_grace_s`.
SIPp's documented exit codes: 0 every call succeeded, 1 at least one failed, 97 exit on internal
command, 99 normal exit without calls processed, 255/254 fatal error (254: cannot bind).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from lab.engines.probe import require_loopback, wait_sip_ready
from lab.engines.results import SippResult, parse_result
from lab.engines.sipp_scenarios import ScenarioRole, SippScenario, uas_answer
from lab.procs import ManagedProcess, start_process

__all__ = [
    "SippError",
    "SippProcess",
    "SippRun",
    "run_sipp",
    "run_sipp_async",
    "sipp_binary",
    "start_sipp",
    "start_sipp_uas",
]


class SippError(RuntimeError):
    """SIPp is missing, refused its arguments, or died before being useful."""


def sipp_binary() -> str | None:
    """Path of the ``sipp`` executable, or None if SIPp is not installed."""
    return shutil.which("sipp")


@dataclass(frozen=True, slots=True)
class SippRun:
    """Everything one SIPp process needs; :meth:`argv` turns it into a command line."""

    scenario: SippScenario
    """The call flow; written to ``workdir/<scenario.name>.xml``."""
    local_ip: str
    """Address SIPp binds and puts in Via/Contact (``-i``; also the media IP)."""
    remote: tuple[str, int] | None = None
    """Target ``(host, port)``; required for UAC scenarios."""
    local_port: int = 0
    """``-p``; 0 lets the system choose (UAC only)."""
    rate: float = 10.0
    """``-r``: calls started per :attr:`rate_period_ms`."""
    rate_period_ms: int = 1000
    """``-rp``."""
    max_calls: int = 1
    """``-m``: SIPp exits after this many calls (always bounded for a UAC)."""
    max_concurrent: int | None = None
    """``-l``: cap on simultaneous calls (SIPp default 3 x call length x rate)."""
    rate_increase: float | None = None
    """``-rate_increase``: added to the rate every :attr:`rate_interval_s`."""
    rate_interval_s: float = 1.0
    """``-rate_interval``."""
    rate_max: float | None = None
    """``-rate_max``: with ``rate_increase``, stop ramping (``-no_rate_quit``) at this rate."""
    injection: Path | None = None
    """``-inf`` CSV (see :func:`~lab.engines.sipp_scenarios.users_csv`)."""
    service: str = "service"
    """``-s``: the ``[service]`` keyword (Request-URI user)."""
    timeout_s: float = 30.0
    """``-timeout``: SIPp gives up after this; the process is killed a bit later."""
    kill_grace_s: float = 5.0
    """Extra time before the runner kills SIPp by PID."""
    name: str | None = None
    """File stem for logs and stats (default: the scenario name)."""
    media_port: int | None = None
    """``-mp``; default local_port + 2000 for a UAS, SIPp's choice otherwise."""
    trace_msg: bool = False
    """``-trace_msg``: log every message (slow; debugging only)."""
    max_retrans: int | None = None
    """``-max_retrans``: UDP retransmissions before a call fails."""
    extra_args: tuple[str, ...] = ()
    """Appended verbatim (must not contain addresses)."""

    def __post_init__(self) -> None:
        require_loopback(self.local_ip)
        if self.remote is not None:
            require_loopback(self.remote[0])
        if self.scenario.role is ScenarioRole.UAC:
            if self.remote is None:
                raise ValueError("a UAC scenario needs remote=(host, port)")
            if self.max_calls < 1:
                raise ValueError("max_calls must be >= 1 (SIPp runs are always bounded)")
        if self.scenario.needs_injection and self.injection is None:
            raise ValueError(f"scenario {self.scenario.name} needs an injection file")
        if self.rate <= 0 or self.rate_period_ms <= 0 or self.timeout_s <= 0:
            raise ValueError("rate, rate_period_ms and timeout_s must be positive")

    @property
    def stem(self) -> str:
        return self.name or self.scenario.name

    def argv(self, workdir: Path, binary: str = "sipp") -> list[str]:
        """The SIPp command line, with every output file under ``workdir``."""
        stem = self.stem
        args = [binary]
        if self.remote is not None:
            args.append(f"{self.remote[0]}:{self.remote[1]}")
        args += ["-sf", str(workdir / f"{stem}.xml"), "-i", self.local_ip]
        args += ["-ci", "127.0.0.1", "-nostdin", "-t", "u1", "-s", self.service]
        if self.local_port:
            args += ["-p", str(self.local_port)]
        media = self.media_port
        if media is None and self.scenario.role is ScenarioRole.UAS and self.local_port:
            media = self.local_port + 2000
        if media is not None:
            args += ["-mp", str(media)]
        args += ["-trace_stat", "-stf", str(workdir / f"{stem}_stat.csv"), "-fd", "1"]
        args += ["-trace_counts", "-trace_rtt", "-rtt_freq", "1"]
        args += ["-trace_err", "-error_file", str(workdir / f"{stem}_errors.log")]
        args += ["-trace_screen", "-screen_file", str(workdir / f"{stem}_screen.log")]
        if self.trace_msg:
            args += ["-trace_msg", "-message_file", str(workdir / f"{stem}_messages.log")]
        if self.scenario.role is ScenarioRole.UAC:
            args += ["-r", _num(self.rate), "-rp", f"{self.rate_period_ms}ms"]
            args += ["-m", str(self.max_calls)]
            args += ["-timeout", f"{_num(self.timeout_s)}s", "-timeout_error"]
        if self.max_concurrent is not None:
            args += ["-l", str(self.max_concurrent)]
        if self.rate_increase is not None:
            args += ["-rate_increase", _num(self.rate_increase)]
            args += ["-rate_interval", f"{_num(self.rate_interval_s)}s"]
            if self.rate_max is not None:
                args += ["-rate_max", _num(self.rate_max), "-no_rate_quit"]
        if self.injection is not None:
            args += ["-inf", str(self.injection)]
        if self.max_retrans is not None:
            args += ["-max_retrans", str(self.max_retrans)]
        args += list(self.extra_args)
        return args


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(slots=True, eq=False)
class SippProcess:
    """A running SIPp; :meth:`stop` ends it (SIGUSR1: SIPp's graceful quit) and parses results."""

    run: SippRun
    """What was started."""
    workdir: Path
    """Run folder with scenario, stats and logs."""
    process: ManagedProcess = field(repr=False)
    """The child process (owned; stopped by PID)."""
    killed: bool = False
    """True when we had to kill it (timeout)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.is_running()

    def result(self) -> SippResult:
        """Parse the files written so far (final once the process has exited)."""
        return parse_result(
            self.workdir,
            self.run.stem,
            pid=self.pid,
            exit_code=self.process.returncode,
            killed=self.killed,
        )

    def wait(self) -> SippResult:
        """Wait for SIPp to end on its own (``-m``/``-timeout``), killing it past the deadline."""
        deadline = self.run.timeout_s + self.run.kill_grace_s
        remaining = deadline - (time.monotonic() - self.process.started_at)
        try:
            self.process.wait(max(0.0, remaining))
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.stop(grace=1.0, sig=signal.SIGTERM)
        return self.result()

    def stop(self, grace: float = 3.0) -> SippResult:
        """Ask SIPp to quit (SIGUSR1 dumps final stats), kill after ``grace``; parse results."""
        if self.process.is_running():
            self.process.stop(grace)
        return self.result()


def start_sipp(run: SippRun, workdir: Path, *, binary: str | None = None) -> SippProcess:
    """Write the scenario (and nothing else) to ``workdir`` and start SIPp in the background.

    Raises:
        SippError: SIPp not installed or exited at once (bad arguments, port in use).
    """
    exe = binary or sipp_binary()
    if exe is None:
        raise SippError("SIPp is not installed (Debian package sip-tester)")
    # SIPp runs with the work folder as its cwd but is given paths in it: they must be absolute.
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    path = run.scenario.write(workdir)
    if path.stem != run.stem:
        path.rename(workdir / f"{run.stem}.xml")
    proc = start_process(
        run.argv(workdir, exe),
        name=run.stem,
        log_dir=workdir,
        stop_signal=signal.SIGUSR1,
    )
    return SippProcess(run=run, workdir=workdir, process=proc)


def run_sipp(run: SippRun, workdir: Path, *, binary: str | None = None) -> SippResult:
    """Run a bounded SIPp (UAC) to completion and return its parsed result.

    Raises:
        SippError: SIPp missing, or it ended without writing statistics (fatal error; the
            message quotes its log).
    """
    handle = start_sipp(run, workdir, binary=binary)
    try:
        result = handle.wait()
    finally:
        handle.process.stop(grace=1.0)
    _check_started(handle, result)
    return result


async def run_sipp_async(run: SippRun, workdir: Path, *, binary: str | None = None) -> SippResult:
    """:func:`run_sipp` for trio code: polls the child, stops it by PID if cancelled."""
    handle = start_sipp(run, workdir, binary=binary)
    deadline = handle.process.started_at + run.timeout_s + run.kill_grace_s
    try:
        while handle.is_running():
            if time.monotonic() > deadline:
                handle.killed = True
                break
            await trio.sleep(0.05)
    finally:
        handle.process.stop(grace=1.0, sig=signal.SIGTERM if handle.killed else None)
    result = handle.result()
    _check_started(handle, result)
    return result


_FATAL_EXIT = {254: "cannot bind its socket", 255: "fatal error"}


def _check_started(handle: SippProcess, result: SippResult) -> None:
    fatal = _FATAL_EXIT.get(result.exit_code or 0)
    if fatal and result.exit_code == 255 and result.stats_rows > 0 and result.calls_created > 0:
        # Under overload SIPp also exits 255 ("Dead call ... received", its global timeout)
        # after placing calls and writing statistics: that is a failed run to count, not a
        # SIPp that never started.
        fatal = None
    if result.stats_rows == 0 or fatal:
        why = fatal or "wrote no statistics"
        errors = "\n".join(result.errors[-5:])
        raise SippError(
            f"SIPp {handle.run.stem} {why} (exit {result.exit_code}); {errors}\n"
            f"log:\n{handle.process.log_text(2000)}"
        )


def start_sipp_uas(
    ip: str,
    port: int,
    workdir: Path,
    *,
    name: str = "uas",
    scenario: SippScenario | None = None,
    ready_timeout: float = 10.0,
    binary: str | None = None,
) -> SippProcess:
    """Start a SIPp UAS (the PBX stand-in) on ``ip:port`` and wait until it answers OPTIONS.

    The default scenario is :func:`~lab.engines.sipp_scenarios.uas_answer`, which answers
    OPTIONS itself, so readiness is proven by SIP, not by a sleep.

    Raises:
        SippError: SIPp missing, or not answering within ``ready_timeout`` (it is stopped).
    """
    run = SippRun(
        scenario=scenario or uas_answer(),
        local_ip=ip,
        local_port=port,
        name=name,
        timeout_s=24 * 3600.0,
    )
    handle = start_sipp(run, workdir / name, binary=binary)
    try:
        wait_sip_ready(ip, port, timeout=ready_timeout, alive=handle.is_running)
    except TimeoutError as exc:
        handle.process.stop(grace=1.0)
        log = handle.process.log_text(4000)
        raise SippError(f"SIPp UAS {name} on {ip}:{port}: {exc}\n{log}") from exc
    return handle
