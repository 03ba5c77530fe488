"""Tools the tests need: locally a skip that says why, in CI a failure.

On a developer's machine a test whose tool is missing (Docker engine, PostgreSQL, Chromium,
sipvicious, SIPp, Kamailio, the Asterisk image, a test extra) is skipped with the reason and
how to get the tool. In CI (``CI=true``, or ``SIPLAB_REQUIRE_DOCKER=1`` as ``.ci/run`` sets)
the same test fails: CI installs every tool (``scripts/setup.sh``), so a missing one is a broken
set-up, never a quiet pass of fewer tests.

Use it as a mark (module ``pytestmark`` or a decorator), evaluated before the test runs::

    needs_sipp = needs(sipp_binary() is not None, "SIPp not installed (Debian sip-tester)")

or inside a fixture or a test, where the check needs work first::

    missing_tool(f"no Docker engine: {exc}")

The mark's hook is registered by the root ``conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["missing_tool", "needs", "needs_module", "strict"]

_MARK = "needs_tool"


def strict() -> bool:
    """True in CI: ``CI=true`` (GitHub, GitLab and most CI set it) or ``SIPLAB_REQUIRE_DOCKER=1``."""
    return (
        os.environ.get("CI", "").lower() in ("true", "1")
        or os.environ.get("SIPLAB_REQUIRE_DOCKER") == "1"
    )


def missing_tool(reason: str) -> NoReturn:
    """Skip the current test (locally) or fail it (in CI) because a tool is missing."""
    if strict():
        pytest.fail(f"required tool missing in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (in CI, where CI=true or SIPLAB_REQUIRE_DOCKER=1, this fails)")


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """A mark: the test runs when ``available``; otherwise :func:`missing_tool` ``(reason)``
    at its set-up."""
    return getattr(pytest.mark, _MARK)(available=bool(available), reason=reason)


def needs_module(name: str, reason: str) -> ModuleType:
    """``import name``; when it is missing, :func:`missing_tool` for the whole module (the
    strict ``pytest.importorskip``). Call it at module level of a test file."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if strict():  # a collection error: the run fails and names the module
            raise ImportError(f"required module missing in CI: {reason}: {exc}") from exc
        raise pytest.skip.Exception(
            f"{reason}: {exc} (in CI, where CI=true or SIPLAB_REQUIRE_DOCKER=1, this fails)",
            allow_module_level=True,
        ) from exc


# -- pytest hooks (registered by the root conftest.py) ---------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARK}(available, reason): made by lab.requires.needs; when the tool is missing the "
        "test is skipped locally and fails in CI (CI=true or SIPLAB_REQUIRE_DOCKER=1)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(_MARK):
        if not mark.kwargs.get("available", False):
            missing_tool(str(mark.kwargs.get("reason", "a required tool is missing")))
