"""The local backend: every node a process on its own 127.x.0.y address.

Start order is dependency order: DB (the lab's own PostgreSQL first when the topology asks for
it, ``lab/backends/postgres.py``; then provisioned in-process: schema, users and ``users.csv``,
the router endpoint, queues, the dispatcher set), PBX nodes, the relays in front of them, the router,
then the relay in front of the router. A SIP node is ready when it answers an OPTIONS, built with
``router.sip`` and sent over UDP, with 200 (never a sleep), the DB when psycopg connects; and
only when the node's own process holds the socket there, alone (``lab/backends/ownership.py``:
another lab on the same addresses answers too). One that does not answer in time, exits, or
shares its address, fails ``up`` with its name and the tail of its log, and everything started
is stopped.

Process ownership (rule of ``lab/procs.py``: only our own PIDs, never by name):

- every child is its own session and process group (``start_new_session``), and is signalled as
  a group (``killpg``), so nothing it forks outlives it;
- *attached* mode (the pytest plugin, ``Lab`` objects): children get ``PR_SET_PDEATHSIG`` =
  SIGKILL, so even a SIGKILLed harness leaves nothing behind, plus an ``atexit`` hook and a
  SIGTERM handler for the polite cases;
- *detached* mode (``siplab lab up``, which must return while the lab keeps running): no death
  signal; ``siplab lab down`` stops the PIDs recorded in ``lab.json``, after checking in
  ``/proc/<pid>/cmdline`` that the PID still runs the command we started (PIDs get reused).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from lab.backends import LabError, NodeState
from lab.backends.ownership import Holders, socket_holders
from lab.backends.postgres import (
    LabPostgres,
    PostgresError,
    lab_postgres,
    remove_outside_cluster,
)
from lab.backends.render import (
    Plan,
    PlannedNode,
    kamailio_argv,
    plan,
    provision,
    record_lab,
    write_configs,
)
from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.topology import Topology

if TYPE_CHECKING:
    from lab.capture import CaptureConfig
from router.sip import (
    Headers,
    Request,
    Response,
    SipError,
    new_branch,
    new_call_id,
    new_tag,
    parse_untrusted,
    serialize,
)

_ATTACHED: dict[int, subprocess.Popen[bytes]] = {}
"""Children that must die with this process (attached mode)."""
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}
"""Every child this process started, attached or not, so it can be waited for (no zombies)."""
_HOOKS_INSTALLED = False
_STOP_SIGNALS = {"sipp": signal.SIGUSR1, "postgresql": signal.SIGINT}
_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: atexit + signal handlers only
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill_attached() -> None:
    for pid, popen in list(_ATTACHED.items()):
        _signal_group(pid, signal.SIGKILL)
        try:
            popen.wait(2.0)
        except subprocess.TimeoutExpired:
            pass
        _ATTACHED.pop(pid, None)


def _on_sigterm(signum: int, frame: object) -> None:
    _kill_attached()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_kill_attached)
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: PDEATHSIG and atexit still cover us
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def proc_state(pid: int | None) -> NodeState:
    """UP, PAUSED (stopped: ``T``/``t``) or DOWN (gone or zombie), from /proc/<pid>/stat."""
    if not pid:
        return NodeState.DOWN
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return NodeState.DOWN
    state = stat.rpartition(")")[2].split()[0]
    if state in ("Z", "X", "x"):
        return NodeState.DOWN
    return NodeState.PAUSED if state in ("T", "t") else NodeState.UP


def _exec_tail(argv: list[str]) -> list[str]:
    """What runs after ``setpriv [options] cmd...`` has exec'd: ``cmd...``."""
    if argv and Path(argv[0]).name == "setpriv":
        rest = argv[1:]
        while rest and rest[0].startswith("-"):
            takes_value = rest[0] in ("--pdeathsig",) and len(rest) > 1
            rest = rest[2:] if takes_value else rest[1:]
        return rest
    return argv


def _is_ours(node: NodeRecord) -> bool:
    """The PID still runs the command line we started (not a reused PID)."""
    if not node.pid or not node.argv:
        return False
    try:
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes()
    except OSError:
        return False
    running = [a.decode(errors="replace") for a in cmdline.rstrip(b"\0").split(b"\0")]
    return running in (node.argv, _exec_tail(node.argv))


# -- readiness ------------------------------------------------------------------------------


