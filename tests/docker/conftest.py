"""Fixtures for the docker tests: an engine client, or a skip that says why there is none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lab.requires import missing_tool


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A pinged Docker SDK client; when no engine answers, skips the test (fails it in CI).

    CI starts the engine first (``python -m lab.docker.base_image --start-dockerd``); tests never
    install or start one themselves.
    """
    from lab.docker.base_image import DockerUnavailable, ensure_dockerd

    try:
        client = ensure_dockerd(install=False)
    except DockerUnavailable as exc:
        missing_tool(f"no Docker engine: {exc}")
    yield client
    client.close()
