"""The band snapshot engine: snapshots built in SQL, written in keyset batches.

The whole band's snapshots are computed once (one set-based statement: per-me_file index
lookups for every batch were slower at scale), then applied to target_populations in keyset
slices of ids, one transaction per batch, so a crash loses at most the batches in flight and a
re-run continues where it stopped. A small band is staged in a temporary table and written by
the job's own session; a large one is streamed from that session, batch by batch, to writer
connections that write at once (see ``_relay``).

Job sessions commit with synchronous_commit off: a server crash may then also forget the last
few committed batches, which only leaves those rows NULL for the next run to fill, and each
batch no longer waits for a disk flush.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from qsnap_gui.domain.codec import broken_sql, good_sql, same_sql
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
from qsnap_gui.store import locks
from qsnap_gui.store.db import server_reason
from qsnap_gui.store.interrupt import backend_pid, interrupt_on, lock_waits
from qsnap_gui.store.queries import carrier_tables

log = logging.getLogger(__name__)


def mode_predicate(
    mode: Mode, column: str = "tp.matching_tags_snapshot", me_file: str = "tp.me_file_id"
) -> str:
    """The rows a mode writes: NULL; NULL and broken; every row."""
    if mode is Mode.MISSING:
        return f"{column} is null"
    if mode is Mode.REPAIR:
        return f"({column} is null or {broken_sql(column, me_file)})"
    return "true"


def write_guard(mode: Mode, new: str) -> str:
    """The mode's rows, checked again as each batch writes; force mode also leaves alone a
    row whose stored snapshot equals the new one up to ties (its updated_at does not move)."""
    if mode is Mode.FORCE:
        return f"not ({same_sql('tp.matching_tags_snapshot', new)})"
    return mode_predicate(mode)


BAND_TRAITS_SQL = """
    select distinct t.id as trait_id, t.display_order as tdo,
           p.id as pid, p.trait_name as pname, p.display_order as pdo
    from target_band_trait_groups g
    join trait_groups tg on tg.id = g.trait_group_id
    join trait_group_traits gt on gt.trait_group_id = tg.id
    join traits t on t.id = gt.trait_id
    join traits p on p.id = t.parent_trait_id
    where g.target_band_id = :band
