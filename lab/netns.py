"""Network-namespace mode: one Linux network namespace per lab node, links impaired by the kernel.

``[lab] net = "netns"`` (``siplab lab up --net netns``) turns every node (router, PBX nodes,
fault relays, the lab's PostgreSQL, SIPp load generators) into a "host" of its own: a network
namespace ``sl<net>-<node>`` with its own ``lo``, its own kernel UDP buffers and one interface,
``eth0``, the end of a veth pair whose other end (``sl<net>p<octet>``) is a port of the lab
bridge ``sl<net>br``. The bridge lives in a namespace of its own, ``sl<net>-host``, which is
also where the harness sits (address ``10.<net>.0.1`` plus the load-generator addresses): the
private subnet ``10.<net>.0.0/24`` exists only inside namespaces the lab made and is routed
nowhere else. A node keeps its loopback-mode last octet (router ``.10``, ``pbxN`` ``.10+N``, DB
``.5``, relays and generators ``.100`` on), so ``127.<net>.0.x`` becomes ``10.<net>.0.x``.

Processes are started with ``ip netns exec`` (which execs the program: the PID we record is the
program's own). In-process sockets (readiness probes, the trio UA, the DB client) are made
inside a namespace by switching only the calling thread with ``setns(2)`` (:func:`entered`).

Links. A link is a node's veth pair. Impairment (:class:`LinkSpec`: delay, jitter, loss,
duplication, reordering, rate) is a ``tc qdisc ... netem`` on *both* ends, so each direction gets
the setting (as Mininet's TCLink does): ``loss = "5%"`` loses 5 % of what the node sends and 5 %
of what it receives. Kernels built without netem (``CONFIG_NET_SCH_NETEM``, e.g. some VM
kernels, including the one this project's CI runs on) still get ``loss`` from nftables
(``numgen random`` in the node's namespace, both hooks) and ``rate`` from the ``tbf`` qdisc;
delay, jitter, duplication and reordering then fail naming the link, the setting and the missing
kernel feature. ``link down`` sets the bridge-side veth down: the node's carrier drops, exactly
what a pulled cable does, while its processes run on.

Cleanup. Deleting a namespace deletes its veth end, the peer, and their qdiscs; deleting
``sl<net>-host`` deletes the bridge. :meth:`NetnsLab.destroy` first SIGKILLs whatever still runs
in the lab's namespaces (only ours: they carry the lab's prefix), then deletes them. In attached
mode a *reaper* (``python -m lab.netns reap``, its own session) holds a pipe from the harness and
destroys the namespaces when the pipe closes, which a SIGKILLed harness does too.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO

_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
_TIME = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
_PERCENT = re.compile(r"^\d+(\.\d+)?%$")
_RATE = re.compile(r"^\d+(\.\d+)?([kmgt]?bit|[kmgt]?bps)$", re.IGNORECASE)
HOST_ADDRESSES = 8
"""Load-generator addresses given to the harness namespace (``Topology.generator_host(i)``)."""


class NetnsError(RuntimeError):
    """Namespace mode cannot start, or the kernel refused a setting (the message says which)."""


def _field_error(name: str, reason: str) -> Exception:
    from router.configfile import FieldError

    return FieldError(name, reason)


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """Impairment of one node's link, each direction (``tc-netem(8)`` syntax)."""

    delay: str = ""
    """One-way added delay, e.g. ``"80ms"``."""
    jitter: str = ""
    """Delay variation (needs ``delay``), e.g. ``"10ms"``."""
    loss: str = ""
    """Random loss, e.g. ``"5%"``."""
    duplicate: str = ""
    """Packets sent twice, e.g. ``"1%"``."""
    reorder: str = ""
    """Packets sent at once, ahead of the delayed rest (needs ``delay``), e.g. ``"25%"``."""
    rate: str = ""
    """Bandwidth limit, e.g. ``"256kbit"``."""

    def __post_init__(self) -> None:
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if value and not _TIME.match(value):
                raise _field_error(name, f"expected a duration like '80ms', got {value!r}")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if value and not _PERCENT.match(value):
                raise _field_error(name, f"expected a percentage like '5%', got {value!r}")
        if self.rate and not _RATE.match(self.rate):
            raise _field_error("rate", f"expected a rate like '256kbit', got {self.rate!r}")
        if (self.jitter or self.reorder) and not self.delay:
            raise _field_error("jitter" if self.jitter else "reorder", "needs a delay")

    def settings(self) -> list[tuple[str, str]]:
        """The non-empty settings, in netem's argument order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]

    def describe(self) -> str:
        return " ".join(f"{k} {v}" for k, v in self.settings()) or "none"


def netem_args(spec: LinkSpec) -> list[str]:
    """``tc qdisc ... netem`` arguments for ``spec`` (jitter rides on delay)."""
    args: list[str] = []
    if spec.delay:
        args += ["delay", spec.delay] + ([spec.jitter] if spec.jitter else [])
    for name in ("loss", "duplicate", "reorder", "rate"):
        value = getattr(spec, name)
        if value:
            args += [name, value]
    return args


def lab_address(host: str) -> str:
    """The namespace-mode address of a loopback-mode lab address: 127.N.0.X -> 10.N.0.X."""
    return "10." + host.split(".", 1)[1] if host.startswith("127.") else host


def missing_prerequisites() -> list[str]:
    """What namespace mode needs and this process lacks (empty: all there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()}; namespaces and veths need it)")
    missing += [
        f"'{tool}' on PATH (Debian package iproute2)"
        for tool in ("ip", "tc")
        if shutil.which(tool) is None
    ]
    return missing


