"""Kamailio 6.x in a container: the image (Debian's packages of a newer suite) and a wrapper
that runs it like the host's ``kamailio`` binary.

``6.0`` is Debian trixie's package, ``6.1`` sid's. The image ``siplab/kamailio:<version>`` is
built from ``asterisk-images/kamailio/Dockerfile`` on the debootstrapped base image of that suite
(``lab.docker.base_image.ensure_base_image``: no registry is needed) and rebuilt only when the
recipe changes (label ``siplab.recipe``). ``python -m lab.routers.kamailio.image 6.0`` builds it
ahead (CI does, before the scenarios).

:func:`container_binary` writes ``<workdir>/kamailio-<version>``, a shell script that runs
``docker run --rm --network host`` with the run folder and the cfg's folder mounted at the same
paths, so the lab's command line (``-f``, ``-Y``, ``-w``, ``-A`` ...) works unchanged and the
lab's PID is the ``docker run`` client (SIGTERM is proxied to Kamailio; the container is removed
when it stops). Before it starts, the script removes a container of the same name left over by
a client that was SIGKILLed. Pausing (SIGSTOP) the client does not pause the container: the
scenarios that hang the router run against the host's Kamailio only.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path

from lab.routers.kamailio.runner import KamailioError

__all__ = [
    "SUITES",
    "container_binary",
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


def ensure_kamailio_image(version: str, *, log: object = None) -> str:
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
    say = log if callable(log) else (lambda _line: None)
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


def container_binary(version: str, workdir: Path, *, extra_mounts: tuple[Path, ...] = ()) -> str:
    """Write ``<workdir>/kamailio-<version>`` (module docstring) and return its path.

    ``workdir``'s parent (the run folder: SQLite DB, logs) and ``extra_mounts`` (the cfg's
    folder) are mounted at the same paths.

    Raises:
        KamailioError: as :func:`ensure_kamailio_image`.
    """
    tag = ensure_kamailio_image(version)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    mounts = sorted({workdir.parent, *(m.resolve() for m in extra_mounts)})
    name = "kam-" + hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    volumes = " ".join(f"-v {shlex.quote(f'{m}:{m}')}" for m in mounts)
    script = workdir / f"kamailio-{version}"
    script.write_text(
        "#!/bin/sh\n"
        f"# Kamailio {version} ({tag}) as if installed here: lab/routers/kamailio/image.py\n"
        '# "kamailio -c" checks get their own container name, the router keeps one name.\n'
        f"name={name}\n"
        'case " $* " in *" -c "*) name="$name-check-$$";; esac\n'
        'docker rm -f "$name" >/dev/null 2>&1\n'
        f'exec docker run --rm --init --network host --name "$name" {volumes} '
        f'{tag} "$@"\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    return str(script)


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
