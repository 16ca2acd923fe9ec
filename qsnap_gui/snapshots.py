"""The band snapshot engine: snapshots built in SQL, written in keyset batches.

The whole band's snapshots are computed once into a temporary table (one set-based
statement: per-me_file index lookups for every batch were slower at scale), then applied to
target_populations in id order, one transaction per batch, so a crash loses at most the batch
in flight and a re-run continues where it stopped.

Job sessions commit with synchronous_commit off: a server crash may then also forget the last
few committed batches, which only leaves those rows NULL for the next run to fill, and each
batch no longer waits for a disk flush.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from . import locks
from .codec import needs_repair_sql
from .db import server_reason

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
MAX_ATTEMPTS = 3


class Mode(StrEnum):
    MISSING = "missing"
    REPAIR = "repair"
    FORCE = "force"


class JobState(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Progress:
    """Where a band job stands; plain data so it can cross threads."""

    band_id: int
    state: JobState
    rows_done: int = 0
    rows_total: int = 0
    batch: int = 0
    batches: int = 0
    elapsed: float = 0.0
    attempt: int = 1
    message: str = ""


@dataclass(frozen=True)
class BandResult:
    band_id: int
    state: JobState
    rows_written: int = 0
    rows_total: int = 0
    batches: int = 0
    attempts: int = 1
    elapsed: float = 0.0
    error: str | None = None


class CancelFlag:
    """Set by the operator; checked between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)


class Cancelled(Exception):
    pass


def mode_predicate(mode: Mode, column: str = "tp.matching_tags_snapshot") -> str:
    if mode is Mode.MISSING:
        return f"{column} is null"
    if mode is Mode.REPAIR:
        return needs_repair_sql(column)
    return "true"


BAND_TRAITS_SQL = """
    select distinct t.id as trait_id, t.display_order as tdo,
           p.id as pid, p.trait_name as pname, p.display_order as pdo
    from target_band_trait_groups g
    join trait_group_traits gt on gt.trait_group_id = g.trait_group_id
    join traits t on t.id = gt.trait_id
    join traits p on p.id = t.parent_trait_id
    where g.target_band_id = :band
"""


def snapshot_select_sql(rows_sql: str, band_traits: str | None = None) -> str:
    """SELECT (id, snap) for the population rows that ``rows_sql`` yields as (id, me_file_id).

    Shared by the engine, the single-row re-snapshot and the backfill scan, so all follow
    DOMAIN.md identically. ``band_traits`` names a table already holding BAND_TRAITS_SQL's
    rows (the engine's analysed temp table, which gives the planner true row counts).
    The JSON is assembled as text and cast once: half the cost of nested jsonb_agg calls.
    """
    traits = band_traits or f"({BAND_TRAITS_SQL})"
    return f"""
    with rows as ({rows_sql}),
    kids as (
        select r.id, bt.pid, bt.pdo,
               '[' || bt.pid || ',' || coalesce(to_json(bt.pname)::text, 'null') || ','
               || coalesce(bt.pdo::text, 'null') || ',['
               || string_agg('[' || bt.trait_id || ','
                             || coalesce(to_json(mt.tag_value)::text, 'null') || ','
                             || coalesce(bt.tdo::text, 'null') || ']', ','
                             order by bt.tdo nulls last, bt.trait_id, mt.id)
               || ']]' as entry
        from rows r
        join me_file_tags mt on mt.me_file_id = r.me_file_id
        join {traits} bt on bt.trait_id = mt.trait_id
        group by r.id, bt.pid, bt.pname, bt.pdo
    )
    select r.id,
           cast('{{"tags":[' || coalesce(string_agg(k.entry, ',' order by k.pdo nulls last, k.pid), '')
                || ']}}' as jsonb) as snap
    from rows r left join kids k on k.id = r.id
    group by r.id
    """


STAGE_TABLE = "qsnap_band_snapshots"
TRAITS_TABLE = "qsnap_band_traits"
ROWS_TABLE = "qsnap_band_rows"

APPLY_SQL = f"""
    with b as (
        select id, snap from {STAGE_TABLE} where id > :last order by id limit :n
    ), u as (
        update target_populations tp
        set matching_tags_snapshot = b.snap,
            updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC')
        from b
        where tp.id = b.id and tp.target_band_id = :band and {{guard}}
        returning 1
    )
    select (select max(id) from b), (select count(*) from u)
"""


def stage_band(conn: Connection, band_id: int, mode: Mode) -> int:
    """Compute the band's snapshots into a temporary table; return how many rows it holds."""
    conn.execute(text(f"drop table if exists {STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"))
    # the band's traits and rows are analysed on their own so the planner knows their true
    # sizes, also right after Refresh Population inserted rows the statistics do not know yet
    conn.execute(text(f"create temp table {TRAITS_TABLE} as {BAND_TRAITS_SQL}"), {"band": band_id})
    conn.execute(
        text(
            f"create temp table {ROWS_TABLE} as select tp.id, tp.me_file_id "
            f"from target_populations tp where tp.target_band_id = :band and {mode_predicate(mode)}"
        ),
        {"band": band_id},
    )
    conn.execute(text(f"analyze {TRAITS_TABLE}, {ROWS_TABLE}"))
    rows_sql = f"select id, me_file_id from {ROWS_TABLE}"
    conn.execute(
        text(f"create temp table {STAGE_TABLE} as {snapshot_select_sql(rows_sql, TRAITS_TABLE)}")
    )
    conn.execute(text(f"alter table {STAGE_TABLE} add primary key (id)"))
    total = conn.execute(text(f"select count(*) from {STAGE_TABLE}")).scalar_one()
    conn.commit()
    return total


