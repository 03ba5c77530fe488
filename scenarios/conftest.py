"""Shared infrastructure of the scenario suites (``pytest scenarios/``).

Fixtures (names are stable; suites in this folder rely on them)
----------------------------------------------------------------
From the lab plugin (``lab/pytest_plugin.py``, registered by the root ``conftest.py``):

``lab``
    The running lab, reset before each test (fault rules cleared, paused nodes resumed, dead
    nodes restarted). By default the session's lab: router ``127.0.0.10``, pbx1..3
    ``127.0.0.11-13``, SQLite, users 100..599, queue1 (101, 102), fault relays on
    ``ua-router`` and ``router-pbx1``, timers times ``--time-scale`` (0.1). Useful members:
    ``lab.open_ua(user, ...)`` (async context manager: a trio phone wired to the lab),
    ``lab.run_sipp(scenario, name=..., max_calls=..., rate=...)`` / ``run_sipp_async``,
    ``lab.password(user)``, ``lab.users()``, ``lab.domain``, ``lab.entry(relayed=...)``,
    ``lab.db()`` (realtime DB), ``lab.router_status()``, ``lab.dispatcher_flags()``,
    ``lab.wait_dispatcher(pbx, active)``, ``lab.kill/pause/resume/restart(node)``,
    ``lab.reconfigure(node, {...})``, ``lab.scaled(seconds)``, ``lab.packets(since)`` (the
    SIP messages on the wire since then, every leg, from the lab's capture after its flush
    barrier: ``SipRecord`` with ``t, src, dst, method, status, call_id, cseq, branch, data``),
    ``lab.events(since)`` (the nodes' own logs), ``lab.artifacts(nodeid)`` (the test's folder
    in the run folder).
``faults``
    Fault rules on relayed links of ``lab``: ``faults.add("router-pbx1", "drop",
    method="ACK", count=1)``, ``faults.decisions(link, action, since)``; cleared after the test.
``lab_topology`` (module scope)
    Override it in a module to run that module on its own lab; ``lab`` and ``faults`` then
    point at it. Return a ``LabSpec`` (``from lab.pytest_plugin import LabSpec``)::

        @pytest.fixture(scope="module")
        def lab_topology() -> LabSpec:
            return LabSpec(
                {"dispatcher": {"algorithm": 0}, "faults": ["router-pbx1", "router-pbx2"]},
                pbx={"queue_mode": "per_node"},              # every emulator node's TOML
                router={"registrar": {"nonce_lifetime": 1}},  # router.toml tables
            )

    A plain ``Topology`` or TOML-layout dict works too. Each module lab has its own
    ``127.<net>.0.x`` addresses and run folder ``runs/pytest-<time>-<module>/``.
``make_lab`` (module scope)
    ``make_lab(LabSpec(...)) -> Lab`` for a module needing several labs (taken down at the
    end of the module; not reset between tests).

Defined here:

``measurements``
    A dict-like recorder: ``measurements["detect_s"] = 0.31``. At the end of the test it is
    written to ``<run>/tests/<test id>/measurements.json`` (also when the test fails), attached
    to the JUnit XML as properties, and printed in the terminal summary ("siplab
    measurements").
``scaled``
    ``scaled(seconds)``: a real-system duration as the lab runs it (times the time scale).

Options and markers
-------------------
``--run-slow``: run the tests marked ``slow`` (real-time variants, T1 = 500 ms); without it
they are skipped. The plugin's ``--lab-backend``, ``--router``, ``--time-scale``,
``--lab-faults`` and ``--lab-net`` apply to every lab.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.pytest_plugin import Lab


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("siplab").addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run scenarios marked slow (real-time timers, minutes long)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    ours = [item for item in items if here in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.lab)
    if "asterisk" not in (config.getoption("markexpr") or ""):
        # Real Asterisk containers: only when asked for (scripts/test.sh runs `-m asterisk`).
        real = pytest.mark.skip(reason="real Asterisk scenario: run with `-m asterisk`")
        for item in ours:
            if "asterisk" in item.keywords:
                item.add_marker(real)
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(
        reason="slow (real-time) scenario: run with `pytest scenarios/ --run-slow` "
        "(or `-m slow --run-slow` for only these)"
    )
    for item in ours:
        if "slow" in item.keywords:
            item.add_marker(skip)


class Measurements(dict[str, Any]):
    """What a scenario measured; written to JSON in the run folder after the test."""

    def __init__(self, nodeid: str) -> None:
        super().__init__()
        self.nodeid = nodeid
        self.path: Path | None = None

    def write(self, folder: Path) -> Path:
        self.path = folder / "measurements.json"
        self.path.write_text(
            json.dumps({"test": self.nodeid, **self}, indent=2, default=str) + "\n",
            encoding="utf-8",
        )
        return self.path


_MEASURED = pytest.StashKey[list[Measurements]]()


@pytest.fixture
def measurements(
    lab: Lab, request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Iterator[Measurements]:
    m = Measurements(request.node.nodeid)
    yield m
    if m:
        m.write(lab.artifacts(request.node.nodeid))
        for key, value in m.items():
            record_property(key, value)
        request.config.stash.setdefault(_MEASURED, []).append(m)


@pytest.fixture
def scaled(lab: Lab) -> Callable[[float], float]:
    return lab.scaled


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    measured = config.stash.get(_MEASURED, [])
    if not measured:
        return
    terminalreporter.section("siplab measurements")
    for m in measured:
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in m.items())
        terminalreporter.write_line(f"{m.nodeid}: {values}")
        if m.path is not None:
            terminalreporter.write_line(f"    -> {m.path}")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"), default=str)
        return text if len(text) <= 160 else text[:157] + "..."
    return str(value)
