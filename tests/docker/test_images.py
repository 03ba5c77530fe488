"""Build inputs that need no engine: the staged context, the pip settings, the apt mirror."""

from __future__ import annotations

from pathlib import Path

from lab.docker.base_image import apt_mirror
from lab.docker.images import IMAGES_DIR, host_pip_conf, source_hash, stage_context


def test_stage_context_emulator_has_sources_ca_and_pip_conf(tmp_path: Path) -> None:
    ctx = stage_context("emulator", tmp_path / "ctx")
    for name in ("Dockerfile", "entrypoint.sh", "pyproject.toml", "README.md", "pip.conf"):
        assert (ctx / name).is_file(), name
    assert (ctx / "router" / "sip" / "__init__.py").is_file()
    assert (ctx / "lab" / "pbx" / "cli.py").is_file()
    assert (ctx / "reports").is_dir()
    assert not list(ctx.rglob("__pycache__"))
    assert "BEGIN CERTIFICATE" in (ctx / "ca-certificates.crt").read_text()


def test_host_pip_conf_keeps_http_indexes_and_drops_local_ones(tmp_path: Path) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = file:///opt/pypi/simple https://extra.example/simple\n"
        "find-links = /opt/wheels\n"
    )
    out = host_pip_conf([conf], environ={})
    assert "index-url = https://mirror.example/simple" in out
    assert "extra-index-url = https://extra.example/simple" in out
    assert "file://" not in out
    assert "/opt/wheels" not in out
    assert "cert = /etc/siplab/build/ca-certificates.crt" in out
    env = host_pip_conf([conf], environ={"PIP_INDEX_URL": "https://env.example/simple"})
    assert "index-url = https://env.example/simple" in env


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\nComponents: main\n"
    )
    assert apt_mirror(files=[deb822]) == "http://mirror.example/debian"
    oneline = tmp_path / "sources.list"
    oneline.write_text(
        "deb https://packages.example/apt stable main\n"
        "deb [arch=amd64] http://other.example/debian bookworm main\n"
    )
    assert apt_mirror(files=[oneline]) == "http://other.example/debian"
    assert apt_mirror(files=[tmp_path / "missing"]) == "http://deb.debian.org/debian"


def test_source_hash_changes_with_the_sources(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for d in ("router", "lab", "reports"):
        (repo / d).mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\n")
    (repo / "README.md").write_text("x\n")
    (repo / "lab" / "a.py").write_text("A = 1\n")
    first = source_hash(repo)
    (repo / "lab" / "__pycache__").mkdir()
    (repo / "lab" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert source_hash(repo) == first  # bytecode is not a source
    (repo / "lab" / "a.py").write_text("A = 2\n")
    assert source_hash(repo) != first


def test_recipes_exist_for_every_image() -> None:
    for image in ("emulator", "postgres", "asterisk"):
        assert (IMAGES_DIR / image / "Dockerfile").is_file()
    assert (IMAGES_DIR / "base" / "build-base.sh").is_file()
