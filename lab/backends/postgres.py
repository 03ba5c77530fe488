"""The PostgreSQL the lab starts itself (issue 6: "PostgreSQL started by the lab").

``[db] kind = "postgres"`` (or ``siplab lab up --db postgres``, or the Kamailio default, see
``lab/topology.py``) makes the local backend run a private cluster as the lab node ``db``:

- ``initdb`` into ``<run>/pgdata`` (once; a later ``lab up`` in the same folder reuses the
  cluster, as it reuses ``realtime.db``; when the ``postgres`` user cannot reach the run
  folder, e.g. a clone in root's 0700 home, the cluster lives in a per-run folder under
  ``/var/tmp`` instead, see :func:`cluster_home`), superuser ``siplab``, ``trust`` for loopback TCP
  and the unix socket only (``pg_hba.conf`` is written by the lab, nothing else may connect);
- ``postgres`` in the foreground on ``127.<net>.0.5:5432``, its unix socket in
  ``<run>/pgsock`` (when the path fits in ``sun_path``), logging to ``<run>/logs/db.log``,
  with its PID in ``lab.json`` like every other node, so ``kill``/``pause``/``restart``
  work on the DB too;
- PostgreSQL refuses to run as root: when the lab runs as root, ``initdb`` and ``postgres`` run
  as the ``postgres`` user through ``setpriv`` (which execs, so the recorded PID is the
  postmaster's own) and the two folders are chowned to it;
- ready = a psycopg connection succeeds (never a sleep); then the ``siplab`` database is
  created; ``down`` stops the postmaster by PID with SIGINT (PostgreSQL's "fast shutdown":
  clients are disconnected, a checkpoint is written, the socket and ``postmaster.pid`` are
  removed).

Settings are the lab's, on the command line so ``lab.json`` shows them: ``shared_buffers``
16 MB, ``wal_level = minimal``, no archiving or replication. ``fsync`` and
``synchronous_commit`` stay **on**: the registrar's claim that an acknowledged binding survives
a crash must hold against the lab DB too.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.topology import DB_PORT, Topology

__all__ = [
    "PG_DB",
    "PG_PASSWORD",
    "PG_USER",
    "LabPostgres",
    "PostgresError",
    "cluster_home",
    "lab_postgres",
    "postgres_bindir",
    "postgres_url",
    "remove_outside_cluster",
]

PG_USER = PG_PASSWORD = PG_DB = "siplab"
"""Same names as the docker backend's PostgreSQL container, so URLs look alike."""
_OS_USER = "postgres"
_SUN_PATH_MAX = 107
"""``sizeof(sockaddr_un.sun_path) - 1`` on Linux."""
SETTINGS: tuple[tuple[str, str], ...] = (
    ("shared_buffers", "16MB"),
    ("max_connections", "200"),
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
    ("archive_mode", "off"),
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("logging_collector", "off"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "%m [%p] "),
    ("huge_pages", "off"),
)
"""``-c name=value`` for every start (see module docstring)."""
_HBA = """\
# written by lab/backends/postgres.py: the lab's own cluster, loopback or the lab's netns subnet
local   all all               trust
host    all all 127.0.0.0/8   trust
host    all all 10.0.0.0/8    trust
"""


class PostgresError(RuntimeError):
    """The lab's PostgreSQL could not be set up or did not come up (message names the log)."""


def postgres_bindir() -> Path | None:
    """Directory with ``initdb`` and ``postgres``: Debian's newest ``/usr/lib/postgresql/<v>``,
    else the ``postgres`` on ``PATH``; None when PostgreSQL is not installed."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    found = shutil.which("postgres")
    if found:
        candidates.append(Path(found).parent)
    for bindir in candidates:
        if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
            return bindir
    return None


def postgres_url(host: str, port: int = DB_PORT, database: str = PG_DB) -> str:
    """The realtime URL of the lab's PostgreSQL (``router.realtime.connect`` form)."""
    return f"postgresql://{PG_USER}:{PG_PASSWORD}@{host}:{port}/{database}"


