"""``siplab db init`` / ``siplab users add|list`` through the ``add_commands`` contract."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from router.cli import UserError
from router.realtime import connect
from router.realtime.cli import add_commands


def _siplab(argv: list[str]) -> int:
    """What ``router.cli.main`` does with this module's commands."""
    parser = argparse.ArgumentParser(prog="siplab")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_init_add_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/lab.db"
    assert _siplab(["db", "init", "--db", url]) == 0
    assert "schema version 1" in capsys.readouterr().out
    csv = tmp_path / "users.csv"
    argv = ["users", "add", "--db", url, "--count", "5", "--first", "100", "--csv", str(csv)]
    assert _siplab([*argv, "--domain", "lab.test", "--context", "agents", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "added 5 users 100..104" in out
    lines = csv.read_text().splitlines()
    assert lines[0] == "SEQUENTIAL"
    assert lines[1].startswith("100;lab.test;[authentication username=100 password=")
    assert len(lines) == 6
    assert _siplab(["users", "list", "--db", url, "--limit", "2"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "id\tusername\tpassword\tcontext\tmax_contacts"
    password = lines[1].split("password=")[1].rstrip("]")
    assert listed[1] == f"100\t100\t{password}\tagents\t1"
    assert len(listed) == 3
    with connect(url) as db:
        assert db.count("ps_auths") == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["db", "init", "--db", "mysql://x/y"], "unsupported database URL"),
        (["db", "init", "--db", "sqlite:///{tmp}/no/such/dir/x.db"], "cannot open SQLite"),
        (["db", "init", "--db", "postgresql://u:pw@127.0.0.1:1/d"], "u:***@127.0.0.1:1"),
        (["users", "list", "--db", "{tmp}/missing.db"], "no such database file"),
        (["users", "add", "--db", "{tmp}/x.db", "--csv", "{tmp}/nodir/u.csv"], "does not exist"),
        (["users", "add", "--db", "{tmp}/x.db", "--csv", "{tmp}"], "not writable"),
    ],
)
def test_cli_user_errors(tmp_path: Path, argv: list[str], message: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(UserError) as info:
        _siplab(argv)
    assert message in str(info.value)
    assert str(info.value).startswith(("--db", "--csv"))
    assert "Traceback" not in str(info.value)
    # A failed --csv check must not have provisioned anything.
    assert not (tmp_path / "x.db").exists()


def test_cli_list_uninitialised(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with pytest.raises(UserError, match="not initialised"):
        _siplab(["users", "list", "--db", str(tmp_path / "empty.db")])


@pytest.mark.parametrize("count", ["0", "-3", "ten"])
def test_cli_rejects_bad_count(count: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _siplab(["users", "add", "--db", "x.db", "--count", count])
    assert info.value.code == 2
    assert "--count" in capsys.readouterr().err


@pytest.mark.postgres
def test_cli_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _siplab(["db", "init", "--db", pg_url]) == 0
    assert _siplab(["users", "add", "--db", pg_url, "--count", "3", "--first", "7"]) == 0
    assert _siplab(["users", "list", "--db", pg_url]) == 0
    out = capsys.readouterr().out
    assert "added 3 users 7..9" in out
    assert out.count("\tdefault\t1") == 3
