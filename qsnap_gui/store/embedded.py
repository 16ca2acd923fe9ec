"""The embedded PostgreSQL server (pgserver) in the user's data folder, seeded with demo data.

A desktop citizen: every qsnap process that uses the server holds a lock on its own file in
``<data folder>/users`` for as long as it lives (the kernel releases it however the process
ends, SIGKILL included), and a watchdog process, started with the server, stops the server once
no user has been left for a minute (``QSNAP_SERVER_LINGER`` seconds). Starting, stopping and
registering a user happen under one lock file, so a process never connects to a server being
stopped. The server is sized modestly; ``qsnap bench`` and big demos ask for bulk sizing.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from qsnap_gui.domain.errors import ConnectionProblem, UsageError

log = logging.getLogger(__name__)

DEMO_DATABASE = "qsnap_demo"
# how long a start may take: after an unclean shutdown PostgreSQL first replays its WAL
# (12 s here for the 1.4 GB of WAL an unclean stop had left), and pgserver waits only 10 s
STARTUP_SECONDS = 600
# how long the server outlives its last user: a script of qsnap commands reuses it
LINGER_SECONDS = 60
WATCH_POLL_SECONDS = 1.0
# demos above this many me_files get the bulk sizing
BULK_ME_FILES = 100_000


def data_dir(create: bool = True) -> Path:
    """Where the embedded server keeps its files; QSNAP_DATA_DIR overrides (tests, portable use)."""
    override = os.environ.get("QSNAP_DATA_DIR")
    path = (
        Path(override) if override else Path(platformdirs.user_data_dir("qsnap", appauthor=False))
    )
    if create:
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


# A local, single-user server, with wal_level minimal so a table created and filled in one
# transaction (the demo, the benchmark) skips the WAL.
_COMMON = {
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "work_mem": "64MB",
    "max_parallel_maintenance_workers": "2",
    "jit": "off",
    "random_page_cost": "1.1",
    "effective_cache_size": "4GB",
    "min_wal_size": "80MB",
    # a WAL file no longer needed is removed, not renamed for reuse: after a bulk load the
    # folder would otherwise keep gigabytes of recycled files until they are written again
    "wal_recycle": "off",
}
# a desktop tool: small buffers, checkpoints often enough that the WAL stays near 1 GB at most
DESKTOP = {
    **_COMMON,
    "shared_buffers": "256MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "5min",
    "maintenance_work_mem": "256MB",
}
# bulk loads and timings: the bench, and demos of more than BULK_ME_FILES me_files
BULK = {
    **_COMMON,
    "shared_buffers": f"{_buffers_mb()}MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "maintenance_work_mem": "512MB",
}
NEEDS_RESTART = {"shared_buffers", "wal_level", "max_wal_senders"}


@dataclass
class Sizing:
    settings: dict[str, str]
    reason: str | None = None  # why bulk: "qsnap bench", "a demo of 200,000 me_files"


_sizing = Sizing(DESKTOP)


def use_bulk_sizing(reason: str) -> None:
    """Ask for the bulk sizing when this process starts the server (bench, big demos)."""
    _sizing.settings, _sizing.reason = BULK, reason


# --- who uses the server ---------------------------------------------------------------------

_registered: dict[Path, int] = {}  # users folder -> the descriptor holding this process's lock


def _lock(path: Path, wait: bool) -> int | None:
    """A descriptor holding an exclusive flock on ``path``; None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def _server_lock(root: Path) -> Iterator[None]:
    """Held to start, stop or register: nobody connects to a server that is being stopped."""
    fd = _lock(root / "server.lock", wait=True)
    try:
        yield
    finally:
        os.close(fd)


def _register(root: Path) -> None:
    """Mark this process as a user of the server until it exits."""
    users = root / "users"
    if users in _registered:
        return
    users.mkdir(exist_ok=True)
    # the watchdog's probe holds a file for an instant: try again rather than block, as a
    # child forked by a dead process with our pid could hold it for good
    deadline = time.monotonic() + 2
    while (fd := _lock(users / str(os.getpid()), wait=False)) is None:
        if time.monotonic() > deadline:
            log.warning("cannot register as a user of the embedded server: %s is held", users)
            return
        time.sleep(0.01)
    _registered[users] = fd


def live_users(root: Path, prune: bool = False) -> list[int]:
    """Pids of the qsnap processes using the server (their lock is held). ``prune`` removes
    the files of processes gone; only under the server lock, where nobody registers."""
    users = root / "users"
    pids = []
    for path in sorted(users.iterdir()) if users.is_dir() else []:
        if not path.name.isdigit():
            continue
        fd = _lock(path, wait=False)
        if fd is None:
            pids.append(int(path.name))
            continue
        if prune:
            path.unlink(missing_ok=True)
        os.close(fd)
    return sorted(pids)


