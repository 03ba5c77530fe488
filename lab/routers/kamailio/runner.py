"""Run Kamailio in the foreground, owned by PID, ready when it answers SIP.

``kamailio -DD -E`` keeps the main process attached (no daemonizing, so the PID we hold is the
real main process) and logs to stderr, which :mod:`lab.procs` sends to ``<workdir>/kamailio.log``.
``-Y <workdir>/run`` keeps the runtime dir (FIFOs, sockets) private so several instances can run
side by side and nothing is written to /var/run. The config is checked with ``kamailio -c``
first, and a parse error is raised with the offending cfg line quoted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab.engines.probe import ProbeTimeout, wait_sip_ready
from lab.procs import ManagedProcess, start_process
from lab.routers.kamailio.config import (
    Define,
    KamailioParams,
    KamailioRole,
    define_args,
    dispatcher_list,
    render_config,
)

__all__ = [
    "KamailioConfigError",
    "KamailioError",
    "KamailioProcess",
    "check_config",
    "kamailio_binary",
    "start_kamailio",
    "start_kamailio_config",
    "write_config",
]

_PARSE_ERROR = re.compile(
    r"in config file (?P<file>\S+), line (?P<line>\d+), column \d+: (?P<msg>.*)"
)


class KamailioError(RuntimeError):
    """Kamailio is missing, failed to start, or did not answer SIP in time."""


class KamailioConfigError(KamailioError):
    """``kamailio -c`` rejected the config."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None,
        source_line: str | None,
        file: str | None = None,
    ) -> None:
        detail = message
        if line is not None:
            detail += f"\n  {file or 'cfg'} line {line}: {source_line}"
        super().__init__(detail)
        self.file = file
        """The cfg file Kamailio named (the main cfg or an included one)."""
        self.line = line
        """1-based line number in the rendered cfg, when Kamailio named one."""
        self.source_line = source_line
        """That line's text."""


def kamailio_binary() -> str | None:
    """Path of the ``kamailio`` executable, or None when not installed."""
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()), None
    )


def write_config(params: KamailioParams, workdir: Path) -> Path:
    """Render ``workdir/kamailio.cfg`` (and ``dispatcher.list`` when used); return the cfg path."""
    workdir.mkdir(parents=True, exist_ok=True)
    list_file: Path | None = None
    if KamailioRole.DISPATCHER in params.roles and params.ds_db_url is None:
        list_file = workdir / "dispatcher.list"
        list_file.write_text(dispatcher_list(params.destinations), encoding="ascii")
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(render_config(params, list_file), encoding="utf-8")
    return cfg


def _base_args(
    binary: str | list[str],
    cfg: Path,
    params: KamailioParams,
    workdir: Path,
    defines: list[Define] | None = None,
) -> list[str]:
    rundir = workdir / "run"
    rundir.mkdir(parents=True, exist_ok=True)
    return [
        *([binary] if isinstance(binary, str) else binary),
        "-f",
        str(cfg),
        "-Y",
        str(rundir),
        "-w",
        str(workdir),
        "-m",
        str(params.shm_mb),
        "-M",
        str(params.pkg_mb),
        *define_args(defines or []),
    ]


def check_config(
    cfg: Path,
    params: KamailioParams,
    workdir: Path,
    *,
    binary: str | None = None,
    defines: list[Define] | None = None,
    launcher: list[str] | None = None,
) -> None:
    """Run ``kamailio -c`` on ``cfg`` (with ``defines`` as ``-A``; ``launcher``: the command
    that stands for the ``kamailio`` binary, e.g. a ``docker run ... IMAGE`` prefix).

    Raises:
        KamailioConfigError: the config does not parse or a module refuses it (the message
            names the file and line when Kamailio does, and quotes Kamailio's own errors).
    """
    exe = launcher or binary or kamailio_binary()
    if exe is None:
        raise KamailioError("Kamailio is not installed (Debian package kamailio)")
    # -c does not allocate the real shared memory; a small -m keeps the check fast.
    args = [*_base_args(exe, cfg, params, workdir, defines), "-c"]
    args[args.index("-m") + 1] = "64"
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 0:
        return
    output = (done.stdout + done.stderr).strip()
    match = _PARSE_ERROR.search(output)
    line_no = int(match["line"]) if match else None
    named = Path(match["file"]) if match else cfg
    source = None
    if line_no is not None:
        try:
            lines = named.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        source = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else None
    error_lines = [ln for ln in output.splitlines() if "ERROR" in ln or "CRITICAL" in ln]
    message = "\n".join(error_lines[-5:]) or output[-2000:]
    raise KamailioConfigError(
        f"kamailio -c {cfg} failed:\n{message}",
        line=line_no,
        source_line=source,
        file=str(named),
    )


@dataclass(slots=True, eq=False)
class KamailioProcess:
    """A running Kamailio we own."""

    params: KamailioParams
    """What it was rendered from."""
    workdir: Path
    """Folder with ``kamailio.cfg``, ``dispatcher.list``, ``kamailio.log``, ``run/``."""
    cfg_path: Path
    """The rendered config."""
    process: ManagedProcess = field(repr=False)
    """Main process (``-DD``): workers are its children, in its process group."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return self.params.address

    def is_running(self) -> bool:
        return self.process.is_running()

    def log_text(self, limit: int = 200_000) -> str:
        return self.process.log_text(limit)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM the main process (it stops its workers), SIGKILL the group after ``grace``."""
        return self.process.stop(grace)

    def __enter__(self) -> KamailioProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_kamailio(
    params: KamailioParams,
    workdir: Path,
    *,
    ready_timeout: float = 15.0,
    probe_ip: str = "127.0.0.1",
    binary: str | None = None,
) -> KamailioProcess:
    """Render, check and start Kamailio; return once it answers an OPTIONS.

    Raises:
        KamailioConfigError: ``kamailio -c`` failed.
        KamailioError: not installed, exited early, or no SIP answer in ``ready_timeout``
            (the process is stopped and its log quoted).
    """
    cfg = write_config(params, workdir)
    return start_kamailio_config(
        cfg, params, workdir, ready_timeout=ready_timeout, probe_ip=probe_ip, binary=binary
    )


def start_kamailio_config(
    cfg: Path,
    params: KamailioParams,
    workdir: Path,
    *,
    ready_timeout: float = 15.0,
    probe_ip: str = "127.0.0.1",
    binary: str | None = None,
) -> KamailioProcess:
    """Check and start an existing cfg file (``params`` gives address and memory sizes).

    For experiments and tests with a hand-written cfg; :func:`start_kamailio` is the usual door.
    The cfg must listen on ``params.listen_ip:listen_port`` and answer OPTIONS to itself.
    """
    exe = binary or kamailio_binary()
    if exe is None:
        raise KamailioError("Kamailio is not installed (Debian package kamailio)")
    check_config(cfg, params, workdir, binary=exe)
    argv = [*_base_args(exe, cfg, params, workdir), "-DD", "-E"]
    proc = start_process(argv, name="kamailio", log_dir=workdir)
    handle = KamailioProcess(params=params, workdir=workdir, cfg_path=cfg, process=proc)
    try:
        wait_sip_ready(
            params.listen_ip,
            params.listen_port,
            timeout=ready_timeout,
            local_ip=probe_ip,
            alive=proc.is_running,
        )
    except ProbeTimeout as exc:
        handle.stop(grace=2.0)
        log = proc.log_text(4000)
        raise KamailioError(
            f"kamailio at {params.listen_ip}:{params.listen_port}: {exc}\n{log}"
        ) from exc
    return handle
