"""sipvicious wrappers: scan, enumerate extensions and crack passwords, on loopback only.

The lab's security scenarios attack the router under test with the real tools (PyPI
``sipvicious``: ``sipvicious_svmap``, ``sipvicious_svwar``, ``sipvicious_svcrack``), the way
an attacker on the Internet would. These wrappers:

* refuse any target or source address outside 127.0.0.0/8 (`NotLoopback`): the lab never
  scans anything but itself;
* run each tool as a subprocess under ``trio.run_process`` (the router under test may run in
  the same trio loop, so nothing here blocks), with ``HOME`` pointed at a temporary directory
  so the tools' session folders (``~/.sipvicious``) never leak between runs, and with a hard
  wall-clock bound (the process is killed at ``max_time``) on top of the tools' own
  ``--maximumtime``;
* parse the result table the tools print on stdout (``+---+`` grids of ``pptable``).

``svcrack`` hides ``user:password`` in the From tag of every REGISTER and reads it back from
the 200 OK, so the cracked password comes from the tool's own report, not from us.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import trio

Address = tuple[str, int]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
TOOLS = ("sipvicious_svmap", "sipvicious_svwar", "sipvicious_svcrack")


class NotLoopback(ValueError):
    """A target or source address outside 127.0.0.0/8."""


class ToolMissing(RuntimeError):
    """The sipvicious command is not installed (``pip install sipvicious``)."""


@dataclass(frozen=True, slots=True)
class Device:
    """One SIP device svmap found."""

    address: Address
    user_agent: str
    """The User-Agent/Server the device answered with ("" when none)."""


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension svwar found."""

    extension: str
    authentication: str
    """svwar's verdict: "reqauth" (challenged), "noauth", "weird" ..."""


@dataclass(frozen=True, slots=True)
class CrackResult:
    """What svcrack achieved against one user."""

    user: str
    cracked: bool
    password: str | None
    """The password svcrack reported (None when not cracked)."""
    attempts: int | None
    """Passwords tried: the dictionary position of the found one (svcrack tries the
    dictionary in order and stops at the first 200 OK), the whole list once svcrack said
    "no more passwords", None when it was killed before either."""
    exhausted: bool
    """svcrack went through the whole dictionary."""
    timed_out: bool
    """True when the run hit ``max_time`` and was killed. svcrack lingers about 10 s after
    its last password whatever ``--maximumtime`` says, so a short ``max_time`` is the normal
    way to end a run that found nothing."""


@dataclass(frozen=True, slots=True)
class ToolRun:
    """The raw run of a tool (kept for evidence)."""

    argv: list[str]
    returncode: int | None
    """None when killed at ``max_time``."""
    stdout: str
    stderr: str


def available() -> bool:
    """True when all three sipvicious commands are on PATH."""
    return all(shutil.which(tool) for tool in TOOLS)


