"""Building siplab's images: staged build contexts, ``docker build --network host`` via the SDK.

Three images, all ``FROM`` the Debian base that :mod:`lab.docker.base_image` guarantees exists
(pulled, or built with debootstrap where no registry answers):

- ``siplab/emulator``: the siplab package (``pip install`` from the repository), running the
  Asterisk-node emulator by default and the reference router as ``router --config ...``;
- ``siplab/postgres``: Debian's PostgreSQL with a tiny entrypoint (the lab's realtime DB);
- ``siplab/asterisk``: real Asterisk from a distribution package, by default Debian sid's
  Asterisk 22 on a debootstrapped ``siplab/debian:sid`` (bookworm and trixie have none); the
  image's labels record ``asterisk -V`` and the package version.

A build context is staged into a temporary directory: the image's folder under
``asterisk-images/`` plus, for the emulator, ``pyproject.toml``, ``README.md``, ``router/``,
``lab/`` and ``reports/``, the host's CA bundle and its pip settings (the host reaches its
package index through them; the build must reach the same one). The emulator is rebuilt when
the hash of those sources differs from the image's ``siplab.source-hash`` label, so a test never
runs yesterday's code.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "asterisk-images"

BASE_IMAGE = "siplab/debian:bookworm"
EMULATOR_IMAGE = "siplab/emulator:latest"
POSTGRES_IMAGE = "siplab/postgres:15"
ASTERISK_IMAGE = "siplab/asterisk:latest"
ASTERISK_BASE = "siplab/debian:sid"
"""Default base of the Asterisk image: Debian sid (Asterisk 22), debootstrapped like the
bookworm base; ``ubuntu:24.04`` (Asterisk 20) is the alternative where a registry serves it."""

SOURCE_DIRS = ("router", "lab", "reports")
SOURCE_FILES = ("pyproject.toml", "README.md")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache", "*.egg-info")

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the image and ends with the build log."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    tag: str
    seconds: float
    """Wall time of the build (0 when the image was already there and current)."""
    built: bool


def _quiet(_: str) -> None:
    pass


# -- build contexts --------------------------------------------------------------------------


def _source_paths(repo: Path) -> list[Path]:
    paths = [repo / f for f in SOURCE_FILES]
    for d in SOURCE_DIRS:
        paths += sorted(
            p
            for p in (repo / d).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        )
    return paths


def source_hash(repo: Path = REPO_ROOT, image_dir: Path | None = None) -> str:
    """SHA-256 (16 hex digits) over the emulator's sources and its image folder."""
    h = hashlib.sha256()
    files = _source_paths(repo)
    if image_dir is not None:
        files += sorted(p for p in image_dir.rglob("*") if p.is_file())
    for path in files:
        h.update(str(path.relative_to(repo)).encode() + b"\0")
        h.update(path.read_bytes() if path.exists() else b"<missing>")
    return h.hexdigest()[:16]


def host_pip_conf(
    candidates: list[Path] | None = None, environ: dict[str, str] | None = None
) -> str:
    """A pip.conf for the build: the host's HTTP(S) index settings and the staged CA bundle.

    Args:
        candidates: pip config files, later ones win (default: the system, XDG, user files and
            ``$PIP_CONFIG_FILE``, in pip's order).
        environ: environment (default ``os.environ``); ``PIP_INDEX_URL`` and friends win.

    ``file://`` indexes and find-links (local wheel directories) are left out: they do not exist
    inside the build.
    """
    environ = dict(os.environ) if environ is None else environ
    merged = configparser.ConfigParser(interpolation=None)
    if candidates is None:
        candidates = [Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf")]
        candidates += [Path.home() / ".config/pip/pip.conf", Path.home() / ".pip/pip.conf"]
        if environ.get("PIP_CONFIG_FILE"):
            candidates.append(Path(environ["PIP_CONFIG_FILE"]))
    merged.read([str(c) for c in candidates if c.is_file()])
    settings: dict[str, str] = {}
    for section in ("global", "install"):
        if merged.has_section(section):
            settings.update(merged.items(section))
    for key in ("index-url", "extra-index-url", "trusted-host"):
        env = environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            settings[key] = env
    out = ["[global]", "cert = /etc/siplab/build/ca-certificates.crt", "timeout = 180"]
    for key in ("index-url", "extra-index-url", "trusted-host"):
        urls = [u for u in settings.get(key, "").split() if not u.startswith("file:")]
        if urls:
            out.append(f"{key} = {' '.join(urls)}")
    return "\n".join(out) + "\n"


def stage_context(image: str, dest: Path, *, repo: Path = REPO_ROOT) -> Path:
    """Copy ``asterisk-images/<image>/`` (and, for the emulator, the sources) into ``dest``.

    Returns:
        ``dest``, ready to be sent as a build context.
    """
    src = repo / "asterisk-images" / image
    if not (src / "Dockerfile").is_file():
        raise ImageBuildError(f"{src}/Dockerfile: no such image recipe")
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=_IGNORE)
    if image == "emulator":
        for name in SOURCE_FILES:
            shutil.copy2(repo / name, dest / name)
        for name in SOURCE_DIRS:
            shutil.copytree(repo / name, dest / name, ignore=_IGNORE, dirs_exist_ok=True)
        bundle = Path(os.environ.get("PIP_CERT") or CA_BUNDLE)
        if not bundle.is_file():
            bundle = CA_BUNDLE
        shutil.copy2(bundle, dest / "ca-certificates.crt")
        (dest / "pip.conf").write_text(host_pip_conf(), encoding="utf-8")
    return dest


