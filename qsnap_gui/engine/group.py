"""The group snapshot engine: the rows of several bands snapshotted in one set-based stream.

A band job pays a fixed cost (a connection, temp tables, planning, a lock) and reads the tags
of its band's traits on its own: thousands of small bands cost far more in jobs than in rows,
and the bands of one target read the same me_files' tags once per band. A group computes the
snapshots of all its bands' rows in one statement, each row from its own band's metadata,
streamed in batches of rows in id order across bands, one transaction per batch (a batch may
hold rows of several bands). Each band keeps its own advisory lock, cancel flag, progress and
result; a band locked elsewhere is run afterwards by its own band job, which waits for it.

Session setup, the writer relay, the lock watch, the final flush and the release are the band
job's (``snapshots``); the SQL (``snapshot_sql``) is the band SQL's grouped form for tags read
me_file by me_file, and a cheaper build of its own for tags read by trait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from sqlalchemy import Connection, Engine, text

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
    GROUP_ROWS_TABLE,
    GROUP_STAGE_TABLE,
    GROUP_TRAITS_TABLE,
    SPLIT_ROWS,
    WRITERS,
    LogFn,
    ProgressFn,
    apply_sql,
    group_batches_sql,
    prepare_group,
    stage_group,
    tune_group_compute,
    write_sql,
)
from qsnap_gui.engine.snapshots import (
    GROUP_SESSION,
    _flush_commits,
    _job_session,
    _LockWatch,
    _orphan_holding,
    _relay,
    _release,
    _StepFailed,
    _Tally,
    _wait_for_band_lock,
    describe_failure,
    snapshot_band,
)
from qsnap_gui.store import locks
from qsnap_gui.store.interrupt import backend_pid, interrupt_on

log = logging.getLogger(__name__)

GROUP_TABLES = f"{GROUP_STAGE_TABLE}, {GROUP_TRAITS_TABLE}, {GROUP_ROWS_TABLE}"


class _EveryFlag(CancelFlag):
    """Set once every one of the bands' flags is: the whole group is cancelled."""

    def __init__(self, flags: Iterable[CancelFlag]) -> None:
        super().__init__()
        self._flags = list(flags)

    def is_set(self) -> bool:
        return all(flag.is_set() for flag in self._flags)

    def wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            unset = next((flag for flag in self._flags if not flag.is_set()), None)
            if unset is None:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            unset.wait(min(left, 0.05))


class _Tallies(dict[int, _Tally]):
    """Each locked band's tally; a lock wait of the group's sessions holds every band up."""

    def __init__(self, flags: Mapping[int, CancelFlag]) -> None:
        super().__init__()
        self._flags = flags

    def report_state(self, state: JobState, message: str) -> None:
        for band_id, tally in list(self.items()):
            if not self._flags[band_id].is_set():
                tally.report_state(state, message)


class _Band:
    """How one band of the group stands across attempts."""

    def __init__(self) -> None:
        self.state: JobState | None = None
        self.written = 0
        self.total: int | None = None
        self.batches = 0
        self.attempts = 0
        self.error: str | None = None


class _GroupFailed(Exception):
    def __init__(self, cause: BaseException, timeout: str | None, step: str) -> None:
        self.cause = cause
        self.timeout = timeout
        self.step = step


