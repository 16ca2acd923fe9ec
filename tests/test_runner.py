"""The one job engine: flows run by the Runner, writers that cannot die silently, cancels that
reach a statement blocked on a lock, refreshes that leave the target as DOMAIN.md says, and the
command line's Ctrl+C / SIGTERM."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading

import psycopg
import pytest
from sqlalchemy import text

from qsnap_gui.domain.errors import RefreshInterrupted
from qsnap_gui.domain.jobs import JobKind, JobState, Mode
from qsnap_gui.engine import snapshots
from qsnap_gui.engine.flows import refresh_population, snapshot_bands
from qsnap_gui.engine.runner import Runner
from qsnap_gui.engine.snapshots import snapshot_band
from tests.worlds import block_band_row, job_waiting_on_lock, reference_membership, stored_snapshots

HANG_GUARD = 120  # seconds: only there to turn a hang into a failure


def wait_until(predicate, timeout: float = HANG_GUARD, what: str = "condition"):
    done = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            value = predicate()
            if value:
                return value
            done.wait(0.05)
    finally:
        timer.cancel()
    raise AssertionError(f"{what} not reached within {timeout}s")


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


def null_band(engine, band: int) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null "
                "where target_band_id = :b"
            ),
            {"b": band},
        ).rowcount


def status_of(engine, target_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text("select population_status from targets where id = :t"), {"t": target_id}
        ).scalar()


def run_in_thread(fn):
    """Run ``fn`` on a thread; the returned join gives its result or fails on a hang."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def join():
        thread.join(HANG_GUARD)
        assert not thread.is_alive(), "the job hung"
        if "error" in box:
            raise box["error"]
        return box["result"]

    return join


def test_a_writer_that_cannot_connect_fails_the_job_clearly(fresh_db, monkeypatch):
    """Any exception in a writer thread (here a non-database one at connect) fails the job in
    bounded time, naming the step; nothing is left half-written and the coordinator is freed."""
    band = biggest_band(fresh_db.engine, 1)
    null_band(fresh_db.engine, band)
    real = snapshots._job_session

    def broken_in_writers(conn, band_id):
        if "writer" in threading.current_thread().name:
            raise RuntimeError("pool exhausted")
        return real(conn, band_id)

    monkeypatch.setattr(snapshots, "_job_session", broken_in_writers)
    join = run_in_thread(
        lambda: snapshot_band(
            fresh_db.engine, band, batch_size=10, split_rows=1, max_attempts=2, backoff=0.01
        )
    )
    result = join()
    assert result.state is JobState.FAILED
    assert result.attempts == 2
    assert "connecting a writer failed: RuntimeError: pool exhausted" in result.error
    with fresh_db.engine.connect() as conn:
        assert set(stored_snapshots(conn, band).values()) == {None}


def test_cancel_ends_a_job_whose_writers_wait_on_a_row_lock(fresh_db):
    """Cancel interrupts the statement a writer is blocked in, while the lock is still held."""
    band = biggest_band(fresh_db.engine, 1)
    null_band(fresh_db.engine, band)
    notes: list[str] = []
    runner = Runner(
        fresh_db.engine, threads=2, batch_size=10, on_event=lambda n, j: notes.append(j.note)
    )
    with fresh_db.engine.connect() as holder:
        holder_pid = holder.execute(text("select pg_backend_pid()")).scalar_one()
        block_band_row(holder, band, 25)
        job_id = runner.snapshot(band)
        wait_until(lambda: job_waiting_on_lock(fresh_db.engine, band), what="a blocked writer")
        wait_until(
            lambda: any(f"waiting for a lock held by pid {holder_pid}" in n for n in notes),
            what="the lock wait named in the job's progress",
        )
        runner.cancel(job_id)
        assert runner.wait(job_id, HANG_GUARD), "cancel did not end the blocked job"
        info = runner.job(job_id)
        assert info.state is JobState.CANCELLED
        assert job_waiting_on_lock(fresh_db.engine, band) is None
        holder.rollback()
    assert runner.shutdown(HANG_GUARD)
    written = info.result.rows_written
    with fresh_db.engine.connect() as conn:
        filled = [v for v in stored_snapshots(conn, band).values() if v is not None]
    assert len(filled) == written and written % 10 == 0


