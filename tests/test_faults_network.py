"""Network faults through a proxy in front of the test PostgreSQL (tests/faultproxy.py), and the
faults of the same family that need no proxy: a lost COMMIT reply during Refresh Population,
signals and a terminated session during its membership step, a stalled connection, cuts in a
large band's streamed compute, a retry meeting its own orphaned session, a read-only database,
a statement timeout during populate, and log lines among progress lines."""

from __future__ import annotations

import io
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from qsnap_gui.cli import main, output
from qsnap_gui.domain.errors import ConnectionProblem
from qsnap_gui.domain.jobs import CancelFlag, JobState, Progress
from qsnap_gui.engine.snapshots import snapshot_band
from qsnap_gui.store.db import open_database, tcp_liveness
from qsnap_gui.tools.demo import DemoSpec, generate_demo
from tests.faultproxy import FaultProxy
from tests.worlds import (
    reference_membership,
    reference_snapshots,
    stored_snapshots,
)

HANG_GUARD = 120  # seconds: only there to turn a hang into a failure


# --- helpers -------------------------------------------------------------------------------------


def url_of(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def qsnap(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, *args]


def cli_env(tmp_path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "QSNAP_LOG_DIR": str(tmp_path / "logs"),
        **extra,
    }


def run(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"qsnap hung: {exc.stderr}") from None
    return done.returncode, done.stdout, done.stderr


def wait_until(predicate, what: str, timeout: float = HANG_GUARD):
    pause = threading.Event()
    timer = threading.Timer(timeout, pause.set)
    timer.start()
    try:
        while not pause.is_set():
            value = predicate()
            if value:
                return value
            pause.wait(0.05)
    finally:
        timer.cancel()
    raise AssertionError(f"{what} not reached within {timeout}s")


class Lines:
    """A subprocess stream read line by line on a thread, so a test can wait for a line."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = HANG_GUARD) -> str:
        expired = threading.Event()
        clock = threading.Timer(timeout, expired.set)
        clock.start()
        try:
            while not expired.is_set():
                try:
                    line = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line is None:
                    self._queue.put(None)
                    break
                self.lines.append(line)
                if needle in line:
                    return line
        finally:
            clock.cancel()
        raise AssertionError(f"no line with {needle!r}; got:\n{''.join(self.lines)}")

    def text(self) -> str:
        """Everything read, once the stream has ended."""
        self._thread.join(HANG_GUARD)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


class Qsnap:
    """``qsnap`` in a subprocess, its stdout and stderr read on threads."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once it has ended; a hang fails the test."""
        try:
            self.proc.wait(HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"qsnap hung:\n{self.err.text()}") from None
        return self.proc.returncode, self.out.text(), self.err.text()


def status_of(engine, target_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("select population_status from targets where id = :t"), {"t": target_id}
        ).scalar()


def membership(engine, target_id: int) -> dict[int, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select tp.me_file_id, tp.target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id where b.target_id = :t"
            ),
            {"t": target_id},
        ).all()
    assert len({m for m, _ in rows}) == len(rows), "a me_file sits in two bands"
    return dict(rows)


def expected_membership(engine, target_id: int) -> dict[int, int]:
    with engine.connect() as conn:
        return reference_membership(conn, target_id)


def null_snapshots(engine, target_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id "
                "where b.target_id = :t and tp.matching_tags_snapshot is null"
            ),
            {"t": target_id},
        ).scalar_one()


def stale_membership(engine, target_id: int) -> dict[int, int]:
    """Drop every fifth population of the target, so its refresh has rows to insert."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "delete from target_populations where id in (select tp.id from "
                "target_populations tp join target_bands b on b.id = tp.target_band_id "
                "where b.target_id = :t and tp.id % 5 = 0)"
            ),
            {"t": target_id},
        )
    before = membership(engine, target_id)
    assert before != expected_membership(engine, target_id)
    return before


def assert_populated_right(engine, target_id: int) -> None:
    assert status_of(engine, target_id) == "populated"
    assert membership(engine, target_id) == expected_membership(engine, target_id)
    assert null_snapshots(engine, target_id) == 0


def biggest_band(engine, target_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select tp.target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id where b.target_id = :t "
                "group by 1 order by count(*) desc, 1 limit 1"
            ),
            {"t": target_id},
        ).scalar_one()


def null_band(engine, band: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b"
            ),
            {"b": band},
        )


def assert_band_exact(engine, band: int) -> None:
    with engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)


def membership_blocked(engine) -> int | None:
    """The pid of a qsnap membership statement waiting on a lock."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select pid from pg_stat_activity where application_name = 'qsnap' "
                "and wait_event_type = 'Lock' and query ilike '%me_file_tags%'"
            )
        ).scalar()


