"""The docker backend: the lab's nodes as containers with host networking on loopback addresses.

Same plan, same configs and the same readiness rule as the local backend (``lab.backends.render``
writes every node's TOML; a node is up when it answers an OPTIONS from the router's address with
200), but each node runs in a container:

- ``db``: PostgreSQL from ``siplab/postgres`` (Debian's postgresql-15 on the locally built base)
  listening on 127.<net>.0.5:5432, a throw-away cluster inside the container. Chosen over the
  host's PostgreSQL because the host's may be absent, on another version or shared by other
  tests; the container is the lab's own and ``down`` removes it. ``db="sqlite"`` keeps the
  SQLite file in the run folder instead (the run folder is mounted in every container at the
  same path), and an explicit ``db_url`` (``lab up --db``, ``[db] url``) is used as it is;
- PBX nodes: ``siplab/emulator`` running ``siplab pbx --config <run>/<node>.toml``, or, for
  ``kind = "asterisk"``, ``siplab/asterisk`` configured from the environment (it needs
  PostgreSQL: Asterisk's realtime driver is res_config_pgsql);
- the router: the reference router from the emulator image (``siplab router --config``); fault
  relays: ``python -m lab.faults --config`` from the same image. ``kind = "kamailio"``: there is
  no Kamailio image, so the host's Kamailio runs as a local process (started, waited for, killed,
  paused and restarted by :class:`~lab.backends.local.LocalBackend`'s own rules: our PIDs only);
  with host networking it sits on the same loopback addresses as a container would, and
  ``compose.yml`` leaves it out (``siplab lab up`` starts it next to ``docker compose up``).

Containers are labelled ``siplab.lab=<run>`` (``<run>`` = run folder name + a hash of its path) and
``siplab.node=<name>``; ``down`` removes every container with the run's label, whoever started it.
Attached backends (the default; the pytest plugin) also remove their containers at interpreter
exit; detached ones (``siplab lab up``) leave them running for ``siplab lab down``. Everything
started is described once as a :class:`~lab.docker.compose.ServiceSpec`, and the same specs are
written to ``<run>/compose.yml`` for users with Docker Compose.
"""

from __future__ import annotations

import atexit
import hashlib
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.backends import LabError, NodeState
from lab.backends.local import options_ping
from lab.backends.render import Plan, PlannedNode, plan, provision, record_lab, write_configs
from lab.docker.compose import LABEL_LAB, LABEL_NODE, LABEL_RUN_DIR, ServiceSpec, write_compose
from lab.docker.images import (
    ASTERISK_IMAGE,
    EMULATOR_IMAGE,
    POSTGRES_IMAGE,
    ImageBuildError,
    ensure_asterisk_image,
    ensure_emulator_image,
    ensure_postgres_image,
)
from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.topology import Topology

PG_PORT = 5432
PG_USER = PG_PASSWORD = PG_DB = "siplab"
_LIVE: dict[str, Any] = {}
"""Containers started by attached backends of this process (id -> container), removed at exit."""
_HOOK_INSTALLED = False


def db_host(net: int = 0) -> str:
    """The lab DB's address: 127.<net>.0.5 (below the router's .10, above the host's .1)."""
    return f"127.{net}.0.5"


def run_id(run_dir: Path) -> str:
    """``<folder name>-<8 hex of its absolute path>``: the value of the ``siplab.lab`` label."""
    path = Path(run_dir).resolve()
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", path.name).strip("-.") or "run"
    return f"{name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def _remove_live() -> None:
    for cid, container in list(_LIVE.items()):
        try:
            container.remove(force=True)
        except Exception:
            pass
        _LIVE.pop(cid, None)