def required() -> bool:
    """True where netns mode must work (CI, or ``SIPLAB_REQUIRE_NETNS=1``): tests then fail
    instead of skipping when a prerequisite is missing."""
    env = os.environ
    return (
        env.get("CI") == "true"
        or env.get("SIPLAB_REQUIRE_NETNS") == "1"
        or env.get("SIPLAB_REQUIRE_DOCKER") == "1"  # .ci/run's marker of "everything required"
    )


def check_prerequisites() -> None:
    """Raise :class:`NetnsError` naming every missing prerequisite, before anything starts."""
    missing = missing_prerequisites()
    if missing:
        raise NetnsError("--net netns cannot start: missing " + "; ".join(missing))


def _run(argv: list[str], what: str) -> str:
    """Run a command; raise :class:`NetnsError` with ``what`` and its stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{what}: {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _try(argv: list[str]) -> str | None:
    """Run a command; its stderr on failure, None on success."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


def list_namespaces() -> list[str]:
    """Every named network namespace (``ip netns list``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


# -- switching the calling thread into a namespace ----------------------------------------


def _setns(fd: int) -> None:
    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(err)}")


@contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run the block with this thread in ``namespace``: sockets made there stay there."""
    try:
        target = open(f"/run/netns/{namespace}", "rb")  # noqa: SIM115
    except OSError as exc:
        raise NetnsError(f"network namespace {namespace}: {exc.strerror}") from None
    with open("/proc/thread-self/ns/net", "rb") as old, target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(old.fileno())


def enter(namespace: str) -> None:
    """Move this thread (for a one-shot CLI process: the process) into ``namespace`` for good."""
    with open(f"/run/netns/{namespace}", "rb") as target:
        _setns(target.fileno())


def go_back(fd: int) -> None:
    """Return this thread to the namespace open as ``fd`` (saved before :func:`enter`)."""
    _setns(fd)


def in_lab_namespace() -> bool:
    """True when this thread is in a namespace a netns lab made (``sl<net>-...``)."""
    try:
        here = os.stat("/proc/thread-self/ns/net").st_ino
        names = [n for n in os.listdir("/run/netns") if re.match(r"^sl\d+-", n)]
    except OSError:
        return False
    for name in names:
        try:
            if os.stat(f"/run/netns/{name}").st_ino == here:
                return True
        except OSError:
            continue
    return False