"""


def snapshot_select_sql(
    rows_sql: str,
    band_traits: str | None = None,
    *,
    lookup: bool = False,
    as_text: bool = False,
    batched: bool = False,
) -> str:
    """SELECT (id, snap) for the population rows that ``rows_sql`` yields as (id, me_file_id).

    Shared by the engine, the single-row re-snapshot and the backfill scan, so all follow
    DOMAIN.md identically. ``band_traits`` names a table already holding BAND_TRAITS_SQL's
    rows (the engine's analysed temp table, which gives the planner true row counts); the
    band's tags are then also fetched by an index condition on those trait ids, not by a
    merge over the trait_id index, which also reads the tags of every trait in between.
    ``lookup`` reads each row's tags through the me_file_id index instead of leaving the
    choice to the planner, which scans every tag of the database even for a band of a few
    thousand rows (28 s instead of 4 s for 58,000 rows among 39 M tags).
    The JSON is assembled as text and cast once: half the cost of nested jsonb_agg calls;
    ``as_text`` leaves that cast to whoever writes it. ``batched`` rows also carry a batch
    number ``b`` (yielded as (b, id, snap)): the rows are then sorted once, by batch and id,
    and every grouping after that sort streams.
    """
    traits = band_traits or f"({BAND_TRAITS_SQL})"
    key = "r.b, r.id" if batched else "r.id"
    tags = f"me_file_tags mt join {traits} bt on bt.trait_id = mt.trait_id"
    if band_traits and not lookup:
        tags += f" and mt.trait_id = any(array(select trait_id from {band_traits}))"
    on = "mt.me_file_id = r.me_file_id"
    looked_up = ""
    if lookup:
        # OFFSET 0 keeps each lookup a separate index scan; MATERIALIZED keeps the traits'
        # hash join out of the loop (else the hash is rebuilt for every row)
        tags = f"tags mt join {traits} bt on bt.trait_id = mt.trait_id"
        on = "mt.rid = r.id"
        looked_up = """
    tags as materialized (
        select r.id as rid, mt.id, mt.trait_id, mt.tag_value
        from rows r cross join lateral (
            select t.id, t.trait_id, t.tag_value from me_file_tags t
            where t.me_file_id = r.me_file_id offset 0) mt
    ),"""
    cast, as_jsonb = ("", "") if as_text else ("cast", " as jsonb")
    # a row without tags joins to NULLs: its one parent entry is NULL, which string_agg skips
    return f"""
    with rows as ({rows_sql}),{looked_up}
    kids as (
        select {key}, bt.pdo, bt.pid,
               '[' || bt.pid || ',' || coalesce(to_json(bt.pname)::text, 'null') || ','
               || coalesce(bt.pdo::text, 'null') || ',['
               || string_agg('[' || bt.trait_id || ','
                             || coalesce(to_json(mt.tag_value)::text, 'null') || ','
                             || coalesce(bt.tdo::text, 'null') || ']', ','
                             order by bt.tdo nulls last, bt.trait_id, mt.id)
               || ']]' as entry
        from rows r left join ({tags}) on {on}
        group by {key}, bt.pdo, bt.pid, bt.pname
    )
    select {key.replace("r.", "k.")},
           {cast}('{{"tags":[' || coalesce(string_agg(k.entry, ',' order by k.pdo nulls last, k.pid), '')
                || ']}}'{as_jsonb}) as snap
    from kids k
    group by {key.replace("r.", "k.")}
    """


STAGE_TABLE = "qsnap_band_snapshots"
TRAITS_TABLE = "qsnap_band_traits"
ROWS_TABLE = "qsnap_band_rows"

# The tables that carry a copy of the population's snapshot (DOMAIN.md "Offers and ad events")
CARRIERS = ("offers", "ad_events")

APPLY_SQL = f"""
    with b as (
        select id, snap from {STAGE_TABLE} where id > :last order by id limit :n
    ), u as (
        update target_populations tp
        set matching_tags_snapshot = b.snap,
            updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC')
        from b
        where tp.id = b.id and tp.target_band_id = :band and {{guard}}
        returning tp.id, tp.me_file_id, tp.matching_tags_snapshot as snap
    ){{carry}}
    select (select max(id) from b), (select count(*) from u)
"""

# one row per population written, so the cursor's rowcount is the rows written
WRITE_SQL = """
    with v as (
        select * from unnest(cast(cast(:ids as text) as bigint[]),
                             cast(cast(:snaps as text) as text[])) as v(id, snap)
    ), u as (
        update target_populations tp
        set matching_tags_snapshot = cast(v.snap as jsonb),
            updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC')
        from v
        where tp.id = v.id and tp.target_band_id = :band and {guard}
        returning tp.id, tp.me_file_id, tp.matching_tags_snapshot as snap
    ){carry}
    select 1 from u
"""


def fill_carrier_sql(table: str) -> str:
    """Fill the band's offers or ad events still NULL beside a good snapshot of a population
    that the job will not write (those are carried by the batches)."""
    return f"""
    update {table} c set matching_tags_snapshot = tp.matching_tags_snapshot
    from target_populations tp
    where tp.target_band_id = :band and c.target_band_id = :band
      and c.me_file_id = tp.me_file_id and c.matching_tags_snapshot is null
      and not exists (select 1 from {ROWS_TABLE} r where r.id = tp.id)
      and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    """


_carriers: weakref.WeakKeyDictionary[Engine, tuple[str, ...]] = weakref.WeakKeyDictionary()


def carry_sql(tables: tuple[str, ...], unchanged_from: str | None = None) -> str:
    """CTEs copying the snapshots written by CTE ``u`` (me_file_id, snap) into the NULL
    snapshots of the same (me_file, band)'s offers and ad events; nothing else of those rows
    changes. The join is on (me_file_id, target_band_id), one batch's rows at a time.

    With ``unchanged_from`` (the batch's CTE of (id, ...)), a row of the batch that ``u`` left
    alone because its snapshot is already right (force mode) passes its stored one on.
    """
    if not tables:
        return ""
    source = "u"
    out = ""
    if unchanged_from is not None:
        source = "w"
        out = f""", w as (
        select u.me_file_id, u.snap from u
        union all
        select tp.me_file_id, tp.matching_tags_snapshot from {unchanged_from} x
        join target_populations tp on tp.id = x.id and tp.target_band_id = :band
        where not exists (select 1 from u where u.id = x.id)
          and {good_sql("tp.matching_tags_snapshot", "tp.me_file_id")}
    )"""
    # the batch's me_file ids as an index condition: a plain join of the CTE was planned as a
    # scan of the whole table per batch (10 ms of a 30 ms batch with 6,000 offers)
    for table in tables:
        out += f""", carry_{table} as (
        update {table} c set matching_tags_snapshot = s.snap
        from {source} s
        where c.me_file_id = any(array(select me_file_id from {source}))
          and c.me_file_id = s.me_file_id and c.target_band_id = :band
          and c.matching_tags_snapshot is null
        returning 1
    )"""
    return out


def carriers_of(engine: Engine) -> tuple[str, ...]:
    """The carrier tables found by the last ``prepare_band`` on this engine (detected then)."""
    tables = _carriers.get(engine)
    if tables is None:
        with engine.connect() as conn:
            tables = _carriers[engine] = carrier_tables(conn)
    return tables


def apply_sql(engine: Engine, mode: Mode) -> str:
    """The staged path's batch statement, with the carriers of this engine's database."""
    carry = carry_sql(carriers_of(engine), "b" if mode is Mode.FORCE else None)
    return APPLY_SQL.format(guard=write_guard(mode, "b.snap"), carry=carry)


def write_sql(engine: Engine, mode: Mode) -> str:
    """The relayed path's batch statement, with the carriers of this engine's database."""
    carry = carry_sql(carriers_of(engine), "v" if mode is Mode.FORCE else None)
    return WRITE_SQL.format(guard=write_guard(mode, "cast(v.snap as jsonb)"), carry=carry)


# a band smaller than this share of all me_files reads its tags me_file by me_file
LOOKUP_SHARE = 0.1
# a band with at least this many rows to write is written by WRITERS connections at once
SPLIT_ROWS = 5_000
WRITERS = 2
# computing a band's snapshots sorts and materialises them whole: with the default 4 MB (or
# the embedded server's 64 MB) a 58,000-row band spilled its 2.4 M tags to disk (4.9 s -> 3.4 s)
STAGING_WORK_MEM = "256MB"


def tune_band_compute(conn: Connection, lookup: bool) -> None:
    """Settings for computing one band's snapshots, in this transaction only.

    Its sorts fit in memory; and a band read by trait fetches its tags with a bitmap, in
    table order and each page once, instead of by index in trait order, one page per tag:
    the largest band of the 1,000,000-row bench (1 M tags) was computed in 4.4 s instead of
    9.0 s once other work had pushed the tag table out of shared buffers. A band read by
    lookup keeps its per-me_file index scans.
    """
    conn.execute(
        text(
            "select set_config('work_mem', :mem, true), set_config('enable_indexscan', :scan, true)"
        ),
        {"mem": STAGING_WORK_MEM, "scan": "on" if lookup else "off"},
    )


def prepare_band(conn: Connection, band_id: int, mode: Mode) -> tuple[int, bool]:
    """Temp tables of the band's traits and rows; returns (rows, read tags by lookup).

    Rows without a me_file are orphans and never written. The band's offers and ad events
    still NULL beside a good snapshot that this job will not write get that snapshot now, in
    the job's first transaction (the batches carry the snapshots they write themselves).
    """
    conn.execute(text(f"drop table if exists {STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"))
    # the band's traits and rows are analysed on their own so the planner knows their true
    # sizes, also right after Refresh Population inserted rows the statistics do not know yet
    conn.execute(text(f"create temp table {TRAITS_TABLE} as {BAND_TRAITS_SQL}"), {"band": band_id})
    total = conn.execute(
        text(
            f"create temp table {ROWS_TABLE} as select tp.id, tp.me_file_id "
            "from target_populations tp where tp.target_band_id = :band "
            f"and tp.me_file_id is not null and {mode_predicate(mode)}"
        ),
        {"band": band_id},
    ).rowcount
    conn.execute(text(f"analyze {TRAITS_TABLE}, {ROWS_TABLE}"))
    tables = _carriers[conn.engine] = carrier_tables(conn)
    for table in tables:
        conn.execute(text(fill_carrier_sql(table)), {"band": band_id})
    me_files = conn.execute(
        text("select reltuples from pg_class where oid = to_regclass('me_files')")
    ).scalar()
    return total, total < LOOKUP_SHARE * (me_files or 0)


def band_select_sql(lookup: bool) -> str:
    return snapshot_select_sql(
        f"select id, me_file_id from {ROWS_TABLE}", TRAITS_TABLE, lookup=lookup
    )


def band_batches_sql(lookup: bool) -> str:
    """The band's snapshots as one row per batch of ``:n`` ids: two array literals (ids, JSON)."""
    rows = (
        f"select id, me_file_id, (row_number() over (order by id) - 1) / :n as b from {ROWS_TABLE}"
    )
    return (
        "select cast(array_agg(s.id order by s.id) as text), "
        "cast(array_agg(s.snap order by s.id) as text) "
        f"from ({snapshot_select_sql(rows, TRAITS_TABLE, lookup=lookup, as_text=True, batched=True)}) s "
        "group by s.b order by s.b"
    )


ProgressFn = Callable[[Progress], None]
LogFn = Callable[[str], None]


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
    if row is None or row[0] not in orphans or row[1] != f"qsnap band {band_id}":
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


def _job_session(conn: Connection, band_id: int) -> str:
    """Name the session after the band and relax its commits; returns the statement timeout.

    A larger GIN pending list (64 MB instead of 4 MB) lets the snapshot index take a band's
    entries in fewer, larger merges: 1 M rows written in 27 s instead of 30 s.
    """
    return conn.execute(
        text(
            "select set_config('application_name', :name, false), "
            "set_config('synchronous_commit', 'off', false), "
            "set_config('gin_pending_list_limit', '65536', false), "
            "current_setting('statement_timeout')"
        ),
        {"name": f"qsnap band {band_id}"},
    ).one()[3]


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
                timeout = _job_session(conn, band_id)
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
                    _relay(
                        engine,
                        conn,
                        band_id,
                        mode,
                        batch_size,
                        lookup,
                        writers,
                        cancel,
                        tally,
                        live,
                    )
                    _flush_commits(conn, tally)
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
                _flush_commits(conn, tally)
                return tally.written, total, batches
            except Cancelled:
                _flush_commits(conn, tally)
                raise
            finally:
                _release(conn, band_id)
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


def _flush_commits(conn: Connection, tally: _Tally) -> None:
    """Make every batch this job reported written durable before the job says so.

    Batches commit with synchronous_commit off; one synchronous commit (a transaction with an
    id, so that it writes a commit record) flushes the WAL of all of them, writers' included.
    """
    if not tally.written or conn.invalidated:
        return
    conn.rollback()
    conn.execute(text("set local synchronous_commit = on"))
    conn.execute(text("select txid_current()"))
    conn.commit()


def _relay(
    engine: Engine,
    conn: Connection,
    band_id: int,
    mode: Mode,
    batch_size: int,
    lookup: bool,
    writers: int,
    cancel: CancelFlag,
    tally: _Tally,
    live: list[Connection],
) -> None:
    """Stream the band's snapshots from this session to ``writers`` connections.

    A large band's writes cost more than computing its snapshots, and one connection uses one
    core: its batches (still keyset-ordered slices of 500 ids, one transaction each) are
    written by several connections at once while this session, holding the band's lock,
    computes them once. A crash leaves whole batches written and the rest NULL, as before.
    A writer that fails stops the stream; a put never waits on writers that have all ended.
    """
    work: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=2 * writers)
    stop = threading.Event()
    failures: list[_StepFailed] = []
    threads = [
        threading.Thread(
            target=_write_batches,
            args=(engine, band_id, mode, work, stop, cancel, tally, failures, live),
            name=f"qsnap band {band_id} writer {n + 1}",
            daemon=True,
        )
        for n in range(writers)
    ]
    for thread in threads:
        thread.start()

    def hand_over(item: tuple[str, str] | None) -> bool:
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
        # two strings along: building and adapting 500-element lists cost a core of its own
        result = conn.execute(
            text(band_batches_sql(lookup)),
            {"n": batch_size},
            execution_options={"stream_results": True, "max_row_buffer": 4},
        )
        for ids, snaps in result:
            if cancel.is_set() or stop.is_set() or not hand_over((ids, snaps)):
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
    band_id: int,
    mode: Mode,
    work: queue.Queue,
    stop: threading.Event,
    cancel: CancelFlag,
    tally: _Tally,
    failures: list[_StepFailed],
    live: list[Connection],
) -> None:
    """One writer: each batch taken from ``work`` in its own transaction, until told to stop.

    It keeps taking batches after a failure or a cancel (without writing them) so that the
    session streaming them never blocks; whatever goes wrong is recorded, never raised.
    """
    write = text(write_sql(engine, mode))
    conn: Connection | None = None
    try:
        try:
            # connected while the first batches are still being computed
            conn = engine.connect()
            live.append(conn)
            _job_session(conn, band_id)
            conn.commit()
        except Exception as exc:
            failures.append(_StepFailed(exc, "connecting a writer"))
            stop.set()
            conn = None
        while (item := work.get()) is not None:
            if stop.is_set() or cancel.is_set() or conn is None:
                continue
            ids, snaps = item
            rows = ids.count(",") + 1
            try:
                written = conn.execute(
                    write, {"ids": ids, "snaps": snaps, "band": band_id}
                ).rowcount
                conn.commit()
            except Exception as exc:
                failures.append(_StepFailed(exc, "a batch"))
                stop.set()
                continue
            tally.batch_done(rows, written)
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
        conn.commit()
    except DBAPIError:
        conn.invalidate()


def _release(conn: Connection, band_id: int) -> None:
    """Unlock the band and drop the job's temp tables before the connection goes back."""
    if conn.invalidated:
        return
    try:
        conn.rollback()
        locks.unlock(conn, locks.BAND, band_id)
        conn.execute(text(f"drop table if exists {STAGE_TABLE}, {TRAITS_TABLE}, {ROWS_TABLE}"))
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
) -> BandResult:
    """Snapshot one band; never raises for database trouble, returns how it ended.

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
    for attempt in range(1, max_attempts + 1):
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
