"""The ``siplab`` command lives in the lab (``lab.cli:main``); the router keeps
``python -m router.cli`` with its own subcommands only."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lab.cli import main

ROOT = Path(__file__).resolve().parents[2]
ALL = ["db", "users", "router", "pbx", "lab", "ladder", "capacity", "report", "storm"]


def _help(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def _commands(help_text: str) -> set[str]:
    return {line.split()[0] for line in help_text.splitlines() if line.startswith("    ")}


def test_siplab_entry_point_is_the_lab_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["siplab"] == "lab.cli:main"
    assert set(ALL) | {"conformance"} <= _commands(_help("lab.cli"))
    assert _commands(_help("router.cli")) == {"db", "users", "router"}


def test_siplab_user_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "status", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("siplab: error: ") and "lab.json" in err
    assert len(err.strip().splitlines()) == 1