# -- the lab's namespaces ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetnsLab:
    """Names and addresses of one lab's namespaces (module docstring)."""

    net: int

    @property
    def prefix(self) -> str:
        return f"sl{self.net}-"

    @property
    def host_ns(self) -> str:
        return f"sl{self.net}-host"

    @property
    def bridge(self) -> str:
        return f"sl{self.net}br"

    @property
    def subnet(self) -> str:
        return f"10.{self.net}.0.0/24"

    @property
    def gateway(self) -> str:
        return f"10.{self.net}.0.1"

    def ns(self, node: str) -> str:
        return f"{self.prefix}{node}"

    def capture_mark(self) -> str:
        """An address on the bridge with a permanent neighbour entry and no host behind it
        (10.<net>.0.254): a datagram the harness sends there crosses the bridge, where the
        lab's capture sees it (the capture barrier's marker, ``lab.capture.flush``).

        Raises:
            NetnsError: ``ip neigh`` refused the entry (its message).
        """
        mark = f"10.{self.net}.0.254"
        _run(
            ["ip", "-n", self.host_ns, "neigh", "replace", mark, "lladdr", "02:00:00:00:00:fe",
             "dev", self.bridge, "nud", "permanent"],
            f"capture marker neighbour on {self.bridge}",
        )  # fmt: skip
        return mark

    def host_veth(self, address: str) -> str:
        """Bridge-side end of the veth of the node at ``address`` (15-char IFNAMSIZ limit)."""
        return f"sl{self.net}p{address.rsplit('.', 1)[1]}"

    def namespaces(self) -> list[str]:
        """The namespaces of this lab that exist now."""
        return [n for n in list_namespaces() if n.startswith(self.prefix)]

    def create_host(self, addresses: list[str]) -> None:
        """The harness namespace with the bridge, the gateway and ``addresses`` on it."""
        ns = self.host_ns
        _run(["ip", "netns", "add", ns], f"namespace {ns}")
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], f"namespace {ns}: lo up")
        _run(["ip", "-n", ns, "link", "add", "name", self.bridge, "type", "bridge"], "bridge")
        for address in [self.gateway, *addresses]:
            _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", self.bridge], "bridge")
        _run(["ip", "-n", ns, "link", "set", self.bridge, "up"], f"bridge {self.bridge} up")

    def add_node(self, node: str, address: str) -> None:
        """Namespace ``sl<net>-<node>``: ``lo`` up, ``eth0`` with ``address``, on the bridge."""
        ns, veth = self.ns(node), self.host_veth(address)
        what = f"node {node} ({address})"
        _run(["ip", "netns", "add", ns], what)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"], what)
        _run(
            ["ip", "link", "add", "name", veth, "netns", self.host_ns, "type", "veth",
             "peer", "name", "eth0", "netns", ns],
            what,
        )  # fmt: skip
        _run(["ip", "-n", self.host_ns, "link", "set", veth, "master", self.bridge], what)
        _run(["ip", "-n", self.host_ns, "link", "set", veth, "up"], what)
        _run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"], what)
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"], what)

    def remove_node(self, node: str) -> None:
        """Delete ``node``'s namespace (its veth pair goes with it), killing what runs there."""
        ns = self.ns(node)
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in out.stdout.split():
            if pid != str(os.getpid()):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        _try(["ip", "netns", "del", ns])

    def create(self, nodes: dict[str, str], host_addresses: list[str]) -> None:
        """The bridge, then one namespace per ``node -> address``; on failure nothing is left."""
        try:
            self.create_host(host_addresses)
            for node, address in nodes.items():
                self.add_node(node, address)
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> list[str]:
        """SIGKILL what runs in this lab's namespaces, delete them (host last); their names."""
        names = sorted(self.namespaces(), key=lambda n: n == self.host_ns)
        for ns in names:
            out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in out.stdout.split():
                if pid == str(os.getpid()):
                    continue  # this process joined the harness namespace (lab CLI, a test)
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _try(["ip", "netns", "del", ns])
        return names

    # links

    def _ends(self, node: str, address: str) -> list[tuple[str, str]]:
        return [(self.host_ns, self.host_veth(address)), (self.ns(node), "eth0")]

    def clear_link(self, node: str, address: str) -> None:
        """Remove every impairment of ``node``'s link (absent ones are fine)."""
        for ns, dev in self._ends(node, address):
            _try(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"])
        if shutil.which("nft"):
            _try(["ip", "netns", "exec", self.ns(node), "nft", "delete", "table", "inet", "sllink"])

    def set_link(self, node: str, address: str, spec: LinkSpec) -> str:
        """Impair ``node``'s link as ``spec`` says (replacing what was there); the engine used.

        Raises:
            NetnsError: naming the link and the setting the kernel (or tc) refused.
        """
        self.clear_link(node, address)
        if not spec.settings():
            return "none"
        ends = self._ends(node, address)
        error = None
        for ns, dev in ends:
            error = _try(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem",
                          *netem_args(spec)])  # fmt: skip
            if error is not None:
                break
        if error is None:
            return "netem"
        self.clear_link(node, address)
        if "unknown" not in error.lower():  # netem exists and refused something: find what
            for name, value in spec.settings():
                alone = LinkSpec(
                    **{
                        name: value,
                        **({"delay": spec.delay} if name in ("jitter", "reorder") else {}),
                    }
                )
                ns, dev = ends[0]
                why = _try(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem",
                            *netem_args(alone)])  # fmt: skip
                _try(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"])
                if why is not None and "unknown" not in why.lower():  # not "no netem here"
                    raise NetnsError(f"link {node}: {name} {value}: refused: {why}")
            raise NetnsError(f"link {node}: {spec.describe()}: refused: {error}")
        return self._set_link_without_netem(node, address, spec)

    def _set_link_without_netem(self, node: str, address: str, spec: LinkSpec) -> str:
        """loss by nftables, rate by tbf, on a kernel without netem (module docstring)."""
        for name, value in spec.settings():
            if name not in ("loss", "rate"):
                raise NetnsError(
                    f"link {node}: {name} {value}: this kernel has no netem qdisc "
                    "(CONFIG_NET_SCH_NETEM); without it only loss (nftables) and rate (tbf) "
                    "can be set"
                )
        engines = []
        if spec.rate:
            for ns, dev in self._ends(node, address):
                why = _try(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                            "rate", spec.rate, "burst", "4kb", "latency", "2s"])  # fmt: skip
                if why is not None:
                    self.clear_link(node, address)
                    raise NetnsError(f"link {node}: rate {spec.rate}: refused by tbf: {why}")
            engines.append("tbf")
        if spec.loss:
            if shutil.which("nft") is None:
                raise NetnsError(
                    f"link {node}: loss {spec.loss}: this kernel has no netem; loss then needs "
                    "nft (Debian package nftables)"
                )
            threshold = round(float(spec.loss.rstrip("%")) * 100)
            if threshold > 10000:
                raise NetnsError(f"link {node}: loss {spec.loss}: more than 100%")
            rule = f"numgen random mod 10000 < {threshold} counter drop"
            script = (
                "table inet sllink {\n"
                f"  chain out {{ type filter hook output priority 0; {rule}; }}\n"
                f"  chain in {{ type filter hook prerouting priority 0; {rule}; }}\n"
                "}\n"
            )
            proc = subprocess.run(
                ["ip", "netns", "exec", self.ns(node), "nft", "-f", "-"],
                input=script, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                self.clear_link(node, address)
                raise NetnsError(f"link {node}: loss {spec.loss}: nft: {proc.stderr.strip()}")
            engines.append("nftables")
        return "+".join(engines)

    def link_state(self, node: str, address: str, up: bool) -> None:
        """Carrier of ``node``'s link: the bridge-side veth up or down (a cable pulled)."""
        state = "up" if up else "down"
        _run(
            ["ip", "-n", self.host_ns, "link", "set", self.host_veth(address), state],
            f"link {node} {state}",
        )


def capture_command(network: dict[str, object]) -> tuple[list[str], str]:
    """``(argv prefix, interface)`` to capture a netns lab's traffic (``lab.json``'s
    ``network``): every packet between nodes crosses the bridge in the harness namespace, so
    ``[*prefix, "tcpdump", "-i", interface, ...]`` sees what ``tcpdump -i lo`` sees on loopback."""
    return ["ip", "netns", "exec", str(network["host_ns"])], str(network["bridge"])


# -- the reaper ----------------------------------------------------------------------------


def start_reaper(net: int, log: Path) -> subprocess.Popen[bytes]:
    """A process that destroys lab ``net``'s namespaces when our end of its pipe closes."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lab.netns", "reap", "--net", str(net)],
            stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop_reaper(reaper: subprocess.Popen[bytes] | None) -> None:
    """Close the pipe: the reaper cleans (nothing left after a normal ``down``) and exits."""
    if reaper is None:
        return
    pipe: IO[bytes] | None = reaper.stdin
    if pipe is not None:
        pipe.close()
    try:
        reaper.wait(30.0)
    except subprocess.TimeoutExpired:
        reaper.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.netns")
    sub = parser.add_subparsers(dest="cmd", required=True)
    reap = sub.add_parser("reap", help="wait for EOF on stdin, then delete lab NET's namespaces")
    reap.add_argument("--net", type=int, required=True)
    clean = sub.add_parser("clean", help="delete lab NET's namespaces now")
    clean.add_argument("--net", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the harness must not stop us
    if args.cmd == "reap":
        while sys.stdin.buffer.read(4096):
            pass
    removed = NetnsLab(args.net).destroy()
    if removed:
        print(f"removed namespaces: {', '.join(removed)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "LinkSpec",
    "NetnsError",
    "NetnsLab",
    "capture_command",
    "check_prerequisites",
    "enter",
    "entered",
    "go_back",
    "in_lab_namespace",
    "lab_address",
    "missing_prerequisites",
    "netem_args",
    "required",
    "start_reaper",
    "stop_reaper",
]