def test_a_refresh_runs_its_steps_on_one_thread_without_deadlock(fresh_db):
    """A refresh never blocks a thread waiting for its band jobs: one thread is enough."""
    events: list[tuple[str, JobKind, JobState]] = []
    runner = Runner(
        fresh_db.engine, threads=1, on_event=lambda n, j: events.append((n, j.kind, j.state))
    )
    job_id = runner.refresh(1)
    assert runner.wait(job_id, HANG_GUARD)
    info = runner.job(job_id)
    assert info.state is JobState.SUCCEEDED, info.error
    assert len(info.children) >= 2
    assert all(runner.job(c).state is JobState.SUCCEEDED for c in info.children)
    assert ("membership", JobKind.REFRESH, JobState.RUNNING) in events
    assert events[-1] == ("finished", JobKind.REFRESH, JobState.SUCCEEDED)
    assert status_of(fresh_db.engine, 1) == "populated"
    assert runner.shutdown(HANG_GUARD)


def test_a_cancelled_refresh_leaves_the_target_populating_and_resume_finishes_it(fresh_db):
    engine = fresh_db.engine
    band = biggest_band(engine, 1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "update target_populations set matching_tags_snapshot = null where "
                "target_band_id in (select id from target_bands where target_id = 1)"
            )
        )
    runner = Runner(engine, threads=4, batch_size=10)
    with engine.connect() as holder:
        block_band_row(holder, band, 15)
        job_id = runner.refresh(1)
        wait_until(lambda: job_waiting_on_lock(engine, band), what="a blocked band job")
        runner.cancel(job_id)
        assert runner.wait(job_id, HANG_GUARD)
        holder.rollback()
    info = runner.job(job_id)
    assert info.state is JobState.CANCELLED
    assert info.result.status == "populating"
    assert status_of(engine, 1) == "populating"
    assert runner.shutdown(HANG_GUARD)

    result = refresh_population(engine, 1, resume=True)
    assert result.status == "populated"
    assert result.diff is not None and (result.diff.inserted, result.diff.deleted) == (0, 0)
    with engine.connect() as conn:
        assert None not in stored_snapshots(conn, band).values()


def test_resume_after_an_interrupted_membership_ends_with_the_new_membership(fresh_db):
    """Resume runs steps 2-5: a target left populating before its diff ends right."""
    engine = fresh_db.engine
    with engine.begin() as conn:
        # the groups of the outermost band change, as if a refresh had been killed mid-diff
        conn.execute(
            text(
                "delete from target_band_trait_groups where id = (select min(bg.id) "
                "from target_band_trait_groups bg join target_bands b on b.id = bg.target_band_id "
                "where b.target_id = 1)"
            )
        )
        conn.execute(text("update targets set population_status = 'populating' where id = 1"))
    result = refresh_population(engine, 1, resume=True)
    assert result.status == "populated"
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                text(
                    "select tp.me_file_id, tp.target_band_id from target_populations tp "
                    "join target_bands b on b.id = tp.target_band_id where b.target_id = 1"
                )
            ).all()
        )
        assert stored == reference_membership(conn, 1)


def test_a_lost_target_lock_fails_the_refresh_and_leaves_it_populating(fresh_db):
    """The lock's session terminated mid-refresh (an admin, idle_session_timeout): the refresh
    must not flip the status as if it still owned the target."""
    engine = fresh_db.engine
    band = biggest_band(engine, 1)
    null_band(engine, band)
    runner = Runner(engine, threads=4, batch_size=10)
    with engine.connect() as holder:
        block_band_row(holder, band, 15)
        job_id = runner.refresh(1)
        wait_until(lambda: job_waiting_on_lock(engine, band), what="a blocked band job")
        with engine.begin() as conn:
            killed = conn.execute(
                text(
                    "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' "
                    "and classid = cast(:kind as oid) and objid = 1 and objsubid = 2"
                ),
                {"kind": 0x51534E02},
            ).all()
        assert killed == [(True,)]
        holder.rollback()
    assert runner.wait(job_id, HANG_GUARD)
    info = runner.job(job_id)
    assert info.state is JobState.FAILED
    assert "refresh lock" in info.error and "--resume" in info.error
    assert status_of(engine, 1) == "populating"
    assert runner.shutdown(HANG_GUARD)


