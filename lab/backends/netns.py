"""The netns backend: the local backend's processes, each in a network namespace of its own.

``siplab lab up --net netns`` (topology ``[lab] net = "netns"``) picks this backend. It is the
local backend (same commands, readiness probes, process ownership and cleanup) with three
differences, the namespaces themselves being ``lab/netns.py``'s:

- before anything starts: root, ``ip`` and ``tc`` are checked (a clear error otherwise), stale
  namespaces of the same lab net (a harness that crashed in detached mode) are removed, then the
  bridge and one namespace per planned node are made;
- every node is started with ``ip netns exec sl<net>-<node> ...``; the harness's own work (DB
  provisioning, readiness) runs with its thread in ``sl<net>-host``, SIP readiness probes from the
  router's namespace (the PBX nodes identify the router by its address);
- ``down`` stops the nodes as the local backend does and deletes every namespace; in attached
  mode a reaper deletes them if the harness dies without a ``down``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.backends import LabError
from lab.backends.local import LocalBackend
from lab.backends.render import Plan, PlannedNode, plan
from lab.labfile import LabFile, NodeRecord, write_labfile
from lab.netns import (
    HOST_ADDRESSES,
    LinkSpec,
    NetnsError,
    NetnsLab,
    check_prerequisites,
    enter,
    entered,
    go_back,
    start_reaper,
    stop_reaper,
)
from lab.topology import Topology

if TYPE_CHECKING:
    from lab.capture import CaptureConfig


def planned_nodes(p: Plan) -> dict[str, str]:
    """``node -> address`` of every node the lab starts (external PBX nodes excluded)."""
    nodes: list[PlannedNode] = [*([p.db] if p.db else []), *p.pbx, *p.relays, p.router]
    return {n.name: n.host for n in nodes if not n.external}


def lab_net(lab: LabFile) -> NetnsLab:
    """The namespaces of a netns lab from its ``lab.json``."""
    if lab.network.get("mode") != "netns":
        raise LabError(f"{lab.run_dir}: not a netns lab (lab up --net netns)")
    return NetnsLab(int(lab.network["net"]))


class NetnsBackend(LocalBackend):
    """Local processes in per-node network namespaces (module docstring)."""

    name = "netns"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._net: NetnsLab | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._home: int | None = None
        """Attached mode: fd of the namespace the calling thread was in before ``up``."""

    def _spawn(self, argv: list[str], name: str, run_dir: Path) -> tuple[int, Path]:
        if self._net is not None:
            # ip execs the program (no fork): the PID is the program's, /proc cmdline is argv.
            argv = ["ip", "netns", "exec", self._net.ns(name), *argv]
        return super()._spawn(argv, name, run_dir)

    def _wait(self, record: NodeRecord, probe_source: str) -> None:
        if self._net is None or record.role == "db":
            super()._wait(record, probe_source)
            return
        with entered(self._net.ns("router")):  # probes leave from the router's address
            super()._wait(record, probe_source)

    def _capture_config(self, config: CaptureConfig) -> CaptureConfig:
        # Every packet between nodes crosses the lab bridge in the harness namespace (which this
        # thread has entered while `up` runs): capture there. The barrier's marker goes to .254,
        # an address with a permanent neighbour entry and no host, so it crosses the bridge.
        net = self._net
        if net is None:
            return config
        try:
            mark = net.capture_mark()
        except NetnsError as exc:
            raise LabError(str(exc)) from None
        return replace(
            config, interface=net.bridge, subnet=net.subnet, mark_from=net.gateway, mark_to=mark
        )

    def _attach(self, lab: LabFile) -> NetnsLab:
        self._net = lab_net(lab)
        return self._net

    def up(self, topology: Topology, run_dir: Path, *, db_url: str | None = None) -> LabFile:
        if topology.lab.net != "netns":
            raise LabError('the netns backend needs a topology with [lab] net = "netns"')
        try:
            check_prerequisites()
        except NetnsError as exc:
            raise LabError(str(exc)) from None
        run_dir = Path(run_dir).resolve()
        net = NetnsLab(topology.net)
        stale = net.destroy()  # our prefix: what a crashed detached run of this lab net left
        nodes = planned_nodes(plan(topology, run_dir, db_url=db_url))
        hosts = [topology.generator_host(i) for i in range(HOST_ADDRESSES)]
        try:
            net.create(nodes, hosts)
        except NetnsError as exc:
            raise LabError(str(exc)) from None
        self._net = net
        if not self.detach:
            self._reaper = start_reaper(net.net, run_dir / "logs" / "netns-reaper.log")
        links: dict[str, str] = {}
        try:
            with entered(net.host_ns):
                lab = super().up(topology, run_dir, db_url=db_url)
            for node, spec in topology.lab.links.items():
                links[node] = self._impair(net, node, nodes[node], spec)
        except BaseException:
            net.destroy()
            stop_reaper(self._reaper)
            self._reaper = None
            raise
        network = {
            "mode": "netns",
            "net": net.net,
            "bridge": net.bridge,
            "host_ns": net.host_ns,
            "subnet": net.subnet,
            "harness": net.gateway,
            "namespaces": {node: net.ns(node) for node in nodes},
            "addresses": nodes,
            "links": links,
            "stale_removed": stale,
        }
        lab = replace(lab, network=network)
        write_labfile(lab)
        if not self.detach:
            # An attached harness (pytest, Lab objects) lives in the lab: its thread joins the
            # harness namespace until `down`, so UAs, SIPp and status calls reach 10.N.0.x.
            self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            enter(net.host_ns)
        return lab

    @staticmethod
    def _impair(net: NetnsLab, node: str, address: str, spec: LinkSpec) -> str:
        try:
            engine = net.set_link(node, address, spec)
        except NetnsError as exc:
            raise LabError(str(exc)) from None
        return f"{spec.describe()} ({engine})" if spec.settings() else "none"

    def down(self, lab: LabFile) -> LabFile:
        net = self._attach(lab)
        try:
            if net.host_ns in net.namespaces():
                with entered(net.host_ns):
                    stopped = super().down(lab)
            else:  # namespaces already gone (reaped): the processes went with them
                stopped = super().down(lab)
        finally:
            if self._home is not None:
                go_back(self._home)
                os.close(self._home)
                self._home = None
            net.destroy()
            stop_reaper(self._reaper)
            self._reaper = None
        return stopped

    def restart(self, lab: LabFile, node: str) -> LabFile:
        net = self._attach(lab)
        with entered(net.host_ns):
            return super().restart(lab, node)

    # links at run time

    def set_link(self, lab: LabFile, node: str, spec: LinkSpec) -> LabFile:
        """Replace ``node``'s link impairment; recorded in ``lab.json``."""
        net = self._attach(lab)
        address = _address(lab, node)
        described = "none (last change refused)"  # set_link clears before it applies
        try:
            described = self._impair(net, node, address, spec)
        finally:
            links = {**lab.network.get("links", {}), node: described}
            updated = replace(lab, network=dict(lab.network, links=links))
            write_labfile(updated)
        return updated

    def link_state(self, lab: LabFile, node: str, up: bool) -> LabFile:
        """Carrier of ``node``'s link up or down (a pulled cable; the node keeps running)."""
        net = self._attach(lab)
        try:
            net.link_state(node, _address(lab, node), up)
        except NetnsError as exc:
            raise LabError(str(exc)) from None
        down = set(lab.network.get("down", []))
        down = down - {node} if up else down | {node}
        updated = replace(lab, network=dict(lab.network, down=sorted(down)))
        write_labfile(updated)
        return updated


def _address(lab: LabFile, node: str) -> str:
    addresses: dict[str, str] = lab.network.get("addresses", {})
    if node not in addresses:
        raise LabError(f"link {node}: no such node (nodes: {', '.join(sorted(addresses))})")
    return addresses[node]


__all__ = ["NetnsBackend", "lab_net", "planned_nodes"]
