"""The swarm backend: the lab's nodes as Docker Swarm services, placeable on several hosts.

Same plan, configs, images and readiness rule as the docker backend (every node is the same
:class:`~lab.docker.compose.ServiceSpec`; a node is up when it answers an OPTIONS from the
router's address with 200), but each spec becomes a one-replica swarm *service* created through
the Docker SDK instead of a container:

- networking: every service is attached to the engine's ``host`` network, so each node binds its
  own 127.<net>.0.y address exactly as the local and docker backends do. On several hosts the
  lab's addresses become the hosts' addresses (docs/scale-out-swarm.md); an overlay network is
  not used because SIP endpoints here are identified by their source IP (the PBX nodes admit
  the router by address), which an overlay's VIP/NAT would hide;
- placement: ``placement={"pbx1": ["node.labels.siplab.host==b"], "*": [...]}`` adds swarm
  placement constraints per node (``*``: every node); a service no swarm node satisfies is
  reported with the scheduler's own message (``no suitable node ...``) and nothing is left;
- restart policy ``none``: a killed node stays dead (a crash scenario must not be healed by the
  orchestrator behind the test's back); ``restart`` is a forced service update, which starts a
  new task with the same spec;
- kill/pause/resume act on the task's container, which must be on this engine's host.

Services carry the ``siplab.lab=<run>`` label (and their containers too), so ``down`` removes
every service of the run folder. ``<run>/stack.yml`` describes the same services for
``docker stack deploy`` (deploy sections, placement constraints, the external ``host`` network).
"""

from __future__ import annotations

import atexit
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.backends import LabError, NodeState
from lab.backends.render import PlannedNode, plan, provision, record_lab, write_configs
from lab.docker.backend import PG_DB, PG_PASSWORD, PG_PORT, PG_USER, DockerBackend, db_host, run_id
from lab.docker.compose import LABEL_LAB, LABEL_NODE, ServiceSpec, to_yaml
from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.topology import Topology

STACK_FILE = "stack.yml"
_ENDED = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
"""Task states after which the task never runs again (a new task would be needed)."""
_LIVE: dict[str, Any] = {}
"""Services created by attached backends of this process (id -> service), removed at exit."""
_HOOK_INSTALLED = False


def service_name(spec: ServiceSpec) -> str:
    """The swarm service name: the container name when it is a valid 63-character DNS label."""
    if len(spec.container_name) <= 63:
        return spec.container_name
    digest = hashlib.sha1(spec.container_name.encode()).hexdigest()[:8]
    return f"siplab-{digest}-{spec.name}"[:63]


def _remove_live() -> None:
    for sid, service in list(_LIVE.items()):
        try:
            service.remove()
        except Exception:
            pass
        _LIVE.pop(sid, None)


class _TaskView:
    """A service's current task seen through the container interface the docker backend's
    readiness helpers use (``reload``, ``status``, ``logs``), valid on any swarm node."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.status = "created"
        self.error = ""

    def reload(self) -> None:
        task = current_task(self.service)
        state = task["Status"]["State"] if task else "pending"
        self.error = (task or {}).get("Status", {}).get("Err", "")
        self.status = "exited" if state in _ENDED else "running"

    def logs(self, *, tail: int | str = "all", **_: Any) -> bytes:
        chunks = self.service.logs(stdout=True, stderr=True, tail=tail)
        return b"".join(chunks)


def current_task(service: Any) -> dict[str, Any] | None:
    """The service's newest task (a forced update or a restart adds one)."""
    tasks = service.tasks()
    if not tasks:
        return None
    return dict(max(tasks, key=lambda t: (t["Version"]["Index"], t["CreatedAt"])))


