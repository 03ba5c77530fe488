"""The project's own gates, run with the tests so CI enforces them: ruff (lint + format) on every
package, mypy strict on router/ (stricter still on the sans-IO core), and the module size budget
(800 lines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["router", "lab", "reports", "bench", "tests", "scenarios"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_gates_ruff_check_and_format() -> None:
    lint = _run("ruff", "check", *PACKAGES)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = _run("ruff", "format", "--check", *PACKAGES)
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_gates_mypy_strict_on_the_router() -> None:
    # All of router/ is strict; router/sip (the sans-IO core) also refuses explicit Any.
    out = _run("mypy", "router")
    assert out.returncode == 0, out.stdout[-4000:]


def test_gates_no_module_over_800_lines() -> None:
    too_big = {
        str(p.relative_to(ROOT)): n
        for pkg in ("router", "lab", "reports")
        for p in (ROOT / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 800
    }
    assert too_big == {}