def no_traceback(*streams: str) -> None:
    for stream in streams:
        assert "Traceback" not in stream, stream
        assert "KeyboardInterrupt" not in stream, stream
        assert "Error closing cursor" not in stream, stream


# --- 1. a lost COMMIT reply during Refresh Population ---------------------------------------------


def test_a_lost_commit_reply_leaves_the_target_populating_and_resume_finishes_it(
    fresh_db, tmp_path
):
    """The diff committed on the server but its reply never came: the target must not read
    populated over rows whose snapshots are NULL, and the message must not say nothing
    happened."""
    engine = fresh_db.engine
    url = url_of(engine)
    stale_membership(engine, 1)
    with FaultProxy(url) as proxy:
        proxy.lose_commit_reply("qsnap_membership")
        code, out, err = run(qsnap(proxy.url(url), "populate", "1"), cli_env(tmp_path))
        assert proxy.wait_fired("lose_commit_reply", timeout=0), err
    assert code == 2, out + err
    assert "the refresh may have been applied" in err
    assert "qsnap populate 1 --resume" in err
    no_traceback(out, err)
    assert status_of(engine, 1) == "populating"
    assert membership(engine, 1) == expected_membership(engine, 1), "the diff did not commit"
    assert null_snapshots(engine, 1) > 0

    code, out, err = run(qsnap(url, "populate", "1", "--resume"), cli_env(tmp_path))
    assert code == 0, out + err
    assert "target 1 is now populated" in out
    assert_populated_right(engine, 1)


# --- 2. interrupted during the membership step ----------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_membership_step_stops_it_and_changes_nothing(
    fresh_db, tmp_path, signum, code
):
    """A signal while the membership statement waits on a lock: the statement is interrupted
    (the process ends while the lock is still held), the status handling runs (no
    KeyboardInterrupt), the old status comes back, and a new refresh ends right."""
    engine = fresh_db.engine
    url = url_of(engine)
    stale_membership(engine, 1)
    status_before = status_of(engine, 1)
    holder = psycopg.connect(libpq(url))
    try:
        holder.execute("lock table me_file_tags in access exclusive mode")
        job = Qsnap(qsnap(url, "populate", "1"), cli_env(tmp_path))
        wait_until(lambda: membership_blocked(engine), "the membership blocked on the lock")
        job.signal(signum)
        job.err.wait_for(f"{signal.Signals(signum).name}: stopping")
        returncode, out, errors = job.finish()
        holder.rollback()
    finally:
        holder.close()
    assert returncode == code, out + errors
    assert "nothing was applied; run `qsnap populate 1` to refresh it" in errors
    no_traceback(out, errors)
    assert status_of(engine, 1) == status_before

    code, out, err_text = run(qsnap(url, "populate", "1"), cli_env(tmp_path))
    assert code == 0, out + err_text
    assert_populated_right(engine, 1)


def test_a_membership_session_terminated_by_the_server_restores_the_status(fresh_db, tmp_path):
    """Terminated before its COMMIT, the diff changed nothing: the old status comes back and
    the message says so; a new refresh then ends with the new membership."""
    engine = fresh_db.engine
    url = url_of(engine)
    before = stale_membership(engine, 1)
    status_before = status_of(engine, 1)
    holder = psycopg.connect(libpq(url))
    try:
        holder.execute("lock table me_file_tags in access exclusive mode")
        job = Qsnap(qsnap(url, "populate", "1"), cli_env(tmp_path))
        pid = wait_until(lambda: membership_blocked(engine), "the membership blocked on the lock")
        with engine.connect() as conn:
            assert conn.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar()
        code, out, errors = job.finish()
        holder.rollback()
    finally:
        holder.close()
    assert code == 2, out + errors
    assert "lost the database connection (terminating connection" in errors
    assert f"nothing was changed (status back to {status_before})" in errors
    no_traceback(out, errors)
    assert status_of(engine, 1) == status_before
    assert membership(engine, 1) == before

    code, out, errors = run(qsnap(url, "populate", "1"), cli_env(tmp_path))
    assert code == 0, out + errors
    assert_populated_right(engine, 1)