def _take_locks(
    conn: Connection,
    band_ids: list[int],
    flags: Mapping[int, CancelFlag],
    report: ProgressFn,
    say: LogFn,
    orphans: set[int],
    bands: dict[int, _Band],
    deferred: list[int],
    taken: list[int],
) -> None:
    """Lock the bands in ascending id order without waiting, in one statement; ``taken``
    holds every band that may be locked meanwhile (all of them until the statement answers,
    so that a failure still releases them), then those locked.

    A band locked by a session an earlier attempt left behind gets that session ended and
    its lock waited for; one locked by anyone else is deferred to its own band job.
    """
    taken.extend(band_ids)
    got = set(locks.try_lock_each(conn, locks.BAND, band_ids))
    taken[:] = [b for b in band_ids if b in got]
    for band_id in band_ids:
        if band_id in got:
            continue
        if orphans and _orphan_holding(conn, band_id, orphans) is not None:
            try:
                _wait_for_band_lock(conn, band_id, flags[band_id], report, say, orphans)
            except Cancelled:
                bands[band_id].state = JobState.CANCELLED
                continue
            taken.append(band_id)
        else:
            say(f"band {band_id} is being snapshotted elsewhere; it runs after the group")
            deferred.append(band_id)
    conn.commit()


def _group_once(
    engine: Engine,
    band_ids: list[int],
    mode: Mode,
    batch_size: int,
    flags: Mapping[int, CancelFlag],
    report: ProgressFn,
    say: LogFn,
    attempt: int,
    started: float,
    writers: int,
    split_rows: int,
    orphans: set[int],
    bands: dict[int, _Band],
    deferred: list[int],
) -> list[int]:
    """One attempt over the bands not yet ended; returns the bands it ran to the end.

    Rows written are added to ``bands`` whatever happens. Every exception ends the attempt as
    a ``_GroupFailed`` naming its step, or ``Cancelled`` when every band's flag is set.
    """
    every = _EveryFlag(flags[b] for b in band_ids)
    tallies = _Tallies(flags)
    timeout: str | None = None
    step = "connecting"
    live: list[Connection] = []
    locked: list[int] = []
    try:
        with engine.connect() as conn, interrupt_on(every, live), _LockWatch(engine, live, tallies):
            live.append(conn)
            pid = backend_pid(conn)
            try:
                step = "starting the job"
                timeout = _job_session(conn, GROUP_SESSION)
                _take_locks(conn, band_ids, flags, report, say, orphans, bands, deferred, locked)
                if not locked:
                    return []
                # a first attempt's bands are running since their job started; a later
                # one's were retrying or waiting (one event per band adds up at 15,000)
                for band_id in locked if attempt > 1 else ():
                    report(
                        Progress(band_id, JobState.RUNNING, attempt=attempt, message="computing")
                    )
                step = "computing the band's snapshots"
                plan, lookup = prepare_group(conn, locked, mode, batch_size)
                conn.commit()
                for band_id in locked:
                    tallies[band_id] = _Tally(band_id, report, attempt, started)
                for rows_of in plan.values():
                    for band_id, rows in rows_of.items():
                        tallies[band_id].total += rows
                        tallies[band_id].batches += 1
                for band_id, tally in tallies.items():
                    if bands[band_id].total is None:
                        bands[band_id].total = tally.total
                        bands[band_id].batches = tally.batches
                total = sum(t.total for t in tallies.values())

                def done(batch: int, skip: list[int], written: Mapping[int, int]) -> None:
                    for band_id, rows in plan[batch].items():
                        if band_id not in skip:
                            tallies[band_id].batch_done(rows, written.get(band_id, 0))

                def skipped(batch: int) -> list[int]:
                    return [b for b in plan[batch] if flags[b].is_set()]

                if writers > 1 and total >= split_rows:
                    say(
                        f"{plural(len(locked), 'band')}: computing "
                        f"{plural(total, 'snapshot')} in one stream, written in "
                        f"{plural(len(plan), 'batch', 'batches')} by {writers} connections "
                        f"({mode} mode)"
                    )
                    write = text(write_sql(engine, mode, grouped=True))

                    def write_batch(writer: Connection, item: tuple) -> None:
                        batch, ids, snaps, row_bands = item
                        skip = skipped(batch)
                        written: dict[int, int] = {}
                        if len(skip) < len(plan[batch]):
                            params = {"ids": ids, "snaps": snaps, "bands": row_bands, "skip": skip}
                            written = dict(writer.execute(write, params).all())
                            writer.commit()
                        done(batch, skip, written)

                    tune_group_compute(conn, lookup)
                    _relay(
                        engine,
                        conn,
                        GROUP_SESSION,
                        text(group_batches_sql(lookup)),
                        {},
                        lookup,
                        writers,
                        every,
                        write_batch,
                        live,
                    )
                else:
                    computing = time.monotonic()
                    tune_group_compute(conn, lookup)
                    stage_group(conn, lookup)
                    conn.commit()
                    step = "a batch"
                    say(
                        f"{plural(len(locked), 'band')}: {plural(total, 'snapshot')} computed in "
                        f"{time.monotonic() - computing:.2f}s; writing "
                        f"{plural(len(plan), 'batch', 'batches')} ({mode} mode)"
                    )
                    apply = text(apply_sql(engine, mode, grouped=True))
                    for batch in sorted(plan):
                        if every.is_set():
                            raise Cancelled
                        skip = skipped(batch)
                        written = {}
                        if len(skip) < len(plan[batch]):
                            params = {"b": batch, "skip": skip}
                            written = dict(conn.execute(apply, params).all())
                            conn.commit()
                        done(batch, skip, written)
                _flush_commits(conn, sum(t.written for t in tallies.values()))
                return locked
            except Cancelled:
                _flush_commits(conn, sum(t.written for t in tallies.values()))
                raise
            finally:
                _release(conn, locked, GROUP_TABLES)
                if pid is not None and conn.invalidated:
                    orphans.add(pid)
    except Cancelled:
        raise
    except _StepFailed as failure:
        if every.is_set():
            raise Cancelled from None
        raise _GroupFailed(failure.cause, timeout, failure.step) from failure.cause
    except Exception as exc:
        if every.is_set():
            raise Cancelled from None
        raise _GroupFailed(exc, timeout, step) from exc
    finally:
        for band_id, tally in tallies.items():
            bands[band_id].written += tally.written


