"""The embedded server's life and size, driven through real ``qsnap`` processes on a data folder
of its own (QSNAP_DATA_DIR): it stops after its last user, a killed user does not keep it alive,
bulk sizing only when asked, ``qsnap server status|stop|path``, ``bench`` drops its databases."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from qsnap_gui.store.embedded import BULK, DESKTOP, postmaster

HANG_GUARD = 300  # only catches a hang: nothing here is timed

# a process that uses the embedded server until its stdin closes, as the window does
USER = """
import logging, sys
from qsnap_gui.store import embedded
logging.basicConfig(level=logging.WARNING, format="%(message)s")
if len(sys.argv) > 1:
    embedded.use_bulk_sizing(sys.argv[1])
embedded.server_url()
print("up", flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """One data folder for the module (its first start seeds the demo); left stopped.

    Not tmp_path_factory: a parallel pytest session makes its folders 0700 again, and the
    server, run as another user under root, could no longer reach its data.
    """
    root = Path(tempfile.mkdtemp(prefix="qsnap-server-"))
    yield root
    qsnap(root, "server", "stop", "--force")
    wait_until(lambda: not watchdog_running(root), "the watchdog to end")
    shutil.rmtree(root, ignore_errors=True)


def environment(root: Path, linger: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QSNAP_DATABASE_URL", "DATABASE_URL")}
    env.update(QSNAP_DATA_DIR=str(root), QSNAP_SERVER_LINGER=str(linger))
    return env


def qsnap(root: Path, *args: str, linger: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qsnap_gui.cli", *args],
        capture_output=True,
        text=True,
        env=environment(root, linger),
        timeout=HANG_GUARD,
    )


def start_user(root: Path, *args: str, linger: float = 600) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", USER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(root, linger),
    )
    assert proc.stdout.readline() == "up\n", proc.stderr.read()
    return proc


def wait_until(predicate, what: str):
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {HANG_GUARD}s"
        time.sleep(0.1)


def watchdog_running(root: Path) -> bool:
    import fcntl

    path = root / "watchdog.lock"
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def status(root: Path) -> dict:
    done = qsnap(root, "server", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stopped(root: Path) -> bool:
    return postmaster(root / "pgdata") is None and not watchdog_running(root)


def databases(root: Path) -> set[str]:
    running = postmaster(root / "pgdata")
    with psycopg.connect(
        host=running.socket_dir, port=running.port, dbname="postgres", user="postgres"
    ) as conn:
        return {name for (name,) in conn.execute("select datname from pg_database")}


def test_the_server_stops_when_the_last_qsnap_process_exits(data_dir):
    done = qsnap(data_dir, "targets", linger=0)
    assert done.returncode == 0, done.stderr
    assert (data_dir / "pgdata" / "PG_VERSION").exists()
    wait_until(lambda: stopped(data_dir), "the server to stop after its only user")


def test_status_path_and_stop(data_dir):
    assert qsnap(data_dir, "targets").returncode == 0
    # lingering for a next command: running, with no user, under its desktop sizing
    shown = status(data_dir)
    pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert shown["running"] and shown["pid"] == pid and shown["port"] == 5432
    assert shown["users"] == [] and shown["watchdog"]
    assert shown["data_dir"] == str(data_dir)
    assert shown["data_bytes"] > shown["wal_bytes"] > 0
    assert shown["settings"]["shared_buffers"] == DESKTOP["shared_buffers"] == "256MB"
    assert shown["settings"]["max_wal_size"] == DESKTOP["max_wal_size"] == "1GB"
    text = qsnap(data_dir, "server").stdout
    assert f"embedded server: running (pid {pid}, port 5432" in text
    assert f"data folder: {data_dir} (" in text and "of which WAL" in text
    assert "no qsnap process (the server stops 600 s after its last user)" in text

    path = qsnap(data_dir, "server", "path")
    assert path.returncode == 0 and path.stdout == f"{data_dir}\n"

    stop = qsnap(data_dir, "server", "stop")
    assert stop.returncode == 0 and stop.stdout == "stopped the embedded server\n"
    assert postmaster(data_dir / "pgdata") is None
    wait_until(lambda: not watchdog_running(data_dir), "the watchdog to see the server stopped")
    assert not status(data_dir)["running"]
    assert qsnap(data_dir, "server").stdout.startswith("embedded server: not running\n")
    again = qsnap(data_dir, "server", "stop")
    assert again.returncode == 0 and again.stdout == "the embedded server is not running\n"


def test_a_user_keeps_it_running_and_a_killed_user_does_not(data_dir):
    user = start_user(data_dir, linger=1)
    try:
        assert status(data_dir)["users"] == [user.pid]
        refused = qsnap(data_dir, "server", "stop")
        assert refused.returncode == 2
        assert f"in use by qsnap process {user.pid}" in refused.stderr and "--force" in (
            refused.stderr
        )
        assert postmaster(data_dir / "pgdata") is not None
        os.kill(user.pid, signal.SIGKILL)  # no exit handler runs: the kernel drops its lock
        user.wait(HANG_GUARD)
        wait_until(lambda: stopped(data_dir), "the server to stop after its user was killed")
    finally:
        if user.poll() is None:
            user.kill()
        user.communicate()


def test_bulk_sizing_only_when_asked_and_never_under_another_user(data_dir):
    bulk = start_user(data_dir, "a test")
    try:
        said = bulk.stderr.readline()
        assert said.startswith("the embedded server is sized for a test (shared_buffers")
        shown = status(data_dir)
        assert shown["settings"]["shared_buffers"] == BULK["shared_buffers"] != "256MB"
        assert shown["settings"]["max_wal_size"] == "8GB"
        # another qsnap process does not restart the server under its user
        assert qsnap(data_dir, "targets").returncode == 0
        assert status(data_dir)["pid"] == shown["pid"]
        assert status(data_dir)["settings"]["shared_buffers"] == BULK["shared_buffers"]
    finally:
        bulk.stdin.close()
        bulk.wait(HANG_GUARD)
    # alone, a command returns it to the desktop sizing
    done = qsnap(data_dir, "targets")
    assert done.returncode == 0 and "sized for" not in done.stderr
    shown = status(data_dir)
    assert shown["settings"]["shared_buffers"] == "256MB"
    assert qsnap(data_dir, "server", "stop").returncode == 0


def test_bench_and_big_demos_ask_for_bulk_sizing_other_commands_do_not(monkeypatch):
    cli = importlib.import_module("qsnap_gui.cli.main")  # the package exports main() by that name
    asked: list[str] = []
    monkeypatch.setattr(cli, "use_bulk_sizing", asked.append)
    monkeypatch.delenv("QSNAP_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    parse = cli.build_parser().parse_args
    for argv in (
        ["bench"],
        ["demo", "--me-files", "200000"],
        ["demo", "--me-files", "100000"],
        ["demo", "--me-files", "200000", "--dsn", "postgres://u@h/db"],
        ["targets"],
    ):
        cli.size_embedded_server(parse(argv))
    assert asked == ["qsnap bench", "a demo of 200,000 me_files"]
    assert parse(["server"]).action == "status" and parse(["server"]).no_database


def test_bench_drops_its_scratch_database_unless_keep(data_dir):
    kept = qsnap(data_dir, "bench", "--scale", "100", "--keep")
    assert kept.returncode == 0, kept.stderr
    assert "sized for qsnap bench" in kept.stderr and "dropped" not in kept.stderr
    assert "qsnap_bench_100" in databases(data_dir)
    dropped = qsnap(data_dir, "bench", "--scale", "100")
    assert dropped.returncode == 0, dropped.stderr
    assert "generator: reused" in dropped.stdout, "a kept world is reused"
    assert "dropped qsnap_bench_100" in dropped.stderr
    assert "qsnap_bench_100" not in databases(data_dir)
