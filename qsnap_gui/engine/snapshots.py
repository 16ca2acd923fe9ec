"""The band snapshot engine: snapshots built in SQL, written in keyset batches.

The whole band's snapshots are computed once (one set-based statement: per-me_file index
lookups for every batch were slower at scale), then applied to target_populations in keyset
slices of ids, one transaction per batch, so a crash loses at most the batches in flight and a
re-run continues where it stopped. A small band is staged in a temporary table and written by
the job's own session; a large one is streamed from that session, batch by batch, to writer
connections that write at once (see ``_relay``). The SQL is in ``snapshot_sql``. The session
setup, the relay and its writers, the lock watch, the final flush and the release serve the
group job (``group``, several bands in one stream) too.

Job sessions commit their batches with synchronous_commit off, so no batch waits for a disk
flush; the job then ends with one synchronous commit, which flushes them all: whatever a job
reports written survives a server crash.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import Connection, Engine, TextClause, text
from sqlalchemy.exc import DBAPIError, OperationalError

from qsnap_gui.domain.jobs import (
    DEFAULT_BATCH_SIZE,
    MAX_ATTEMPTS,
    BandResult,
    CancelFlag,
    Cancelled,
    JobState,
    Mode,
    Progress,
)
from qsnap_gui.domain.words import plural
from qsnap_gui.engine.snapshot_sql import (
    ROWS_TABLE,
    SPLIT_ROWS,
    STAGE_TABLE,
    TRAITS_TABLE,
    WRITERS,
    LogFn,
    ProgressFn,
    apply_sql,
    band_batches_sql,
    band_select_sql,
    prepare_band,
    tune_band_compute,
    write_sql,
)
from qsnap_gui.store import locks
from qsnap_gui.store.db import server_reason
from qsnap_gui.store.interrupt import backend_pid, interrupt_on, lock_waits

log = logging.getLogger(__name__)


_BAND_LOCK_HOLDER_SQL = """
    select l.pid, a.application_name from pg_locks l
    left join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objsubid = 2
      and l.classid = cast(:kind as oid) and l.objid = cast(:id as oid)