class SwarmBackend(DockerBackend):
    """One-replica swarm services on the ``host`` network; see the module docstring."""

    name = "swarm"

    def __init__(
        self,
        *,
        placement: Mapping[str, Sequence[str]] | None = None,
        detach: bool = False,
        db: str = "postgres",
        ready_timeout: float = 30.0,
        stop_grace: float = 3.0,
        build: bool = True,
        client: Any = None,
    ) -> None:
        """
        Args:
            placement: node name (or ``*`` for all) -> swarm placement constraints, for example
                ``{"pbx2": ["node.labels.siplab.host==b"]}``.
            detach, db, ready_timeout, stop_grace, build, client: as :class:`DockerBackend`.
        """
        super().__init__(
            detach=detach,
            db=db,
            ready_timeout=ready_timeout,
            stop_grace=stop_grace,
            build=build,
            client=client,
        )
        self.placement = {k: list(v) for k, v in (placement or {}).items()}

    def constraints(self, node: str) -> list[str]:
        return [*self.placement.get("*", []), *self.placement.get(node, [])]

    def _check_swarm(self) -> None:
        """Fail with Docker's own words when this engine is not a swarm manager."""
        import docker.errors

        try:
            self.client.services.list(filters={"label": f"{LABEL_LAB}=none"})
        except docker.errors.APIError as exc:
            raise LabError(f"swarm backend: Docker: {exc.explanation or exc}") from None

    # -- services -----------------------------------------------------------------------------

    def _create(self, spec: ServiceSpec) -> Any:
        import docker.errors
        from docker.types import Mount, RestartPolicy, ServiceMode

        name = service_name(spec)
        try:  # a service of the same name is a leftover of this run folder's last lab
            self.client.services.get(name).remove()
        except docker.errors.NotFound:
            pass
        mounts = []
        for src, bind in spec.volume_binds().items():
            mounts.append(Mount(bind["bind"], src, type="bind", read_only=bind["mode"] == "ro"))
        try:
            service = self.client.services.create(
                image=spec.image,
                args=list(spec.command) or None,  # ``command`` would replace the entrypoint
                name=name,
                env=[f"{k}={v}" for k, v in spec.environment.items()],
                mounts=mounts,
                labels=dict(spec.labels),
                container_labels=dict(spec.labels),
                networks=["host"],
                restart_policy=RestartPolicy(condition="none"),
                constraints=self.constraints(spec.name),
                stop_grace_period=int(spec.stop_grace * 1e9),
                mode=ServiceMode("replicated", replicas=1),
            )
        except docker.errors.APIError as exc:
            raise LabError(
                f"{spec.name}: cannot create swarm service {name}: Docker: {exc.explanation or exc}"
            ) from None
        if not self.detach:
            global _HOOK_INSTALLED
            if not _HOOK_INSTALLED:
                atexit.register(_remove_live)
                _HOOK_INSTALLED = True
            _LIVE[service.id] = service
        return service

    def _placed(self, spec: ServiceSpec, service: Any) -> _TaskView:
        """Wait until the service's task runs; fail with the scheduler's or engine's message.

        A task the scheduler cannot place stays ``pending`` with ``Err`` set (``no suitable node
        (scheduling constraints not satisfied on 1 node)``): that is final for this lab.
        """
        view = _TaskView(service)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            task = current_task(service)
            state = task["Status"]["State"] if task else "new"
            err = (task or {}).get("Status", {}).get("Err", "")
            where = f"swarm service {service.name}"
            if state == "running":
                view.reload()
                return view
            if state == "pending" and err:
                constraints = "; ".join(self.constraints(spec.name)) or "none"
                raise LabError(
                    f"{spec.name}: {where} cannot be placed (constraints: {constraints}): "
                    f"Docker: {err}"
                )
            if state in _ENDED:
                raise LabError(
                    f"{spec.name}: {where} task {state}: Docker: {err or '(no message)'}"
                    + self._log_tail(view)
                )
            if time.monotonic() > deadline:
                raise LabError(
                    f"{spec.name}: {where} not running after {self.ready_timeout:g} s "
                    f"(task {state}{': ' + err if err else ''})"
                )
            time.sleep(0.2)

    def _local_container(self, record: NodeRecord) -> Any:
        """The container of the node's current task, which must run on this engine's host."""
        import docker.errors

        if not record.container:
            raise LabError(f"{record.name}: not started by the lab (no service)")
        try:
            service = self.client.services.get(record.container)
        except docker.errors.NotFound:
            raise LabError(f"{record.name}: swarm service {record.container} is gone") from None
        task = current_task(service)
        cid = (task or {}).get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if not cid:
            raise LabError(f"{record.name}: swarm service {record.container} has no container")
        try:
            return self.client.containers.get(cid)
        except docker.errors.NotFound:
            raise LabError(
                f"{record.name}: its container {cid[:12]} is not on this host "
                f"(swarm node {task.get('NodeID', '?') if task else '?'}); "
                "kill/pause/resume act on local containers only"
            ) from None

    # -- Backend protocol -----------------------------------------------------------------

    def up(self, topology: Topology, run_dir: Path, *, db_url: str | None = None) -> LabFile:
        run_dir = Path(run_dir).resolve()
        explicit = db_url or topology.db.url or None
        with_db = explicit is None and self.db == "postgres"
        if explicit is None and with_db:
            explicit = (
                f"postgresql://{PG_USER}:{PG_PASSWORD}@{db_host(topology.net)}:{PG_PORT}/{PG_DB}"
            )
        p = plan(topology, run_dir, db_url=explicit)
        specs = self.services(topology, p, with_db=with_db)  # unsupported kinds fail here
        unknown = sorted(set(self.placement) - {"*", *(s.name for s in specs)})
        if unknown:
            raise LabError(
                f"placement: unknown node {', '.join(map(repr, unknown))} "
                f"(nodes: {', '.join(s.name for s in specs)}; '*' = every node)"
            )
        self._check_swarm()
        for sub in ("logs", "events", "faults"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "events").glob("*.jsonl"):
            stale.unlink()
        self._ensure_images(topology, with_db)
        write_configs(topology, p)
        write_stack(run_dir, specs, self.placement)
        by_name = {s.name: s for s in specs}
        planned = {n.name: n for n in [*p.pbx, *p.relays, p.router]}
        source = p.router.host
        started: list[Any] = []
        nodes: list[NodeRecord] = []
        try:
            if with_db:
                db = self._create(by_name["db"])
                started.append(db)
                self._wait_db(self._placed(by_name["db"], db), p.db_url)
                nodes.append(
                    NodeRecord(
                        "db",
                        "db",
                        db_host(topology.net),
                        PG_PORT,
                        container=db.name,
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
            for group in (
                [n for n in p.pbx if not n.external],
                [r for r in p.relays if r.link != "ua-router"],
                [p.router],
                [r for r in p.relays if r.link == "ua-router"],
            ):
                batch = []
                for node in group:
                    service = self._create(by_name[node.name])
                    started.append(service)
                    batch.append((node, service))
                for node, service in batch:
                    view = self._placed(by_name[node.name], service)
                    self._wait_sip(node.name, view, node.host, node.port, source)
                    nodes.append(self._service_record(by_name[node.name], service, planned))
        except BaseException:
            for service in reversed(started):
                self._save_log(_TaskView(service), run_dir / "logs" / f"{_node(service)}.log")
                self._remove_service(service)
            self._wait_gone(run_dir)
            raise
        return record_lab(self.name, run_dir, p, nodes)

    def _service_record(
        self, spec: ServiceSpec, service: Any, planned: dict[str, PlannedNode]
    ) -> NodeRecord:
        record = self._record(spec, _Named(service.name), planned[spec.name])
        return replace(record, container=service.name)

    def _remove_service(self, service: Any) -> None:
        import docker.errors

        try:
            service.remove()
        except docker.errors.NotFound:
            pass
        _LIVE.pop(service.id, None)

    def _wait_gone(self, run_dir: Path, timeout: float = 30.0) -> None:
        """Service removal stops the task containers asynchronously: wait until none is left."""
        label = {"label": f"{LABEL_LAB}={run_id(run_dir)}"}
        deadline = time.monotonic() + timeout
        # The low-level list: the high-level one inspects each container and fails on one
        # that swarm removes in between.
        while self.client.api.containers(all=True, filters=label):
            if time.monotonic() > deadline:
                raise LabError(f"swarm backend: containers of {run_dir} still present after down")
            time.sleep(0.2)

    def down(self, lab: LabFile) -> LabFile:
        from lab.evidence import merge_events

        run_dir = Path(lab.run_dir)
        self._check_swarm()
        services = self.client.services.list(filters={"label": f"{LABEL_LAB}={run_id(run_dir)}"})
        order = {n.name: i for i, n in enumerate(lab.nodes)}
        services.sort(key=lambda s: order.get(_node(s), -1), reverse=True)
        for service in services:
            self._save_log(_TaskView(service), run_dir / "logs" / f"{_node(service)}.log")
            self._remove_service(service)
        self._wait_gone(run_dir)
        stopped = replace(lab, nodes=[replace(n, container=None) for n in lab.nodes])
        merge_events(run_dir)
        write_labfile(stopped)
        return stopped

    def kill(self, lab: LabFile, node: str) -> LabFile:
        """SIGKILL the task's process; restart policy ``none`` keeps it down."""
        container = self._local_container(_find(lab, node))
        container.reload()
        if container.status == "paused":
            container.unpause()
        container.kill(signal="SIGKILL")
        container.wait(timeout=10)
        return lab

    def pause(self, lab: LabFile, node: str) -> LabFile:
        self._local_container(_find(lab, node)).pause()
        return lab

    def resume(self, lab: LabFile, node: str) -> LabFile:
        self._local_container(_find(lab, node)).unpause()
        return lab

    def restart(self, lab: LabFile, node: str) -> LabFile:
        """A forced service update: swarm stops the old task and starts a new one."""
        import docker.errors

        record = _find(lab, node)
        try:
            old = self._local_container(record)
            old.reload()
            if old.status == "paused":
                old.unpause()
        except LabError:
            pass  # dead, gone or remote: the update replaces it anyway
        try:
            service = self.client.services.get(record.container or "")
        except docker.errors.NotFound:
            raise LabError(f"{record.name}: swarm service {record.container} is gone") from None
        before = (current_task(service) or {}).get("ID")
        service.force_update()
        deadline = time.monotonic() + self.ready_timeout
        while (current_task(service) or {}).get("ID") == before:
            if time.monotonic() > deadline:
                raise LabError(f"{record.name}: swarm did not start a new task")
            time.sleep(0.1)
        spec_name = record.name
        view = self._placed(_spec_stub(spec_name, service), service)
        if record.role == "db":
            self._wait_db(view, lab.db)
        else:
            self._wait_sip(record.name, view, record.host, record.port, _router_host(lab))
        return lab

    def node_state(self, node: NodeRecord) -> NodeState:
        import docker.errors

        if not node.container:
            return NodeState.DOWN
        try:
            service = self.client.services.get(node.container)
        except docker.errors.NotFound:
            return NodeState.DOWN
        except docker.errors.APIError:
            return NodeState.DOWN  # not a swarm manager any more
        task = current_task(service)
        if not task or task["Status"]["State"] != "running":
            return NodeState.DOWN
        cid = task["Status"].get("ContainerStatus", {}).get("ContainerID", "")
        try:
            container = self.client.containers.get(cid)
        except docker.errors.NotFound:
            return NodeState.UP  # running on another swarm node
        if container.status == "paused":
            return NodeState.PAUSED
        return NodeState.UP if container.status == "running" else NodeState.DOWN


class _Named:
    """What :meth:`DockerBackend._record` reads from a container: its id."""

    def __init__(self, ident: str) -> None:
        self.id = ident


def _spec_stub(name: str, service: Any) -> ServiceSpec:
    return ServiceSpec(name=name, container_name=service.name, image="")


def _node(service: Any) -> str:
    labels = service.attrs.get("Spec", {}).get("Labels", {}) or {}
    return str(labels.get(LABEL_NODE, service.name))


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


# -- docker stack deploy ---------------------------------------------------------------------


def stack_dict(
    services: Sequence[ServiceSpec], placement: Mapping[str, Sequence[str]] | None = None
) -> dict[str, Any]:
    """A Compose file (format 3.8, what ``docker stack deploy`` reads) for ``services``.

    Stack deploy ignores ``container_name``, ``network_mode``, ``depends_on`` and ``restart``;
    their swarm forms are the external ``host`` network, ``deploy.restart_policy`` and
    ``deploy.placement``. Start order does not exist in a stack: every node retries until its
    peers answer (the router's dispatcher probing marks late PBX nodes up).
    """
    placement = placement or {}
    out: dict[str, Any] = {}
    for s in services:
        constraints = [*placement.get("*", []), *placement.get(s.name, [])]
        deploy: dict[str, Any] = {
            "replicas": 1,
            "restart_policy": {"condition": "none"},
            "labels": dict(s.labels),
        }
        if constraints:
            deploy["placement"] = {"constraints": constraints}
        entry: dict[str, Any] = {"image": s.image}
        if s.command:
            entry["command"] = list(s.command)
        if s.environment:
            entry["environment"] = dict(s.environment)
        if s.volumes:
            entry["volumes"] = list(s.volumes)
        entry["labels"] = dict(s.labels)
        entry["stop_grace_period"] = f"{s.stop_grace:g}s"
        entry["networks"] = ["hostnet"]
        entry["deploy"] = deploy
        out[s.name] = entry
    return {
        "version": "3.8",
        "services": out,
        "networks": {"hostnet": {"external": True, "name": "host"}},
    }


def write_stack(
    run_dir: Path,
    services: Sequence[ServiceSpec],
    placement: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write ``<run_dir>/stack.yml`` and return its path."""
    stack = f"siplab-{run_id(run_dir)}"[:40]
    header = [
        "siplab lab: generated by `siplab lab up --backend swarm` for `docker stack deploy`.",
        "Every service on the host network, one 127.x.0.y address per node, no restart.",
        "Images are local: build them first with `python -m lab.docker.images emulator postgres`.",
        f"Start: docker stack deploy --resolve-image never -c stack.yml {stack}",
        f"Stop:  docker stack rm {stack}",
        "The DB is provisioned by `siplab lab up`; with a stack alone, provision it yourself.",
    ]
    path = Path(run_dir) / STACK_FILE
    tmp = path.with_name(f".{STACK_FILE}.tmp")
    tmp.write_text(to_yaml(stack_dict(services, placement), header=header), encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = [
    "STACK_FILE",
    "SwarmBackend",
    "current_task",
    "service_name",
    "stack_dict",
    "write_stack",
]
