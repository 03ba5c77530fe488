"""What a backend writes before it starts anything: the provisioned DB and each node's config.

Kept apart from process handling so the docker backend renders the same files: the router TOML
(``router/config.py`` format), one emulator TOML per node (``lab/pbx/config.py``), one relay TOML
per faulted link (``lab/faults.py``), and the realtime DB rows (users, the router endpoint,
queues, the dispatcher set) through ``router.realtime``.

Every duration is multiplied by the topology's ``time_scale`` here, once, so suites run with
compressed time without any component knowing about "scale".
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.topology import HTTP_PORT, SIP_PORT, Topology, dump_toml
from router.realtime import DispatcherRow, connect, write_sipp_csv


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """A node the backend will start (or, when ``external``, only route to)."""

    name: str
    role: str
    kind: str
    host: str
    port: int
    config: Path | None = None
    external: bool = False
    link: str = ""
    upstream: str = ""
    rules: str = ""
    events: str = ""
    http: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    run_dir: Path
    db_url: str
    users_csv: Path
    pbx: list[PlannedNode]
    relays: list[PlannedNode]
    router: PlannedNode
    db: PlannedNode | None = None
    """The PostgreSQL the lab starts itself (``lab.backends.postgres``); None: SQLite in the
    run folder or a DB the lab does not run."""

    def relay_for(self, link: str) -> PlannedNode | None:
        return next((r for r in self.relays if r.link == link), None)


def default_db_url(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'realtime.db').resolve()}"


LAB_POSTGRES = ("postgres", "postgresql")
"""``db_url`` values (``siplab lab up --db postgres``) that ask for the lab's own PostgreSQL."""


def resolve_db(topology: Topology, run_dir: Path, db_url: str | None = None) -> tuple[str, bool]:
    """``(url, lab_postgres)``: the realtime DB URL and whether the lab starts PostgreSQL.

    ``db_url`` (the backend's argument, ``lab up --db``) wins: ``postgres`` = the lab's own
    PostgreSQL, ``sqlite`` = ``realtime.db`` in the run folder, anything else = that DB. Without
    it the topology decides (``[db]``, see ``lab/topology.py``: Kamailio defaults to the lab's
    PostgreSQL).
    """
    from lab.backends.postgres import postgres_url

    if db_url in LAB_POSTGRES:
        return postgres_url(topology.db_host), True
    if db_url == "sqlite":
        return default_db_url(run_dir), False
    if db_url:
        return db_url, False
    if topology.lab_postgres:
        return postgres_url(topology.db_host), True
    return topology.db.url or default_db_url(run_dir), False


def registrar_available() -> bool:
    """True once router part 2 (``router/registration.py``) is in the tree."""
    return importlib.util.find_spec("router.registration") is not None


def plan(topology: Topology, run_dir: Path, *, db_url: str | None = None) -> Plan:
    """Addresses, file names and links of every node (nothing is written)."""
    run_dir = run_dir.resolve()
    events = run_dir / "events"
    pbx: list[PlannedNode] = []
    for i, spec in enumerate(topology.pbx_nodes(), 1):
        host, port = topology.pbx_address(i)
        pbx.append(
            PlannedNode(
                spec.name,
                "pbx",
                "external" if spec.external else spec.kind,
                host,
                port,
                config=None if spec.external else run_dir / f"{spec.name}.toml",
                external=bool(spec.external),
                events=str(events / f"{spec.name}.jsonl"),
            )
        )
    by_name = {p.name: p for p in pbx}
    router = PlannedNode(
        "router",
        "router",
        topology.router.kind,
        topology.router_host,
        SIP_PORT,
        config=run_dir / "router.toml",
        events=str(events / "router.jsonl"),
        http=f"{topology.router_host}:{HTTP_PORT}",
    )
    if topology.router.external:
        # A router the lab does not start (lab.routers.kamailio.launch): only routed to.
        ext_host, _, ext_port = topology.router.external.rpartition(":")
        router = PlannedNode("router", "router", "external", ext_host, int(ext_port), external=True)
    relays = []
    for link in topology.faults:
        b = link.partition("-")[2]
        upstream = router if b == "router" else by_name[b]
        name = f"fault-{link}"
        relays.append(
            PlannedNode(
                name,
                "proxy",
                "relay",
                topology.relay_host(link),
                SIP_PORT,
                config=run_dir / f"{name}.toml",
                link=link,
                upstream=f"{upstream.host}:{upstream.port}",
                rules=str(run_dir / "faults" / f"{link}.json"),
                events=str(events / f"{name}.jsonl"),
            )
        )
    url, own_postgres = resolve_db(topology, run_dir, db_url)
    db = None
    if own_postgres:
        from lab.topology import DB_PORT

        db = PlannedNode("db", "db", "postgresql", topology.db_host, DB_PORT)
    return Plan(run_dir, url, run_dir / "users.csv", pbx, relays, router, db)


