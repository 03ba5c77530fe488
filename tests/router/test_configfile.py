from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from router.configfile import ConfigError, FieldError, load_file, load_section


@dataclass(frozen=True)
class Probing:
    interval: float = 10.0
    mode: int = 1

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise FieldError("interval", "must be > 0")


@dataclass(frozen=True)
class Root:
    name: str
    transport: Literal["udp", "tcp"] = "udp"
    ports: list[int] = field(default_factory=list)
    probing: Probing = field(default_factory=Probing)
    limit: int | None = None


def test_configfile_builds_nested_dataclasses() -> None:
    cfg = load_section({"name": "r", "ports": [1, 2], "probing": {"interval": 2}}, Root)
    assert cfg == Root(name="r", ports=[1, 2], probing=Probing(interval=2.0))
    assert isinstance(cfg.probing.interval, float)


@pytest.mark.parametrize(
    ("data", "field_name", "reason"),
    [
        ({}, "name", "required setting is missing"),
        ({"name": 3}, "name", "expected a string, got 3"),
        ({"name": "r", "probing": {"interval": "ten"}}, "probing.interval", "expected a number"),
        ({"name": "r", "probing": {"interval": -1}}, "probing.interval", "must be > 0"),
        ({"name": "r", "probing": {"intervall": 1}}, "probing.intervall", "unknown setting"),
        ({"name": "r", "transport": "sctp"}, "transport", "must be one of"),
        ({"name": "r", "ports": [1, "x"]}, "ports[1]", "expected an integer"),
        ({"name": "r", "limit": True}, "limit", "expected an integer"),
    ],
)
def test_configfile_error_names_file_field_reason(
    data: dict[str, object], field_name: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_section(data, Root, file="router.toml")
    assert info.value.file == "router.toml"
    assert info.value.field == field_name
    assert reason in info.value.reason
    assert str(info.value).startswith(f"router.toml: {field_name}: ")


def test_configfile_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_file(tmp_path / "missing.toml", Root)
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_file(bad, Root)