def test_an_unknown_target_raises_its_error_from_the_blocking_flow(fresh_db):
    from qsnap_gui.domain.errors import UsageError

    with pytest.raises(UsageError, match="target 999999 does not exist"):
        refresh_population(fresh_db.engine, 999999)


def test_a_membership_error_before_commit_restores_the_status(fresh_db):
    engine = fresh_db.engine
    before = status_of(engine, 1)
    with engine.connect() as holder:
        # an ACCESS EXCLUSIVE lock makes the diff wait; a lock timeout then fails it
        holder.execute(text("lock table target_populations in access exclusive mode"))
        url = engine.url.update_query_dict({"options": "-c lock_timeout=300"})
        from qsnap_gui.store.db import make_engine

        timed = make_engine(url)
        try:
            with pytest.raises(RefreshInterrupted, match="nothing was changed"):
                refresh_population(timed, 1)
        finally:
            timed.dispose()
        holder.rollback()
    assert status_of(engine, 1) == before


def test_snapshot_bands_reports_each_band(fresh_db):
    engine = fresh_db.engine
    with engine.connect() as conn:
        bands = (
            conn.execute(text("select id from target_bands where target_id = 2")).scalars().all()
        )
    results = snapshot_bands(engine, bands, mode=Mode.FORCE)
    assert [r.band_id for r in results] == list(bands)
    assert {r.state for r in results} == {JobState.SUCCEEDED}


# --- the command line's signals -----------------------------------------------------------------


def _cli(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "qsnap_gui.cli", "--dsn", url, *args]


def _blocked_populate(engine, url: str, use_pty: bool):
    """Start `qsnap populate 1` whose biggest band blocks on a row lock; returns (proc, holder)."""
    band = biggest_band(engine, 1)
    null_band(engine, band)
    holder = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    holder.execute(
        "select 1 from target_populations where id = (select id from target_populations "
        "where target_band_id = %s order by id offset 15 limit 1) for update",
        (band,),
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = _cli(url, "populate", "1", "--batch-size", "10")
    if use_pty:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            args, stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True
        )
        os.close(secondary)
        proc.output_fd = primary
    else:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        proc.output_fd = None
    wait_until(lambda: job_waiting_on_lock(engine, band), what="the populate's band job blocked")
    return proc, holder


