"""The embedded PostgreSQL server (pgserver) in the user's data folder, seeded with demo data."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

import platformdirs

from qsnap_gui.domain.errors import ConnectionProblem

log = logging.getLogger(__name__)

DEMO_DATABASE = "qsnap_demo"
# how long a start may take: after an unclean shutdown PostgreSQL first replays its WAL
# (12 s here for the 1.4 GB of WAL an unclean stop had left), and pgserver waits only 10 s
STARTUP_SECONDS = 600


def data_dir() -> Path:
    """Where the embedded server keeps its files; QSNAP_DATA_DIR overrides (tests, portable use)."""
    override = os.environ.get("QSNAP_DATA_DIR")
    path = (
        Path(override) if override else Path(platformdirs.user_data_dir("qsnap", appauthor=False))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def _buffers_mb() -> int:
    """A quarter of the machine's memory (the usual advice), between 512 MB and 8 GB.

    The snapshot engine reads a large band's tags in trait order, all over the table: from
    shared buffers that read took 1.7 s, through the operating system's cache 5.3 s (1.4 M
    tags of 39 M). PostgreSQL only claims the pages it uses.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 512
    return max(512, min(8192, total // 4 // 2**20))


# A local, single-user server: sized for bulk loads, and with wal_level minimal so a table
# created and filled in one transaction (the demo, the benchmark) skips the WAL.
TUNING = {
    "shared_buffers": f"{_buffers_mb()}MB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
    "max_parallel_maintenance_workers": "2",
    "jit": "off",
    "random_page_cost": "1.1",
    "effective_cache_size": f"{max(4096, 2 * _buffers_mb())}MB",
}
NEEDS_RESTART = {"shared_buffers", "wal_level", "max_wal_senders"}


def start_server(pgdata: Path):
    """Start (or reuse) a pgserver instance and apply TUNING (restarting only if it must)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
        import psycopg
        from pgserver._commands import pg_ctl

        # pgserver logs a failed start with the whole server log; we raise a short message
        logging.getLogger("pgserver").setLevel(logging.CRITICAL)
        server = _get_server(pgserver, pgdata)
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            changed = [name for name, value in TUNING.items() if _differs(conn, name, value)]
            for name in changed:
                conn.execute(f"alter system set {name} = '{TUNING[name]}'")
            if changed:
                conn.execute("select pg_reload_conf()")
        if NEEDS_RESTART & set(changed):
            pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
            server._postmaster_info = None
            server.ensure_postgres_running()
    return server


def _get_server(pgserver, pgdata: Path):
    """pgserver's handle on the server, waiting out a start longer than pgserver's 10 s."""
    try:
        return pgserver.get_server(pgdata, cleanup_mode=None)
    except subprocess.TimeoutExpired:
        # pg_ctl gave up waiting but the server goes on starting
        _forget(pgserver, pgdata)
        log.warning("the embedded server is still starting (recovering after an unclean stop?)")
        _wait_until_ready(pgdata)
        return pgserver.get_server(pgdata, cleanup_mode=None)
    except subprocess.CalledProcessError:
        _forget(pgserver, pgdata)
        raise ConnectionProblem(_failed_start(pgdata, "did not start")) from None


def _forget(pgserver, pgdata: Path) -> None:
    """Drop the handle pgserver keeps after a failed start: asked again, it would return it."""
    pgserver.PostgresServer._instances.pop(pgdata.expanduser().resolve(), None)


def _wait_until_ready(pgdata: Path, timeout: float = STARTUP_SECONDS) -> None:
    from pgserver.utils import PostmasterInfo

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, OSError):  # postmaster.pid is being written
            info = None
        if info is not None and info.is_running() and info.status == "ready":
            return
        # a postmaster that fails removes its pid file; one just launched has yet to write it
        if (info is None and time.monotonic() - started > 10) or (
            info is not None and not info.is_running()
        ):
            raise ConnectionProblem(_failed_start(pgdata, "stopped while starting"))
        time.sleep(0.25)
    raise ConnectionProblem(_failed_start(pgdata, f"was not ready after {timeout:.0f} s"))


def _failed_start(pgdata: Path, what: str) -> str:
    log_file = pgdata / "log"
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    tail = "\n".join(f"  {line}" for line in lines[-5:])
    return f"the embedded PostgreSQL server {what}; its log is {log_file}" + (
        f", ending:\n{tail}" if tail else ""
    )


def _differs(conn, name: str, value: str) -> bool:
    """Whether the server's setting is not ``value``; sizes compare in bytes ("8GB" = "8192MB")."""
    current = conn.execute(f"show {name}").fetchone()[0]
    if current == value:
        return False
    if value[-2:] in ("kB", "MB", "GB"):
        same = conn.execute(
            "select pg_size_bytes(%s) = pg_size_bytes(%s)", (current, value)
        ).fetchone()[0]
        return not same
    return True


def server_url(database: str = "postgres") -> str:
    """Start (or reuse) the embedded server and return a URL for one of its databases."""
    uri = start_server(data_dir() / "pgdata").get_uri(database)
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def create_database(name: str) -> str:
    """Create a database on the embedded server if it does not exist; return its URL."""
    import psycopg

    admin = server_url("postgres").replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'create database "{name}"')
    return server_url(name)
