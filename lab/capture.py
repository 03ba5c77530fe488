"""The lab's packet capture: every datagram and segment between the lab's addresses.

A lab run starts ``tcpdump`` on the loopback interface before its first node and stops it at
``lab down``; ``<run>/capture.pcap`` then holds what really crossed the wire between phones,
load generators, relays, the router and the PBX nodes, whatever runs in those seats (the
reference router, Kamailio, an emulator, a container with host networking). It is the source of
ladders, of the per-test pcap of a failed test and of the checks that need to see a leg.

- **Filter.** ``net 127.<net>.0.0/24`` (the lab's addresses), minus the DB port (PostgreSQL)
  and the HTTP status/RPC port: only the SIP traffic of this lab, not the other labs sharing the
  machine on other nets.
- **Latency.** ``--immediate-mode`` (no kernel buffering) and ``-U`` (each packet written to the
  file as it arrives), so a reader sees a packet within a millisecond or so of its sending.
- **Barrier.** :func:`flush` sends a marker datagram (:data:`lab.wire.MARKER` and a fresh
  token) to itself on a lab address and returns once the token is in the file: every packet
  sent before the call is then in the file too (one interface, one capture, in order). This
  replaces sleeps that waited for logs to be written; the same barrier proves the capture ready
  at start.
- **Bounded size.** With ``ring_mb`` set (capacity runs) tcpdump keeps ``ring_files`` files of
  ``ring_mb`` MB each (``-C``/``-W``), overwriting the oldest: the capture is bounded to
  ``ring_mb * ring_files`` MB of the *last* traffic of the run, merged into ``capture.pcap`` at
  stop. With ``keep_mb`` too, each file tcpdump finishes is looked at (``-z``, the
  post-rotate hook, :func:`write_keep_hook`): one that holds a failure answer (a final response
  >= 300 other than the 401/407 challenges, or a ``cause=408`` Reason) is moved out of the
  ring into ``capture-kept/`` while the kept files stay under ``keep_mb``, so the failures of
  earlier load steps survive the ring; they are merged in front of the ring's files at stop.
- **Ownership.** The process is the lab's own (PID and argv in ``<run>/capture.json``); stopped
  by PID after checking ``/proc/<pid>/cmdline`` (PIDs get reused), with SIGINT so tcpdump
  writes its last buffer. Attached runs (pytest, ``Lab``) give it a parent-death signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.backends import LabError
from lab.topology import DB_PORT, HTTP_PORT
from lab.wire import MARKER, merge_pcaps

CAPTURE_FILE = "capture.pcap"
STATE_FILE = "capture.json"
MARK_HOST = 254
"""Last octet of the address the barrier datagrams use (127.<net>.0.254, no node there)."""


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    net: int
    exclude_ports: tuple[int, ...] = (DB_PORT, HTTP_PORT)
    ring_mb: int = 0
    """0: one unbounded file; else the size of each ring-buffer file (MB, 10^6 bytes)."""
    ring_files: int = 5
    keep_mb: int = 0
    """Ring mode: MB of finished ring files with failures kept out of the ring (0: none)."""
    interface: str = "lo"
    """Where the lab's packets cross: loopback, or the lab bridge in netns mode (tcpdump then
    runs in the harness namespace, which the calling thread has entered)."""
    subnet: str = ""
    """The lab's addresses (BPF ``net``); empty: ``127.<net>.0.0/24``."""
    mark_from: str = ""
    """Address the barrier's marker datagrams leave from; empty: ``127.<net>.0.254``."""
    mark_to: str = ""
    """Where they go; empty: back to ``mark_from`` (over loopback). On a bridge, an address
    with a static neighbour entry and no host behind it, so the datagram crosses the bridge."""

    @property
    def bound_mb(self) -> int | None:
        return self.ring_mb * self.ring_files + self.keep_mb if self.ring_mb else None


@dataclass(frozen=True, slots=True)
class CaptureState:
    """What ``capture.json`` records about a run's capture."""

    pid: int | None
    argv: list[str]
    path: str
    net: int
    ring_mb: int = 0
    ring_files: int = 0
    keep_mb: int = 0
    frames: int | None = None
    """Frames in ``capture.pcap`` after a ring merge (None: not counted)."""
    dropped: int | None = None
    """Packets the kernel dropped before tcpdump read them (tcpdump's own count at exit): a
    capture with drops misses messages that were on the wire."""
    cpu_s: float | None = None
    """CPU time tcpdump used over the run (user + system), read just before it was stopped:
    what the capture cost the machine the lab measures."""
    mark_from: str = ""
    """The barrier's source address (``CaptureConfig.mark_from``)."""
    mark_to: str = ""
    """The barrier's destination (``CaptureConfig.mark_to``)."""


def capture_filter(config: CaptureConfig) -> str:
    """The BPF filter of a lab's capture (libpcap syntax)."""
    text = f"net {config.subnet or f'127.{config.net}.0.0/24'} and (udp or tcp)"
    for port in config.exclude_ports:
        text += f" and not port {port}"
    return text


