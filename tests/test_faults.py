"""Faults caused for real against PostgreSQL: a statement timeout, SIGKILL storms, two
processes and threads at once, and the server itself stopping under a running band job."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import psycopg
import pytest
from sqlalchemy import text

from qsnap_gui.cli import main
from qsnap_gui.domain.errors import TargetBusy
from qsnap_gui.engine.flows import refresh_population
from qsnap_gui.engine.snapshots import JobState, Mode, snapshot_band
from qsnap_gui.engine.targets import list_targets
from qsnap_gui.store import locks
from qsnap_gui.store.db import open_database
from qsnap_gui.tools.demo import DemoSpec, generate_demo
from tests.worlds import (
    block_band_row,
    job_waiting_on_lock,
    reference_membership,
    reference_snapshots,
    stored_snapshots,
)

# --- helpers ---------------------------------------------------------------------------------


def qsnap(*args: str) -> list[str]:
    return [sys.executable, "-m", "qsnap_gui.cli", *args]


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        threading.Event().wait(0.05)


def with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def biggest_band(engine, target_id: int | None = None) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select tp.target_band_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id "
                "where cast(:t as bigint) is null or b.target_id = :t "
                "group by 1 order by count(*) desc, 1 limit 1"
            ),
            {"t": target_id},
        ).scalar_one()


def null_band(engine, band: int) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b"
            ),
            {"b": band},
        ).rowcount


def filled_rows(engine, band: int) -> dict[int, object]:
    with engine.connect() as conn:
        return {k: v for k, v in stored_snapshots(conn, band).items() if v is not None}


def assert_nothing_half_written(engine, band: int, blocked_id: int, batch: int) -> None:
    """Only whole batches before the blocked row are written, each row exactly right."""
    with engine.connect() as conn:
        reference = reference_snapshots(conn, band)
        stored = stored_snapshots(conn, band)
    before = sorted(i for i in stored if i < blocked_id)
    filled = {i: v for i, v in stored.items() if v is not None}
    assert all(i < blocked_id for i in filled), "a row at or after the failed batch was written"
    assert len(filled) % batch == 0 and set(filled) == set(before[: len(filled)])
    assert {i: reference[i] for i in filled} == filled


def target_state(engine, target_id: int) -> dict[tuple[int, int], object]:
    """(band, me_file) -> snapshot of every population row of the target."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select tp.target_band_id, tp.me_file_id, tp.matching_tags_snapshot "
                "from target_populations tp join target_bands b on b.id = tp.target_band_id "
                "where b.target_id = :t"
            ),
            {"t": target_id},
        ).all()
    state = {(b, m): s for b, m, s in rows}
    assert len(state) == len(rows), "duplicate (band, me_file) rows"
    return state


def assert_target_correct(engine, target_id: int) -> dict[tuple[int, int], object]:
    """One row per me_file per target, in the band DOMAIN.md says, each snapshot exact."""
    state = target_state(engine, target_id)
    with engine.connect() as conn:
        doubled = conn.execute(
            text(
                "select count(*) from (select tp.me_file_id from target_populations tp "
                "join target_bands b on b.id = tp.target_band_id where b.target_id = :t "
                "group by 1 having count(*) > 1) d"
            ),
            {"t": target_id},
        ).scalar_one()
        assert doubled == 0, f"{doubled} me_files sit in two bands of target {target_id}"
        assert {m: b for b, m in state} == reference_membership(conn, target_id)
        for band in {b for b, _ in state}:
            assert stored_snapshots(conn, band) == reference_snapshots(conn, band), band
        status = conn.execute(
            text("select population_status from targets where id = :t"), {"t": target_id}
        ).scalar_one()
    assert status == "populated"
    assert None not in state.values()
    return state


