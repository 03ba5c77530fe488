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