def snapshot_group(
    engine: Engine,
    band_ids: Sequence[int],
    *,
    mode: Mode | str = Mode.MISSING,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressFn | None = None,
    cancels: Mapping[int, CancelFlag] | None = None,
    log_line: LogFn | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = 1.0,
    writers: int = WRITERS,
    split_rows: int = SPLIT_ROWS,
) -> dict[int, BandResult]:
    """Snapshot several bands in one stream; never raises for database trouble, returns how
    each band ended.

    Each band has its own cancel flag (a band's rows are no longer written from the next batch
    on; the stream stops when every flag is set). Up to ``max_attempts`` attempts of the work
    left, as a band job; after the last, every band not ended has FAILED with the error.
    A group of ``split_rows`` rows or more is written by ``writers`` connections at once.
    """
    mode = Mode(mode)
    order = sorted(set(band_ids))
    given = cancels or {}
    flags = {b: given.get(b) or CancelFlag() for b in order}
    report = progress or (lambda p: None)
    say = log_line or log.info
    started = time.monotonic()
    bands = {b: _Band() for b in order}
    deferred: list[int] = []
    orphans: set[int] = set()
    error: str | None = None
    # the last attempt of a band a failing group leaves is its own band job: one band's trouble
    # (a row held for ever, a row the server refuses) then fails that band alone
    alone_from = max_attempts if max_attempts > 1 and len(order) > 1 else max_attempts + 1
    for attempt in range(1, min(max_attempts, alone_from - 1) + 1):
        todo = [b for b in order if bands[b].state is None and b not in deferred]
        for band_id in todo:
            bands[band_id].attempts = attempt
            if flags[band_id].is_set():
                bands[band_id].state = JobState.CANCELLED
        todo = [b for b in todo if bands[b].state is None]
        if not todo:
            break
        try:
            ran = _group_once(
                engine,
                todo,
                mode,
                batch_size,
                flags,
                report,
                say,
                attempt,
                started,
                writers,
                split_rows,
                orphans,
                bands,
                deferred,
            )
        except Cancelled:
            for band_id in todo:
                if bands[band_id].state is None and band_id not in deferred:
                    bands[band_id].state = JobState.CANCELLED
            break
        except _GroupFailed as failure:
            error = describe_failure(failure.cause, failure.timeout, failure.step)
            left = [b for b in todo if bands[b].state is None and b not in deferred]
            say(f"{_named(left)}: {error} (attempt {attempt} of {max_attempts})")
            for band_id in left:
                bands[band_id].error = f"band {band_id}: {error}"
            if attempt < max_attempts and attempt + 1 < alone_from:
                for band_id in left:
                    report(
                        Progress(
                            band_id,
                            JobState.RETRYING,
                            elapsed=time.monotonic() - started,
                            attempt=attempt + 1,
                            message=bands[band_id].error or "",
                        )
                    )
                _EveryFlag(flags[b] for b in left).wait(backoff * 2 ** (attempt - 1))
            continue
        for band_id in ran:
            # a band whose flag was set meanwhile: its later rows were left alone
            cancelled = flags[band_id].is_set()
            bands[band_id].state = JobState.CANCELLED if cancelled else JobState.SUCCEEDED
            if not cancelled:
                bands[band_id].error = None
        break
    alone = [b for b in order if bands[b].state is None and bands[b].error and b not in deferred]
    if alone and alone_from <= max_attempts:
        say(f"{_named(alone)}: the last attempt runs band by band")
    else:
        alone = []
    results = {
        b: _result(b, bands[b], started, report)
        for b in order
        if b not in deferred and b not in alone
    }
    if results:
        written = sum(r.rows_written for r in results.values())
        say(
            f"{plural(len(results), 'band')} snapshotted together: wrote {written} rows in "
            f"{time.monotonic() - started:.2f}s"
        )
    for band_id in alone:
        result = snapshot_band(
            engine,
            band_id,
            mode=mode,
            batch_size=batch_size,
            progress=progress,
            cancel=flags[band_id],
            log_line=log_line,
            max_attempts=max_attempts,
            backoff=backoff,
            writers=writers,
            split_rows=split_rows,
            first_attempt=alone_from,
        )
        results[band_id] = replace(
            result, rows_written=result.rows_written + bands[band_id].written
        )
    for band_id in deferred:
        results[band_id] = snapshot_band(
            engine,
            band_id,
            mode=mode,
            batch_size=batch_size,
            progress=progress,
            cancel=flags[band_id],
            log_line=log_line,
            max_attempts=max_attempts,
            backoff=backoff,
            writers=writers,
            split_rows=split_rows,
        )
    return {b: results[b] for b in order}


def _named(band_ids: list[int]) -> str:
    if len(band_ids) == 1:
        return f"band {band_ids[0]}"
    return f"{plural(len(band_ids), 'band')} ({band_ids[0]}..{band_ids[-1]})"


def _result(band_id: int, band: _Band, started: float, report: ProgressFn) -> BandResult:
    """The band's result, reported as its last progress."""
    elapsed = time.monotonic() - started
    state = band.state or JobState.FAILED
    attempts = max(band.attempts, 1)
    total = band.total or 0
    if state is JobState.SUCCEEDED:
        report(
            Progress(
                band_id,
                state,
                rows_done=total,
                rows_total=total,
                batch=band.batches,
                batches=band.batches,
                elapsed=elapsed,
                attempt=attempts,
            )
        )
    else:
        message = band.error if state is JobState.FAILED else str(state)
        report(Progress(band_id, state, elapsed=elapsed, attempt=attempts, message=message or ""))
    return BandResult(
        band_id,
        state,
        rows_written=band.written,
        rows_total=total,
        batches=band.batches,
        attempts=attempts,
        elapsed=elapsed,
        error=band.error if state is JobState.FAILED else None,
    )
