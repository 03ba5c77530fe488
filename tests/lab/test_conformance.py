"""The conformance table from JUnit files of two routers."""

from __future__ import annotations

from pathlib import Path

from lab.conformance import read_junit, render

REF = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="scenarios.test_registration" name="test_digest_ok" time="1.0"/>
<testcase classname="scenarios.test_registration" name="test_stale_nonce" time="1.0"/>
<testcase classname="scenarios.test_attacks" name="test_svwar" time="1.0"><failure message="AssertionError: found 101">x</failure></testcase>
</testsuite></testsuites>"""
KAM = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="scenarios.test_registration" name="test_digest_ok" time="1.0"/>
<testcase classname="scenarios.test_registration" name="test_stale_nonce" time="1.0"><skipped type="pytest.xfail" message="Kamailio sets stale=true only with flag 16"/></testcase>
</testsuite></testsuites>"""


def test_conformance_table_lists_every_scenario_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(REF)
    (tmp_path / "k.xml").write_text(KAM)
    results = {
        "reference": read_junit(tmp_path / "r.xml"),
        "kamailio": read_junit(tmp_path / "k.xml"),
    }
    assert results["reference"]["test_attacks::test_svwar"].outcome == "FAIL"
    assert results["kamailio"]["test_registration::test_stale_nonce"].outcome == "xfail"
    text = render(results)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("test_")}
    assert set(lines) == {
        "test_attacks::test_svwar",
        "test_registration::test_digest_ok",
        "test_registration::test_stale_nonce",
    }
    assert "xfail" in lines["test_registration::test_stale_nonce"]
    assert "stale=true only with flag 16" in lines["test_registration::test_stale_nonce"]
    assert lines["test_attacks::test_svwar"].split()[1:3] == ["FAIL", "-"]
    assert "passed: reference 2/3, kamailio 1/3" in text
    md = render(results, markdown=True)
    assert md.splitlines()[0].startswith("| scenario | reference | kamailio")


def test_columns_per_router_and_version_and_the_written_document(tmp_path: Path) -> None:
    import argparse

    from lab.conformance import column, document

    assert column("kamailio:6.0") == "kamailio 6.0"
    assert column("reference") == "reference"
    assert column("kamailio").startswith("kamailio ")  # the host's version, e.g. "kamailio 5.6"
    (tmp_path / "r.xml").write_text(REF)
    (tmp_path / "k.xml").write_text(KAM)
    files = {"reference": tmp_path / "r.xml", "kamailio:6.0": tmp_path / "k.xml"}
    results = {column(r): read_junit(p) for r, p in files.items()}
    args = argparse.Namespace(
        run=True,
        routers="reference,kamailio:6.0",
        pytest_args=["--lab-net", "9"],
        write="docs/conformance.md",
        out="runs/c",
    )
    text = document(results, files, args)
    assert (
        "`siplab conformance --run --routers reference,kamailio:6.0 --markdown --write "
        "docs/conformance.md -- --lab-net 9`" in text
    )
    assert "| scenario | reference | kamailio 6.0 |" in text
    assert "Passed: reference 2/3, kamailio 6.0 1/3." in text
