"""The Debian base image, for machines with no image registry, and the Docker engine itself.

Every siplab image starts ``FROM siplab/debian:bookworm``. Where a registry answers, that tag is
``debian:bookworm`` pulled and re-tagged; where none does (the usual case in CI sandboxes), it is
built from Debian's own packages by ``asterisk-images/base/build-base.sh``: ``debootstrap
--variant=minbase`` from the mirror apt already uses, the root filesystem tarred into
``~/.cache/siplab/rootfs-debian-<suite>.tar`` (kept, so the next machine-local build is an import
of a few seconds instead of a minute of debootstrap), then ``docker import``.

:func:`ensure_dockerd` is for CI and tests: it finds a Docker engine, or (root only, and only
when asked) installs Debian's ``docker.io`` and starts ``dockerd`` in the background, waiting for
it to answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.docker.images import BASE_IMAGE, IMAGES_DIR, ImageBuildError, Log, image_exists

BUILD_SCRIPT = IMAGES_DIR / "base" / "build-base.sh"
DEFAULT_SUITE = "bookworm"
DOCKERD_LOG = Path("/tmp/siplab-dockerd.log")


class DockerUnavailable(RuntimeError):
    """No Docker engine answers (the message says why and how to get one)."""


@dataclass(frozen=True, slots=True)
class BaseImageResult:
    tag: str
    how: str
    """``present``, ``pulled`` or ``debootstrap`` (built from the mirror or the cached tarball)."""
    seconds: float


def cache_dir() -> Path:
    """``$SIPLAB_CACHE`` or ``~/.cache/siplab``: where the rootfs tarball is kept."""
    return Path(os.environ.get("SIPLAB_CACHE") or Path.home() / ".cache" / "siplab")


def rootfs_tarball(suite: str = DEFAULT_SUITE) -> Path:
    return cache_dir() / f"rootfs-debian-{suite}.tar"


def apt_mirror(
    default: str = "http://deb.debian.org/debian", *, files: list[Path] | None = None
) -> str:
    """The Debian mirror apt uses on this machine (one-line or deb822 sources in ``files``,
    default /etc/apt/sources.list and sources.list.d)."""
    if files is None:
        files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split()
            if not words or words[0] not in ("deb", "URIs:"):
                continue
            for word in words[1:]:
                if word.startswith(("http://", "https://")) and word.rstrip("/").endswith(
                    "/debian"
                ):
                    return word.rstrip("/")
    return default


def docker_client(timeout: int = 600) -> Any:
    """A Docker SDK client that has answered a ping.

    Raises:
        DockerUnavailable: the SDK is missing or no engine answers.
    """
    try:
        import docker
        import docker.errors
    except ImportError:
        raise DockerUnavailable(
            "the Docker SDK for Python is not installed (pip install 'siplab[docker]')"
        ) from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise DockerUnavailable(
            f"no Docker engine answers ({exc}); start one (dockerd) or run "
            "`python -m lab.docker.base_image --start-dockerd`"
        ) from None
    return client


def ensure_dockerd(*, install: bool = False, timeout: float = 60.0) -> Any:
    """A client of a running engine; start ``dockerd`` (and install ``docker.io``) if needed.

    Args:
        install: when no engine answers, ``apt-get install -y docker.io`` if ``dockerd`` is
            missing, then start ``dockerd`` in the background (log in /tmp/siplab-dockerd.log).
            Root only. False: only look for a running engine.
        timeout: seconds to wait for a started engine to answer.

    Raises:
        DockerUnavailable: no engine, and it could not (or must not) be started.
    """
    try:
        return docker_client()
    except DockerUnavailable:
        if not install:
            raise
    if os.geteuid() != 0:
        raise DockerUnavailable("no Docker engine answers and starting one needs root")
    if shutil.which("dockerd") is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "docker.io"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or shutil.which("dockerd") is None:
            raise DockerUnavailable(f"apt-get install docker.io failed:\n{done.stderr[-2000:]}")
    with DOCKERD_LOG.open("ab") as out:
        # The engine must outlive this process (it is a machine service, like `service docker
        # start`): own session, no death signal.
        subprocess.Popen(
            ["dockerd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            return docker_client()
        except DockerUnavailable:
            if time.monotonic() > deadline:
                tail = DOCKERD_LOG.read_text(errors="replace").splitlines()[-10:]
                raise DockerUnavailable(
                    f"dockerd did not answer within {timeout:g} s; {DOCKERD_LOG}:\n"
                    + "\n".join(tail)
                ) from None
            time.sleep(0.5)


def _pull_as(client: Any, source: str, tag: str) -> bool:
    import docker.errors

    name, _, version = source.partition(":")
    try:
        image = client.images.pull(name, tag=version or "latest")
    except docker.errors.APIError:
        return False
    repo, _, version = tag.partition(":")
    image.tag(repo, tag=version or "latest")
    return True


def ensure_base_image(
    client: Any,
    *,
    tag: str = BASE_IMAGE,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    try_pull: bool = True,
    log: Log = print,
) -> BaseImageResult:
    """``tag`` exists afterwards: already there, pulled as ``debian:<suite>``, or debootstrapped.

    Raises:
        ImageBuildError: no registry and debootstrap failed (missing package, not root, no
            mirror); the message ends with the builder's output.
    """
    started = time.monotonic()
    if image_exists(client, tag):
        return BaseImageResult(tag, "present", 0.0)
    if try_pull and _pull_as(client, f"debian:{suite}", tag):
        return BaseImageResult(tag, "pulled", time.monotonic() - started)
    if shutil.which("debootstrap") is None and not rootfs_tarball(suite).is_file():
        raise ImageBuildError(
            f"{tag}: no registry answers and debootstrap is missing "
            "(apt-get install -y debootstrap)"
        )
    mirror = mirror or apt_mirror()
    log(f"{tag}: no registry; building from {mirror} with debootstrap (cache {cache_dir()})")
    env = dict(os.environ, SIPLAB_CACHE=str(cache_dir()))
    done = subprocess.run(
        ["sh", str(BUILD_SCRIPT), suite, tag, mirror],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not image_exists(client, tag):
        output = (done.stdout + done.stderr).splitlines()[-25:]
        raise ImageBuildError(f"{tag}: base image build failed:\n" + "\n".join(output))
    return BaseImageResult(tag, "debootstrap", time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.docker.base_image [--start-dockerd] [--suite S] [--tag T]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.docker.base_image")
    parser.add_argument("--start-dockerd", action="store_true", help="install/start the engine")
    parser.add_argument("--suite", default=DEFAULT_SUITE)
    parser.add_argument("--tag", default="")
    parser.add_argument("--no-pull", action="store_true")
    args = parser.parse_args(argv)
    try:
        client = ensure_dockerd(install=args.start_dockerd)
        result = ensure_base_image(
            client,
            tag=args.tag or f"siplab/debian:{args.suite}",
            suite=args.suite,
            try_pull=not args.no_pull,
        )
    except (DockerUnavailable, ImageBuildError) as exc:
        print(f"error: {exc}")
        return 1
    print(f"{result.tag}: {result.how} ({result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = [
    "BaseImageResult",
    "DockerUnavailable",
    "apt_mirror",
    "cache_dir",
    "docker_client",
    "ensure_base_image",
    "ensure_dockerd",
    "rootfs_tarball",
]