def dispatch_targets(p: Plan) -> list[tuple[str, str]]:
    """``(uri, duid)`` per PBX node as the router must address it (through a relay if any)."""
    out = []
    for node in p.pbx:
        relay = p.relay_for(f"router-{node.name}")
        host, port = (relay.host, relay.port) if relay else (node.host, node.port)
        out.append((f"sip:{host}:{port}", node.name))
    return out


def provision(topology: Topology, p: Plan) -> int:
    """Schema, users (+ SIPp CSV), router endpoint, queues and dispatcher rows.

    Returns:
        The number of users provisioned.

    Raises:
        RealtimeError: the database cannot be opened or written.
    """
    db = connect(p.db_url)
    try:
        db.init_schema()
        users = db.provision_users(
            topology.users.count,
            topology.users.first,
            domain=topology.users_domain,
            context=topology.users.context,
            seed=topology.users.password_seed,
        )
        write_sipp_csv(p.users_csv, users)
        # Requests from the router (or from a relay in front of a PBX) are the router endpoint:
        # Asterisk identifies it by source IP (SIP-REFERENCE §4.3, ps_endpoint_id_ips).
        db.provision_router_endpoint(p.router.host, contact=f"sip:{p.router.host}:{p.router.port}")
        # A forwarded REGISTER for 101 comes from the router's IP, so Asterisk attributes it to
        # the router endpoint (identify by IP first, SIP-REFERENCE §4.1, §8.1) and looks for the
        # AOR 101 among that endpoint's aors: the router endpoint lists every user's AOR
        # (identify_by=ip,username as measured on Asterisk 22). The AORs accept Path
        # (support_path=yes) so Dial(PJSIP/101) on any node goes back through the router.
        aor_list = ",".join(["router", *(u.username for u in users)])
        db.execute(
            "UPDATE ps_endpoints SET aors = ?, identify_by = ? WHERE id = ?",
            (aor_list, "ip,username", "router"),
        )
        db.execute("UPDATE ps_aors SET support_path = ? WHERE id <> ?", ("yes", "router"))
        for queue in topology.queues:
            db.queue_add(queue.name, queue.strategy, queue.interfaces)
        db.dispatcher_set(
            DispatcherRow(setid=1, destination=uri, attrs=f"duid={duid}", description=duid)
            for uri, duid in dispatch_targets(p)
        )
    finally:
        db.close()
    return len(users)


TLS_PORT, WSS_PORT = 5061, 8443
"""Where a lab router with ``router.web = true`` takes TLS and secure WebSocket connections."""


def router_config(topology: Topology, p: Plan) -> dict[str, Any]:
    """The router TOML table (``router/config.py`` format)."""
    scale = topology.timers.time_scale
    t1 = topology.timers.t1 * scale
    host = p.router.host
    probing = topology.dispatcher.probing
    dispatcher: dict[str, Any] = {
        "algorithm": topology.dispatcher.algorithm,
        "probing": {
            "interval": probing.interval * scale,
            "timeout": probing.timeout * scale,
            "mode": probing.mode,
        },
    }
    if topology.dispatcher.source == "db":
        dispatcher["db"] = p.db_url
    else:
        dispatcher["destinations"] = [
            {"uri": uri, "attrs": f"duid={duid}"} for uri, duid in dispatch_targets(p)
        ]
    data: dict[str, Any] = {
        "router": {
            "name": "router",
            "listen": [f"udp:{host}:{p.router.port}", f"tcp:{host}:{p.router.port}"],
            "policy": topology.router.policy,
            # The router's own event log is opt-in ([router] events = true): the capture sees
            # every message without costing the router a JSON line per message.
            "events": p.router.events if topology.router.events else "",
            "http": p.router.http,
        },
        "timers": {
            "t1": t1,
            "t2": max(4.0 * scale, t1),
            "t4": 5.0 * scale,
            "fr_timer": 2.0 * scale,
            "fr_inv_timer": 40.0 * scale,
        },
        "dispatcher": dispatcher,
    }
    if topology.router.web:
        # Certificates are made by write_configs, next to router.toml (relative paths).
        data["router"]["listen"] += [f"tls:{host}:{TLS_PORT}", f"wss:{host}:{WSS_PORT}"]
        data["streams"] = {"cert": "certs/router.pem", "key": "certs/router.key"}
        data["streams"]["ca"] = "certs/ca.pem"
    if registrar_available():
        data["registrar"] = {
            "enabled": True,
            "db": p.db_url,
            "trusted_sources": [n.host for n in p.pbx]
            + [r.host for r in p.relays if r.link != "ua-router"],
            # Lab default: only REGISTER is challenged, so SIPp call storms need no auth.
            "auth_methods": ["REGISTER"],
        }
    return data


