"""Kamailio as a router under test: siplab's cfg or the user's, the host's 5.6 or a 6.x container.

``config``/``runner``: the -A define contract (docs/kamailio-contract.md), the generic cfg
(dispatcher peer) and process handling. ``router``: the reference router's settings mapped onto
the dispatcher + registrar roles (``--router kamailio``). ``launch``: the command line from the
topology's ``[router]`` (cfg, version); ``image``: Kamailio 6.x images and ``docker run``;
``capabilities``: what a cfg provides, so unsupported scenarios are skipped with a reason;
``differences``: where Kamailio differs from the reference by design, and why.
"""

from lab.routers.kamailio.config import (
    DispatcherDestination,
    KamailioParams,
    KamailioRole,
    db_module,
    dispatcher_list,
    kamailio_db_url,
    render_config,
)
from lab.routers.kamailio.differences import DIFFERENCES, difference
from lab.routers.kamailio.router import (
    KAMAILIO_TABLE_VERSIONS,
    POSTGRES_CHILDREN,
    KamailioRouterParams,
    prepare_database,
    render_router_config,
    router_command,
    router_params,
    router_params_from_dict,
    start_kamailio_router,
    workers_for,
    write_router_config,
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
    "DIFFERENCES",
    "KAMAILIO_TABLE_VERSIONS",
    "POSTGRES_CHILDREN",
    "DispatcherDestination",
    "KamailioConfigError",
    "KamailioError",
    "KamailioParams",
    "KamailioProcess",
    "KamailioRole",
    "KamailioRouterParams",
    "check_config",
    "db_module",
    "difference",
    "dispatcher_list",
    "kamailio_binary",
    "kamailio_db_url",
    "prepare_database",
    "render_config",
    "render_router_config",
    "router_command",
    "router_params",
    "router_params_from_dict",
    "start_kamailio",
    "start_kamailio_config",
    "start_kamailio_router",
    "workers_for",
    "write_config",
    "write_router_config",
]
