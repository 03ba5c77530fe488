"""``lab.requires``: a missing tool is a skip that says why locally and a failure in CI.

Each case runs pytest in a subprocess on a small test file, with and without ``CI=true`` /
``SIPLAB_REQUIRE_DOCKER=1``, and reads its outcome counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = """
import pytest
from lab.requires import missing_tool, needs

@needs(False, "frobnicator not installed (Debian package frobnicator)")
def test_mark_missing():
    pass

@needs(True, "present")
def test_mark_present():
    pass

def test_called_missing():
    missing_tool("no frobnicator engine: connection refused")
"""

MODULE = """
from lab.requires import needs_module
nothing = needs_module("siplab_no_such_module", "the no-such extra reads it")

def test_uses_it():
    assert nothing is not None
"""


def run_pytest(tmp_path: Path, source: str, env_changes: dict[str, str]) -> tuple[str, int]:
    test = tmp_path / "test_case.py"
    test.write_text(source)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SIPLAB_REQUIRE_DOCKER")}
    env.update(env_changes)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "lab.requires", "-rA", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr, done.returncode


def counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


def test_missing_tool_is_a_skip_with_the_reason_locally(tmp_path: Path) -> None:
    output, code = run_pytest(tmp_path, CASES, {})
    assert code == 0, output
    assert counts(output) == {"passed": 1, "skipped": 2}, output
    assert "frobnicator not installed (Debian package frobnicator)" in output
    assert "no frobnicator engine: connection refused" in output
    assert "this fails" in output  # the skip says CI would fail


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SIPLAB_REQUIRE_DOCKER": "1"}])
def test_missing_tool_fails_in_ci(tmp_path: Path, env: dict[str, str]) -> None:
    output, code = run_pytest(tmp_path, CASES, env)
    assert code == 1, output
    # the mark fails the set-up (an error), the call fails the test: both fail the run
    assert counts(output) == {"failed": 1, "error": 1, "passed": 1}, output
    assert "required tool missing in CI: frobnicator not installed" in output
    assert "required tool missing in CI: no frobnicator engine" in output


def test_missing_module_skips_locally_and_fails_collection_in_ci(tmp_path: Path) -> None:
    output, code = run_pytest(tmp_path, MODULE, {})
    assert code in (0, 5) and counts(output) == {"skipped": 1}, output  # 5: nothing ran
    assert "the no-such extra reads it" in output
    output, code = run_pytest(tmp_path, MODULE, {"CI": "true"})
    assert code != 0, output
    assert "required module missing in CI: the no-such extra reads it" in output


def test_gate_tests_use_lab_requires_for_tools() -> None:
    """No test or scenario skips on its own for a missing tool (``skipif``,
    ``importorskip``): those would pass quietly in CI."""
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in ("tests", "scenarios")
        for path in (ROOT / folder).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"pytest\.(mark\.skipif|importorskip)\(", line)
    ]
    assert offenders == []