def tcpdump() -> str:
    """Path of tcpdump.

    Raises:
        LabError: not installed (Debian package ``tcpdump``; scripts/setup.sh installs it).
    """
    path = shutil.which("tcpdump") or next(
        (p for p in ("/usr/bin/tcpdump", "/usr/sbin/tcpdump") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise LabError("capture: tcpdump is not installed (apt-get install tcpdump)")
    return path


def capture_argv(config: CaptureConfig, path: Path) -> list[str]:
    # Immediate mode makes libpcap use TPACKET_V2: fixed ring slots as big as the snapshot
    # length (65535: every datagram whole, lo's MTU is 65536), so the 64 MiB kernel buffer
    # (-B, KiB) holds ~1000 packets while tcpdump waits for a CPU on a loaded machine.
    argv = [
        tcpdump(),
        "-i",
        config.interface,
        "-n",
        "-s",
        "65535",
        "-B",
        "65536",
        "-U",
        "--immediate-mode",
    ]
    argv += ["-Z", "root", "-w", str(path)]  # -Z root: keep writing into root's run folder
    if config.ring_mb:
        argv += ["-C", str(config.ring_mb), "-W", str(config.ring_files)]
        if config.keep_mb:
            argv += ["-z", str(path.parent / KEEP_HOOK)]
    return [*argv, capture_filter(config)]


KEPT_DIR = "capture-kept"
KEEP_HOOK = "capture-keep.sh"
STOPPING = "capture-stopping"
FAILURE_PATTERN = r"SIP/2\.0 (?!40[17] )[3-6][0-9][0-9] |cause=408"
"""A final failure answer (the 401/407 challenges excepted) or a BYE ending a call for a
timeout (RFC 3326 Reason), searched in the raw bytes of a finished ring file."""


def write_keep_hook(run_dir: Path, budget_mb: int, ring_mb: int = 1) -> Path:
    """The post-rotate hook tcpdump runs on each finished ring file (``-z`` takes one command
    and gives it the file name). Shell and grep, not Python: it runs while the load runs and
    must finish before the ring comes round to the same file, so it must cost next to nothing.

    It moves the file into ``capture-kept/`` when the file holds a failure
    (:data:`FAILURE_PATTERN`) and the kept files stay within ``budget_mb``; it does nothing
    once the capture is being stopped (``capture-stopping``). A file smaller than ``ring_mb``
    is not a finished one: tcpdump has already come round to it and writes it again (a hook
    that ran late), so it is left alone."""
    run_dir = Path(run_dir)
    kept = run_dir / KEPT_DIR
    hook = run_dir / KEEP_HOOK
    hook.write_text(
        "#!/bin/sh\n"
        "# tcpdump -z hook (lab/capture.py): keep a finished ring file that holds a failure.\n"
        f'[ -e "{run_dir / STOPPING}" ] && exit 0\n'
        'size=$(wc -c < "$1")\n'
        f'[ "$size" -ge {ring_mb * 1_000_000} ] || exit 0\n'
        f"grep -qaP '{FAILURE_PATTERN}' \"$1\" || exit 0\n"
        f'mkdir -p "{kept}"\n'
        f"used=$(find '{kept}' -name '*.pcap' -printf '%s\\n' | awk '{{s+=$1}} END {{print s+0}}')\n"
        f"[ $((used + size)) -le {budget_mb * 1_000_000} ] || exit 0\n"
        f'[ "$(wc -c < "$1")" -ge {ring_mb * 1_000_000} ] || exit 0\n'
        f'mv "$1" "{kept}/$(date +%s%N).pcap"\n',
        encoding="utf-8",
    )
    hook.chmod(0o755)
    return hook


def _live_file(state: CaptureState) -> Path | None:
    """The file tcpdump is writing now (the newest part in ring mode)."""
    path = Path(state.path)
    if not state.ring_mb:
        return path if path.exists() else None
    parts = ring_parts(path)
    return parts[-1] if parts else None


def ring_parts(path: Path) -> list[Path]:
    """Ring-buffer files of ``path`` (``capture.pcap0`` ...), oldest first."""
    parts = [p for p in path.parent.glob(path.name + "*") if p.name[len(path.name) :].isdigit()]
    return sorted(parts, key=lambda p: p.stat().st_mtime_ns)


def flush(state: CaptureState, timeout: float = 5.0) -> bool:
    """Barrier: True once every packet sent before this call is in the capture file.

    Sends a marker datagram to itself on 127.<net>.0.254 and reads the file until the marker's
    token is there; resends every 200 ms (a marker sent before the filter was attached is never
    seen). False on timeout (capture not running or not writing).
    """
    token = MARKER + uuid.uuid4().hex.encode()
    host = state.mark_from or f"127.{state.net}.0.{MARK_HOST}"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        resend = 0.0
        offset = 0
        seen: Path | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= resend:
                sock.sendto(token, (state.mark_to, 9) if state.mark_to else sock.getsockname())
                resend = now + 0.2
            path = _live_file(state)
            if path is not None:
                if path != seen:
                    seen, offset = path, 0
                start = max(0, offset - len(token))
                with path.open("rb") as f:
                    f.seek(start)
                    chunk = f.read()
                if token in chunk:
                    return True
                offset = start + len(chunk)
            if state.pid is not None and not _alive(state.pid):
                return False
            time.sleep(0.002)  # polling the file; the marker itself is the readiness signal
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _dropped(log: Path, default: int | None) -> int | None:
    """The last ``N packets dropped by kernel`` tcpdump printed at exit."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return default
    for line in reversed(lines):
        if line.endswith("packets dropped by kernel") and line.split()[0].isdigit():
            return int(line.split()[0])
    return default


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


def _is_ours(state: CaptureState) -> bool:
    if state.pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [c.decode(errors="replace") for c in cmdline if c] == state.argv


def _die_with_parent() -> None:  # between fork and exec: SIGKILL when the harness dies
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def read_state(run_dir: Path) -> CaptureState | None:
    try:
        data = json.loads((Path(run_dir) / STATE_FILE).read_text(encoding="utf-8"))
        return CaptureState(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write_state(run_dir: Path, state: CaptureState) -> None:
    (Path(run_dir) / STATE_FILE).write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_capture(
    run_dir: Path, config: CaptureConfig, *, attached: bool, timeout: float = 10.0
) -> CaptureState:
    """Start the lab's capture into ``<run_dir>/capture.pcap`` and wait until it sees a marker.

    Raises:
        LabError: tcpdump missing, exits, or sees no marker within ``timeout`` (with its log).
    """
    run_dir = Path(run_dir)
    path = run_dir / CAPTURE_FILE
    for old in [path, *ring_parts(path)]:
        old.unlink(missing_ok=True)
    shutil.rmtree(run_dir / KEPT_DIR, ignore_errors=True)
    (run_dir / STOPPING).unlink(missing_ok=True)
    if config.ring_mb and config.keep_mb:
        write_keep_hook(run_dir, config.keep_mb, config.ring_mb)
    argv = capture_argv(config, path)
    log = run_dir / "logs" / "capture.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=run_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if attached else None,
            )
        except OSError as exc:
            raise LabError(f"capture: cannot start {argv[0]}: {exc}") from exc
    _CHILDREN[popen.pid] = popen
    state = CaptureState(
        popen.pid,
        argv,
        str(path),
        config.net,
        config.ring_mb,
        config.ring_files if config.ring_mb else 0,
        config.keep_mb if config.ring_mb else 0,
        mark_from=config.mark_from,
        mark_to=config.mark_to,
    )
    _write_state(run_dir, state)
    if not flush(state, timeout):
        _stop_process(state, 1.0)
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise LabError(
            f"capture: tcpdump did not start capturing on {config.interface} within {timeout} s "
            f"({log}): {' | '.join(tail) or 'no output'}"
        )
    return state


def _stop_process(state: CaptureState, grace: float) -> None:
    pid = state.pid
    if pid is None:
        return
    child = _CHILDREN.pop(pid, None)
    if child is None and not _is_ours(state):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGINT)  # tcpdump writes what it holds and exits
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            break
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if child is not None:
        child.wait(5.0)


def stop_capture(run_dir: Path, grace: float = 5.0) -> Path | None:
    """Flush and stop the run's capture; in ring mode merge the parts into ``capture.pcap``.

    Returns the capture's path, or None when the run had no capture."""
    state = read_state(Path(run_dir))
    if state is None:
        return None
    cpu_s = state.cpu_s
    if state.keep_mb:
        (Path(run_dir) / STOPPING).touch()  # the hook leaves the last files where they are
    if state.pid is not None and (state.pid in _CHILDREN or _is_ours(state)):
        flush(state, 2.0)
        cpu_s = _cpu_seconds(state.pid)
        _stop_process(state, grace)
    path = Path(state.path)
    frames = state.frames
    if state.ring_mb:
        ring = ring_parts(path)  # listed first: a file a late hook moves is then in `kept`
        kept = sorted((Path(run_dir) / KEPT_DIR).glob("*.pcap"))  # older than the ring's
        parts = kept + ring
        if parts:
            frames = merge_pcaps(parts, path)
            for part in parts:
                part.unlink(missing_ok=True)
        shutil.rmtree(Path(run_dir) / KEPT_DIR, ignore_errors=True)
        (Path(run_dir) / STOPPING).unlink(missing_ok=True)
    _write_state(
        Path(run_dir),
        CaptureState(
            **{
                **asdict(state),
                "pid": None,
                "frames": frames,
                "cpu_s": cpu_s,
                "dropped": _dropped(Path(run_dir) / "logs" / "capture.log", state.dropped),
            }
        ),
    )
    return path if path.exists() else None


__all__ = [
    "CAPTURE_FILE",
    "CaptureConfig",
    "CaptureState",
    "capture_argv",
    "capture_filter",
    "flush",
    "read_state",
    "ring_parts",
    "start_capture",
    "stop_capture",
    "tcpdump",
    "write_keep_hook",
]