def null_target(engine, target_id: int) -> None:
    """Every snapshot of the target NULL, so each one the run writes is built fresh."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id in (select id from target_bands where target_id = :t)"
            ),
            {"t": target_id},
        )


def qsnap_sessions(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and application_name like 'qsnap%' and pid <> pg_backend_pid()"
            )
        ).scalar_one()


# --- 4. a statement timeout --------------------------------------------------------------------


def test_statement_timeout_names_band_and_timeout_and_writes_only_whole_batches(db_url, capsys):
    db = open_database(db_url)
    timed = open_database(with_option(db_url, "options=-c%20statement_timeout%3D300"))
    band = biggest_band(db.engine)
    null_band(db.engine, band)
    try:
        # a batch waits on a row the test holds: the timeout cancels it, on every attempt
        with db.engine.connect() as blocker:
            blocked_id = block_band_row(blocker, band, 120)
            result = snapshot_band(timed.engine, band, batch_size=50, backoff=0.05)
            assert result.state is JobState.FAILED and result.attempts == 3
            assert result.error == (
                f"band {band}: a batch exceeded the statement timeout of 300ms "
                "(canceling statement due to statement timeout)"
            )
            assert_nothing_half_written(db.engine, band, blocked_id, 50)

            # the whole chain on the command line: exit 1, the band and the timeout named
            code = main(
                [
                    "--dsn",
                    timed.url.render_as_string(hide_password=False),
                    "snapshot",
                    "--band",
                    str(band),
                    "--batch-size",
                    "50",
                ]
            )
            out, err = capsys.readouterr()
            assert code == 1
            assert f"band {band}: failed" in out and "0 of 1 bands succeeded" in out
            assert "statement timeout of 300ms" in out
            assert (
                f"band {band}: failed: band {band}: a batch exceeded the statement timeout "
                "of 300ms" in err
            )
            assert "Traceback" not in out + err
            assert_nothing_half_written(db.engine, band, blocked_id, 50)
            blocker.rollback()

        # the staging statement itself waits (the tags table is locked) and times out
        with db.engine.connect() as blocker:
            blocker.execute(text("lock table me_file_tags in access exclusive mode"))
            result = snapshot_band(timed.engine, band, batch_size=50, backoff=0.05)
            blocker.rollback()
        assert result.state is JobState.FAILED
        assert result.error.startswith(
            f"band {band}: computing the band's snapshots exceeded the statement timeout of 300ms"
        )

        # without the obstacle the same session settings finish the band, every row exact
        result = snapshot_band(timed.engine, band, batch_size=50)
        assert result.state is JobState.SUCCEEDED
        with db.engine.connect() as conn:
            assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    finally:
        timed.dispose()
        db.dispose()


# --- 3. SIGKILL at random points, 20 times in a row ----------------------------------------------

KILL_TARGET = 2
KILL_RUNS = 20


def _perturb(engine, rng: random.Random, target_id: int) -> None:
    """Give the next run work to be killed in: drop some rows, clear some snapshots."""
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                text(
                    "select tp.id from target_populations tp join target_bands b "
                    "on b.id = tp.target_band_id where b.target_id = :t order by tp.id"
                ),
                {"t": target_id},
            ).scalars()
        )
        picked = rng.sample(ids, len(ids) // 5)
        half = len(picked) // 2
        conn.execute(
            text("delete from target_populations where id = any(:ids)"), {"ids": picked[:half]}
        )
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null where id = any(:ids)"
            ),
            {"ids": picked[half:]},
        )


def _killed_run(url: str, args: list[str], rng: random.Random) -> int:
    """Start qsnap, let it begin its work, SIGKILL it after a seeded random delay."""
    env = {**os.environ, "QSNAP_DATABASE_URL": url}
    proc = subprocess.Popen(
        qsnap("-v", *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        assert ready, "qsnap printed nothing for 60s"
        proc.stderr.readline()  # its first line: connected, working
        delay = rng.uniform(0.0, 0.25)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    return proc.returncode


def test_a_killed_qsnaps_session_ends_on_its_own_while_it_waits_on_a_row(db, db_url):
    """The server checks that a job's client is still there: the session of a SIGKILLed qsnap
    ends, with its band lock, while the row it waits on is still held (without the check it
    waited for as long as the row's holder kept it)."""
    band = biggest_band(db.engine)
    env = {**os.environ, "QSNAP_DATABASE_URL": db_url}
    with db.engine.connect() as blocker:
        row = block_band_row(blocker, band, 3)
        blocker.rollback()
        blocker.execute(
            text("update target_populations set matching_tags_snapshot = null where id = :i"),
            {"i": row},
        )
        blocker.commit()
        block_band_row(blocker, band, 3)
        proc = subprocess.Popen(
            qsnap("snapshot", "--band", str(band), "--batch-size", "2"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:

            def waiting() -> int | None:
                assert proc.poll() is None, proc.communicate()[1]
                return job_waiting_on_lock(db.engine, band)

            pid = wait_until(waiting, 120, "qsnap waiting on the row")
            proc.kill()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()

        def session_gone() -> bool:
            with db.engine.connect() as conn:
                return not conn.execute(
                    text("select 1 from pg_stat_activity where pid = :p"), {"p": pid}
                ).first()

        wait_until(session_gone, 60, "the killed qsnap's session ending")
        assert blocker.in_transaction()
        blocker.rollback()
    with db.engine.connect() as conn:
        assert locks.try_lock(conn, locks.BAND, band)
        locks.unlock(conn, locks.BAND, band)


def test_sigkill_storm_then_one_clean_run_equals_a_clean_copy(create_db, demo_template):
    killed_url = create_db("killed", template=demo_template)
    clean_url = create_db("clean", template=demo_template)
    killed, clean = open_database(killed_url), open_database(clean_url)
    try:
        null_target(killed.engine, KILL_TARGET)
        null_target(clean.engine, KILL_TARGET)
        refresh_population(clean.engine, KILL_TARGET, batch_size=5)
        expected = assert_target_correct(clean.engine, KILL_TARGET)

        rng = random.Random(8)
        outcomes = []
        stuck = 0
        for run in range(KILL_RUNS):
            _perturb(killed.engine, rng, KILL_TARGET)
            if run % 2 == 0:
                args = ["populate", str(KILL_TARGET), "--batch-size", "5"]
            else:
                args = ["snapshot", "--target", str(KILL_TARGET), "--batch-size", "5"]
            outcomes.append(_killed_run(killed_url, args, rng))
            # the killed process's server sessions end (and free their locks) on their own
            wait_until(lambda: qsnap_sessions(killed.engine) == 0, 120, "killed sessions gone")
            with killed.engine.connect() as conn:
                target = next(t for t in list_targets(conn) if t.id == KILL_TARGET)
            if target.population_status == "populating":  # a refresh killed mid-way
                stuck += 1
                assert target.stuck, "a target left populating with no job is shown as stuck"
        print(
            f"storm: {outcomes.count(-signal.SIGKILL)} of {KILL_RUNS} runs killed, "
            f"{stuck} runs ended with the target stuck"
        )
        assert set(outcomes) <= {0, -signal.SIGKILL}, outcomes
        assert outcomes.count(-signal.SIGKILL) >= KILL_RUNS // 2, outcomes
        assert stuck >= 1, "no populate was killed between its status steps"

        final = subprocess.run(
            qsnap("populate", str(KILL_TARGET)),
            capture_output=True,
            text=True,
            env={**os.environ, "QSNAP_DATABASE_URL": killed_url},
            timeout=600,
        )
        assert final.returncode == 0, final.stderr
        assert target_state(killed.engine, KILL_TARGET) == expected
        assert_target_correct(killed.engine, KILL_TARGET)
    finally:
        killed.dispose()
        clean.dispose()


# --- 5. two processes and threads on overlapping targets and bands ------------------------------


def _scramble(engine, target_ids: list[int]) -> None:
    """Memberships out of date (rows gone, rows in the wrong band) and every snapshot NULL."""
    for t in target_ids:
        null_target(engine, t)
    with engine.begin() as conn:
        for t in target_ids:
            conn.execute(
                text(
                    "delete from target_populations where id % 10 = 3 and target_band_id in "
                    "(select id from target_bands where target_id = :t)"
                ),
                {"t": t},
            )
            conn.execute(
                text(
                    "update target_populations set target_band_id = "
                    "(select min(id) from target_bands where target_id = :t) "
                    "where id % 10 = 7 and target_band_id in "
                    "(select id from target_bands where target_id = :t)"
                ),
                {"t": t},
            )


def test_two_processes_and_threads_at_once_end_and_leave_every_row_correct(fresh_db):
    db = fresh_db
    url = db.url.render_as_string(hide_password=False)
    _scramble(db.engine, [1, 2])
    band_of_1 = biggest_band(db.engine, 1)
    band_of_2 = biggest_band(db.engine, 2)
    env = {**os.environ, "QSNAP_DATABASE_URL": url}
    with db.engine.connect() as conn:
        existing = set(conn.execute(text("select pid from pg_stat_activity")).scalars())
    procs = [
        subprocess.Popen(
            qsnap(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for args in (
            ["populate", "1", "--batch-size", "5"],
            ["snapshot", "--target", "1", "--mode", "force", "--batch-size", "5"],
        )
    ]

    def both_connected() -> bool:
        with db.engine.connect() as conn:
            pids = conn.execute(
                text(
                    "select pid from pg_stat_activity where datname = current_database() "
                    "and pid <> pg_backend_pid()"
                )
            ).scalars()
            return len(set(pids) - existing) >= 2  # this test's own session is reused

    outcomes: dict[str, object] = {}

    def run(name, fn):
        try:
            outcomes[name] = fn()
        except TargetBusy as exc:
            outcomes[name] = exc
        except Exception as exc:  # reported below with its name
            outcomes[name] = exc

    work = {
        "refresh 1": lambda: refresh_population(db.engine, 1, batch_size=20, backoff=0.05),
        "refresh 2": lambda: refresh_population(db.engine, 2, batch_size=20, backoff=0.05),
        "force band of 2": lambda: snapshot_band(
            db.engine, band_of_2, mode=Mode.FORCE, batch_size=20, backoff=0.05
        ),
        "missing band of 1": lambda: snapshot_band(
            db.engine, band_of_1, batch_size=20, backoff=0.05
        ),
    }
    threads = [threading.Thread(target=run, args=item) for item in work.items()]
    wait_until(both_connected, 60, "both processes connected")  # then all start at once
    for t in threads:
        t.start()
    assert any(p.poll() is None for p in procs), "the processes ended before the threads began"
    deadline = time.monotonic() + 120
    outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread is still running: deadlock?"

    populate_1, force_1 = procs
    out, err = outputs[0]
    busy = "being refreshed by another qsnap session" in err
    assert populate_1.returncode == 0 or (populate_1.returncode == 2 and busy), err
    assert force_1.returncode == 0, outputs[1]
    refresh_1 = outcomes["refresh 1"]
    assert (populate_1.returncode == 0) or not isinstance(refresh_1, Exception)
    if isinstance(refresh_1, Exception):
        assert isinstance(refresh_1, TargetBusy), refresh_1
    else:
        assert not refresh_1.failed, refresh_1
    assert not outcomes["refresh 2"].failed, outcomes["refresh 2"]
    for name in ("force band of 2", "missing band of 1"):
        assert outcomes[name].state is JobState.SUCCEEDED, outcomes[name]
    for text_ in (out, err, *outputs[1]):
        assert "deadlock" not in text_ and "Traceback" not in text_
    assert_target_correct(db.engine, 1)
    assert_target_correct(db.engine, 2)


def advisory_waiter(engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "select pid from pg_stat_activity where datname = current_database() "
                "and wait_event_type = 'Lock' and wait_event = 'advisory'"
            )
        ).scalar()


def test_refresh_waits_for_a_running_band_job_instead_of_deadlocking(fresh_db):
    """The membership diff deletes rows a band job may hold locked mid-batch, in another order:
    it waits for the band's job lock first, so the two never lock rows against each other."""
    db = fresh_db
    band = biggest_band(db.engine, 1)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set target_band_id = :b where id % 3 = 0 "
                "and target_band_id in (select id from target_bands where target_id = 1)"
            ),
            {"b": band},
        )
    null_target(db.engine, 1)
    outcomes: dict[str, object] = {}
    with db.engine.connect() as blocker:
        block_band_row(blocker, band, 120)
        job = threading.Thread(
            target=lambda: outcomes.setdefault(
                "job", snapshot_band(db.engine, band, mode=Mode.FORCE, batch_size=50)
            )
        )
        job.start()
        wait_until(lambda: job_waiting_on_lock(db.engine, band), what="job blocked mid-band")
        refresh = threading.Thread(
            target=lambda: outcomes.setdefault(
                "refresh", refresh_population(db.engine, 1, batch_size=50, backoff=0.05)
            )
        )
        refresh.start()
        wait_until(lambda: advisory_waiter(db.engine), what="the diff waiting for the band job")
        assert job.is_alive() and refresh.is_alive()
        blocker.rollback()
    job.join(60)
    refresh.join(60)
    assert not job.is_alive() and not refresh.is_alive()
    assert outcomes["job"].state is JobState.SUCCEEDED and outcomes["job"].attempts == 1
    assert not outcomes["refresh"].failed
    assert_target_correct(db.engine, 1)


# --- 2. the server stops under a running band job, then comes back -----------------------------


@pytest.fixture(scope="module")
def own_server():
    """A PostgreSQL server of this module alone: stopping it disturbs no other test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="qsnap-stop-"), cleanup_mode="delete")
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("create database faults")
    url = server.get_uri("faults").replace("postgresql://", "postgresql+psycopg://", 1)
    seed = open_database(url, check_schema=False)
    generate_demo(seed.engine, DemoSpec(me_files=1500, seed=5, zips=100))
    seed.dispose()
    yield server, url
    server.cleanup()


def _stop(server) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def _start(server) -> None:
    """As embedded.start_server restarts it: forget the old postmaster, start a new one."""
    server._postmaster_info = None
    server.ensure_postgres_running()


def test_server_stopped_mid_job_fails_cleanly_and_retry_completes(own_server, capsys):
    server, url = own_server
    db = open_database(url)
    band = biggest_band(db.engine)
    null_band(db.engine, band)
    messages: list[str] = []
    results = []
    blocker = db.engine.connect()
    try:
        blocked_id = block_band_row(blocker, band, 120)
        worker = threading.Thread(
            target=lambda: results.append(
                snapshot_band(
                    db.engine,
                    band,
                    batch_size=50,
                    backoff=0.05,
                    progress=lambda p: messages.append(p.message) if p.message else None,
                )
            )
        )
        worker.start()
        wait_until(lambda: job_waiting_on_lock(db.engine, band), what="job blocked mid-band")
        _stop(server)
        worker.join(60)
        assert not worker.is_alive()
    finally:
        blocker.invalidate()
        blocker.close()
    try:
        result = results[0]
        assert result.state is JobState.FAILED and result.attempts == 3
        assert result.error.startswith(f"band {band}: cannot connect to the database (")
        first_failure = next(m for m in messages if m.startswith(f"band {band}: "))
        assert first_failure.startswith(f"band {band}: lost the database connection (")
        assert result.rows_written == 100

        # while it is down, the command line says so in one line
        code = main(["--dsn", url, "targets"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("qsnap: cannot connect to ")
        assert len(err.strip().splitlines()) == 1
    finally:
        _start(server)
    assert server.get_uri("faults").replace("postgresql://", "postgresql+psycopg://", 1) == url

    assert_nothing_half_written(db.engine, band, blocked_id, 50)
    retry = snapshot_band(db.engine, band, batch_size=50)
    assert retry.state is JobState.SUCCEEDED and retry.rows_written > 0
    with db.engine.connect() as conn:
        assert stored_snapshots(conn, band) == reference_snapshots(conn, band)
    db.dispose()


# --- 6. the embedded server is slow to start, or cannot start ------------------------------------


def _pgserver_start_that_gives_up(monkeypatch) -> None:
    """pg_ctl starts the server but, as after a long crash recovery, stops waiting for it."""
    import pgserver.postgres_server as pgserver_module

    real = pgserver_module.pg_ctl

    def gives_up(args, **kwargs):
        if args[-1] != "start":
            return real(args, **kwargs)
        real(["-W" if a == "-w" else a for a in args], **kwargs)
        wait_until(lambda: (kwargs["pgdata"] / "postmaster.pid").exists(), what="postmaster")
        raise subprocess.TimeoutExpired(args, 10)

    monkeypatch.setattr(pgserver_module, "pg_ctl", gives_up)


def _stop_pgdata(pgdata) -> None:
    from pgserver import PostgresServer
    from pgserver._commands import pg_ctl

    server = PostgresServer._instances.get(pgdata.resolve())
    if server is not None:
        server._cleanup()  # cleanup_mode None: only forgets this process's handle
    if (pgdata / "postmaster.pid").exists():
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user="pgserver", timeout=60)


def test_embedded_server_slower_to_start_than_pgserver_waits_is_waited_for(tmp_path, monkeypatch):
    import pgserver

    from qsnap_gui.store import embedded

    pgdata = tmp_path / "pgdata"
    _pgserver_start_that_gives_up(monkeypatch)
    try:
        server = embedded._get_server(pgserver, pgdata)
        assert server.get_postmaster_info().status == "ready"
        with psycopg.connect(server.get_uri("postgres")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        _stop_pgdata(pgdata)


def test_embedded_server_that_cannot_start_is_one_clear_error(tmp_path):
    import pgserver

    from qsnap_gui.domain.errors import ConnectionProblem
    from qsnap_gui.store import embedded

    pgdata = tmp_path / "pgdata"
    try:
        embedded._get_server(pgserver, pgdata)
    finally:
        _stop_pgdata(pgdata)
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    with pytest.raises(ConnectionProblem) as failure:
        embedded._get_server(pgserver, pgdata)
    message = str(failure.value)
    assert message.startswith(f"the embedded PostgreSQL server did not start; its log is {pgdata}")
    assert 'invalid value for parameter "shared_buffers": "plenty"' in message