# --- 6 and 8. a stalled connection; a retry meeting its own orphaned session -----------------------


def test_tcp_liveness_settings_give_up_on_a_silent_peer_in_about_a_minute(monkeypatch):
    url = make_url("postgresql+psycopg://u@db.example/qlarius")
    monkeypatch.delenv("QSNAP_TCP_TIMEOUT", raising=False)
    default = tcp_liveness(url)
    assert default["keepalives"] == 1 and default["tcp_user_timeout"] == 60_000
    idle, every, count = (
        default[k] for k in ("keepalives_idle", "keepalives_interval", "keepalives_count")
    )
    assert idle + every * count == 60
    monkeypatch.setenv("QSNAP_TCP_TIMEOUT", "3")
    assert tcp_liveness(url)["tcp_user_timeout"] == 3000
    assert (
        tcp_liveness(url.update_query_dict({"keepalives_idle": "5"})).get("keepalives_idle") is None
    )
    monkeypatch.setenv("QSNAP_TCP_TIMEOUT", "soon")
    with pytest.raises(ConnectionProblem, match="QSNAP_TCP_TIMEOUT must be a whole number"):
        tcp_liveness(url)


def test_a_stalled_connection_is_given_up_and_the_retry_ends_the_band(fresh_db, tmp_path):
    """The peer stops answering mid-batch (the link goes dead, the server session lives on):
    TCP keepalives and tcp_user_timeout end the connection, the retry ends the orphaned
    session that still holds the band, and the band is written exactly."""
    engine = fresh_db.engine
    url = url_of(engine)
    band = biggest_band(engine, 1)
    null_band(engine, band)
    with FaultProxy(url, namespace=True) as proxy:
        proxy.stall("update target_populations tp")
        argv = qsnap(proxy.url(url), "-v", "snapshot", "--band", str(band), "--batch-size", "50")
        job = Qsnap(proxy.command(argv), cli_env(tmp_path, QSNAP_TCP_TIMEOUT="3"))
        assert proxy.wait_fired("stall"), "the proxy never stalled a batch"
        job.err.wait_for(f"band {band}: retrying")
        proxy.heal()
        code, out, errors = job.finish()
    assert code == 0, out + errors
    assert "lost the database connection" in errors
    assert "earlier attempt left behind (pid" in errors
    assert "being snapshotted elsewhere" not in errors
    assert "(2 attempts)" in out
    no_traceback(out, errors)
    assert_band_exact(engine, band)


def test_a_stall_in_the_membership_step_fails_clearly_and_resume_finishes(fresh_db, tmp_path):
    """The link dies while the membership runs (and stays dead): the refresh fails within the
    TCP timeout, says what state it left, and --resume then ends with the right membership."""
    engine = fresh_db.engine
    url = url_of(engine)
    stale_membership(engine, 1)
    with FaultProxy(url, namespace=True) as proxy:
        proxy.stall("qsnap_membership")
        argv = qsnap(proxy.url(url), "populate", "1")
        job = Qsnap(proxy.command(argv), cli_env(tmp_path, QSNAP_TCP_TIMEOUT="3"))
        code, out, errors = job.finish()
        assert proxy.wait_fired("stall", timeout=0), errors
    assert code == 2, out + errors
    assert "target 1: lost the database connection" in errors
    assert "the target is left populating, run `qsnap populate 1 --resume`" in errors
    no_traceback(out, errors)
    assert status_of(engine, 1) == "populating"

    code, out, errors = run(qsnap(url, "populate", "1", "--resume"), cli_env(tmp_path))
    assert code == 0, out + errors
    assert_populated_right(engine, 1)


