"""``siplab db ...`` and ``siplab users ...``: create the realtime DB and provision users.

    siplab db init --db URL
    siplab users add --db URL --count 500 --first 100 [--csv FILE] [--domain D] [--context C]
                     [--seed N] [--password-len L] [--max-contacts M]
    siplab users list --db URL [--limit N]

URL is ``sqlite:///path/to/file.db``, a plain file path, or ``postgresql://user:pw@host/db``.
Every failure a user can fix (bad URL, unreachable server, unwritable CSV) becomes
``router.cli.UserError`` naming the option and the reason, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from router.realtime.engine import RealtimeError, db_errors, redact_url, sqlite_path
from router.realtime.provision import write_sipp_csv
from router.realtime.store import Database, connect


def add_commands(subparsers: Any) -> None:
    """Register ``db`` and ``users`` on the top-level ``siplab`` subparsers."""
    db = subparsers.add_parser("db", help="realtime database (schema)")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    init = db_sub.add_parser("init", help="create the realtime tables if missing")
    _add_db_option(init)
    init.set_defaults(func=cmd_db_init)

    users = subparsers.add_parser("users", help="provision and list SIP users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = users_sub.add_parser(
        "add", help="create users first..first+count-1 (ps_endpoints/ps_auths/ps_aors)"
    )
    _add_db_option(add)
    add.add_argument("--count", type=_positive_int, default=500, help="users to create (500)")
    add.add_argument("--first", type=_non_negative_int, default=100, help="first user (100)")
    add.add_argument("--csv", type=Path, help="write a SIPp injection CSV here")
    add.add_argument("--domain", default="siplab.local", help="SIP domain (siplab.local)")
    add.add_argument("--context", default="default", help="dialplan context (default)")
    add.add_argument("--seed", type=int, help="seed for reproducible passwords")
    add.add_argument("--password-len", type=_positive_int, default=12, help="(12)")
    add.add_argument("--max-contacts", type=_positive_int, default=1, help="per AOR (1)")
    add.set_defaults(func=cmd_users_add)

    listing = users_sub.add_parser("list", help="print users with their passwords")
    _add_db_option(listing)
    listing.add_argument("--limit", type=_positive_int, help="print at most N users")
    listing.set_defaults(func=cmd_users_list)


def _add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        metavar="URL",
        help="sqlite:///path/file.db, a file path, or postgresql://user:pw@host/db",
    )


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


@contextmanager
def _open(url: str, *, init: bool) -> Iterator[Database]:
    """Open (and maybe initialise) the DB, turning DB failures into UserError."""
    from router.cli import UserError

    path = sqlite_path(url)
    if not init and path is not None and path != ":memory:" and not Path(path).is_file():
        raise UserError(f"--db {url}: no such database file (run: siplab db init)")
    try:
        database = connect(url)
    except RealtimeError as exc:
        raise UserError(f"--db: {exc}") from exc
    try:
        if init:
            database.init_schema()
        elif database.schema_version() is None:
            raise UserError(f"--db {redact_url(url)}: not initialised (run: siplab db init)")
        yield database
    except Exception as exc:
        if not isinstance(exc, (RealtimeError, *db_errors())):
            raise
        raise UserError(f"--db {redact_url(url)}: {' '.join(str(exc).split())}") from exc
    finally:
        database.close()


def cmd_db_init(args: argparse.Namespace) -> int:
    """``siplab db init``."""
    with _open(args.db, init=True) as database:
        print(
            f"initialised {redact_url(database.url)} (schema version {database.schema_version()})"
        )
    return 0


def cmd_users_add(args: argparse.Namespace) -> int:
    """``siplab users add``."""
    from router.cli import UserError

    csv_path: Path | None = args.csv
    if csv_path is not None:
        # Check before touching the DB, so a typo does not leave users without their CSV.
        parent = csv_path.parent if str(csv_path.parent) else Path(".")
        if not parent.is_dir():
            raise UserError(f"--csv {csv_path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK) or (csv_path.is_dir()):
            raise UserError(f"--csv {csv_path}: not writable")
    started = time.perf_counter()
    with _open(args.db, init=True) as database:
        users = database.provision_users(
            args.count,
            args.first,
            domain=args.domain,
            context=args.context,
            password_len=args.password_len,
            seed=args.seed,
            max_contacts=args.max_contacts,
        )
    elapsed = time.perf_counter() - started
    last = args.first + args.count - 1
    print(f"added {len(users)} users {args.first}..{last} in {elapsed:.2f} s")
    if csv_path is not None:
        try:
            write_sipp_csv(csv_path, users)
        except (OSError, ValueError) as exc:
            raise UserError(f"--csv {csv_path}: {exc}") from exc
        print(f"wrote SIPp CSV {csv_path}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    """``siplab users list``: tab-separated, header first."""
    with _open(args.db, init=False) as database:
        rows = database.list_users(args.limit)
    print("id\tusername\tpassword\tcontext\tmax_contacts")
    for row in rows:
        fields = (row.id, row.username, row.password, row.context, row.max_contacts)
        print("\t".join("" if f is None else str(f) for f in fields))
    return 0