@dataclass(frozen=True, slots=True)
class LabPostgres:
    """One lab cluster: where it lives, where it listens, how it is started."""

    run_dir: Path
    host: str
    port: int = DB_PORT
    bindir: Path | None = None
    """None: :func:`postgres_bindir`."""

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "pgsock"

    @property
    def url(self) -> str:
        return postgres_url(self.host, self.port)

    @property
    def admin_url(self) -> str:
        """The maintenance database (exists from ``initdb`` on)."""
        return postgres_url(self.host, self.port, "postgres")

    def _bin(self, name: str) -> str:
        bindir = self.bindir or postgres_bindir()
        if bindir is None:
            raise PostgresError(
                "db: PostgreSQL is not installed (Debian package postgresql: initdb, postgres)"
            )
        return str(bindir / name)

    def _run_as(self, *, die_with_parent: bool = False) -> list[str]:
        """``setpriv`` to the ``postgres`` user when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresError("db: running as root needs setpriv (util-linux) for PostgreSQL")
        # A credential change clears the parent-death signal; setpriv sets it again after it.
        death = ["--pdeathsig", "KILL"] if die_with_parent else []
        return [setpriv, f"--reuid={_OS_USER}", f"--regid={_OS_USER}", "--init-groups", *death]

    def argv(self, *, die_with_parent: bool = False) -> list[str]:
        """The foreground ``postgres`` command line (what ``lab.json`` records)."""
        socket_file = self.socket_dir / f".s.PGSQL.{self.port}"
        sockets = str(self.socket_dir) if len(str(socket_file)) <= _SUN_PATH_MAX else ""
        args = [
            *self._run_as(die_with_parent=die_with_parent),
            self._bin("postgres"),
            "-D", str(self.data_dir),
            "-h", self.host,
            "-p", str(self.port),
            "-k", sockets,
        ]  # fmt: skip
        for name, value in SETTINGS:
            args += ["-c", f"{name}={value}"]
        return args

    # -- setup ------------------------------------------------------------------------------

    def _owner(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_OS_USER)
        except KeyError:
            raise PostgresError(f"db: running as root needs the {_OS_USER!r} user") from None
        return entry.pw_uid, entry.pw_gid

    def _check_reachable(self, owner: tuple[int, int]) -> None:
        """Every parent of the cluster's folder must let the ``postgres`` user through."""
        blocking = _blocking_parent(self.run_dir, owner)
        if blocking is not None:
            mode = stat.filemode(blocking.stat().st_mode)
            raise PostgresError(
                f"db: the {_OS_USER} user cannot reach {self.data_dir}: {blocking} is mode {mode}"
            )

    def init(self, log: Path) -> None:
        """``initdb`` unless the cluster exists; (re)write ``pg_hba.conf``; remove a stale
        ``postmaster.pid`` left by a crashed (SIGKILLed) run.

        Raises:
            PostgresError: not installed, run folder unreachable, or initdb failed (its log).
        """
        owner = self._owner()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            self._check_reachable(owner)
        for folder, mode in ((self.data_dir, 0o700), (self.socket_dir, 0o755)):
            folder.mkdir(exist_ok=True)
            os.chmod(folder, mode)
            if owner is not None:
                os.chown(folder, *owner)
        if not (self.data_dir / "PG_VERSION").exists():
            argv = [
                *self._run_as(), self._bin("initdb"),
                "-D", str(self.data_dir), "-U", PG_USER, "--auth=trust",
                "--no-locale", "-E", "UTF8", "--no-instructions",
            ]  # fmt: skip
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.data_dir, check=False, timeout=120,
                )  # fmt: skip
            if done.returncode != 0:
                raise PostgresError(f"db: initdb failed ({done.returncode}){_tail(log)}")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(_HBA, encoding="utf-8")
        if owner is not None:
            os.chown(hba, *owner)
        self._drop_stale_pidfile()

    def _drop_stale_pidfile(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            stat_line = ""
        comm, _, rest = stat_line.partition(") ")
        state = rest.split()[0] if rest else "X"
        # gone, a zombie nobody reaped yet (a SIGKILLed postmaster of a detached lab), or the
        # PID reused by another program: the postmaster that wrote the file is dead
        if state in ("Z", "X", "x") or comm.partition(" (")[2] not in ("postgres", "postmaster"):
            pidfile.unlink(missing_ok=True)

    # -- readiness --------------------------------------------------------------------------

    def wait_ready(
        self,
        *,
        timeout: float,
        alive: Callable[[], bool],
        log: Path | None = None,
        ours: Callable[[], bool] | None = None,
    ) -> None:
        """Poll until a connection to the maintenance DB succeeds and, with ``ours``, the
        listening socket is the postmaster's (another lab's PostgreSQL on the same address
        accepts connections too, while this one fails to bind and exits).

        Raises:
            PostgresError: the postmaster exited, or no connection within ``timeout``.
        """
        import psycopg

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not alive():
                raise PostgresError(
                    f"db ({self.host}:{self.port}) exited while starting{_tail(log)}"
                )
            try:
                psycopg.connect(self.admin_url, connect_timeout=1).close()
                if ours is None or ours():
                    return
                last = "answered by a process that is not this lab's postmaster"
                time.sleep(0.05)
                continue
            except psycopg.Error as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            time.sleep(0.05)
        raise PostgresError(
            f"db ({self.host}:{self.port}) not ready after {timeout:g} s ({last}){_tail(log)}"
        )

    def create_database(self) -> None:
        """``CREATE DATABASE siplab`` unless it exists (provisioning then runs on it)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{PG_DB}"')


def lab_postgres(topology: Topology, run_dir: Path) -> LabPostgres:
    """The cluster of ``topology`` for ``run_dir`` (on 127.<net>.0.5:5432), in the folder
    :func:`cluster_home` picks."""
    return LabPostgres(cluster_home(Path(run_dir).resolve()), topology.db_host, DB_PORT)


OUTSIDE_ROOT = Path("/var/tmp")
_OUTSIDE_PREFIX = "siplab-pg-"


def cluster_home(run_dir: Path) -> Path:
    """Where the cluster of ``run_dir`` lives: the run folder itself, unless the lab runs as
    root and the ``postgres`` user cannot reach it (a clone in root's home, mode 0700).

    Then a folder of its own, ``/var/tmp/siplab-pg-<hash of the run folder's path>``, made
    by the lab (root, 0755): the same run folder always gets the same one, so a later
    ``lab up`` finds its cluster as it would in the run folder; ``lab.json`` records it (the
    db node's ``cwd``) and ``down`` removes it (:func:`remove_outside_cluster`).

    Raises:
        PostgresError: that folder exists but is not a directory root owns (not ours).
    """
    if os.geteuid() != 0:
        return run_dir
    try:
        entry = pwd.getpwnam(_OS_USER)
    except KeyError:
        return run_dir  # LabPostgres.init names the missing user
    if _blocking_parent(run_dir, (entry.pw_uid, entry.pw_gid)) is None:
        return run_dir
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    home = OUTSIDE_ROOT / f"{_OUTSIDE_PREFIX}{digest}"
    try:
        home.mkdir(mode=0o755, exist_ok=True)
        st = home.lstat()
    except OSError as exc:
        raise PostgresError(f"db: cannot create {home} for the cluster: {exc}") from exc
    # /var/tmp is writable by everyone: only a real directory root owns is ours to use
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise PostgresError(f"db: {home} exists and is not a directory owned by root")
    os.chmod(home, 0o755)
    return home


def remove_outside_cluster(data_dir: Path) -> bool:
    """After ``down``: remove the cluster folder :func:`cluster_home` made outside the run
    folder (``data_dir`` is the db node's recorded ``cwd``); True if it did. A cluster in the
    run folder stays, like ``realtime.db``."""
    home = Path(data_dir).parent
    if home.parent != OUTSIDE_ROOT or not home.name.startswith(_OUTSIDE_PREFIX):
        return False
    shutil.rmtree(home, ignore_errors=True)
    return True


def _blocking_parent(path: Path, owner: tuple[int, int]) -> Path | None:
    """The first folder from ``path`` up that ``owner`` (uid, gid) cannot search, or None."""
    uid, gid = owner
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue  # made later, by root, with a mode the lab chooses
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


def _tail(log: Path | None, lines: int = 15) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"; log {log} missing"
    return f"; log {log}:\n" + "\n".join("    " + line for line in text)