# --- the postmaster ---------------------------------------------------------------------------


@dataclass
class Postmaster:
    pid: int
    port: int | None
    socket_dir: str | None
    started: float


def postmaster(pgdata: Path) -> Postmaster | None:
    """The running server of ``pgdata`` (from its postmaster.pid), or None."""
    import psutil

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        alive = psutil.Process(pid).name().startswith("postgres")
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    if not alive:
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    socket_dir = (lines[4].strip() or None) if len(lines) > 4 else None
    started = float(lines[2]) if len(lines) > 2 and lines[2].strip().isdigit() else 0.0
    return Postmaster(pid, port, socket_dir, started)


def _system_user() -> str | None:
    """pgserver runs PostgreSQL as "pgserver" when we are root (PostgreSQL refuses root)."""
    return "pgserver" if os.name == "posix" and os.geteuid() == 0 else None


def _pg_ctl(args: list[str], pgdata: Path, timeout: float = 120) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import pg_ctl
    pg_ctl(args, pgdata=pgdata, user=_system_user(), timeout=timeout)


def _stop_postmaster(pgdata: Path) -> None:
    """Fast shutdown: sessions are ended, a checkpoint is written, nothing is lost."""
    try:
        _pg_ctl(["-w", "-m", "fast", "stop"], pgdata)
    except subprocess.CalledProcessError:
        if postmaster(pgdata) is not None:
            raise ConnectionProblem(
                f"the embedded PostgreSQL server did not stop; its log is {pgdata / 'log'}"
            ) from None


def stop_server(force: bool = False) -> bool:
    """``qsnap server stop``: whether it was running. Refused while qsnap processes use it,
    unless ``force`` (their sessions then end)."""
    root = data_dir(create=False)
    pgdata = root / "pgdata"
    if not root.is_dir():
        return False
    with _server_lock(root):
        if postmaster(pgdata) is None:
            return False
        users = [pid for pid in live_users(root, prune=True) if pid != os.getpid()]
        if users and not force:
            raise UsageError(
                f"the embedded server is in use by qsnap process{'es' if len(users) > 1 else ''} "
                f"{', '.join(map(str, users))}: close {'them' if len(users) > 1 else 'it'} "
                "first, or stop the server anyway with --force"
            )
        _stop_postmaster(pgdata)
    return True


# --- the watchdog -----------------------------------------------------------------------------


def linger_seconds() -> float:
    """How long the server outlives its last user (QSNAP_SERVER_LINGER overrides a minute)."""
    try:
        return max(0.0, float(os.environ.get("QSNAP_SERVER_LINGER", LINGER_SECONDS)))
    except ValueError:
        return LINGER_SECONDS


def _ensure_watchdog(root: Path) -> None:
    """Start the watchdog unless one runs (it holds watchdog.lock). Under the server lock."""
    fd = _lock(root / "watchdog.lock", wait=False)
    if fd is None:
        return
    os.close(fd)
    with open(root / "watchdog.log", "ab") as err:
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qsnap_gui.store.embedded",
                "watch",
                str(root),
                str(linger_seconds()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # a Ctrl+C in the terminal of the first user spares it
        )


def watch(root: Path, linger: float) -> int:
    """The watchdog's loop: stop the server once no user has been seen for ``linger`` seconds;
    end when the server is stopped (by it, ``qsnap server stop`` or anything else)."""
    fd = _lock(root / "watchdog.lock", wait=False)
    if fd is None:
        return 0  # another watchdog runs
    pgdata = root / "pgdata"
    users = root / "users"
    busy = time.time()
    while True:
        time.sleep(WATCH_POLL_SECONDS)
        running = postmaster(pgdata) is not None
        if running and live_users(root):
            busy = time.time()
            continue
        # a registration (a new file in users/) counts as use, even by a process since gone
        last_use = max(busy, users.stat().st_mtime if users.is_dir() else 0.0)
        if running and time.time() - last_use < linger:
            continue
        with _server_lock(root):
            if postmaster(pgdata) is not None:
                if live_users(root, prune=True):
                    busy = time.time()
                    continue
                _stop_postmaster(pgdata)
                log.info("stopped the embedded server: no qsnap process used it")
            os.close(fd)  # before the server lock: a process starting the server now starts
            return 0  # a new watchdog


# --- starting it --------------------------------------------------------------------------------


