"""The real-Asterisk image's entrypoint renders its configs from the environment.

The entrypoint is run directly with ``SIPLAB_RENDER_ONLY=1`` against the templates in the
repository (no image needed): the configs Asterisk would read are checked for the realtime
wiring (SIP-REFERENCE §5.1), the router identified by address (§4.3), the module list and the
emulator's default dialplan. That Asterisk 22 really loads them is checked by the
``asterisk``-marked scenarios (scenarios/test_asterisk_*.py).
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
    # res_config_pgsql reads res_pgsql.conf; a res_config_pgsql.conf would never be read
    assert not (rendered / "res_config_pgsql.conf").exists()
    pg = dict(_sections(rendered / "res_pgsql.conf")["general"])
    assert (pg["dbhost"], pg["dbport"], pg["dbname"]) == ("127.77.0.5", "5433", "labdb")
    assert (pg["dbuser"], pg["dbpass"]) == ("siplab", "s3cret")
    modules = _sections(rendered / "modules.conf")["modules"]
    assert ("autoload", "no") in modules  # host network: nothing may bind 0.0.0.0 by default
    loaded = {v for k, v in modules if k == "load"}
    for needed in (
        "res_config_pgsql.so",
        "res_sorcery_realtime.so",
        "chan_pjsip.so",
        "res_pjsip_pubsub.so",  # chan_pjsip does not load without it (Asterisk 22)
        "res_pjsip_registrar.so",
        "res_pjsip_path.so",
        "app_queue.so",
        "res_clioriginate.so",  # `channel originate`
    ):
        assert needed in loaded, needed
    assert "res_pjsip_options.so" not in loaded  # part of res_pjsip since Asterisk 20


def test_asterisk_render_sorcery_maps_pjsip_objects_to_realtime(rendered: Path) -> None:
    sorcery = _sections(rendered / "sorcery.conf")
    pjsip = sorcery["res_pjsip"]
    assert ("endpoint", "realtime,ps_endpoints") in pjsip
    assert ("auth", "realtime,ps_auths") in pjsip
    assert ("aor", "realtime,ps_aors") in pjsip
    # contacts per node by default: a shared ps_contacts breaks with every node registering
    # the same contact (see sorcery.conf); SIPLAB_CONTACTS=realtime restores it
    assert ("contact", "astdb,registrar") in pjsip
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


def test_asterisk_render_shared_contacts_on_request(tmp_path: Path) -> None:
    done = _render(tmp_path, SIPLAB_DB_URL=URL, SIPLAB_CONTACTS="realtime")
    assert done.returncode == 0, done.stderr
    pjsip = _sections(tmp_path / "sorcery.conf")["res_pjsip"]
    assert ("contact", "realtime,ps_contacts") in pjsip
    bad = _render(tmp_path, SIPLAB_DB_URL=URL, SIPLAB_CONTACTS="memory")
    assert bad.returncode == 2
    assert "SIPLAB_CONTACTS must be astdb or realtime" in bad.stderr


def test_asterisk_dockerfile_base_is_a_build_arg() -> None:
    dockerfile = (ASTERISK / "Dockerfile").read_text()
    assert "ARG BASE=siplab/debian:sid" in dockerfile  # Debian sid carries Asterisk 22
    assert "FROM ${BASE}" in dockerfile
    # the module check reads modules.conf's `load =>` lines at build time
    assert "siplab step module-check failed" in dockerfile
    assert "Check-Valid-Until=false" in dockerfile