def require_loopback(host: str) -> str:
    """``host`` if it is an IPv4 address in 127.0.0.0/8.

    Raises:
        NotLoopback: anything else (names, other networks, IPv6).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise NotLoopback(f"{host!r}: sipvicious may only target 127.0.0.0/8 addresses") from None
    if address.version != 4 or address not in LOOPBACK:
        from lab.netns import in_lab_namespace

        # Inside a netns lab's namespace its private subnet exists nowhere else (lab/netns.py).
        if not (address.version == 4 and address.is_private and in_lab_namespace()):
            raise NotLoopback(f"{host}: sipvicious may only target 127.0.0.0/8 addresses")
    return host


def parse_table(text: str) -> list[list[str]]:
    """Rows of the first ``pptable`` grid in ``text``, header row excluded."""
    rows: list[list[str]] = []
    seen_header = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("+="):
            seen_header = True
        elif line.startswith("|") and seen_header:
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


async def _run(
    tool: str, args: Sequence[str], max_time: float, files: dict[str, str] | None = None
) -> ToolRun:
    if shutil.which(tool) is None:
        raise ToolMissing(f"{tool} not found on PATH (pip install sipvicious)")
    with tempfile.TemporaryDirectory(prefix="siplab-sipvicious-") as home:
        argv = [tool, *(a.replace("{home}", home) for a in args)]
        for name, content in (files or {}).items():
            await trio.Path(home, name).write_text(content, encoding="utf-8")
        env = {**os.environ, "HOME": home}
        out, err = bytearray(), bytearray()
        proc = await trio.lowlevel.open_process(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=home
        )
        # Read the pipes ourselves rather than trio.run_process(capture_...): when the bound
        # kills the tool, what it printed so far is still the evidence we want.
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None
            assert proc.stderr is not None
            nursery.start_soon(_collect, proc.stdout, out)
            nursery.start_soon(_collect, proc.stderr, err)
            with trio.move_on_after(max_time) as bound:
                await proc.wait()
            if bound.cancelled_caught:
                proc.kill()
                await proc.wait()
        return ToolRun(
            argv,
            None if bound.cancelled_caught else proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )


async def _collect(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while chunk := await stream.receive_some(65536):
        into += chunk


def _common(target: Address, bind_ip: str, select_timeout: float | None) -> list[str]:
    require_loopback(target[0])
    args = ["-b", require_loopback(bind_ip), "-p", str(target[1])]
    if select_timeout is not None:
        args += ["-t", str(select_timeout)]
    return args


async def svmap(
    target: Address,
    *,
    bind_ip: str = "127.0.0.1",
    method: str = "OPTIONS",
    max_time: float = 30.0,
    select_timeout: float | None = None,
) -> list[Device]:
    """Scan ``target`` (ip, port) with svmap; the devices that answered.

    Raises:
        NotLoopback: target or bind_ip outside 127.0.0.0/8.
        ToolMissing: sipvicious is not installed.
    """
    run = await svmap_run(
        target, bind_ip=bind_ip, method=method, max_time=max_time, select_timeout=select_timeout
    )
    devices = []
    for row in parse_table(run.stdout):
        if len(row) >= 2 and ":" in row[0]:
            host, _, port = row[0].rpartition(":")
            devices.append(Device((host, int(port)), row[1]))
    return devices


async def svmap_run(
    target: Address,
    *,
    bind_ip: str = "127.0.0.1",
    method: str = "OPTIONS",
    max_time: float = 30.0,
    select_timeout: float | None = None,
) -> ToolRun:
    """`svmap` with the raw run returned (argv, exit code, output)."""
    args = [*_common(target, bind_ip, select_timeout), "-m", method, target[0]]
    return await _run("sipvicious_svmap", args, max_time)


async def svwar(
    target: Address,
    extensions: str | range,
    *,
    bind_ip: str = "127.0.0.1",
    method: str = "REGISTER",
    domain: str | None = None,
    force: bool = False,
    idle: float = 2.0,
    max_time: float = 60.0,
    select_timeout: float | None = None,
) -> list[Extension]:
    """Enumerate ``extensions`` ("100-199,300" or a range) on ``target`` with svwar.

    ``force`` skips svwar's initial sanity check (a random extension that must not exist).
    ``idle`` is the tool's ``--maximumtime`` (seconds without an answer before it stops);
    ``max_time`` the wall-clock bound at which the process is killed.
    """
    if isinstance(extensions, range):
        extensions = f"{extensions.start}-{extensions.stop - 1}"
    args = [*_common(target, bind_ip, select_timeout), "-e", extensions, "-m", method]
    args += ["--maximumtime", str(max(1, round(idle)))]
    if domain:
        args += ["--domain", domain]
    if force:
        args.append("--force")
    run = await _run("sipvicious_svwar", [*args, target[0]], max_time)
    return [Extension(row[0], row[1]) for row in parse_table(run.stdout) if len(row) >= 2]


async def svcrack(
    target: Address,
    user: str,
    passwords: Sequence[str],
    *,
    bind_ip: str = "127.0.0.1",
    domain: str | None = None,
    idle: float = 2.0,
    max_time: float = 15.0,
    select_timeout: float | None = None,
) -> CrackResult:
    """Try ``passwords`` (in order) for ``user`` on ``target`` with svcrack.

    ``idle``: the tool's ``--maximumtime`` (it waits that long after the last password);
    ``max_time``: the wall-clock bound at which the process is killed.
    """
    args = [*_common(target, bind_ip, select_timeout), "-v", "-u", user]
    args += ["-d", "{home}/passwords.txt"]
    args += ["--maximumtime", str(max(1, round(idle)))]
    if domain:
        args += ["--domain", domain]
    dictionary = "".join(f"{p}\n" for p in passwords)
    run = await _run(
        "sipvicious_svcrack", [*args, target[0]], max_time, {"passwords.txt": dictionary}
    )
    found = next(
        (row[1] for row in parse_table(run.stdout) if len(row) >= 2 and row[0] == user), None
    )
    if found is None:
        # The table is printed only at exit; a killed run still logged its success.
        marker = f"The password for {user} is "
        for line in run.stderr.splitlines():
            if marker in line:
                found = line.split(marker, 1)[1].strip()
    exhausted = "no more passwords" in run.stderr
    attempts: int | None = None
    if found is not None and found in passwords:
        attempts = list(passwords).index(found) + 1
    elif exhausted:
        attempts = len(passwords)
    return CrackResult(user, found is not None, found, attempts, exhausted, run.returncode is None)