def start_server(pgdata: Path):
    """Start (or reuse) the pgserver instance, as a user of it, and size it.

    The sizing changes only when no other qsnap process uses the server: a restart would end
    their sessions.
    """
    root = pgdata.parent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        # pgserver logs a failed start with the whole server log; we raise a short message
        logging.getLogger("pgserver").setLevel(logging.CRITICAL)
        with _server_lock(root):
            _register(root)
            others = [pid for pid in live_users(root, prune=True) if pid != os.getpid()]
            server = _get_server(pgserver, pgdata)
            if others:
                if _sizing.reason:
                    log.warning(
                        "the embedded server is in use by qsnap process %s, so it keeps "
                        "its present sizing for %s",
                        ", ".join(map(str, others)),
                        _sizing.reason,
                    )
            else:
                server = _apply_sizing(server)
            _ensure_watchdog(root)
    return server


def _apply_sizing(server):
    """ALTER SYSTEM to the wanted sizing; restart only for a setting that needs it."""
    import psycopg

    wanted = _sizing.settings
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        changed = [name for name, value in wanted.items() if _differs(conn, name, value)]
        for name in changed:
            conn.execute(
                psycopg.sql.SQL("alter system set {} = {}").format(
                    psycopg.sql.Identifier(name), psycopg.sql.Literal(wanted[name])
                )
            )
        if changed:
            conn.execute("select pg_reload_conf()")
    if _sizing.reason:
        log.warning(
            "the embedded server is sized for %s (shared_buffers %s, max_wal_size %s) "
            "until it stops; the next start returns it to %s and %s",
            _sizing.reason,
            wanted["shared_buffers"],
            wanted["max_wal_size"],
            DESKTOP["shared_buffers"],
            DESKTOP["max_wal_size"],
        )
    if NEEDS_RESTART & set(changed):
        _pg_ctl(["-w", "restart"], server.pgdata, timeout=STARTUP_SECONDS)
        server._postmaster_info = None
        server.ensure_postgres_running()
    return server


def _get_server(pgserver, pgdata: Path):
    """pgserver's handle on the server, waiting out a start longer than pgserver's 10 s."""
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        info = server._postmaster_info
        if info is None or not info.is_running():  # stopped since this process started it
            server._postmaster_info = None
            server.ensure_postgres_running()
        return server
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
    current = conn.execute("select current_setting(%s)", (name,)).fetchone()[0]
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


def _admin_url() -> str:
    return server_url("postgres").replace("postgresql+psycopg://", "postgresql://", 1)


def create_database(name: str) -> str:
    """Create a database on the embedded server if it does not exist; return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return server_url(name)


def drop_database(name: str) -> None:
    """Drop a database of the embedded server (a benchmark's scratch world)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


# --- qsnap server status ------------------------------------------------------------------------


@dataclass
class ServerStatus:
    data_dir: Path
    running: Postmaster | None
    users: list[int]
    watchdog: bool
    data_bytes: int
    wal_bytes: int
    settings: dict[str, str]


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):  # removed while we walk (a WAL file at a checkpoint)
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


def server_status() -> ServerStatus:
    """What runs and where, without starting anything."""
    root = data_dir(create=False)
    pgdata = root / "pgdata"
    running = postmaster(pgdata)
    watchdog = False
    if (root / "watchdog.lock").exists():
        fd = _lock(root / "watchdog.lock", wait=False)
        watchdog = fd is None
        if fd is not None:
            os.close(fd)
    return ServerStatus(
        data_dir=root,
        running=running,
        users=live_users(root) if root.is_dir() else [],
        watchdog=watchdog,
        data_bytes=_tree_bytes(root),
        wal_bytes=_tree_bytes(pgdata / "pg_wal"),
        settings=_settings(running) if running else {},
    )


def _settings(running: Postmaster) -> dict[str, str]:
    """The sizing the running server uses (empty if it does not answer in 5 s)."""
    import psycopg

    try:
        with psycopg.connect(
            dbname="postgres",
            user="postgres",
            host=running.socket_dir or "127.0.0.1",
            port=running.port or 5432,
            connect_timeout=5,
            application_name="qsnap server status",
        ) as conn:
            return {
                name: conn.execute("select current_setting(%s)", (name,)).fetchone()[0]
                for name in ("shared_buffers", "max_wal_size", "checkpoint_timeout")
            }
    except psycopg.Error:
        return {}


if __name__ == "__main__":
    # python -m qsnap_gui.store.embedded watch ROOT LINGER: the watchdog (see _ensure_watchdog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    if len(sys.argv) != 4 or sys.argv[1] != "watch":
        sys.exit("usage: python -m qsnap_gui.store.embedded watch DATA_DIR LINGER_SECONDS")
    sys.exit(watch(Path(sys.argv[2]), float(sys.argv[3])))