def test_a_retry_ends_its_own_orphaned_session_instead_of_waiting_for_it(fresh_db):
    """The job's connection drops while the server session lives on, holding the band's lock:
    the next attempt ends that session (its own, by pid) instead of waiting as if another
    qsnap were snapshotting the band."""
    engine = fresh_db.engine
    url = url_of(engine)
    band = biggest_band(engine, 2)
    null_band(engine, band)
    lines: list[str] = []
    with FaultProxy(url) as proxy:
        proxied = open_database(proxy.url(url))
        proxy.orphan("qsnap_band_traits")
        box: dict[str, object] = {}
        cancel = CancelFlag()
        job = threading.Thread(
            target=lambda: box.setdefault(
                "result",
                snapshot_band(
                    proxied.engine, band, backoff=0.05, log_line=lines.append, cancel=cancel
                ),
            ),
            daemon=True,
        )
        job.start()
        job.join(HANG_GUARD)
        cancel.cancel()
        job.join(HANG_GUARD)
        proxied.dispose()
    result = box["result"]
    assert result.state is JobState.SUCCEEDED, "\n".join(lines)
    assert result.attempts == 2
    assert not any("snapshotted elsewhere" in line for line in lines)
    (ended,) = [line for line in lines if "earlier attempt left behind" in line]
    pid = int(re.search(r"pid (\d+)", ended).group(1))
    with engine.connect() as conn:
        assert not conn.execute(
            text("select 1 from pg_stat_activity where pid = :p"), {"p": pid}
        ).first()
    assert_band_exact(engine, band)


def test_a_reset_batch_is_retried_and_the_band_written_exactly(fresh_db):
    """A connection reset (RST) instead of a batch: the retry writes the band, every row once."""
    engine = fresh_db.engine
    url = url_of(engine)
    band = biggest_band(engine, 3)
    null_band(engine, band)
    with FaultProxy(url) as proxy:
        proxied = open_database(proxy.url(url))
        try:
            proxy.reset("update target_populations tp")
            result = snapshot_band(proxied.engine, band, batch_size=50, backoff=0.05)
        finally:
            proxied.dispose()
        assert proxy.wait_fired("reset", timeout=0)
    assert result.state is JobState.SUCCEEDED and result.attempts == 2, result.error
    assert_band_exact(engine, band)


# --- 7. cuts during a large band's streamed compute ------------------------------------------------

BIG = DemoSpec(me_files=8000, seed=11, zips=300, broad=True)


@pytest.fixture(scope="module")
def big_db(create_db):
    """A world whose biggest band is large enough to be streamed to writer connections."""
    database = open_database(create_db("faults_big"), check_schema=False)
    generate_demo(database.engine, BIG)
    yield database
    database.dispose()


def test_connections_dropped_during_a_streamed_compute_print_no_traceback(big_db, tmp_path):
    """A large band's stream is cut as its cursor closes (SQLAlchemy then logs "Error closing
    cursor" with a traceback), then every connection is dropped twice at random batches: the
    retries write the band exactly, and the libraries' logs reach the log file only."""
    engine = big_db.engine
    url = url_of(engine)
    band = biggest_band(engine, 1)
    null_band(engine, band)
    with FaultProxy(url) as proxy:
        proxy.cut(0, "CLOSE ")
        code, out, err = run(
            qsnap(proxy.url(url), "snapshot", "--band", str(band)), cli_env(tmp_path)
        )
        assert proxy.wait_fired("cut", timeout=0), err
    assert code == 0, out + err
    assert "(2 attempts)" in out
    no_traceback(out, err)
    assert "Error closing cursor" in (tmp_path / "logs" / "qsnap.log").read_text()
    assert_band_exact(engine, band)

    rng = random.Random(20)
    moments = [rng.randrange(1, 10) for _ in range(2)]
    with FaultProxy(url) as proxy:
        argv = qsnap(proxy.url(url), "snapshot", "--band", str(band), "--mode", "force")
        job = Qsnap(argv, cli_env(tmp_path))
        for moment in moments:
            job.err.wait_for(f"band {band}: batch {moment}/")
            proxy.cut_all()
            job.err.wait_for(f"band {band}: retrying")
        code, out, err = job.finish()
    assert code == 0, f"cuts at batches {moments}: {out}{err}"
    assert "(3 attempts)" in out
    no_traceback(out, err)
    assert_band_exact(engine, band)


# --- 9. a read-only database ----------------------------------------------------------------------


