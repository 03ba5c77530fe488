"""The sizing verdict: how many router cores and PBX nodes a target load needs.

A target profile is a short string, ``"cps=300,users=50000,reregister=600s"``: calls per second
at the busy hour, registered users, and how often each re-registers (RFC 3261 §10.2.1: the
Expires the registrar grants; a UA refreshes before it runs out). Users turn into a steady
registration rate, ``users / reregister``.

The measured side is per-core capacity from this machine: router calls/s per core of router CPU,
registrations/s per core, and PBX calls/s per node. CPU adds up linearly between the two loads
(the router's cores needed are the sum of both shares), then the headroom is added on top.
Every step of the arithmetic is returned as text, so the report shows how the answer was reached,
and so is the list of reasons not to trust it too far.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "Capacity",
    "SizingVerdict",
    "Target",
    "extrapolation_limits",
    "parse_target",
    "size",
]

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|h|min)?\s*$", re.IGNORECASE)
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Target:
    """The load to size for."""

    cps: float = 0.0
    """Busy-hour calls per second."""
    users: int = 0
    """Registered users."""
    reregister_s: float = 3600.0
    """Re-registration interval, seconds."""

    @property
    def registrations_per_s(self) -> float:
        return self.users / self.reregister_s if self.users else 0.0

    def __str__(self) -> str:
        return f"cps={self.cps:g},users={self.users},reregister={self.reregister_s:g}s"


def parse_target(text: str) -> Target:
    """Parse ``"cps=300,users=50000,reregister=600s"`` (any subset; ``reregister`` takes s/m/h).

    Raises:
        ValueError: naming the field and the reason, e.g. ``target: users: 'many' is not an
            integer``.
    """
    fields: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep:
            raise ValueError(f"target: {part!r}: expected field=value")
        if key in fields or (key == "reregister" and "reregister_s" in fields):
            raise ValueError(f"target: {key}: given twice")
        if key == "cps":
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"target: cps: {raw!r} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise ValueError("target: cps: must be >= 0")
            fields["cps"] = value
        elif key == "users":
            if not raw.isdigit():
                raise ValueError(f"target: users: {raw!r} is not an integer")
            fields["users"] = int(raw)
        elif key == "reregister":
            match = _DURATION.match(raw)
            if match is None:
                raise ValueError(f"target: reregister: {raw!r} is not a duration (e.g. 600s, 10m)")
            seconds = float(match.group(1)) * _UNIT_S[(match.group(2) or "").lower()]
            if seconds <= 0:
                raise ValueError("target: reregister: must be > 0")
            fields["reregister_s"] = seconds
        else:
            raise ValueError(f"target: {key!r}: unknown field (expected cps, users, reregister)")
    if not fields:
        raise ValueError("target: empty (expected e.g. cps=300,users=50000,reregister=600s)")
    return Target(
        cps=float(fields.get("cps", 0.0)),
        users=int(fields.get("users", 0)),
        reregister_s=float(fields.get("reregister_s", 3600.0)),
    )


@dataclass(frozen=True, slots=True)
class Capacity:
    """What this machine measured, per unit of hardware (None: not measured)."""

    router_cps_per_core: float | None = None
    """Established calls/s per core of router CPU, at the knee."""
    router_regs_per_core: float | None = None
    """Completed (challenged) registrations/s per core of router CPU, at the knee."""
    pbx_cps_per_node: float | None = None
    """Calls/s one PBX node handles (one core per node assumed)."""
    router_processes: int = 1
    """Router processes (workers) the per-core figures were measured with."""
    pbx_kind: str = "emulator"
    """What the PBX nodes behind the router were: ``emulator`` (lab/pbx) or ``asterisk``."""


_PBX_KIND = {
    "emulator": "PBX nodes sized from the EMULATOR (lab/pbx), not from a real Asterisk: a real "
    "node's calls/s per core is not measured here; treat this PBX count as a lower bound",
    "asterisk": "PBX nodes sized from real Asterisk 22 containers (siplab/asterisk)",
}


@dataclass(frozen=True, slots=True)
class SizingVerdict:
    target: Target
    capacity: Capacity
    headroom: float
    router_cores: int | None
    """Router cores needed, with headroom (None: a needed figure was not measured)."""
    pbx_nodes: int | None
    """PBX nodes needed for the call load, with headroom."""
    pbx_nodes_n_plus_1: int | None
    """With one spare node, so one node down keeps the service level."""
    lines: tuple[str, ...]
    """The arithmetic, one step per line."""
    limits: tuple[str, ...]
    """What this machine's numbers cannot tell."""

    def to_dict(self) -> dict[str, object]:
        return {
            "target": str(self.target),
            "headroom": self.headroom,
            "router_cores": self.router_cores,
            "pbx_nodes": self.pbx_nodes,
            "pbx_nodes_n_plus_1": self.pbx_nodes_n_plus_1,
            "arithmetic": list(self.lines),
            "limits": list(self.limits),
        }