ProgressFn = Callable[[Progress], None]
LogFn = Callable[[str], None]


def _wait_for_band_lock(
    conn: Connection, band_id: int, cancel: CancelFlag, report: ProgressFn, say: LogFn
) -> None:
    """Take the band's advisory lock, waiting (cancellably) while another process holds it."""
    announced = False
    while not locks.try_lock(conn, locks.BAND, band_id):
        conn.commit()
        if not announced:
            say(f"band {band_id} is being snapshotted elsewhere; waiting for it to finish")
            report(Progress(band_id, JobState.WAITING, message="being snapshotted elsewhere"))
            announced = True
        if cancel.wait(0.25):
            raise Cancelled
    conn.commit()


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
) -> tuple[int, int, int]:
    """One attempt; returns (rows written, rows total, batches)."""
    written = 0
    timeout: str | None = None
    step = "starting the job"
    try:
        with engine.connect() as conn:
            try:
                timeout = conn.execute(
                    text(
                        "select set_config('application_name', :name, false), "
                        "set_config('synchronous_commit', 'off', false), "
                        "current_setting('statement_timeout')"
                    ),
                    {"name": f"qsnap band {band_id}"},
                ).one()[2]
                _wait_for_band_lock(conn, band_id, cancel, report, say)
                report(Progress(band_id, JobState.RUNNING, attempt=attempt, message="computing"))
                computing = time.monotonic()
                step = "computing the band's snapshots"
                total = stage_band(conn, band_id, mode)
                step = "a batch"
                batches = -(-total // batch_size)
                say(
                    f"band {band_id}: {total} snapshots computed in "
                    f"{time.monotonic() - computing:.2f}s; writing {batches} batches ({mode} mode)"
                )
                apply = text(APPLY_SQL.format(guard=mode_predicate(mode)))
                last = 0
                for batch in range(1, batches + 1):
                    if cancel.is_set():
                        raise Cancelled
                    last, count = conn.execute(
                        apply, {"last": last, "n": batch_size, "band": band_id}
                    ).one()
                    conn.commit()
                    written += count
                    report(
                        Progress(
                            band_id,
                            JobState.RUNNING,
                            rows_done=min(total, batch * batch_size),
                            rows_total=total,
                            batch=batch,
                            batches=batches,
                            elapsed=time.monotonic() - started,
                            attempt=attempt,
                        )
                    )
                return written, total, batches
            finally:
                _release(conn, band_id)
    except Cancelled:
        raise _CancelledAfter(written) from None
    except DBAPIError as exc:
        raise _FailedAfter(written, exc, timeout, step) from exc


def _release(conn: Connection, band_id: int) -> None:
    """Leave the pooled connection as we found it; a broken one is discarded instead."""
    if conn.invalidated:
        return
    try:
        conn.rollback()
        locks.unlock(conn, locks.BAND, band_id)
        conn.execute(text(f"drop table if exists {STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"))
        conn.execute(text("select set_config('application_name', 'qsnap', false)"))
        conn.execute(text("select set_config('synchronous_commit', 'on', false)"))
        conn.commit()
    except DBAPIError:
        conn.invalidate()


class _CancelledAfter(Exception):
    def __init__(self, written: int) -> None:
        self.written = written


class _FailedAfter(Exception):
    def __init__(
        self, written: int, cause: DBAPIError, timeout: str | None = None, step: str = "a batch"
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
) -> BandResult:
    """Snapshot one band; never raises for database trouble, returns how it ended."""
    mode = Mode(mode)
    cancel = cancel or CancelFlag()
    report = progress or (lambda p: None)
    say = log_line or log.info
    started = time.monotonic()
    written = 0
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            count, total, batches = _run_once(
                engine, band_id, mode, batch_size, cancel, report, say, attempt, started
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
    exc: DBAPIError, statement_timeout: str | None = None, step: str = "a batch"
) -> str:
    """The cause in words an operator can act on.

    ``statement_timeout`` is the session's setting and ``step`` what was running, both named
    when a statement timeout stopped the job.
    """
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


def snapshot_bands(
    engine: Engine,
    band_ids: Iterable[int],
    *,
    workers: int | None = None,
    **options,
) -> list[BandResult]:
    """Snapshot several bands in parallel threads, one job (and connection) per band."""
    band_ids = list(band_ids)
    if not band_ids:
        return []
    with ThreadPoolExecutor(max_workers=workers or len(band_ids)) as pool:
        futures = [pool.submit(snapshot_band, engine, band_id, **options) for band_id in band_ids]
        return [f.result() for f in futures]