# -- building ---------------------------------------------------------------------------------


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_label(client: Any, tag: str, label: str) -> str | None:
    import docker.errors

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    value = labels.get(label)
    return str(value) if value is not None else None


def build_image(
    client: Any,
    context: Path,
    tag: str,
    *,
    buildargs: dict[str, str] | None = None,
    log: Log = _quiet,
    timeout: int = 1800,
) -> float:
    """``docker build --network host --rm -t tag context``, streaming the log to ``log``.

    Returns:
        Seconds the build took.

    Raises:
        ImageBuildError: the build failed (the message ends with the last log lines).
    """
    import docker.errors

    started = time.monotonic()
    tail: list[str] = []
    api = client.api
    try:
        for chunk in api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs or {},
            network_mode="host",
            rm=True,
            forcerm=True,
            decode=True,
            timeout=timeout,
        ):
            text = chunk.get("stream") or chunk.get("status") or ""
            if text.strip():
                for line in text.rstrip().splitlines():
                    log(line)
                    tail.append(line)
                del tail[:-30]
            if "error" in chunk:
                detail = chunk.get("error", "").strip()
                raise ImageBuildError(f"{tag}: build failed: {detail}\n" + "\n".join(tail))
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"{tag}: build failed: {exc}\n" + "\n".join(tail)) from exc
    if not image_exists(client, tag):
        raise ImageBuildError(f"{tag}: build ended without an image\n" + "\n".join(tail))
    return time.monotonic() - started


def build_from_recipe(
    client: Any,
    image: str,
    tag: str,
    *,
    buildargs: dict[str, str] | None = None,
    log: Log = _quiet,
    repo: Path = REPO_ROOT,
) -> float:
    """Stage ``asterisk-images/<image>`` in a temporary directory and build it as ``tag``."""
    with tempfile.TemporaryDirectory(prefix=f"siplab-{image}-") as tmp:
        context = stage_context(image, Path(tmp) / "context", repo=repo)
        return build_image(client, context, tag, buildargs=buildargs, log=log)


def ensure_emulator_image(
    client: Any, *, tag: str = EMULATOR_IMAGE, force: bool = False, log: Log = _quiet
) -> BuildResult:
    """The emulator image, built (with its base) unless present and built from these sources."""
    from lab.docker.base_image import ensure_base_image

    digest = source_hash(REPO_ROOT, IMAGES_DIR / "emulator")
    if not force and image_label(client, tag, "siplab.source-hash") == digest:
        return BuildResult(tag, 0.0, built=False)
    ensure_base_image(client, log=log)
    seconds = build_from_recipe(
        client,
        "emulator",
        tag,
        buildargs={"BASE": BASE_IMAGE, "SOURCE_HASH": digest},
        log=log,
    )
    return BuildResult(tag, seconds, built=True)


def ensure_postgres_image(
    client: Any, *, tag: str = POSTGRES_IMAGE, force: bool = False, log: Log = _quiet
) -> BuildResult:
    """Debian's PostgreSQL on the local base image."""
    from lab.docker.base_image import ensure_base_image

    if not force and image_exists(client, tag):
        return BuildResult(tag, 0.0, built=False)
    ensure_base_image(client, log=log)
    seconds = build_from_recipe(client, "postgres", tag, buildargs={"BASE": BASE_IMAGE}, log=log)
    return BuildResult(tag, seconds, built=True)


ASTERISK_LABELS = ("siplab.asterisk-version", "siplab.asterisk-package")
"""Image labels recording ``asterisk -V`` and the Debian/Ubuntu package version."""


def asterisk_source_hash(base: str, repo: Path = REPO_ROOT) -> str:
    """SHA-256 (16 hex digits) over ``asterisk-images/asterisk`` and the base tag."""
    h = hashlib.sha256(base.encode() + b"\0")
    folder = repo / "asterisk-images" / "asterisk"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _ensure_asterisk_base(client: Any, base: str, log: Log) -> None:
    """``siplab/debian:<suite>`` is debootstrapped; anything else must be present or pullable."""
    import docker.errors

    if image_exists(client, base):
        return
    if base.startswith("siplab/debian:"):
        from lab.docker.base_image import ensure_base_image

        suite = base.partition(":")[2]
        ensure_base_image(client, tag=base, suite=suite, try_pull=True, log=log)
        return
    name, _, version = base.partition(":")
    try:
        client.images.pull(name, tag=version or "latest")
    except docker.errors.APIError as exc:
        raise ImageBuildError(
            f"{ASTERISK_IMAGE}: base image {base} is not here and cannot be pulled ({exc}); "
            f"the default base {ASTERISK_BASE} is built from Debian sid's packages with "
            "debootstrap and needs no registry"
        ) from None