def test_a_read_only_database_is_refused_as_read_only(fresh_db, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("QSNAP_LOG_DIR", str(tmp_path))
    url = url_of(fresh_db.engine)
    with fresh_db.engine.begin() as conn:
        conn.execute(
            text(f'alter database "{fresh_db.url.database}" set default_transaction_read_only = on')
        )
    for command in (["populate", "1"], ["snapshot", "--band", "1"], ["depopulate", "1", "--yes"]):
        assert main(["--dsn", url, *command]) == 2
        err = capsys.readouterr().err
        assert "the database (or session) is read-only" in err, err
        assert "lacks" not in err and "--read-only" not in err
    database = open_database(url)
    try:
        assert database.read_only and database.server_read_only
    finally:
        database.dispose()


# --- 10. a statement timeout during populate -----------------------------------------------------


def test_populate_under_a_statement_timeout_names_the_step_and_the_setting(
    fresh_db, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("QSNAP_LOG_DIR", str(tmp_path))
    engine = fresh_db.engine
    status_before = status_of(engine, 1)
    timed = url_of(engine) + "&options=-c%20statement_timeout%3D300"
    with engine.connect() as holder:
        holder.execute(text("lock table me_file_tags in access exclusive mode"))
        code = main(["--dsn", timed, "populate", "1"])
        holder.rollback()
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "computing the membership exceeded the statement timeout of 300ms "
        "(canceling statement due to statement timeout)" in err
    ), err
    assert f"nothing was changed (status back to {status_before})" in err
    assert status_of(engine, 1) == status_before


# --- 12. log lines and progress lines --------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def screen(written: str) -> list[str]:
    """The lines a terminal shows for this output (carriage return, erase to end of line)."""
    lines = []
    for raw in written.split("\n"):
        line: list[str] = []
        cursor = 0
        for part in re.split(r"(\r|\x1b\[K)", raw):
            if part == "\r":
                cursor = 0
            elif part == "\x1b[K":
                del line[cursor:]
            else:
                line[cursor : cursor + len(part)] = part
                cursor += len(part)
        lines.append("".join(line))
    return lines


def running(band: int, done: int) -> Progress:
    return Progress(
        band, JobState.RUNNING, rows_done=done, rows_total=100, batch=done // 10, batches=10
    )


def test_a_log_line_never_lands_inside_the_progress_line_of_a_terminal(monkeypatch):
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    printer = output.ProgressPrinter(stream)
    printer(running(1, 50))
    output.say("band 2: wrote 7 rows")
    printer(running(1, 60))
    printer.done()
    assert screen(stream.getvalue()) == [
        "band 2: wrote 7 rows",
        "band 1 [######....]  60% running",
        "",
    ]


def test_a_log_names_a_few_bands_and_sums_up_many_but_never_hides_a_failure():
    stream = io.StringIO()
    printer = output.ProgressPrinter(stream)
    bands = range(1, output.ProgressPrinter.LOG_BANDS + 31)
    for band in bands:
        printer(Progress(band, JobState.RUNNING, rows_done=0, rows_total=10, batch=0, batches=1))
        printer(Progress(band, JobState.RUNNING, rows_done=10, rows_total=10, batch=1, batches=1))
    for band in bands:
        state = JobState.FAILED if band == bands[-1] else JobState.SUCCEEDED
        printer(Progress(band, state, rows_done=10, rows_total=10, message="disk full"))
    printer.done()
    lines = stream.getvalue().splitlines()
    named = {int(m.group(1)) for m in map(re.compile(r"band (\d+): ").match, lines) if m}
    assert named == {*range(1, output.ProgressPrinter.LOG_BANDS + 1), bands[-1]}
    assert "band 50: failed: disk full" in lines
    assert lines[-1] == "50 bands [##########] 100%: 50 ended, 500/500 rows"
    assert len(lines) < 2 * output.ProgressPrinter.LOG_BANDS + 10


class Interleaving(io.StringIO):
    """Every write gives the other threads a chance to write in between."""

    def write(self, s: str) -> int:
        os.sched_yield()
        return super().write(s)


def test_log_and_progress_lines_from_many_threads_stay_whole(monkeypatch):
    stream = Interleaving()
    monkeypatch.setattr(sys, "stderr", stream)
    printer = output.ProgressPrinter(stream)
    start = threading.Barrier(4)

    def progress(band: int) -> None:
        start.wait()
        for n in range(1, 101):
            printer(Progress(band, JobState.WAITING, message=f"note {n}"))

    def log(band: int) -> None:
        start.wait()
        for n in range(1, 101):
            output.say(f"band {band}: log line {n}")

    threads = [threading.Thread(target=f, args=(b,)) for f, b in ((progress, 1), (log, 2))]
    threads += [threading.Thread(target=f, args=(b,)) for f, b in ((progress, 3), (log, 4))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    lines = stream.getvalue().splitlines()
    whole = re.compile(r"band [13]: waiting: note \d+|band [24]: log line \d+")
    assert [line for line in lines if not whole.fullmatch(line)] == []
    assert len(lines) == 400