class DockerBackend:
    """Containers on 127.x.0.y with host networking; see the module docstring."""

    name = "docker"

    def __init__(
        self,
        *,
        detach: bool = False,
        db: str = "postgres",
        ready_timeout: float = 30.0,
        stop_grace: float = 3.0,
        build: bool = True,
        client: Any = None,
    ) -> None:
        """
        Args:
            detach: leave containers running when this process exits (``siplab lab up``).
            db: ``postgres`` (a PostgreSQL container) or ``sqlite`` (file in the run folder);
                ignored when ``up`` gets a ``db_url`` or the topology names one.
            ready_timeout: seconds each node has to answer OPTIONS with 200.
            stop_grace: seconds between SIGTERM and SIGKILL on stop/restart.
            build: build missing or outdated images (False: they must exist).
            client: a Docker SDK client (default: from the environment, pinged).
        """
        if db not in ("postgres", "sqlite"):
            raise LabError(f"docker backend: db must be 'postgres' or 'sqlite', not {db!r}")
        self.detach = detach
        self.db = db
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.build = build
        self._client = client
        self._local_backend: Any = None

    @property
    def local(self) -> Any:
        """The local backend that runs the nodes without an image (a Kamailio router)."""
        if self._local_backend is None:
            from lab.backends.local import LocalBackend

            self._local_backend = LocalBackend(
                detach=self.detach, ready_timeout=self.ready_timeout, stop_grace=self.stop_grace
            )
        return self._local_backend

    # -- engine and images ----------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            from lab.docker.base_image import DockerUnavailable, docker_client

            try:
                self._client = docker_client()
            except DockerUnavailable as exc:
                raise LabError(f"docker backend: {exc}") from None
        return self._client

    def _ensure_images(self, topology: Topology, postgres: bool) -> None:
        if not self.build:
            return
        kinds = {s.kind for s in topology.pbx_nodes() if not s.external}
        try:
            ensure_emulator_image(self.client)
            if postgres:
                ensure_postgres_image(self.client)
            if "asterisk" in kinds:
                ensure_asterisk_image(self.client)
        except ImageBuildError as exc:
            raise LabError(f"docker backend: {exc}") from None

    # -- specs ------------------------------------------------------------------------------

    def _spec(
        self,
        run_dir: Path,
        name: str,
        image: str,
        command: list[str],
        *,
        environment: dict[str, str] | None = None,
        depends_on: list[str] | None = None,
        mount: bool = True,
    ) -> ServiceSpec:
        run = run_id(run_dir)
        return ServiceSpec(
            name=name,
            container_name=f"siplab-{run}-{name}",
            image=image,
            command=command,
            environment={"PYTHONUNBUFFERED": "1", **(environment or {})},
            volumes=[f"{run_dir}:{run_dir}"] if mount else [],
            labels={LABEL_LAB: run, LABEL_NODE: name, LABEL_RUN_DIR: str(run_dir)},
            depends_on=depends_on or [],
            stop_grace=self.stop_grace,
        )

    def db_spec(self, run_dir: Path, net: int) -> ServiceSpec:
        env = {
            "PG_LISTEN": db_host(net),
            "PG_PORT": str(PG_PORT),
            "PG_USER": PG_USER,
            "PG_PASSWORD": PG_PASSWORD,
            "PG_DB": PG_DB,
        }
        return self._spec(run_dir, "db", POSTGRES_IMAGE, [], environment=env, mount=False)

    def node_spec(
        self, topology: Topology, p: Plan, node: PlannedNode, depends_on: list[str]
    ) -> ServiceSpec:
        """The container of one planned node (router, PBX or fault relay).

        Raises:
            LabError: a kind this backend cannot run in a container.
        """
        config = str(node.config)
        if node.role == "router":
            if node.kind != "reference":
                raise LabError(
                    f"router kind {node.kind!r} is not supported by the docker backend "
                    "(only the reference router has an image)"
                )
            command = ["router", "--config", config]
            return self._spec(p.run_dir, node.name, EMULATOR_IMAGE, command, depends_on=depends_on)
        if node.role == "proxy":
            command = ["python", "-m", "lab.faults", "--config", config]
            return self._spec(p.run_dir, node.name, EMULATOR_IMAGE, command, depends_on=depends_on)
        if node.kind == "emulator":
            command = ["pbx", "--config", config]
            return self._spec(p.run_dir, node.name, EMULATOR_IMAGE, command, depends_on=depends_on)
        if node.kind == "asterisk":
            if not p.db_url.startswith("postgres"):
                raise LabError(
                    f"{node.name}: real Asterisk needs PostgreSQL (res_config_pgsql); "
                    f"the lab DB is {p.db_url}"
                )
            routers = [p.router.host] + [
                r.host for r in p.relays if r.link == f"router-{node.name}"
            ]
            env = {
                "SIPLAB_NODE_NAME": node.name,
                "SIPLAB_BIND": node.host,
                "SIPLAB_PORT": str(node.port),
                "SIPLAB_DB_URL": p.db_url,
                "SIPLAB_ROUTER": ",".join(routers),
                "SIPLAB_ROUTER_PORT": str(p.router.port),
                "SIPLAB_TIME_SCALE": f"{topology.timers.time_scale:g}",
            }
            return self._spec(
                p.run_dir, node.name, ASTERISK_IMAGE, [], environment=env, depends_on=depends_on
            )
        raise LabError(
            f"{node.name}: PBX kind {node.kind!r} is not supported by the docker backend"
        )

    def services(self, topology: Topology, p: Plan, *, with_db: bool) -> list[ServiceSpec]:
        """Every container of the lab, in start order (what compose.yml lists)."""
        specs: list[ServiceSpec] = []
        base = ["db"] if with_db else []
        if with_db:
            specs.append(self.db_spec(p.run_dir, topology.net))
        if with_db:  # compose-only: the SDK path provisions in-process (see up)
            command = ["python", "-m", "lab.docker.provision", str(p.run_dir), p.db_url]
            spec = self._spec(p.run_dir, "provision", EMULATOR_IMAGE, command, depends_on=base)
            specs.append(replace(spec, one_shot=True))
            base = [*base, "provision"]
        pbx = [n for n in p.pbx if not n.external]
        specs += [self.node_spec(topology, p, n, base) for n in pbx]
        front = [r for r in p.relays if r.link != "ua-router"]
        specs += [self.node_spec(topology, p, r, base) for r in front]
        after = base + [n.name for n in pbx] + [r.name for r in front]
        in_container = not _runs_local(p.router)
        if in_container:
            specs.append(self.node_spec(topology, p, p.router, after))
        specs += [
            self.node_spec(topology, p, r, [*base, *(["router"] if in_container else [])])
            for r in p.relays
            if r.link == "ua-router"
        ]
        return specs

    # -- containers ---------------------------------------------------------------------------

    def _run(self, spec: ServiceSpec) -> Any:
        import docker.errors

        try:  # a container of the same name is a leftover of this run folder's last lab
            self.client.containers.get(spec.container_name).remove(force=True)
        except docker.errors.NotFound:
            pass
        try:
            container = self.client.containers.run(**spec.run_kwargs())
        except docker.errors.APIError as exc:
            raise LabError(f"{spec.name}: cannot start container {spec.image}: {exc}") from exc
        if not self.detach:
            global _HOOK_INSTALLED
            if not _HOOK_INSTALLED:
                atexit.register(_remove_live)
                _HOOK_INSTALLED = True
            _LIVE[container.id] = container
        return container

    def _container(self, record: NodeRecord) -> Any:
        import docker.errors

        if not record.container:
            raise LabError(f"{record.name}: not started by the lab (no container)")
        try:
            return self.client.containers.get(record.container)
        except docker.errors.NotFound:
            raise LabError(f"{record.name}: container {record.container[:12]} is gone") from None

    @staticmethod
    def _save_log(container: Any, path: Path) -> None:
        try:
            data = container.logs(stdout=True, stderr=True)
        except Exception:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def _log_tail(self, container: Any, lines: int = 15) -> str:
        try:
            text = container.logs(tail=lines).decode(errors="replace").rstrip()
        except Exception:
            return ""
        return "; container log:\n" + "\n".join("    " + line for line in text.splitlines())

    def _wait_sip(self, name: str, container: Any, host: str, port: int, source: str) -> None:
        """Probe until ``host:port`` answers OPTIONS 200; fail early if the container exits."""
        deadline = time.monotonic() + self.ready_timeout
        last: int | None = None
        while time.monotonic() < deadline:
            if container is not None:
                container.reload()
                if container.status in ("exited", "dead"):
                    raise LabError(
                        f"{name} ({host}:{port}) exited before answering OPTIONS"
                        + self._log_tail(container)
                    )
            last = options_ping(host, port, source=source, timeout=0.4)
            if last == 200:
                return
        got = f"last answer {last}" if last is not None else "no answer"
        tail = self._log_tail(container) if container is not None else ""
        raise LabError(
            f"{name} ({host}:{port}) not ready after {self.ready_timeout:g} s ({got})" + tail
        )

    def _wait_db(self, container: Any, url: str) -> None:
        from router.realtime import RealtimeError, connect

        deadline = time.monotonic() + self.ready_timeout
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                raise LabError("db (postgres) exited while starting" + self._log_tail(container))
            try:
                connect(url).close()
                return
            except RealtimeError as exc:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"db ({url}): not ready after {self.ready_timeout:g} s: {exc}"
                        + self._log_tail(container)
                    ) from None
            time.sleep(0.2)

    def _record(self, spec: ServiceSpec, container: Any, node: PlannedNode) -> NodeRecord:
        return NodeRecord(
            node.name,
            node.role,  # type: ignore[arg-type]
            node.host,
            node.port,
            container=container.id,
            kind=node.kind,
            argv=list(spec.command),
            cwd=str(Path(node.config).parent) if node.config else "",
            log=str(Path(spec.labels[LABEL_RUN_DIR]) / "logs" / f"{node.name}.log"),
            events=node.events,
            http=node.http,
            link=node.link,
            upstream=node.upstream,
            rules=node.rules,
            version=_asterisk_version(container) if node.kind == "asterisk" else "",
        )

    # -- Backend protocol -----------------------------------------------------------------

    def prepare(
        self, topology: Topology, run_dir: Path, *, db_url: str | None = None
    ) -> tuple[Plan, list[ServiceSpec], bool]:
        """Images, node configs and ``compose.yml`` in ``run_dir``, nothing started: what
        ``docker compose -f <run>/compose.yml up`` needs. Returns (plan, specs, with_db)."""
        run_dir = Path(run_dir).resolve()
        explicit = db_url or topology.db.url or None
        with_db = explicit is None and self.db == "postgres"
        if explicit is None and with_db:
            explicit = (
                f"postgresql://{PG_USER}:{PG_PASSWORD}@{db_host(topology.net)}:{PG_PORT}/{PG_DB}"
            )
        p = plan(topology, run_dir, db_url=explicit)
        for sub in ("logs", "events", "faults"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "events").glob("*.jsonl"):
            stale.unlink()
        specs = self.services(topology, p, with_db=with_db)  # unsupported kinds fail here
        self._ensure_images(topology, with_db)
        write_configs(topology, p)
        write_compose(run_dir, f"siplab-{run_id(run_dir)}", specs)
        return p, specs, with_db

    def up(self, topology: Topology, run_dir: Path, *, db_url: str | None = None) -> LabFile:
        run_dir = Path(run_dir).resolve()
        p, specs, with_db = self.prepare(topology, run_dir, db_url=db_url)
        by_name = {s.name: s for s in specs}
        planned = {n.name: n for n in [*p.pbx, *p.relays, p.router]}
        source = p.router.host  # the router endpoint is identified by IP on the PBX nodes
        started: list[Any] = []
        local_started: list[NodeRecord] = []
        nodes: list[NodeRecord] = []
        from lab.capture import CaptureConfig, start_capture, stop_capture

        # Containers use host networking on the lab's loopback addresses: one capture on the
        # host's lo sees every leg. It starts before the first container.
        capture = CaptureConfig(topology.net, ring_mb=topology.evidence_mb // 10)
        capture = replace(capture, keep_mb=topology.evidence_mb // 2 if capture.ring_mb else 0)
        start_capture(run_dir, capture, attached=not self.detach)
        try:
            if with_db:
                db = self._run(by_name["db"])
                started.append(db)
                self._wait_db(db, p.db_url)
                nodes.append(
                    NodeRecord(
                        "db",
                        "db",
                        db_host(topology.net),
                        PG_PORT,
                        container=db.id,
                        kind="postgresql",
                    )
                )
            else:
                kind = "postgresql" if p.db_url.startswith("postgres") else "sqlite"
                nodes.append(NodeRecord("db", "db", "", 0, kind=kind))
            from router.realtime import RealtimeError

            try:
                provision(topology, p)
            except (RealtimeError, OSError, ValueError) as exc:
                raise LabError(f"db ({p.db_url}): provisioning failed: {exc}") from exc
            for ext in (n for n in p.pbx if n.external):
                self._wait_sip(ext.name, None, ext.host, ext.port, source)
                nodes.append(NodeRecord(ext.name, "pbx", ext.host, ext.port, kind="external"))
            # Independent nodes start together, then each is waited for (as the local backend).
            for group in (
                [n for n in p.pbx if not n.external],
                [r for r in p.relays if r.link != "ua-router"],
                [p.router],
                [r for r in p.relays if r.link == "ua-router"],
            ):
                batch = []
                for node in group:
                    if _runs_local(node):
                        record = self.local._start_node(node, p, local_started, source, topology)
                        self.local._wait(record, source)
                        nodes.append(record)
                        continue
                    container = self._run(by_name[node.name])
                    started.append(container)
                    batch.append((node, container))
                for node, container in batch:
                    self._wait_sip(node.name, container, node.host, node.port, source)
                    nodes.append(self._record(by_name[node.name], container, planned[node.name]))
        except BaseException:
            for record in reversed(local_started):
                self.local._stop_pid(record, 1.0)
            for container in reversed(started):
                self._save_log(container, run_dir / "logs" / f"{container.labels[LABEL_NODE]}.log")
                self._remove(container)
            stop_capture(run_dir, 1.0)
            raise
        return record_lab(self.name, run_dir, p, nodes)

    def _remove(self, container: Any) -> None:
        import docker.errors

        try:
            container.reload()
            if container.status == "paused":
                container.unpause()
            if container.status in ("running", "paused"):
                container.stop(timeout=max(1, round(self.stop_grace)))
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        _LIVE.pop(container.id, None)

    def down(self, lab: LabFile) -> LabFile:
        from lab.capture import stop_capture
        from lab.evidence import merge_events

        run_dir = Path(lab.run_dir)
        containers = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_LAB}={run_id(run_dir)}"}
        )
        order = {n.name: i for i, n in enumerate(lab.nodes)}
        containers.sort(key=lambda c: order.get(c.labels.get(LABEL_NODE, ""), -1), reverse=True)
        for node in reversed(lab.nodes):  # local processes (Kamailio) go first: they front
            if node.pid and not node.container:
                self.local._stop_pid(node, self.stop_grace)
        for container in containers:
            name = container.labels.get(LABEL_NODE, container.name)
            self._save_log(container, run_dir / "logs" / f"{name}.log")
            self._remove(container)
        stopped = replace(lab, nodes=[replace(n, container=None, pid=None) for n in lab.nodes])
        stop_capture(run_dir)  # after the containers: their last packets are in it
        merge_events(run_dir)
        write_labfile(stopped)
        return stopped

    def kill(self, lab: LabFile, node: str) -> LabFile:
        """SIGKILL the node's main process; the container stays (exited) for ``restart``."""
        if _is_local(_find(lab, node)):
            return self.local.kill(lab, node)  # type: ignore[no-any-return]
        container = self._container(_find(lab, node))
        container.reload()
        if container.status == "paused":
            container.unpause()
        container.kill(signal="SIGKILL")
        container.wait(timeout=10)
        return lab

    def pause(self, lab: LabFile, node: str) -> LabFile:
        """Freeze the container (cgroup freezer): sockets stay bound, nothing answers."""
        if _is_local(_find(lab, node)):
            return self.local.pause(lab, node)  # type: ignore[no-any-return]
        self._container(_find(lab, node)).pause()
        return lab

    def resume(self, lab: LabFile, node: str) -> LabFile:
        if _is_local(_find(lab, node)):
            return self.local.resume(lab, node)  # type: ignore[no-any-return]
        self._container(_find(lab, node)).unpause()
        return lab

    def restart(self, lab: LabFile, node: str) -> LabFile:
        record = _find(lab, node)
        if _is_local(record):
            return self.local.restart(lab, node)  # type: ignore[no-any-return]
        container = self._container(record)
        container.reload()
        if container.status == "paused":
            container.unpause()
        container.restart(timeout=max(1, round(self.stop_grace)))
        if record.role == "db":
            self._wait_db(container, lab.db)
        else:
            self._wait_sip(record.name, container, record.host, record.port, _router_host(lab))
        return lab

    def node_state(self, node: NodeRecord) -> NodeState:
        import docker.errors

        if _is_local(node):
            return self.local.node_state(node)  # type: ignore[no-any-return]
        if not node.container:
            return NodeState.DOWN
        try:
            container = self.client.containers.get(node.container)
        except docker.errors.NotFound:
            return NodeState.DOWN
        if container.status == "paused":
            return NodeState.PAUSED
        return NodeState.UP if container.status == "running" else NodeState.DOWN


def _asterisk_version(container: Any) -> str:
    """``asterisk -V`` inside the running node (e.g. ``Asterisk 22.10.1+dfsg+...``)."""
    try:
        code, out = container.exec_run(["asterisk", "-V"])
    except Exception as exc:  # the node answered OPTIONS a moment ago; report, don't fail
        return f"unknown ({exc})"
    text = out.decode(errors="replace").strip()
    return text if code == 0 else f"unknown (asterisk -V exited {code}: {text})"


def _runs_local(node: PlannedNode) -> bool:
    """A node this backend runs as a host process: the Kamailio router (no image)."""
    return node.role == "router" and node.kind == "kamailio"


def _is_local(record: NodeRecord) -> bool:
    return bool(record.pid) and not record.container


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


__all__ = ["DockerBackend", "db_host", "run_id"]
