"""The machine and the software a capacity figure was measured on.

A capacity number without its hardware and versions is not reproducible, so the capacity driver
records both at run time (``capacity.json``) and the report prints them. Versions of external
programs come from their own ``-v`` output; a program that is absent is reported as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["config_hash", "hardware", "program_version", "versions"]


def _cpu_model(cpuinfo: Path) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def hardware(*, proc_root: Path = Path("/proc")) -> dict[str, Any]:
    """CPU model, logical cores (and those this process may use), memory, kernel."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(proc_root / "cpuinfo"),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "memory_bytes": _memory_bytes(proc_root / "meminfo"),
        "kernel": platform.release(),
        "machine": platform.machine(),
    }


def program_version(argv: list[str], pattern: str, *, timeout: float = 5.0) -> str | None:
    """First match of ``pattern`` (group 1, else the whole match) in the program's output.

    Returns None when the program is not installed; ``"unknown"`` when it ran but printed
    nothing matching.
    """
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).decode("utf-8", "replace")
    match = re.search(pattern, text)
    if match is None:
        return "unknown"
    return match.group(1) if match.groups() else match.group(0)


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of every component: Python, libraries, SIPp, Kamailio (None: not installed)."""
    return {
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "siplab": _package("siplab"),
        "trio": _package("trio"),
        "pandas": _package("pandas"),
        "matplotlib": _package("matplotlib"),
        # `sipp -v` prints e.g. "SIPp v3.6.1-TLS-SCTP-PCAP-RTPSTREAM." (and exits non-zero)
        "sipp": program_version(["sipp", "-v"], r"SIPp (v[0-9][\w.-]*?)\.?(?:\s|$)"),
        # `kamailio -v`: "version: kamailio 5.6.3 (x86_64/linux)"
        "kamailio": program_version(["kamailio", "-v"], r"version: kamailio ([0-9][^\s]*)"),
    }


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of a run's configuration."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
