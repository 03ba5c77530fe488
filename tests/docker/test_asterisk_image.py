"""With a Docker engine: the real Asterisk image and what ``lab up`` does with a bad node.

- The image is built (Debian sid's Asterisk 22 on a debootstrapped sid base, about 2 minutes
  the first time; cached by the hash of ``asterisk-images/asterisk``) and labelled with
  ``asterisk -V`` and the package version.
- A node whose Asterisk exits before answering OPTIONS fails ``lab up`` with the tail of its
  own log, and nothing of the lab is left running.

What real Asterisk does on the wire is in scenarios/test_asterisk_usecases.py (``-m
asterisk``). Skipped with the reason when no engine answers; CI starts one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.backends import LabError
from lab.docker.backend import DockerBackend, run_id
from lab.docker.compose import LABEL_LAB, ServiceSpec
from lab.docker.images import ASTERISK_IMAGE, asterisk_source_hash, ensure_asterisk_image
from lab.topology import PbxSpec, Topology, UsersSpec

pytestmark = pytest.mark.docker

NET = 31
"""This module's lab lives on 127.31.0.x."""


@pytest.fixture(scope="module")
def asterisk_image(docker_engine: Any) -> str:
    ensure_asterisk_image(docker_engine)
    return ASTERISK_IMAGE


def test_asterisk_image_labels_version_and_recipe_hash(
    docker_engine: Any, asterisk_image: str
) -> None:
    labels = docker_engine.images.get(asterisk_image).labels
    assert labels["siplab.asterisk-version"].startswith("Asterisk 2"), labels
    assert labels["siplab.asterisk-package"], labels
    assert labels["siplab.source-hash"] == asterisk_source_hash("siplab/debian:sid")
    again = ensure_asterisk_image(docker_engine)
    assert not again.built  # cached: same recipe, same base


def test_lab_up_fails_with_the_nodes_log_when_asterisk_exits(
    docker_engine: Any, asterisk_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = DockerBackend.node_spec

    def broken(self: DockerBackend, *args: Any, **kwargs: Any) -> ServiceSpec:
        spec = original(self, *args, **kwargs)
        if spec.image == ASTERISK_IMAGE:  # the entrypoint refuses this and exits 2
            spec.environment["SIPLAB_CONTACTS"] = "bogus"
        return spec

    monkeypatch.setattr(DockerBackend, "node_spec", broken)
    topology = Topology(
        pbx=[PbxSpec(name="pbx1", kind="asterisk")],
        users=UsersSpec(count=3),
        faults=[],
        net=NET,
    )
    run_dir = tmp_path / "lab"
    backend = DockerBackend(ready_timeout=20, client=docker_engine)
    with pytest.raises(LabError) as info:
        backend.up(topology, run_dir)
    message = str(info.value)
    assert "pbx1" in message and "exited before answering OPTIONS" in message, message
    assert "SIPLAB_CONTACTS must be astdb or realtime" in message, message  # its own log
    left = docker_engine.containers.list(
        all=True, filters={"label": f"{LABEL_LAB}={run_id(run_dir.resolve())}"}
    )
    assert left == [], [c.name for c in left]
    assert (run_dir / "logs" / "pbx1.log").is_file()
