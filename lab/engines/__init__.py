"""Traffic engines: SIPp (load, digest registration, OPTIONS) and the SIP readiness probe."""

from lab.engines.probe import ProbeTimeout, options_status, require_loopback, wait_sip_ready
from lab.engines.results import SippResult, percentile
from lab.engines.sipp import (
    SippError,
    SippProcess,
    SippRun,
    run_sipp,
    run_sipp_async,
    sipp_binary,
    start_sipp,
    start_sipp_uas,
)
from lab.engines.sipp_scenarios import (
    ScenarioRole,
    SippScenario,
    SippUser,
    options_ping,
    register_then_call,
    uac_call,
    uac_register,
    uas_answer,
    users_csv,
)

__all__ = [
    "ProbeTimeout",
    "ScenarioRole",
    "SippError",
    "SippProcess",
    "SippResult",
    "SippRun",
    "SippScenario",
    "SippUser",
    "options_ping",
    "options_status",
    "percentile",
    "register_then_call",
    "require_loopback",
    "run_sipp",
    "run_sipp_async",
    "sipp_binary",
    "start_sipp",
    "start_sipp_uas",
    "uac_call",
    "uac_register",
    "uas_answer",
    "users_csv",
    "wait_sip_ready",
]
