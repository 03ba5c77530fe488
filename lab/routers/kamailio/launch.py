"""The Kamailio router's command line from the topology's ``[router]`` table.

``config`` picks the cfg (a user's kamailio.cfg, or siplab's example), ``version`` the Kamailio
that runs it: the host's (Debian 12: 5.6) or a 6.x in a container
(:mod:`lab.routers.kamailio.image`, host networking on the lab's loopback address, the run
folder and the cfg mounted at the same paths). Either way the lab's settings reach the cfg as
``-A NAME=VALUE`` defines (docs/kamailio-contract.md).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from lab.routers.kamailio.runner import kamailio_binary

if TYPE_CHECKING:
    from lab.routers.kamailio.router import KamailioRouterParams
    from lab.topology import RouterSpec

__all__ = ["host_version", "kamailio_router_argv"]


def host_version(binary: str | None = None) -> str | None:
    """``major.minor`` of the host's Kamailio (``kamailio -v``), None when not installed."""
    exe = binary or kamailio_binary()
    if exe is None:
        return None
    done = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"kamailio (\d+\.\d+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def kamailio_router_argv(
    params: KamailioRouterParams, workdir: Path, spec: RouterSpec
) -> list[str]:
    """Prepare the DB, check the cfg with the chosen Kamailio, return the command line.

    Raises:
        KamailioConfigError: the cfg does not start (file, line, Kamailio's own message).
        KamailioError: Kamailio (or its image) is missing, or the version is not available.
    """
    from lab.routers.kamailio.router import router_command

    config = Path(spec.config) if spec.config else None
    host = host_version()
    if not spec.version or spec.version == host:
        return router_command(params, workdir, config=config)
    from lab.routers.kamailio.image import container_launchers

    mounts = (config.resolve().parent,) if config is not None else ()
    launchers = container_launchers(spec.version, workdir, extra_mounts=mounts)
    return router_command(params, workdir, config=config, launcher=launchers)
