"""The real-Asterisk image's entrypoint renders its configs from the environment.

The image cannot be built here (no registry holds a base that packages Asterisk), so its
entrypoint is run directly with ``SIPLAB_RENDER_ONLY=1`` against the templates in the repository:
the configs Asterisk would read are checked for the realtime wiring (SIP-REFERENCE §5.1), the
router endpoint identified by address (§4.3) and the emulator's default dialplan.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.docker.images import IMAGES_DIR

ASTERISK = IMAGES_DIR / "asterisk"
URL = "postgresql://siplab:s3cret@127.77.0.5:5433/labdb"


def _render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        "PATH": os.environ["PATH"],
        "SIPLAB_TEMPLATES": str(ASTERISK / "templates"),
        "SIPLAB_ASTERISK_ETC": str(tmp_path),
        "SIPLAB_RENDER_ONLY": "1",
        **env,
    }
    return subprocess.run(
        ["sh", str(ASTERISK / "entrypoint.sh")], env=full, capture_output=True, text=True
    )


def _sections(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Asterisk config: [section] then ``key = value``/``key => value`` lines (repeats kept;
    configparser cannot read pjsip.conf, which repeats section names for endpoint and aor)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.split(";", 1)[0].strip()
        if line.startswith("["):
            current = line[1 : line.index("]")]
            out.setdefault(current, [])
        elif "=" in line:
            key, _, value = line.partition("=")
            out[current].append((key.strip(), value.lstrip(">").strip()))
    return out


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    done = _render(
        tmp_path,
        SIPLAB_NODE_NAME="pbx2",
        SIPLAB_BIND="127.77.0.12",
        SIPLAB_DB_URL=URL,
        SIPLAB_ROUTER="127.77.0.10,127.77.0.101",
        SIPLAB_TIME_SCALE="0.1",
    )
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_asterisk_render_realtime_families_on_postgres(rendered: Path) -> None:
    ext = dict(_sections(rendered / "extconfig.conf")["settings"])
    for family in (
        "ps_endpoints",
        "ps_auths",
        "ps_aors",
        "ps_contacts",
        "ps_endpoint_id_ips",
        "queues",
        "queue_members",
    ):
        assert ext[family] == "pgsql,labdb"
    pg = dict(_sections(rendered / "res_config_pgsql.conf")["general"])
    assert (pg["dbhost"], pg["dbport"], pg["dbname"]) == ("127.77.0.5", "5433", "labdb")
    assert (pg["dbuser"], pg["dbpass"]) == ("siplab", "s3cret")
    modules = _sections(rendered / "modules.conf")["modules"]
    assert ("preload", "res_config_pgsql.so") in modules


def test_asterisk_render_sorcery_maps_pjsip_objects_to_realtime(rendered: Path) -> None:
    sorcery = _sections(rendered / "sorcery.conf")
    pjsip = sorcery["res_pjsip"]
    assert ("endpoint", "realtime,ps_endpoints") in pjsip
    assert ("auth", "realtime,ps_auths") in pjsip
    assert ("aor", "realtime,ps_aors") in pjsip
    assert ("contact", "realtime,ps_contacts") in pjsip
    assert ("identify", "realtime,ps_endpoint_id_ips") in sorcery[
        "res_pjsip_endpoint_identifier_ip"
    ]


def test_asterisk_render_router_endpoint_identified_by_address(rendered: Path) -> None:
    text = (rendered / "pjsip.conf").read_text()
    assert "${" not in text
    sections = _sections(rendered / "pjsip.conf")
    identify = sections["router-identify"]
    assert ("endpoint", "router") in identify
    assert [v for k, v in identify if k == "match"] == ["127.77.0.10", "127.77.0.101"]
    assert ("bind", "127.77.0.12:5060") in sections["transport-udp"]
    assert ("timer_t1", "100") in sections["system"]  # 500 ms x 0.1, Asterisk's minimum 100
    assert ("systemname", "pbx2") in _sections(rendered / "asterisk.conf")["options"]


def test_asterisk_render_default_dialplan_like_the_emulator(rendered: Path) -> None:
    dialplan = (rendered / "extensions.conf").read_text()
    ext = _sections(rendered / "extensions.conf")["siplab-default"]
    lines = [v for k, v in ext if k in ("exten", "same")]
    assert "600,1,Answer()" in lines
    i = lines.index("601,1,Answer()")
    assert lines[i + 1 : i + 3] == ["n,Wait(6)", "n,Hangup()"]  # 60 s x 0.1
    i = lines.index("602,1,Answer()")
    assert lines[i + 1] == "n,Wait(0.300)"
    assert "700,1,Dial(PJSIP/101)" in lines
    assert "800,1,Queue(queue1)" in lines
    assert "_X.,1,Dial(PJSIP/${EXTEN})" in lines  # the dialplan variable survives rendering
    for context in ("from-users", "from-router"):  # the lab's endpoint contexts
        assert f"[{context}]\ninclude => siplab-default" in dialplan


def test_asterisk_render_rejects_a_non_postgres_db(tmp_path: Path) -> None:
    done = _render(tmp_path, SIPLAB_DB_URL="sqlite:///x.db")
    assert done.returncode == 2
    assert "postgresql://" in done.stderr


def test_asterisk_render_requires_a_db(tmp_path: Path) -> None:
    done = _render(tmp_path)
    assert done.returncode != 0
    assert "SIPLAB_DB_URL" in done.stderr


def test_asterisk_dockerfile_base_is_a_build_arg() -> None:
    dockerfile = (ASTERISK / "Dockerfile").read_text()
    assert "ARG BASE=ubuntu:24.04" in dockerfile
    assert "FROM ${BASE}" in dockerfile
    assert "res_config_pgsql.so" in dockerfile
