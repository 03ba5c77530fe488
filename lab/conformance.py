"""``siplab conformance``: every scenario's verdict for the reference router and for Kamailio.

``siplab conformance --run`` runs ``pytest scenarios/`` once per router (``--routers``, default
``reference,kamailio``: ``--router reference``, ``--router kamailio``; add ``kamailio:6.0`` or
``kamailio:6.1`` for Kamailio 6.x in a container), each writing JUnit XML into the output folder,
then prints one table: scenario, verdict per router and version (pass / FAIL / skip / xfail), and
the reason where a verdict is not a pass (a scenario where Kamailio differs by design says so
through its skip/xfail reason, see ``lab/routers/kamailio/differences.py``). The host's Kamailio
column is named with its version (``kamailio 5.6``). Without ``--run`` it reads existing JUnit
files (``--junit reference=FILE --junit kamailio=FILE``). ``--markdown`` prints a Markdown table,
``--write FILE`` writes it with a header saying how it was produced (docs/conformance.md is
written this way, never by hand), and ``conformance.json`` is written next to the JUnit files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROUTERS = ("reference", "kamailio")
"""Default ``--routers``."""


def column(router: str) -> str:
    """Column title of a ``--router`` value: ``kamailio`` -> ``kamailio 5.6`` (the host's),
    ``kamailio:6.0`` -> ``kamailio 6.0``."""
    kind, _, version = router.partition(":")
    if kind == "kamailio" and not version:
        from lab.routers.kamailio.launch import host_version

        version = host_version() or "?"
    return f"{kind} {version}" if version else kind


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str
    """pass, FAIL, ERROR, skip or xfail."""
    reason: str = ""


def read_junit(path: Path) -> dict[str, Verdict]:
    """Test id (``file::name``) -> verdict, from a pytest JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"{path}: not a readable JUnit XML file ({exc})") from None
    out: dict[str, Verdict] = {}
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "")
        module = classname.rsplit(".", 1)[-1] if classname else ""
        key = f"{module}::{name}" if module else name
        verdict = Verdict("pass")
        for child in case:
            message = (child.get("message") or child.text or "").strip().splitlines()
            first = message[0][:140] if message else ""
            if child.tag == "failure":
                verdict = Verdict("FAIL", first)
            elif child.tag == "error":
                verdict = Verdict("ERROR", first)
            elif child.tag == "skipped":
                kind = "xfail" if (child.get("type") or "").endswith("xfail") else "skip"
                verdict = Verdict(kind, first)
        out[key] = verdict
    return out


def table(results: dict[str, dict[str, Verdict]]) -> list[tuple[str, ...]]:
    """Rows: scenario, then one verdict per router, then the reasons."""
    routers = list(results)
    names = sorted({name for verdicts in results.values() for name in verdicts})
    rows = []
    for name in names:
        cells = [results[r].get(name, Verdict("-")) for r in routers]
        reasons = "; ".join(
            f"{r}: {c.reason}" for r, c in zip(routers, cells, strict=True) if c.reason
        )
        rows.append((name, *(c.outcome for c in cells), reasons))
    return rows


def render(results: dict[str, dict[str, Verdict]], *, markdown: bool = False) -> str:
    routers = list(results)
    rows = table(results)
    header = ("scenario", *routers, "why (non-pass)")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
        ]
        return "\n".join(lines)
    width = max([len(header[0]), *(len(r[0]) for r in rows)])
    lines = [f"{header[0]:<{width}}  " + "  ".join(f"{r:<10}" for r in routers) + "  why"]
    for row in rows:
        lines.append(
            f"{row[0]:<{width}}  " + "  ".join(f"{c:<10}" for c in row[1:-1]) + f"  {row[-1]}"
        )
    totals = {r: sum(1 for row in rows if row[1 + i] == "pass") for i, r in enumerate(routers)}
    lines.append("")
    lines.append("passed: " + ", ".join(f"{r} {n}/{len(rows)}" for r, n in totals.items()))
    return "\n".join(lines)


def run_suite(router: str, out: Path, extra: list[str]) -> Path:
    junit = out / f"junit-{router.replace(':', '-')}.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "scenarios",
        f"--router={router}",
        f"--junitxml={junit}",
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    print(f"conformance: {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=False)
    if not junit.exists():
        raise RuntimeError(f"pytest wrote no {junit}")
    return junit


def cmd_conformance(args: argparse.Namespace) -> int:
    from router.cli import UserError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for item in args.junit or ():
        router, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--junit {item!r}: expected ROUTER=FILE")
        files[router] = Path(path)
    routers = [r for r in args.routers.split(",") if r]
    if args.run:
        for router in routers:
            try:
                files[router] = run_suite(router, out, args.pytest_args or [])
            except RuntimeError as exc:
                raise UserError(str(exc)) from None
    if not files:
        for router in routers:
            candidate = out / f"junit-{router.replace(':', '-')}.xml"
            if candidate.exists():
                files[router] = candidate
    if not files:
        raise UserError(f"{out}: no junit-<router>.xml files; use --run or --junit ROUTER=FILE")
    try:
        results = {column(router): read_junit(path) for router, path in files.items()}
    except ValueError as exc:
        raise UserError(str(exc)) from None
    print(render(results, markdown=args.markdown))
    if args.write:
        Path(args.write).write_text(document(results, files, args), encoding="utf-8")
        print(f"conformance: wrote {args.write}", file=sys.stderr)
    (out / "conformance.json").write_text(
        json.dumps(
            {
                r: {k: {"outcome": v.outcome, "reason": v.reason} for k, v in res.items()}
                for r, res in results.items()
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def document(
    results: dict[str, dict[str, Verdict]], files: dict[str, Path], args: argparse.Namespace
) -> str:
    """docs/conformance.md: how it was produced, the Markdown table, the pass counts."""
    how = "siplab conformance --run" if args.run else "siplab conformance"
    if args.routers != ",".join(ROUTERS):
        how += f" --routers {args.routers}"
    how += f" --markdown --write {args.write}"
    if args.run and args.pytest_args:
        how += " -- " + " ".join(args.pytest_args)
    source = "" if args.run else f" from the JUnit files in `{args.out}`"
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    rows = table(results)
    totals = ", ".join(
        f"{r} {sum(1 for row in rows if row[1 + i] == 'pass')}/{len(rows)}"
        for i, r in enumerate(results)
    )
    return (
        "# Conformance: the reference router vs Kamailio (per version)\n\n"
        f"Written by `{how}`{source} on {today} "
        f"({platform.system()} {platform.machine()}, {len(files)} runs of `pytest scenarios`); "
        "do not edit by hand. Non-pass verdicts carry their reason; Kamailio's differences by "
        "design are named in `lab/routers/kamailio/differences.py`. Kamailio 6.x runs in a "
        "container (`lab/routers/kamailio/image.py`).\n\n"
        + render(results, markdown=True)
        + f"\n\nPassed: {totals}.\n"
    )


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("conformance", help="scenario verdicts: reference router vs Kamailio")
    p.add_argument(
        "--run", action="store_true", help="run pytest scenarios/ for both routers first"
    )
    p.add_argument("--junit", action="append", help="ROUTER=FILE: read an existing JUnit XML")
    p.add_argument(
        "--out", default="runs/conformance", help="folder for JUnit files and conformance.json"
    )
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument(
        "--routers",
        default=",".join(ROUTERS),
        help="comma-separated --router values, one column each (e.g. "
        "reference,kamailio,kamailio:6.0)",
    )
    p.add_argument(
        "--write", metavar="FILE", help="write the Markdown document (docs/conformance.md)"
    )
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    p.set_defaults(func=cmd_conformance)
