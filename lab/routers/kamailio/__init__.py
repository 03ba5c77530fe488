"""Kamailio (Debian 5.6) as a router under test: cfg rendered from parameters, run by PID."""

from lab.routers.kamailio.config import (
    DispatcherDestination,
    KamailioParams,
    KamailioRole,
    dispatcher_list,
    render_config,
)
from lab.routers.kamailio.runner import (
    KamailioConfigError,
    KamailioError,
    KamailioProcess,
    check_config,
    kamailio_binary,
    start_kamailio,
    start_kamailio_config,
    write_config,
)

__all__ = [
    "DispatcherDestination",
    "KamailioConfigError",
    "KamailioError",
    "KamailioParams",
    "KamailioProcess",
    "KamailioRole",
    "check_config",
    "dispatcher_list",
    "kamailio_binary",
    "render_config",
    "start_kamailio",
    "start_kamailio_config",
    "write_config",
]
