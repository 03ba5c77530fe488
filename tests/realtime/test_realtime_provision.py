"""Bulk provisioning, passwords and the SIPp injection CSV."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from router.realtime import Binding, Database, UserCredential, connect, write_sipp_csv
from router.realtime.provision import PASSWORD_ALPHABET, generate_passwords


def test_provision_100k_users_sqlite(tmp_path: Path) -> None:
    with connect(f"sqlite:///{tmp_path}/big.db") as db:
        db.init_schema()
        started = time.perf_counter()
        users = db.provision_users(100_000, 100, domain="lab", context="users")
        elapsed = time.perf_counter() - started
        print(f"provisioned 100,000 users on SQLite in {elapsed:.2f} s")
        for table in ("ps_endpoints", "ps_auths", "ps_aors"):
            assert db.count(table) == 100_000
        assert users[-1].username == "100099"
        assert len({u.password for u in users}) == 100_000
        last = db.get_auth("100099")
        assert last is not None
        assert last.password == users[-1].password
        started = time.perf_counter()
        written = write_sipp_csv(tmp_path / "users.csv", users)
        print(f"wrote the SIPp CSV in {time.perf_counter() - started:.2f} s")
    assert written == 100_000
    assert len((tmp_path / "users.csv").read_text().splitlines()) == 100_001


@pytest.mark.postgres
def test_provision_100k_users_postgres(pg_url: str) -> None:
    with connect(pg_url) as db:
        db.init_schema()
        started = time.perf_counter()
        users = db.provision_users(100_000, 100, domain="lab", context="users", seed=1)
        print(f"provisioned 100,000 users on PostgreSQL in {time.perf_counter() - started:.2f} s")
        for table in ("ps_endpoints", "ps_auths", "ps_aors"):
            assert db.count(table) == 100_000
        probe = db.get_auth("54321")
        assert probe is not None
        assert probe.password == users[54321 - 100].password


def test_bulk_upsert_last_row_wins(db: Database) -> None:
    # Above the PostgreSQL COPY threshold, with a duplicate key inside one batch.
    bindings = [Binding(f"r{i}", str(i), None, f"sip:{i}@h", expires=100) for i in range(1500)]
    bindings.append(Binding("r7", "7", None, "sip:7@new", expires=200))
    db.location_upsert_many(bindings)
    assert db.location_count() == 1500
    assert [b.contact for b in db.location_lookup("7", None, now=0)] == ["sip:7@new"]


def test_passwords_seeded_and_alphabet() -> None:
    first = generate_passwords(50, 16, seed=42)
    assert first == generate_passwords(50, 16, seed=42)
    assert first != generate_passwords(50, 16, seed=43)
    assert all(len(p) == 16 and set(p) <= set(PASSWORD_ALPHABET) for p in first)
    unseeded = generate_passwords(50, 16)
    assert unseeded != generate_passwords(50, 16)
    assert generate_passwords(0, 8) == []
    with pytest.raises(ValueError, match="length"):
        generate_passwords(1, 0)


def test_no_password_sipp_reads_as_hex() -> None:
    """SIPp takes ``password=0x...`` as hex bytes: with ``--seed 7`` the unconstrained draw
    gave users 979, 1087 and 3935 (``--first 100``) such a password, and each then failed
    every registration storm with a second 401. None may start with ``0x``/``0X`` now, and
    the others keep the passwords the seed gave them."""
    passwords = generate_passwords(4000, 12, seed=7)
    assert not [p for p in passwords if p[:2] in ("0x", "0X")]
    assert len(set(passwords)) == 4000
    assert passwords == generate_passwords(4000, 12, seed=7)
    # The unconstrained draw (one byte per symbol, low 6 bits): only the hex-looking ones
    # (users 353, 979, 1087, 1201, 2210, 3935) changed.
    raw = random.Random(7).randbytes(4000 * 12)
    plain = "".join(PASSWORD_ALPHABET[b & 63] for b in raw)
    unconstrained = [plain[i : i + 12] for i in range(0, len(plain), 12)]
    changed = [i + 100 for i in range(4000) if passwords[i] != unconstrained[i]]
    assert changed == [353, 979, 1087, 1201, 2210, 3935]
    # Short passwords: 1 in 64 two-symbol draws is "0x" or "0X"; all are redrawn.
    short = generate_passwords(20_000, 2, seed=3)
    assert not {"0x", "0X"} & set(short)
    assert {p[0] for p in short} >= set(PASSWORD_ALPHABET)


def test_sipp_csv_format(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    users = [UserCredential("100", "pw-1_A", "lab.test"), UserCredential("101", "xyz", "lab.test")]
    assert write_sipp_csv(path, users) == 2
    assert path.read_text() == (
        "SEQUENTIAL\n"
        "100;lab.test;[authentication username=100 password=pw-1_A]\n"
        "101;lab.test;[authentication username=101 password=xyz]\n"
    )
    assert not (tmp_path / "users.csv.tmp").exists()


@pytest.mark.parametrize("bad", ["a;b", "a b", "a]b", "a\nb"])
def test_sipp_csv_refuses_values_that_break_columns(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="SIPp CSV"):
        write_sipp_csv(tmp_path / "u.csv", [UserCredential("100", bad, "d")])


def test_sipp_csv_unwritable(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_sipp_csv(tmp_path / "missing" / "u.csv", [UserCredential("1", "p", "d")])
