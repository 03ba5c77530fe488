"""Kamailio 6.x in a container: the image (Debian's packages of a newer suite) and a wrapper
that runs it like the host's ``kamailio`` binary.

``6.0`` is Debian trixie's package, ``6.1`` sid's. The image ``siplab/kamailio:<version>`` is
built from ``asterisk-images/kamailio/Dockerfile`` on the debootstrapped base image of that suite
(``lab.docker.base_image.ensure_base_image``: no registry is needed) and rebuilt only when the
recipe changes (label ``siplab.recipe``). ``python -m lab.routers.kamailio.image 6.0`` builds it
ahead (CI does, before the scenarios).

:func:`container_launchers` gives the ``docker run --rm --init --network host -v ... IMAGE``
command that stands for ``kamailio`` (the image's entrypoint): the run folder and the cfg's
folder are mounted at the same paths, so the lab's command line (``-f``, ``-Y``, ``-w``, ``-A``
...) works unchanged, and the lab's PID is the ``docker run`` client (SIGTERM is proxied to
Kamailio; the container is removed when it stops). A container left over by a client that was
SIGKILLed is removed before the next start. Pausing (SIGSTOP) or SIGKILLing the client does not
pause or kill the container: no scenario does that to the router (only restarts it).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

from lab.routers.kamailio.runner import KamailioError

__all__ = [
    "SUITES",
    "container_launchers",
    "ensure_kamailio_image",
    "image_tag",
    "main",
]

SUITES = {"6.0": "trixie", "6.1": "sid"}
"""Kamailio version -> the Debian suite that packages it."""

_RECIPE = Path(__file__).resolve().parents[3] / "asterisk-images" / "kamailio" / "Dockerfile"


def image_tag(version: str) -> str:
    return f"siplab/kamailio:{version}"


def _recipe_hash() -> str:
    return hashlib.sha256(_RECIPE.read_bytes()).hexdigest()[:16]


def ensure_kamailio_image(version: str, *, log: Callable[[str], None] | None = None) -> str:
    """Build ``siplab/kamailio:<version>`` unless it is there for this recipe; return the tag.

    Raises:
        KamailioError: unknown version, no Docker engine, or the build failed (with its log).
    """
    from lab.docker.base_image import (
        DockerUnavailable,
        apt_mirror,
        ensure_base_image,
        ensure_dockerd,
    )
    from lab.docker.images import ImageBuildError, build_from_recipe, image_label

    if version not in SUITES:
        raise KamailioError(
            f"Kamailio {version!r}: not available (versions: host, {', '.join(SUITES)})"
        )
    suite = SUITES[version]
    tag = image_tag(version)
    say: Callable[[str], None] = log or (lambda _line: None)
    try:
        client = ensure_dockerd()
        recipe = _recipe_hash()
        if image_label(client, tag, "siplab.recipe") == recipe:
            return tag
        base = f"siplab/debian:{suite}"
        ensure_base_image(client, tag=base, suite=suite, log=say)
        build_from_recipe(
            client,
            "kamailio",
            tag,
            buildargs={"BASE": base, "SUITE": suite, "MIRROR": apt_mirror(), "RECIPE": recipe},
            log=say,
        )
    except (DockerUnavailable, ImageBuildError) as exc:
        raise KamailioError(f"Kamailio {version} image {tag}: {exc}") from None
    return tag


def container_launchers(
    version: str, workdir: Path, *, extra_mounts: tuple[Path, ...] = ()
) -> tuple[list[str], list[str]]:
    """``(run, check)``: the ``docker run ... IMAGE`` commands that stand for ``kamailio``
    (module docstring); ``run`` names the container ``kam-<hash of workdir>`` (a container of
    that name left over from a SIGKILLed client is removed first), ``check`` is anonymous.

    Raises:
        KamailioError: as :func:`ensure_kamailio_image`.
    """
    tag = ensure_kamailio_image(version)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    mounts = sorted({workdir.parent, *(m.resolve() for m in extra_mounts)})
    name = "kam-" + hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=60)
    base = ["docker", "run", "--rm", "--init", "--network", "host"]
    volumes = [arg for m in mounts for arg in ("-v", f"{m}:{m}")]
    return [*base, "--name", name, *volumes, tag], [*base, *volumes, tag]


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.routers.kamailio.image VERSION...``: build the images ahead."""
    import sys

    versions = list(sys.argv[1:] if argv is None else argv) or list(SUITES)
    for version in versions:
        try:
            tag = ensure_kamailio_image(version, log=print)
        except KamailioError as exc:
            print(f"error: {exc}")
            return 1
        done = subprocess.run(
            ["docker", "run", "--rm", tag, "-v"], capture_output=True, text=True, check=False
        )
        print(f"{tag}: {done.stdout.splitlines()[0] if done.stdout else done.stderr.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