def _read_all(proc) -> str:
    if proc.output_fd is None:
        out, _ = proc.communicate(timeout=HANG_GUARD)
        return out.decode()
    chunks = []
    while True:
        try:
            data = os.read(proc.output_fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(HANG_GUARD)
    os.close(proc.output_fd)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(
    ("signum", "code", "use_pty"),
    [
        (signal.SIGINT, 130, False),
        (signal.SIGTERM, 143, False),
        (signal.SIGINT, 130, True),
    ],
)
def test_a_signal_stops_populate_and_says_how_to_resume(fresh_db, signum, code, use_pty):
    engine = fresh_db.engine
    url = engine.url.render_as_string(hide_password=False)
    proc, holder = _blocked_populate(engine, url, use_pty)
    try:
        proc.send_signal(signum)
        output = _read_all(proc)
    finally:
        holder.close()
    assert proc.returncode == code, output
    assert "qsnap populate 1 --resume" in output
    assert "Traceback" not in output
    assert status_of(engine, 1) == "populating"


def test_a_local_refresh_is_refused_while_the_application_refreshes_the_target(fresh_db, capsys):
    """An available/scheduled/retryable/executing PopulateTargetWorker job for the target: the
    refresh and its resume are refused naming the job (exit 2); once completed, it runs."""
    from qsnap_gui.cli import main

    engine = fresh_db.engine
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(
            text(
                "create table oban_jobs (id bigserial primary key, state text not null, "
                "queue text not null default 'default', worker text not null, "
                "args jsonb not null default '{}', errors jsonb[] not null default '{}', "
                "attempt int not null default 0, max_attempts int not null default 20, "
                "inserted_at timestamp not null default now(), "
                "scheduled_at timestamp not null default now(), attempted_at timestamp, "
                "completed_at timestamp, attempted_by text[], discarded_at timestamp, "
                "priority int not null default 0, tags text[] default '{}', "
                "meta jsonb default '{}', cancelled_at timestamp)"
            )
        )
        job_id = conn.execute(
            text(
                "insert into oban_jobs (state, queue, worker, args) values ('executing', "
                "'targets', 'Qlarius.Jobs.PopulateTargetWorker', '{\"target_id\": 1}') returning id"
            )
        ).scalar_one()
    before = status_of(engine, 1)
    for state in ("available", "scheduled", "retryable", "executing"):
        with engine.begin() as conn:
            conn.execute(text("update oban_jobs set state = :s"), {"s": state})
        assert main(["--dsn", url, "populate", "1"]) == 2
        err = capsys.readouterr().err
        assert f"Oban job {job_id} (PopulateTargetWorker) is {state}" in err
        assert status_of(engine, 1) == before
    with engine.begin() as conn:
        conn.execute(text("update oban_jobs set state = 'completed', completed_at = now()"))
    assert main(["--dsn", url, "populate", "1"]) == 0
    assert status_of(engine, 1) == "populated"


def test_a_backfill_reports_every_band_once_and_sums_them_as_they_end(fresh_db):
    """Children are added at once and their progress may be thinned out, but every band ends
    with one "finished" event carrying its outcome, and the parent's sums are its children's."""
    from qsnap_gui.engine import backfill as bf

    with fresh_db.engine.begin() as conn:
        conn.execute(text("update target_populations set matching_tags_snapshot = null"))
    with fresh_db.engine.connect() as conn:
        plans = bf.plan(bf.scan(conn, None, measure=False))
    assert len(plans) > 3
    events: list[tuple[str, object]] = []
    lock = threading.Lock()

    def record(name, info):
        with lock:
            events.append((name, info))

    runner = Runner(fresh_db.engine, threads=2, on_event=record)
    job_id = runner.backfill(plans)
    assert runner.wait(job_id, HANG_GUARD)
    parent = runner.job(job_id)
    children = [runner.job(c) for c in parent.children]
    assert [c.band_id for c in children] == [p.band_id for p in plans]
    added = [info.id for name, info in events if name == "added"]
    finished = [info for name, info in events if name == "finished" and info.parent == job_id]
    assert sorted(added) == sorted([job_id, *parent.children])
    assert sorted(info.id for info in finished) == sorted(parent.children)
    assert all(isinstance(info.result, bf.BandOutcome) for info in finished)
    assert all(info.result.band_id == info.band_id for info in finished)
    assert parent.state is JobState.SUCCEEDED
    assert (
        parent.rows_written == sum(c.rows_written for c in children) == sum(p.rows for p in plans)
    )
    assert (parent.rows_done, parent.rows_total) == (
        sum(c.rows_done for c in children),
        sum(c.rows_total for c in children),
    )
    last_parent = [info for name, info in events if info.id == job_id][-1]
    assert last_parent.rows_written == parent.rows_written


def test_a_cancel_flag_wakes_its_waiter_and_answers_at_once_when_set_before_any_wait():
    from qsnap_gui.domain.jobs import CancelFlag

    flag = CancelFlag()
    assert not flag.is_set() and flag.wait(0) is False
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(flag.wait(HANG_GUARD)))
    waiter.start()
    flag.cancel()
    waiter.join(HANG_GUARD)
    assert answers == [True] and flag.is_set()
    early = CancelFlag()
    early.cancel()
    assert early.is_set() and early.wait(HANG_GUARD) is True