"""


def _orphan_holding(conn: Connection, band_id: int, orphans: set[int]) -> int | None:
    """The pid of a session of this job's earlier attempts that still holds the band's lock."""
    row = conn.execute(text(_BAND_LOCK_HOLDER_SQL), {"kind": locks.BAND, "id": band_id}).first()
    conn.commit()
    if (
        row is None
        or row[0] not in orphans
        or row[1] not in (f"qsnap band {band_id}", GROUP_SESSION)
    ):
        return None
    return int(row[0])


def _terminate(conn: Connection, pid: int) -> bool:
    """End a server session; False where the role may not (or it has already gone)."""
    try:
        ended = bool(conn.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar())
        conn.commit()
    except DBAPIError:
        conn.rollback()
        return False
    return ended


def _wait_for_band_lock(
    conn: Connection,
    band_id: int,
    cancel: CancelFlag,
    report: ProgressFn,
    say: LogFn,
    orphans: set[int] | None = None,
) -> None:
    """Take the band's advisory lock, waiting (cancellably) while another process holds it.

    ``orphans`` are the server sessions of this job's earlier attempts whose connections
    dropped: the server may not have noticed, and such a session keeps the band locked. It
    is ended where the role may, else waited for by name, never taken for another qsnap.
    """
    announced = ""
    while not locks.try_lock(conn, locks.BAND, band_id):
        conn.commit()
        orphan = _orphan_holding(conn, band_id, orphans) if orphans else None
        if orphan is not None and _terminate(conn, orphan):
            note = f"ending the server session an earlier attempt left behind (pid {orphan})"
        elif orphan is not None:
            note = f"waiting for an earlier attempt's server session (pid {orphan}) to end"
        else:
            note = "being snapshotted elsewhere"
        if note != announced:
            if orphan is None:
                say(f"band {band_id} is being snapshotted elsewhere; waiting for it to finish")
            else:
                say(f"band {band_id}: {note}")
            report(Progress(band_id, JobState.WAITING, message=note))
            announced = note
        if cancel.wait(0.25):
            raise Cancelled
    conn.commit()


class _Tally:
    """Rows and batches a band job has written so far; its writers report under one lock."""

    def __init__(self, band_id: int, report: ProgressFn, attempt: int, started: float) -> None:
        self._lock = threading.Lock()
        self._band_id = band_id
        self._report = report
        self._attempt = attempt
        self._started = started
        self.written = 0
        self.rows_done = 0
        self.batch = 0
        self.total = 0
        self.batches = 0

    def report_state(self, state: JobState, message: str) -> None:
        """Progress as it stands, with another state and a note (a lock wait, its end)."""
        with self._lock:
            self._report(
                Progress(
                    self._band_id,
                    state,
                    rows_done=min(self.total, self.rows_done),
                    rows_total=self.total,
                    batch=self.batch,
                    batches=self.batches,
                    elapsed=time.monotonic() - self._started,
                    attempt=self._attempt,
                    message=message,
                )
            )

    def batch_done(self, rows: int, written: int) -> None:
        with self._lock:
            self.written += written
            self.rows_done += rows
            self.batch += 1
            self._report(
                Progress(
                    self._band_id,
                    JobState.RUNNING,
                    rows_done=min(self.total, self.rows_done),
                    rows_total=self.total,
                    batch=self.batch,
                    batches=self.batches,
                    elapsed=time.monotonic() - self._started,
                    attempt=self._attempt,
                )
            )


# a statement waiting on a lock this long is named in the job's progress
LOCK_NOTICE_SECONDS = 3.0


class _LockWatch:
    """Says so in the job's progress while one of its statements waits on someone's lock.

    Without it a row lock or an ALTER TABLE elsewhere holds a job silently, for ever; with it
    the operator sees who holds the job up and can Cancel (which interrupts the wait).
    """

    def __init__(self, engine: Engine, live: list[Connection], tally: _Tally) -> None:
        self._engine = engine
        self._live = live
        self._tally = tally
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="qsnap-lock-watch", daemon=True)
        self._shown: tuple[int, int] | None = None

    def __enter__(self) -> _LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(1.0):
            pids = [pid for pid in map(backend_pid, list(self._live)) if pid]
            if not pids:
                continue
            try:
                with self._engine.connect() as conn:
                    waits = lock_waits(conn, pids, LOCK_NOTICE_SECONDS)
            except Exception:
                log.debug("lock watch failed", exc_info=True)
                continue
            self._show(waits[0] if waits else None)

    def _show(self, wait: tuple[int, int, str] | None) -> None:
        key = wait[:2] if wait else None
        if key == self._shown:
            return
        self._shown = key
        if wait is None:
            self._tally.report_state(JobState.RUNNING, "")
            return
        _pid, blocker, query = wait
        what = f": {query[:80]}" if query else ""
        self._tally.report_state(
            JobState.WAITING, f"waiting for a lock held by pid {blocker}{what}"
        )


class _StepFailed(Exception):
    def __init__(self, cause: BaseException, step: str) -> None:
        self.cause = cause
        self.step = step


# the application_name of a group job's sessions (a band job's names its band)
GROUP_SESSION = "qsnap band group"


# how often (ms) the server checks, while a job's statement runs, that qsnap is still there
CLIENT_CHECK_MS = 1000


def _job_session(conn: Connection, name: str) -> str:
    """Name the session (after its band) and relax its commits; returns the statement timeout.

    A larger GIN pending list (64 MB instead of 4 MB) lets the snapshot index take a band's
    entries in fewer, larger merges: 1 M rows written in 27 s instead of 30 s. The server
    checks every second that the client is still connected (PostgreSQL 14 and up, where the
    platform allows it): the session of a killed qsnap ends within that second, with its
    locks, instead of running its build (or waiting on a row) to the end.
    """
    timeout = conn.execute(
        text(
            "select set_config('application_name', :name, false), "
            "set_config('synchronous_commit', 'off', false), "
            "set_config('gin_pending_list_limit', '65536', false), "
            "current_setting('statement_timeout')"
        ),
        {"name": name},
    ).one()[3]
    try:
        with conn.begin_nested():
            conn.execute(
                text(
                    "select set_config(name, :ms, false) from pg_settings "
                    "where name = 'client_connection_check_interval'"
                ),
                {"ms": str(CLIENT_CHECK_MS)},
            )
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        log.debug("this server cannot check its clients' connections", exc_info=True)
    return timeout


def _writer_session(conn: Connection) -> None:
    """A writer only runs batch statements of at most a batch's rows, each found by id: it
    hashes them, never loops. Statistics that say target_populations is empty (a table
    emptied and vacuumed, then refilled by a refresh's million rows) made a nested loop look
    free that read a whole band for every row of the batch: 10 s of CPU per 500-row batch."""
    conn.execute(text("set enable_nestloop = off"))


def _run_once(
    engine: Engine,
    band_id: int,
    mode: Mode,
    batch_size: int,
    cancel: CancelFlag,
    report: ProgressFn,
    say: LogFn,
    attempt: int,
    started: float,
    writers: int,
    split_rows: int,
    orphans: set[int],
) -> tuple[int, int, int]:
    """One attempt; returns (rows written, rows total, batches).

    Every exception ends the attempt as a failure naming its step (never a dead thread), and a
    cancel interrupts the statement in flight on every connection of the job. The server pid
    of a job session whose connection dropped goes into ``orphans`` for the next attempt.
    """
    tally = _Tally(band_id, report, attempt, started)
    timeout: str | None = None
    step = "connecting"
    live: list[Connection] = []
    try:
        with engine.connect() as conn, interrupt_on(cancel, live), _LockWatch(engine, live, tally):
            live.append(conn)
            pid = backend_pid(conn)
            try:
                step = "starting the job"
                timeout = _job_session(conn, f"qsnap band {band_id}")
                _wait_for_band_lock(conn, band_id, cancel, report, say, orphans)
                report(Progress(band_id, JobState.RUNNING, attempt=attempt, message="computing"))
                computing = time.monotonic()
                step = "computing the band's snapshots"
                total, lookup = prepare_band(conn, band_id, mode)
                conn.commit()
                tally.total = total
                tally.batches = batches = -(-total // batch_size)
                if writers > 1 and total >= split_rows:
                    say(
                        f"band {band_id}: computing {plural(total, 'snapshot')}, written in "
                        f"{plural(batches, 'batch', 'batches')} by {writers} connections "
                        f"({mode} mode)"
                    )
                    write = text(write_sql(engine, mode))

                    def write_batch(writer: Connection, item: tuple[str, str]) -> None:
                        ids, snaps = item
                        params = {"ids": ids, "snaps": snaps, "band": band_id}
                        written = writer.execute(write, params).rowcount
                        writer.commit()
                        tally.batch_done(ids.count(",") + 1, written)

                    _relay(
                        engine,
                        conn,
                        f"qsnap band {band_id}",
                        text(band_batches_sql(lookup)),
                        {"n": batch_size},
                        lookup,
                        writers,
                        cancel,
                        write_batch,
                        live,
                    )
                    _flush_commits(conn, tally.written)
                    return tally.written, total, batches
                tune_band_compute(conn, lookup)
                conn.execute(text(f"create temp table {STAGE_TABLE} as {band_select_sql(lookup)}"))
                conn.execute(text(f"alter table {STAGE_TABLE} add primary key (id)"))
                conn.commit()
                step = "a batch"
                say(
                    f"band {band_id}: {total} snapshots computed in "
                    f"{time.monotonic() - computing:.2f}s; writing {plural(batches, 'batch', 'batches')} "
                    f"({mode} mode)"
                )
                apply = text(apply_sql(conn.engine, mode))
                last = 0
                for batch in range(1, batches + 1):
                    if cancel.is_set():
                        raise Cancelled
                    last, count = conn.execute(
                        apply, {"last": last, "n": batch_size, "band": band_id}
                    ).one()
                    conn.commit()
                    tally.batch_done(min(batch_size, total - (batch - 1) * batch_size), count)
                _flush_commits(conn, tally.written)
                return tally.written, total, batches
            except Cancelled:
                _flush_commits(conn, tally.written)
                raise
            finally:
                _release(conn, [band_id], BAND_TABLES)
                if pid is not None and conn.invalidated:
                    orphans.add(pid)
    except Cancelled:
        raise _CancelledAfter(tally.written) from None
    except _StepFailed as failure:
        if cancel.is_set():
            raise _CancelledAfter(tally.written) from None
        raise _FailedAfter(tally.written, failure.cause, timeout, failure.step) from failure.cause
    except Exception as exc:
        if cancel.is_set():
            raise _CancelledAfter(tally.written) from None
        raise _FailedAfter(tally.written, exc, timeout, step) from exc


def _flush_commits(conn: Connection, written: int) -> None:
    """Make every batch this job reported written durable before the job says so.

    Batches commit with synchronous_commit off; one synchronous commit (a transaction with an
    id, so that it writes a commit record) flushes the WAL of all of them, writers' included.
    """
    if not written or conn.invalidated:
        return
    conn.rollback()
    conn.execute(text("set local synchronous_commit = on"))
    conn.execute(text("select txid_current()"))
    conn.commit()


def _relay(
    engine: Engine,
    conn: Connection,
    name: str,
    batches: TextClause,
    params: dict,
    lookup: bool,
    writers: int,
    cancel: CancelFlag,
    write: Callable[[Connection, tuple], None],
    live: list[Connection],
) -> None:
    """Stream the batches that ``batches`` yields from this session to ``writers`` connections.

    A large band's writes cost more than computing its snapshots, and one connection uses one
    core: its batches (still slices of 500 ids in id order, one transaction each) are written
    by several connections at once while this session, holding the band's lock, computes them
    once. ``write`` writes and commits one batch on a writer's connection, and reports it. A
    crash leaves whole batches written and the rest NULL, as before. A writer that fails
    stops the stream; a put never waits on writers that have all ended; a set ``cancel``
    stops it too.
    """
    work: queue.Queue[tuple | None] = queue.Queue(maxsize=2 * writers)
    stop = threading.Event()
    failures: list[_StepFailed] = []
    threads = [
        threading.Thread(
            target=_write_batches,
            args=(engine, name, work, stop, cancel, failures, live, write),
            name=f"{name} writer {n + 1}",
            daemon=True,
        )
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()

    def hand_over(item: tuple | None) -> bool:
        while True:
            try:
                work.put(item, timeout=0.1)
                return True
            except queue.Full:
                if not any(t.is_alive() for t in threads):
                    return False
                if item is not None and (stop.is_set() or cancel.is_set()):
                    return False

    try:
        # a cursor is planned for its first rows unless told it will be read to the end
        conn.execute(text("set local cursor_tuple_fraction = 1"))
        tune_band_compute(conn, lookup)
        # each fetched row is a whole batch, as array literals, so that Python only passes
        # strings along: building and adapting 500-element lists cost a core of its own
        result = conn.execute(
            batches, params, execution_options={"stream_results": True, "max_row_buffer": 4}
        )
        for row in result:
            if cancel.is_set() or stop.is_set() or not hand_over(tuple(row)):
                break
        result.close()
    except Exception as exc:
        failures.insert(0, _StepFailed(exc, "computing the band's snapshots"))
        stop.set()
    finally:
        stop_writers = [hand_over(None) for _ in threads]
        for thread, told in zip(threads, stop_writers, strict=True):
            thread.join(None if told else 0)
    if cancel.is_set():
        raise Cancelled
    if failures:
        raise failures[0]
    conn.commit()


def _write_batches(
    engine: Engine,
    name: str,
    work: queue.Queue,
    stop: threading.Event,
    cancel: CancelFlag,
    failures: list[_StepFailed],
    live: list[Connection],
    write: Callable[[Connection, tuple], None],
) -> None:
    """One writer: each batch taken from ``work`` in its own transaction, until told to stop.

    It keeps taking batches after a failure or a cancel (without writing them) so that the
    session streaming them never blocks; whatever goes wrong is recorded, never raised.
    """
    conn: Connection | None = None
    try:
        try:
            # connected while the first batches are still being computed
            conn = engine.connect()
            live.append(conn)
            _job_session(conn, name)
            _writer_session(conn)
            conn.commit()
        except Exception as exc:
            failures.append(_StepFailed(exc, "connecting a writer"))
            stop.set()
            conn = None
        while (item := work.get()) is not None:
            if stop.is_set() or cancel.is_set() or conn is None:
                continue
            try:
                write(conn, item)
            except Exception as exc:
                failures.append(_StepFailed(exc, "a batch"))
                stop.set()
    except Exception as exc:
        failures.append(_StepFailed(exc, "a batch"))
        stop.set()
    finally:
        if conn is not None:
            _reset_session(conn)
            conn.close()


def _reset_session(conn: Connection) -> None:
    """Give the pooled connection back as we found it; a broken one is discarded instead."""
    if conn.invalidated:
        return
    try:
        conn.rollback()
        conn.execute(text("select set_config('application_name', 'qsnap', false)"))
        conn.execute(text("reset synchronous_commit"))
        conn.execute(text("reset gin_pending_list_limit"))
        conn.execute(text("reset enable_nestloop"))
        conn.execute(
            text(
                "select set_config(name, reset_val, false) from pg_settings "
                "where name = 'client_connection_check_interval'"
            )
        )
        conn.commit()
    except DBAPIError:
        conn.invalidate()


BAND_TABLES = f"{STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"


def _release(conn: Connection, band_ids: Iterable[int], tables: str) -> None:
    """Unlock the bands and drop the job's temp tables before the connection goes back."""
    if conn.invalidated:
        return
    try:
        conn.rollback()
        locks.unlock_each(conn, locks.BAND, list(band_ids))
        conn.execute(text(f"drop table if exists {tables}"))
        conn.commit()
    except DBAPIError:
        conn.invalidate()
        return
    _reset_session(conn)


class _CancelledAfter(Exception):
    def __init__(self, written: int) -> None:
        self.written = written


class _FailedAfter(Exception):
    def __init__(
        self, written: int, cause: BaseException, timeout: str | None = None, step: str = "a batch"
    ) -> None:
        self.written = written
        self.cause = cause
        self.timeout = timeout
        self.step = step


def snapshot_band(
    engine: Engine,
    band_id: int,
    *,
    mode: Mode | str = Mode.MISSING,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    log_line: LogFn | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = 1.0,
    writers: int = WRITERS,
    split_rows: int = SPLIT_ROWS,
    first_attempt: int = 1,
) -> BandResult:
    """Snapshot one band; never raises for database trouble, returns how it ended.

    ``first_attempt`` numbers the attempts of a band that a failed group hands over.

    A band of ``split_rows`` rows or more is written by ``writers`` connections at once.
    """
    mode = Mode(mode)
    cancel = cancel or CancelFlag()
    report = progress or (lambda p: None)
    say = log_line or log.info
    started = time.monotonic()
    written = 0
    error: str | None = None
    orphans: set[int] = set()
    for attempt in range(first_attempt, max_attempts + 1):
        try:
            count, total, batches = _run_once(
                engine,
                band_id,
                mode,
                batch_size,
                cancel,
                report,
                say,
                attempt,
                started,
                writers,
                split_rows,
                orphans,
            )
        except Cancelled:
            return _ended(band_id, JobState.CANCELLED, written, attempt, started, report)
        except _CancelledAfter as stop:
            written += stop.written
            say(f"band {band_id}: cancelled after {written} rows")
            return _ended(band_id, JobState.CANCELLED, written, attempt, started, report)
        except _FailedAfter as failure:
            written += failure.written
            error = (
                f"band {band_id}: {describe_failure(failure.cause, failure.timeout, failure.step)}"
            )
            say(f"{error} (attempt {attempt} of {max_attempts})")
            if attempt < max_attempts:
                report(
                    Progress(
                        band_id,
                        JobState.RETRYING,
                        elapsed=time.monotonic() - started,
                        attempt=attempt + 1,
                        message=error,
                    )
                )
                if cancel.wait(backoff * 2 ** (attempt - 1)):
                    return _ended(band_id, JobState.CANCELLED, written, attempt, started, report)
            continue
        written += count
        say(f"band {band_id}: wrote {written} rows in {time.monotonic() - started:.2f}s")
        result = BandResult(
            band_id,
            JobState.SUCCEEDED,
            rows_written=written,
            rows_total=total,
            batches=batches,
            attempts=attempt,
            elapsed=time.monotonic() - started,
        )
        report(
            Progress(
                band_id,
                JobState.SUCCEEDED,
                rows_done=total,
                rows_total=total,
                batch=batches,
                batches=batches,
                elapsed=result.elapsed,
                attempt=attempt,
            )
        )
        return result
    result = BandResult(
        band_id,
        JobState.FAILED,
        rows_written=written,
        attempts=max_attempts,
        elapsed=time.monotonic() - started,
        error=error,
    )
    report(
        Progress(
            band_id,
            JobState.FAILED,
            elapsed=result.elapsed,
            attempt=max_attempts,
            message=error or "",
        )
    )
    return result


def _ended(
    band_id: int, state: JobState, written: int, attempt: int, started: float, report: ProgressFn
) -> BandResult:
    elapsed = time.monotonic() - started
    report(Progress(band_id, state, elapsed=elapsed, attempt=attempt, message=str(state)))
    return BandResult(band_id, state, rows_written=written, attempts=attempt, elapsed=elapsed)


def describe_failure(
    exc: BaseException, statement_timeout: str | None = None, step: str = "a batch"
) -> str:
    """The cause in words an operator can act on.

    ``statement_timeout`` is the session's setting and ``step`` what was running, both named
    when a statement timeout stopped the job. An error that is not the database's (a full
    connection pool, a bug) is named with its step, so the job fails clearly instead of hanging.
    """
    if not isinstance(exc, DBAPIError):
        return f"{step} failed: {type(exc).__name__}: {exc}"
    reason = server_reason(exc)
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate == "57014" and "statement timeout" in reason:
        limit = f" of {statement_timeout}" if statement_timeout else ""
        return f"{step} exceeded the statement timeout{limit} ({reason})"
    if exc.connection_invalidated or sqlstate in ("57P01", "57P02", "08006", "08003"):
        return f"lost the database connection ({reason})"
    if sqlstate in ("57P03", "08001", "08004") or (
        sqlstate is None and isinstance(exc, OperationalError)
    ):
        # no session at all: the server is down, starting, or refuses us
        return f"cannot connect to the database ({reason})"
    return reason