def options_request(host: str, port: int, local: tuple[str, int]) -> Request:
    """An out-of-dialog OPTIONS to ``host:port`` from ``local`` (RFC 3261 §11.1)."""
    lhost, lport = local
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP {lhost}:{lport};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:lab@{lhost}>;tag={new_tag()}"),
            ("To", f"<sip:{host}:{port}>"),
            ("Call-ID", new_call_id(lhost)),
            ("CSeq", "1 OPTIONS"),
            ("Accept", "application/sdp"),
            ("Content-Length", "0"),
        ]
    )
    return Request("OPTIONS", f"sip:{host}:{port}", headers)


def options_ping(
    host: str, port: int, *, source: str = "127.0.0.1", timeout: float = 0.5
) -> int | None:
    """Send one OPTIONS (retransmitted Timer-E style from 50 ms) and return the final status."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        request = options_request(host, port, sock.getsockname()[:2])
        data = serialize(request)
        deadline = time.monotonic() + timeout
        interval, next_send = 0.05, 0.0
        while (now := time.monotonic()) < deadline:
            if now >= next_send:
                try:
                    sock.sendto(data, (host, port))
                except OSError:
                    pass  # ICMP unreachable from an earlier send: not up yet
                next_send, interval = now + interval, min(interval * 2, 0.5)
            sock.settimeout(max(0.001, min(next_send, deadline) - time.monotonic()))
            try:
                reply = sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                continue
            try:
                response = parse_untrusted(reply)
            except SipError:
                continue
            if (
                isinstance(response, Response)
                and response.is_final
                and response.call_id == request.call_id
            ):
                return response.status
    return None


def wait_ready(
    name: str,
    host: str,
    port: int,
    *,
    timeout: float,
    source: str,
    log: Path | None = None,
    pid: int | None = None,
    want: int | None = 200,
    owned: bool = True,
) -> int:
    """Probe until ``host:port`` answers OPTIONS with ``want`` (any final when None).

    With ``pid`` (a node the lab started), the answer counts only once a process of that
    node's group holds the UDP socket on ``host:port`` and nobody else does
    (``lab/backends/ownership.py``): another lab's node on the same address answers too,
    while ours fails to bind and exits (its log says why), or binds beside it when both set
    ``SO_REUSEADDR`` (``up`` fails naming the other pid). ``owned=False``: a node that runs in a
    container (``pid`` is the ``docker run`` client; the socket belongs to the container's
    processes, outside its group), where only the answer and the client's life are checked.

    Raises:
        LabError: naming the node, what went wrong and the tail of its log.
    """
    deadline = time.monotonic() + timeout
    last: int | None = None
    foreign = False
    while time.monotonic() < deadline:
        if pid is not None and proc_state(pid) is NodeState.DOWN:
            raise LabError(f"{name} ({host}:{port}) exited before it answered{_log_tail(log)}")
        last = options_ping(host, port, source=source, timeout=0.4)
        if last is not None and (want is None or last == want):
            if pid is None or not owned:
                return last
            holders = socket_holders(pid, "udp", host, port)
            if holders.shared:
                raise LabError(_shared_message(name, host, port, pid, holders, log))
            if holders.ours:
                return last
            # Answered by a process outside the node's group: ours may still be binding (or
            # failing to); poll its state rather than the other node.
            foreign = True
            time.sleep(0.05)
    if foreign:
        raise LabError(
            f"{name} ({host}:{port}) not ready after {timeout:g} s: the OPTIONS answers come "
            f"from a process that is not pid {pid} (another lab on the same addresses?)"
            f"{_log_tail(log)}"
        )
    got = f"last answer {last}" if last is not None else "no answer"
    raise LabError(f"{name} ({host}:{port}) not ready after {timeout:g} s ({got}){_log_tail(log)}")


_ERROR_LINE = re.compile(r"(?i:unable|cannot|fatal|already in use|errno)|ERROR|Error:|Traceback")
"""Lines worth quoting from anywhere in a log: SIPp prints its bind error first and then
pages of statistics screen, so the tail alone can miss why a node stopped."""


def _shared_message(
    name: str, host: str, port: int, pid: int, holders: Holders, log: Path | None
) -> str:
    others = ", ".join(str(p) for p in holders.others) or "a process this lab cannot see"
    return (
        f"{name} ({host}:{port}): the address is also bound by pid {others}, not pid {pid} "
        f"that the lab started (another lab on the same addresses?){_log_tail(log)}"
    )


def _log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"; log {log} missing"
    tail = text[-lines:]
    earlier = [line for line in text[:-lines] if _ERROR_LINE.search(line)][:5]
    if earlier:
        tail = [*earlier, "...", *tail]
    return f"; log {log}:\n" + "\n".join("    " + line for line in tail)


# -- command lines --------------------------------------------------------------------------


def node_argv(
    node: PlannedNode, run_dir: Path, topology: Topology | None = None, p: Plan | None = None
) -> list[str]:
    """The command line starting ``node`` (``sys.executable`` for our own programs)."""
    py = sys.executable
    if node.role == "router":
        if node.kind == "kamailio" and topology is not None and p is not None:
            return kamailio_argv(topology, p)
        if node.kind != "reference":
            raise LabError(f"router kind {node.kind!r} is not supported by the local backend")
        return [py, "-m", "router.cli", "router", "--config", str(node.config)]
    if node.role == "proxy":
        return [py, "-m", "lab.faults", "--config", str(node.config)]
    if node.kind == "emulator":
        return [py, "-m", "lab.cli", "pbx", "--config", str(node.config)]
    if node.kind == "sipp":
        from lab.engines import SippRun, sipp_binary, uas_answer

        exe = sipp_binary()
        if exe is None:
            raise LabError(f"{node.name}: kind 'sipp' needs SIPp (Debian package sip-tester)")
        workdir = run_dir / "sipp" / node.name
        run = SippRun(
            uas_answer(), node.host, local_port=node.port, name=node.name, timeout_s=7 * 86400.0
        )
        path = run.scenario.write(workdir)
        path.replace(workdir / f"{run.stem}.xml")
        return run.argv(workdir, exe)
    raise LabError(f"{node.name}: PBX kind {node.kind!r} is not supported by the local backend")


# -- the backend ----------------------------------------------------------------------------


class LocalBackend:
    """Processes on 127.x.0.y; see the module docstring for ownership and cleanup."""

    name = "local"

    def __init__(
        self, *, detach: bool = False, ready_timeout: float = 15.0, stop_grace: float = 3.0
    ) -> None:
        self.detach = detach
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._children = _SPAWNED

    # process primitives

    def _spawn(
        self, argv: list[str], name: str, run_dir: Path, cwd: Path | None = None
    ) -> tuple[int, Path]:
        log = run_dir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if not self.detach:
            _install_hooks()
        with log.open("ab") as out:
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd or run_dir,
                    env=env,
                    start_new_session=True,
                    preexec_fn=None if self.detach else _die_with_parent,
                )
            except OSError as exc:
                raise LabError(f"{name}: cannot start {argv[0]}: {exc}") from exc
        self._children[popen.pid] = popen
        if not self.detach:
            _ATTACHED[popen.pid] = popen
        return popen.pid, log

    def _stop_pid(self, node: NodeRecord, grace: float) -> None:
        try:
            self._stop_process(node, grace)
        finally:
            # A node run as `docker run --name X ...` (Kamailio 6.x): SIGTERM reaches the
            # container through the client, a SIGKILLed client (kill -9 scenarios) leaves it
            # running; remove it by the name the lab gave it.
            argv = node.argv
            if argv and Path(argv[0]).name == "docker" and "--name" in argv[:-1]:
                name = argv[argv.index("--name") + 1]
                subprocess.run(
                    ["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False
                )

    def _stop_process(self, node: NodeRecord, grace: float) -> None:
        pid = node.pid
        if not pid:
            return
        child = self._children.pop(pid, None)
        _ATTACHED.pop(pid, None)
        if child is None and not _is_ours(node):
            return  # not started by this process and the PID now runs something else
        _signal_group(pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
        # SIPp treats SIGUSR1 as "quit gracefully" (lab/procs.py); PostgreSQL's SIGTERM waits
        # for every client to leave ("smart"), SIGINT disconnects them ("fast shutdown");
        # everything else SIGTERM.
        _signal_group(pid, _STOP_SIGNALS.get(node.kind, signal.SIGTERM))
        deadline = time.monotonic() + grace
        while proc_state(pid) is not NodeState.DOWN and time.monotonic() < deadline:
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.02)
        _signal_group(pid, signal.SIGKILL)
        if child is not None:
            child.wait(5.0)
        else:
            end = time.monotonic() + 5.0
            while proc_state(pid) is not NodeState.DOWN and time.monotonic() < end:
                time.sleep(0.02)

    def _start_node(
        self,
        node: PlannedNode,
        p: Plan,
        started: list[NodeRecord],
        probe_source: str,
        topology: Topology | None = None,
    ) -> NodeRecord:
        if node.external:
            record = NodeRecord(
                node.name,
                node.role,  # type: ignore[arg-type]
                node.host,
                node.port,
                kind="external",
            )
            wait_ready(
                node.name,
                node.host,
                node.port,
                timeout=self.ready_timeout,
                source=probe_source,
                want=None,
            )
            return record
        argv = node_argv(node, p.run_dir, topology, p)
        pid, log = self._spawn(argv, node.name, p.run_dir)
        record = NodeRecord(
            node.name,
            node.role,  # type: ignore[arg-type]
            node.host,
            node.port,
            pid=pid,
            kind=node.kind,
            argv=argv,
            cwd=str(p.run_dir),
            log=str(log),
            events=node.events,
            http=node.http,
            link=node.link,
            upstream=node.upstream,
            rules=node.rules,
        )
        started.append(record)
        return record

    def _wait(self, record: NodeRecord, probe_source: str) -> None:
        if record.role == "db":
            self._wait_db(record)
            return
        wait_ready(
            record.name,
            record.host,
            record.port,
            timeout=self.ready_timeout,
            source=probe_source,
            log=Path(record.log) if record.log else None,
            pid=record.pid,
            owned=not (record.argv and Path(record.argv[0]).name == "docker"),
        )

    def _cluster(self, record: NodeRecord) -> LabPostgres:
        return LabPostgres(Path(record.cwd).parent, record.host, record.port)

    def _wait_db(self, record: NodeRecord) -> None:
        pid = record.pid
        try:
            self._cluster(record).wait_ready(
                timeout=max(self.ready_timeout, 30.0),
                alive=lambda: proc_state(pid) is not NodeState.DOWN,
                log=Path(record.log) if record.log else None,
                ours=None if pid is None else lambda: self._db_socket_ours(record),
            )
        except PostgresError as exc:
            raise LabError(str(exc)) from None

    def _db_socket_ours(self, record: NodeRecord) -> bool:
        assert record.pid is not None
        holders = socket_holders(record.pid, "tcp", record.host, record.port)
        if holders.shared:
            log = Path(record.log) if record.log else None
            raise LabError(
                _shared_message("db", record.host, record.port, record.pid, holders, log)
            )
        return holders.ours

    def _start_postgres(
        self, topology: Topology, p: Plan, node: PlannedNode, started: list[NodeRecord]
    ) -> NodeRecord:
        """initdb (once), start the postmaster as a node, wait, create the lab database."""
        cluster = lab_postgres(topology, p.run_dir)
        log = p.run_dir / "logs" / f"{node.name}.log"
        try:
            cluster.init(log)
            argv = cluster.argv(die_with_parent=not self.detach)
        except (PostgresError, OSError) as exc:
            raise LabError(str(exc)) from exc
        pid, log = self._spawn(argv, node.name, p.run_dir, cwd=cluster.data_dir)
        record = NodeRecord(
            node.name, "db", node.host, node.port, pid=pid, kind=node.kind, argv=argv,
            cwd=str(cluster.data_dir), log=str(log),
        )  # fmt: skip
        started.append(record)
        self._wait_db(record)
        try:
            cluster.create_database()
        except Exception as exc:  # psycopg.Error: psycopg is imported lazily
            raise LabError(f"db ({cluster.url}): cannot create the database: {exc}") from exc
        return record

    def _capture_config(self, config: CaptureConfig) -> CaptureConfig:
        """Where this backend's capture listens (loopback here; the netns backend: its bridge)."""
        return config

    # Backend protocol

    def up(self, topology: Topology, run_dir: Path, *, db_url: str | None = None) -> LabFile:
        run_dir = Path(run_dir).resolve()
        p = plan(topology, run_dir, db_url=db_url)
        for sub in ("logs", "events", "faults"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "events").glob("*.jsonl"):
            stale.unlink()
        write_configs(topology, p)
        from lab.capture import CaptureConfig, start_capture, stop_capture
        from router.realtime import RealtimeError

        started: list[NodeRecord] = []
        source = p.router.host  # the router endpoint is identified by IP on the PBX nodes
        # The capture runs before the first node, so it sees every packet of the run.
        capture = self._capture_config(
            CaptureConfig(topology.net, ring_mb=topology.evidence_mb // 10)
        )
        capture = replace(capture, keep_mb=topology.evidence_mb // 2 if capture.ring_mb else 0)
        start_capture(run_dir, capture, attached=not self.detach)
        try:
            if p.db is not None:
                nodes = [self._start_postgres(topology, p, p.db, started)]
            else:
                db_kind = "postgresql" if p.db_url.startswith("postgres") else "sqlite"
                nodes = [NodeRecord("db", "db", "", 0, kind=db_kind)]
            try:
                provision(topology, p)
            except (RealtimeError, OSError, ValueError) as exc:
                raise LabError(f"db ({p.db_url}): provisioning failed: {exc}") from exc
            # Start the PBX nodes together (they are independent), then wait for each.
            pbx = [self._start_node(n, p, started, source) for n in p.pbx]
            for record in pbx:
                if record.pid:
                    self._wait(record, source)
            nodes += pbx
            front = [
                self._start_node(r, p, started, source) for r in p.relays if r.link != "ua-router"
            ]
            for record in front:
                self._wait(record, source)
            nodes += front
            router = self._start_node(p.router, p, started, source, topology)
            self._wait(router, source)
            nodes.append(router)
            for relay in p.relays:
                if relay.link == "ua-router":
                    record = self._start_node(relay, p, started, source)
                    self._wait(record, source)
                    nodes.append(record)
        except BaseException:
            for record in reversed(started):
                self._stop_pid(record, 1.0)
            stop_capture(run_dir, 1.0)
            raise
        return record_lab(self.name, run_dir, p, nodes)

    def down(self, lab: LabFile) -> LabFile:
        from lab.capture import stop_capture
        from lab.evidence import merge_events

        for node in reversed(lab.nodes):
            self._stop_pid(node, self.stop_grace)
            if node.role == "db" and node.kind == "postgresql" and node.argv and node.cwd:
                remove_outside_cluster(Path(node.cwd))
        stopped = replace(lab, nodes=[replace(n, pid=None) for n in lab.nodes])
        stop_capture(Path(lab.run_dir))  # after the nodes: their last packets are in it
        merge_events(Path(lab.run_dir))
        write_labfile(stopped)
        return stopped

    def _signal(self, lab: LabFile, name: str, sig: signal.Signals) -> LabFile:
        node = _find(lab, name)
        if not node.pid:
            raise LabError(f"{name}: not started by the lab (no pid)")
        if node.pid not in self._children and not _is_ours(node):
            raise LabError(
                f"{name}: pid {node.pid} is not running the lab's command (already down?)"
            )
        _signal_group(node.pid, sig)
        if sig is signal.SIGKILL:
            child = self._children.get(node.pid)
            if child is not None:
                child.wait(5.0)
        elif sig in (signal.SIGSTOP, signal.SIGCONT):
            # Delivery is asynchronous: return once /proc shows the new state, so a caller that
            # checks the node right after `pause`/`resume` sees what it asked for.
            want = NodeState.PAUSED if sig is signal.SIGSTOP else NodeState.UP
            deadline = time.monotonic() + 5.0
            while proc_state(node.pid) is not want and time.monotonic() < deadline:
                time.sleep(0.01)
        return lab

    def kill(self, lab: LabFile, node: str) -> LabFile:
        return self._signal(lab, node, signal.SIGKILL)

    def pause(self, lab: LabFile, node: str) -> LabFile:
        return self._signal(lab, node, signal.SIGSTOP)

    def resume(self, lab: LabFile, node: str) -> LabFile:
        return self._signal(lab, node, signal.SIGCONT)

    def restart(self, lab: LabFile, node: str) -> LabFile:
        record = _find(lab, node)
        if not record.argv:
            raise LabError(f"{node}: not started by the lab; cannot restart it")
        self._stop_pid(record, self.stop_grace)
        argv = list(record.argv)
        if record.role == "db":
            # after a SIGKILL: stale postmaster.pid; and this process's own death-signal mode
            cluster = self._cluster(record)
            try:
                cluster.init(Path(record.log))
                argv = cluster.argv(die_with_parent=not self.detach)
            except (PostgresError, OSError) as exc:
                raise LabError(str(exc)) from exc
        cwd = Path(record.cwd or lab.run_dir)
        pid, _ = self._spawn(argv, record.name, Path(lab.run_dir), cwd=cwd)
        record = replace(record, pid=pid, argv=argv)
        self._wait(record, _router_host(lab))
        updated = lab.with_node(record)
        write_labfile(updated)
        return updated

    def node_state(self, node: NodeRecord) -> NodeState:
        if not node.pid:
            return NodeState.DOWN
        if node.pid not in self._children and not _is_ours(node):
            return NodeState.DOWN
        return proc_state(node.pid)


def _find(lab: LabFile, name: str) -> NodeRecord:
    try:
        return lab.node(name)
    except KeyError as exc:
        raise LabError(str(exc.args[0])) from None


def _router_host(lab: LabFile) -> str:
    try:
        return lab.node("router").host
    except KeyError:
        return "127.0.0.1"


__all__ = [
    "LocalBackend",
    "node_argv",
    "options_ping",
    "options_request",
    "proc_state",
    "wait_ready",
]
