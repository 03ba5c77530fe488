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


def test_gates_router_never_imports_lab_or_reports() -> None:
    """The router is a product of its own (``python -m router.cli``): nothing under router/
    imports the lab or the reports, statically or by name through importlib, and importing
    every router module and building its command line loads none of them."""
    import ast

    found = []
    for path in (ROOT / "router").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) in _BY_NAME
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in ("lab", "reports")
            ]
    assert found == []

    probe = (
        "import pkgutil, sys, importlib, router, router.cli\n"
        "for m in pkgutil.walk_packages(router.__path__, 'router.'):\n"
        "    importlib.import_module(m.name)\n"
        "router.cli.build_parser()\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('lab', 'reports')))\n"
    )
    out = _run_python(probe)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip() == "[]", out.stdout


_BY_NAME = {"import_module", "__import__"}


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
