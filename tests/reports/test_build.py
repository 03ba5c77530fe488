"""A report built from the fixture run: every plot, a summary that agrees with the events, HTML
that renders in headless Chromium."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lab.requires import needs
from reports import metrics
from reports.build import build_report, main
from reports.plots import PLOT_NAMES

DATA = Path(__file__).parent / "data" / "run_small"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_report(DATA, out=out)
    return out


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_has_every_plot(built: Path) -> None:
    for name in PLOT_NAMES:
        width, height = png_size((built / "plots" / f"{name}.png").read_bytes())
        assert width >= 600
        assert height >= 300


def test_summary_agrees_with_events(built: Path) -> None:
    summary = json.loads((built / "summary.json").read_text())
    events = metrics.load_events(DATA / "events.jsonl")
    calls = metrics.calls(events, node="router", requests_dir="in")
    assert summary["source"] == "events"
    assert summary["max_cps"] == 4.0
    assert summary["max_registrations_per_s"] is None
    totals = summary["totals"]
    assert totals["attempted"] == len(calls) == 8
    assert totals["successful"] == int((calls["outcome"] == "success").sum()) == 5
    assert totals["failures_by_cause"] == {"4xx": 1, "5xx": 1, "timeout": 1}
    step1, step2 = summary["steps"]
    in_step1 = calls[(calls["start"] >= 100.0) & (calls["start"] < 101.0)]
    assert step1["attempted"] == len(in_step1) == 4
    assert step1["p95_ms"] == 40.0
    assert step2["retransmissions"] == 1
    assert not step2["passed"]
    assert summary["knee"]["established_per_s"] == 3.0
    assert summary["knee"]["router_per_core"] == 12.0  # 3 calls/s at 25% of a core
    assert summary["distribution"] == {"pbx1": 5, "pbx2": 3}
    assert summary["sizing"]["target"] == "cps=10,users=1000,reregister=600s"
    assert summary["sizing"]["router_cores"] is None  # registrations were not measured
    assert "the knee was not confirmed by a soak step" in summary["warnings"]
    assert len(summary["config_hash"]) == 16


def test_sizing_takes_registrations_from_the_quick_register_run(tmp_path: Path) -> None:
    """``siplab capacity --quick`` writes a register run in ``<run>/register``: its knee's
    registrations/s per router core fills the call run's sizing (router cores measured)."""
    run = tmp_path / "run"
    shutil.copytree(DATA, run)
    (run / "register").mkdir()
    (run / "register" / "summary.json").write_text(json.dumps({"knee": {"router_per_core": 50.0}}))
    build_report(run, out=tmp_path / "out")
    sizing = json.loads((tmp_path / "out" / "summary.json").read_text())["sizing"]
    assert sizing["router_cores"] is not None
    assert any("50.0 registrations/s per core" in line for line in sizing["arithmetic"])


def test_html_is_self_contained(built: Path) -> None:
    page = (built / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOT_NAMES)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    for text in (
        "Session Request Delay",
        "RFC 6076",
        "Registration Rate",
        "Service level",
        "Hardware",
        "Versions",
        "4 calls/s",
    ):
        assert text in page, text


def test_build_cli_and_compare(
    tmp_path: Path, built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(DATA), "--out", str(tmp_path), "--compare", str(built)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["compare"]["max_cps"] == {"this": 4.0, "other": 4.0, "ratio": 1.0}
    assert main([str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_build_plain_run_without_capacity(tmp_path: Path) -> None:
    shutil.copy(DATA / "events.jsonl", tmp_path / "events.jsonl")
    build_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["attempted"] == 8
    assert summary["knee"]["offered"] is None
    assert all((tmp_path / "plots" / f"{n}.png").exists() for n in PLOT_NAMES)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

_CHECK = """<script>
window.addEventListener("load", () => {
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images-ok", ok + "/" + document.images.length);
});
</script></body>"""


@needs(CHROMIUM is not None, "chromium is not installed (Debian package chromium)")
def test_report_renders_in_headless_chromium(built: Path, tmp_path: Path) -> None:
    # A copy with a checking script appended: the report itself has no script.
    page = (built / "report.html").read_text().replace("</body>", _CHECK)
    copy = tmp_path / "check.html"
    copy.write_text(page)
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            copy.as_uri(),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    dom = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert f'data-images-ok="{len(PLOT_NAMES)}/{len(PLOT_NAMES)}"' in dom