def kamailio_argv(topology: Topology, p: Plan) -> list[str]:
    """Kamailio as the router: rendered by ``lab.routers.kamailio`` from the very router table
    the reference router would get (same addresses, timers, probing, registrar settings), sized
    like production (``-m 2048``: the default 64 MB fails calls at 400-500 CPS on this class of
    machine), checked with ``kamailio -c``, run in the foreground.

    Raises:
        LabError: Kamailio missing or the rendered cfg does not parse.
    """
    from lab.backends import LabError
    from lab.routers.kamailio import KamailioError, kamailio_binary
    from lab.routers.kamailio.launch import kamailio_router_argv
    from lab.routers.kamailio.router import router_params_from_dict
    from router.configfile import ConfigError

    if kamailio_binary() is None and not topology.router.version:
        raise LabError("router kind 'kamailio' needs Kamailio (Debian package kamailio)")
    if topology.router.web:
        raise LabError(
            "router.web: TLS/WebSocket listeners exist for the reference router only "
            "(Kamailio's websocket/tls cfg fragment is not built yet)"
        )
    try:
        params = router_params_from_dict(router_config(topology, p), source="lab topology")
        return kamailio_router_argv(params, p.run_dir / "kamailio", topology.router)
    except (KamailioError, ConfigError, ValueError) as exc:
        raise LabError(f"router (kamailio): {exc}") from exc


def pbx_config(topology: Topology, p: Plan, node: PlannedNode) -> dict[str, Any]:
    """One emulator node's TOML table (``lab/pbx/config.py`` format)."""
    scale = topology.timers.time_scale
    t1 = topology.timers.t1 * scale
    relays = [r for r in p.relays if r.link == f"router-{node.name}"]
    routers = [p.router.host] + [r.host for r in relays]
    spec = next(s for s in topology.pbx_nodes() if s.name == node.name)
    extra: dict[str, Any] = {}
    if relays:
        # The router reaches this node through the relay: advertise the relay in Contact so
        # in-dialog requests (ACK for a 2xx, BYE) cross it too.
        extra["external_signaling_address"] = f"{relays[0].host}:{relays[0].port}"
    return {
        **extra,
        "name": node.name,
        "db": p.db_url,
        "listen": node.host,
        "port": node.port,
        "routers": routers,
        # Bounded evidence (capacity runs): no event log, a line per message would outgrow
        # the bound; the capture's window and the load generator's statistics remain.
        "events": "" if topology.evidence_mb else node.events,
        "time_scale": scale,
        "timers": {"t1": t1, "t2": max(4.0 * scale, t1), "t4": 5.0 * scale},
        "capacity": {"max_channels": spec.max_channels},
    }


def relay_config(node: PlannedNode, *, seed: int = 0) -> dict[str, Any]:
    return {
        "name": node.name,
        "link": node.link,
        "listen": f"{node.host}:{node.port}",
        "upstream": node.upstream,
        "rules": node.rules,
        "events": node.events,
        "seed": seed,
    }


def write_configs(topology: Topology, p: Plan) -> None:
    """Write topology.toml, router.toml, <pbx>.toml and fault-<link>.toml into the run folder."""
    p.run_dir.mkdir(parents=True, exist_ok=True)
    (p.run_dir / "topology.toml").write_text(dump_toml(topology.to_dict()), encoding="utf-8")
    if topology.router.web:
        from lab.certs import lab_certificates

        lab_certificates(p.run_dir, {"router": [p.router.host]})
    if p.router.config is not None:  # None: an external router (no config of ours)
        p.router.config.write_text(dump_toml(router_config(topology, p)), encoding="utf-8")
    for node in p.pbx:
        if node.config is not None and node.kind == "emulator":
            node.config.write_text(dump_toml(pbx_config(topology, p, node)), encoding="utf-8")
    for relay in p.relays:
        assert relay.config is not None
        relay.config.write_text(dump_toml(relay_config(relay)), encoding="utf-8")


def record_lab(backend: str, run_dir: Path, p: Plan, nodes: list[NodeRecord]) -> LabFile:
    """Write ``lab.json`` for a lab that is up (every backend describes a run the same way)."""
    lab = LabFile(
        run_dir=str(run_dir),
        backend=backend,
        db=p.db_url,
        users_csv=str(p.users_csv),
        events=str(run_dir / "events.jsonl"),
        nodes=nodes,
        topology=str(run_dir / "topology.toml"),
    )
    write_labfile(lab)
    return lab