def _label_asterisk_version(client: Any, tag: str, log: Log) -> dict[str, str]:
    """Read /usr/share/siplab-asterisk/VERSION from the built image and add it as labels.

    A Dockerfile cannot label with a value computed during its own build, so a one-line
    ``FROM tag`` + ``LABEL`` build follows (cached layers, about a second).
    """
    import io
    import json

    out = client.containers.run(
        tag, entrypoint=["cat", "/usr/share/siplab-asterisk/VERSION"], remove=True
    )
    facts = dict(
        line.split("=", 1) for line in out.decode(errors="replace").splitlines() if "=" in line
    )
    labels = {
        "siplab.asterisk-version": facts.get("version", "").strip(),
        "siplab.asterisk-package": facts.get("package", "").strip(),
    }
    dockerfile = f"FROM {tag}\nLABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    tail: list[str] = []
    for chunk in client.api.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, decode=True
    ):
        text = chunk.get("stream") or ""
        tail.extend(text.rstrip().splitlines())
        if "error" in chunk:
            raise ImageBuildError(f"{tag}: labelling failed: {chunk['error']}\n" + "\n".join(tail))
    log(f"{tag}: {labels['siplab.asterisk-version']} (package {labels['siplab.asterisk-package']})")
    return labels


def ensure_asterisk_image(
    client: Any,
    *,
    tag: str = ASTERISK_IMAGE,
    base: str = ASTERISK_BASE,
    force: bool = False,
    log: Log = _quiet,
) -> BuildResult:
    """Real Asterisk from ``base``'s packages, rebuilt when the recipe or base tag changed.

    ``base`` ``siplab/debian:sid`` (the default) is debootstrapped from the Debian mirror apt
    uses here; any other base (``ubuntu:24.04``) must be present or pullable.

    Raises:
        ImageBuildError: no such base, apt or the module check failed (the message names the
            step and ends with apt's or the build's own lines).
    """
    digest = asterisk_source_hash(base)
    if not force and image_label(client, tag, "siplab.source-hash") == digest:
        return BuildResult(tag, 0.0, built=False)
    started = time.monotonic()
    _ensure_asterisk_base(client, base, log)
    build_from_recipe(
        client, "asterisk", tag, buildargs={"BASE": base, "SOURCE_HASH": digest}, log=log
    )
    _label_asterisk_version(client, tag, log)
    return BuildResult(tag, time.monotonic() - started, built=True)


def asterisk_version(client: Any, tag: str = ASTERISK_IMAGE) -> str:
    """``asterisk -V`` of the image as recorded in its label ('' if unknown)."""
    return image_label(client, tag, "siplab.asterisk-version") or ""


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m lab.docker.images [emulator|postgres|asterisk|all] [--force]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.docker.images")
    parser.add_argument("images", nargs="*", default=["emulator", "postgres"])
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    parser.add_argument("--asterisk-base", default=ASTERISK_BASE)
    args = parser.parse_args(list(argv) if argv is not None else None)
    from lab.docker.base_image import docker_client

    client = docker_client()
    wanted = ["emulator", "postgres", "asterisk"] if "all" in args.images else args.images
    status = 0
    for name in wanted:
        try:
            if name == "emulator":
                result = ensure_emulator_image(client, force=args.force, log=print)
            elif name == "postgres":
                result = ensure_postgres_image(client, force=args.force, log=print)
            elif name == "asterisk":
                result = ensure_asterisk_image(
                    client, base=args.asterisk_base, force=args.force, log=print
                )
            else:
                parser.error(f"unknown image {name!r} (emulator, postgres, asterisk, all)")
        except ImageBuildError as exc:
            print(f"error: {exc}")
            status = 1
            continue
        what = f"built in {result.seconds:.1f} s" if result.built else "up to date"
        print(f"{result.tag}: {what}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = [
    "ASTERISK_BASE",
    "ASTERISK_IMAGE",
    "ASTERISK_LABELS",
    "BASE_IMAGE",
    "EMULATOR_IMAGE",
    "IMAGES_DIR",
    "POSTGRES_IMAGE",
    "BuildResult",
    "ImageBuildError",
    "asterisk_source_hash",
    "asterisk_version",
    "build_from_recipe",
    "build_image",
    "ensure_asterisk_image",
    "ensure_emulator_image",
    "ensure_postgres_image",
    "host_pip_conf",
    "source_hash",
    "stage_context",
]
