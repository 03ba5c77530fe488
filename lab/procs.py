"""Child processes owned by PID, with logs in a folder and guaranteed cleanup.

The lab starts real programs (SIPp, Kamailio, the reference router) next to each other on one
machine. Three rules keep that safe when several engineers' tests run at once:

1. We only ever signal processes we started, by their PID (or the process group whose id is
   that PID, because ``start_new_session=True`` made the child its own group leader). Never by
   name: ``pkill sipp`` would kill somebody else's run.
2. Every child writes stdout+stderr to ``<log_dir>/<name>.log`` so a failed run leaves evidence.
3. Cleanup always runs: :meth:`ManagedProcess.stop` is idempotent, :class:`ProcessGroup` stops
   everything in reverse start order on exit, and an ``atexit`` hook stops whatever is still
   running when the interpreter ends (a crashed test must not leave a Kamailio bound to a port).

Stopping sends a polite signal first (SIGTERM, or SIGUSR1 for SIPp which treats it as "quit
gracefully and dump final statistics"), waits ``grace`` seconds, then SIGKILLs the whole group
(Kamailio forks workers; if the main process dies from SIGKILL, the workers would otherwise be
orphaned).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "ManagedProcess",
    "ProcessError",
    "ProcessGroup",
    "start_process",
]


class ProcessError(RuntimeError):
    """A child process could not be started or exited unexpectedly."""


_LIVE: dict[int, ManagedProcess] = {}


@dataclass(slots=True, eq=False)
class ManagedProcess:
    """A child process we own; signal it only through these methods."""

    name: str
    """Short name, also the log file stem."""
    argv: tuple[str, ...]
    """Command line as started."""
    log_path: Path
    """File receiving the child's stdout and stderr."""
    popen: subprocess.Popen[bytes] = field(repr=False)
    """The underlying Popen object."""
    started_at: float
    """``time.monotonic()`` at start."""
    stop_signal: signal.Signals = signal.SIGTERM
    """Signal sent first by :meth:`stop`."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit and return the exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        code = self.popen.wait(timeout)
        self._forget()
        return code

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child (its PID only), ignoring an already-exited child."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 5.0, sig: signal.Signals | None = None) -> int:
        """Stop the child: ``sig`` (default :attr:`stop_signal`), then SIGKILL after ``grace`` s.

        Idempotent. After the main process is gone, the child's process group (id == our PID,
        created by ``start_new_session``) is SIGKILLed too, so forked workers cannot outlive it.

        Returns:
            The exit code (negative signal number when killed by a signal).
        """
        if self.popen.poll() is None:
            self.send_signal(sig or self.stop_signal)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.popen.wait(5.0)
        self._kill_group()
        self._forget()
        code = self.popen.returncode
        assert code is not None
        return code

    def log_text(self, limit: int = 200_000) -> str:
        """The tail of the log file (empty if absent)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def _kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _forget(self) -> None:
        _LIVE.pop(self.pid, None)


def start_process(
    argv: Sequence[str],
    *,
    name: str,
    log_dir: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
) -> ManagedProcess:
    """Start ``argv`` in its own session with output to ``log_dir/<name>.log``.

    Args:
        argv: program and arguments (no shell).
        name: log file stem and display name.
        log_dir: created if missing.
        cwd: working directory (default: ``log_dir``).
        env: extra environment variables added to ours.
        stop_signal: first signal :meth:`ManagedProcess.stop` sends.

    Raises:
        ProcessError: the program does not exist or cannot be executed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with log_path.open("ab") as log:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or log_dir,
                env=full_env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {name}: {argv[0]}: {exc}") from exc
    proc = ManagedProcess(
        name=name,
        argv=tuple(argv),
        log_path=log_path,
        popen=popen,
        started_at=time.monotonic(),
        stop_signal=stop_signal,
    )
    _LIVE[popen.pid] = proc
    return proc


class ProcessGroup:
    """Owns several processes; ``with ProcessGroup() as g: g.add(p)`` stops them all on exit."""

    __slots__ = ("_procs",)

    def __init__(self) -> None:
        self._procs: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        self._procs.append(proc)
        return proc

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(list(self._procs))

    def stop_all(self, grace: float = 5.0) -> None:
        """Stop in reverse start order (clients before the servers they talk to)."""
        while self._procs:
            self._procs.pop().stop(grace)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE.values()):
        proc.stop(grace=1.0)