def size(target: Target, capacity: Capacity, *, headroom: float = 0.3) -> SizingVerdict:
    """Router cores and PBX nodes for ``target`` from ``capacity``, with ``headroom`` on top.

    ``headroom`` is a share of the load (0.3 = plan for 30% more than the target).
    """
    if not 0 <= headroom < 10:
        raise ValueError("headroom must be within 0..1000%")
    factor = 1 + headroom
    regs = target.registrations_per_s
    lines = [
        f"target: {target.cps:g} calls/s, {target.users} users re-registering every "
        f"{target.reregister_s:g} s",
        f"registrations/s = users / reregister = {target.users} / {target.reregister_s:g} "
        f"= {regs:.2f}/s",
    ]
    core_terms: list[float] = []
    missing = False
    if target.cps > 0:
        if capacity.router_cps_per_core:
            share = target.cps / capacity.router_cps_per_core
            core_terms.append(share)
            lines.append(
                f"router cores for calls = {target.cps:g} / {capacity.router_cps_per_core:.1f} "
                f"calls/s per core = {share:.3f}"
            )
        else:
            missing = True
            lines.append("router cores for calls: not measured (run the call scenario)")
    if regs > 0:
        if capacity.router_regs_per_core:
            share = regs / capacity.router_regs_per_core
            core_terms.append(share)
            lines.append(
                f"router cores for registrations = {regs:.2f} / "
                f"{capacity.router_regs_per_core:.1f} registrations/s per core = {share:.3f}"
            )
        else:
            missing = True
            lines.append("router cores for registrations: not measured (run the register scenario)")
    router_cores: int | None = None
    if not missing:
        total = sum(core_terms)
        router_cores = max(1, math.ceil(total * factor - 1e-9))
        lines.append(
            f"router cores = ceil(({' + '.join(f'{t:.3f}' for t in core_terms) or '0'}) x "
            f"{factor:g} headroom) = ceil({total * factor:.3f}) = {router_cores}"
        )
    pbx_nodes: int | None = None
    pbx_spare: int | None = None
    if target.cps > 0 and capacity.pbx_cps_per_node:
        need = target.cps * factor / capacity.pbx_cps_per_node
        pbx_nodes = max(1, math.ceil(need - 1e-9))
        pbx_spare = pbx_nodes + 1
        lines.append(
            f"PBX nodes = ceil({target.cps:g} x {factor:g} / {capacity.pbx_cps_per_node:.1f} "
            f"calls/s per node) = ceil({need:.3f}) = {pbx_nodes}; N+1 = {pbx_spare}"
        )
        lines.append(_PBX_KIND.get(capacity.pbx_kind, f"PBX nodes measured: {capacity.pbx_kind}"))
    elif target.cps > 0:
        lines.append("PBX nodes: per-node capacity not measured")
    elif target.cps == 0:
        pbx_nodes, pbx_spare = 0, 0
    return SizingVerdict(
        target=target,
        capacity=capacity,
        headroom=headroom,
        router_cores=router_cores,
        pbx_nodes=pbx_nodes,
        pbx_nodes_n_plus_1=pbx_spare,
        lines=tuple(lines),
        limits=extrapolation_limits(capacity, cores=None),
    )


def extrapolation_limits(capacity: Capacity, *, cores: int | None) -> tuple[str, ...]:
    """Why figures from this one machine extrapolate only so far."""
    machine = f"{cores} cores" if cores else "a few cores"
    return (
        "Same machine: the load generator (SIPp) shares the CPU with the router and the PBX "
        "nodes; its CPU is reported per step, and a step where it saturates measures SIPp.",
        "Loopback only: no NIC, no interrupts, no wire latency or loss; real networks add delay "
        "and retransmissions that cost CPU.",
        f"{machine.capitalize()}: per-core figures assume linear scaling. A single-process "
        f"router (here {capacity.router_processes} process(es)) uses one core; more cores need "
        "more router processes (SO_REUSEPORT or a front load balancer), which was not measured.",
        "PBX nodes here are the emulator (or SIPp) without media; a real Asterisk node spends "
        "CPU on RTP, dialplan and queues, so per-node capacity is an upper bound.",
        "Short steps: the soak is minutes, not hours; memory growth, DB load and registrar "
        "expiry at scale are not exercised.",
        "Per-core capacity is valid near the measured load; far beyond it, locks, the DB and "
        "kernel UDP buffers become limits this machine did not reach.",
    )
