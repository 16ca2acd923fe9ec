"""Qlarius's own Oban workers as a second job engine (issue 9). No Qt here.

qsnap can hand its snapshot and Refresh Population jobs to the Elixir nodes of a Qlarius
installation instead of running them on this computer: it inserts the rows an Oban 2.19/2.20
node picks up, watches them in ``oban_jobs`` and retries or cancels them as Oban's own
``Oban.retry_job`` and ``Oban.cancel_job`` do. qsnap never runs DDL on ``oban_jobs``.

Finding the table
-----------------
``detect`` looks for ``oban_jobs`` in the schemas of the session's search path
(``current_schemas(false)``), first match wins, and takes that schema as Oban's *prefix*: the
notification channels are ``<prefix>.oban_insert`` and ``<prefix>.oban_signal``, as
``Oban.Notifiers.Postgres`` names them. An installation started with ``prefix: "oban"`` whose
schema is not on the role's search path is not found: add it (``ALTER ROLE qsnap SET
search_path = public, oban``). The table must have the columns of Oban's migrations up to
version 9 at least (``cancelled_at``, ``meta``); version 12 is the one current Oban writes.

What an enqueue writes
----------------------
Exactly the row ``Worker.new(args) |> Oban.insert()`` writes for a worker declared with
``queue: :targets, max_attempts: 3``: state ``available``, queue ``targets``, the worker name,
``args`` with string keys (``{"band_id": N}`` or ``{"target_id": N}``), attempt 0,
max_attempts 3, priority 0, empty ``errors`` (``jsonb[]``), ``meta`` and ``tags``,
``inserted_at`` and ``scheduled_at`` = ``timezone('UTC', now())`` (the columns' own defaults,
microseconds, UTC without zone), no ``attempted_*``/``*_at``. Then, in the same transaction (so
it is delivered on commit), ``pg_notify('<prefix>.oban_insert', '{"queue":"targets"}')``,
the payload of ``Oban.Engine``'s insert trigger, which wakes idle producers at once (Oban's
Stager would otherwise find the job within a second or so).

A Refresh Population job also sets the target to ``populating`` in the same transaction, as
the application does before its ``PopulateTargetWorker`` runs.

One live job per band (and per target)
--------------------------------------
Oban's uniqueness is checked by the inserting client, so qsnap checks its own: a band job is
refused while a job of the same worker for the same band is available, scheduled, executing
or retryable (``AlreadyQueued`` names it). The check and the insert run in one transaction
holding a transaction-level advisory lock on the band (``pg_advisory_xact_lock``), so two qsnap
sessions enqueueing the same band at once cannot both pass the check. The Elixir application
does not take that lock: a job it inserts at the same instant is not serialised with ours.
The same rule holds for Refresh Population jobs of one target; a target being refreshed by a
local qsnap session (its advisory lock is held) is refused too.

Retry and cancel
----------------
``retry_job`` is ``Oban.retry_job``'s update for a discarded or cancelled job: state
``available``, ``scheduled_at`` now, ``max_attempts = greatest(max_attempts, attempt + 1)``,
``completed_at``/``cancelled_at``/``discarded_at`` cleared (``attempt``, ``errors`` and
``attempted_*`` kept); qsnap refuses it while another live job exists for the same band.
``cancel_job`` is ``Oban.cancel_job``'s update for an available, scheduled or retryable job
(state ``cancelled``, ``cancelled_at`` now). An executing job's row is never touched: qsnap only
sends ``pg_notify('<prefix>.oban_signal', '{"action":"pkill","job_id":N}')``; the node running
it kills the process and records the cancellation itself.

Progress
--------
Qlarius's worker fills missing snapshots only (the design note's backfill enqueues the bands
"that have populations without snapshots"), so the progress of a band job is read from the
database as the NULL snapshots left in the band, and ``--mode repair|force`` and the broken
and stale backfill categories need the local engine.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, text

from qsnap_gui.domain.errors import QsnapError, TargetBusy, UsageError
from qsnap_gui.store import locks
from qsnap_gui.store.queries import band_target, require_target

WORKER_BAND = "Qlarius.Jobs.SnapshotBandPopulationsWorker"
WORKER_POPULATE = "Qlarius.Jobs.PopulateTargetWorker"
WORKERS: tuple[str, ...] = (WORKER_BAND, WORKER_POPULATE)
SHORT_WORKERS = {WORKER_BAND: "snapshot", WORKER_POPULATE: "populate"}
ARG_KEYS = {WORKER_BAND: "band_id", WORKER_POPULATE: "target_id"}
QUEUE = "targets"
MAX_ATTEMPTS = 3
PRIORITY = 0

STATES: tuple[str, ...] = (
    "available",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
ACTIVE_STATES: tuple[str, ...] = ("available", "scheduled", "executing", "retryable")
ENDED_STATES: tuple[str, ...] = ("completed", "discarded", "cancelled")
RETRY_STATES: tuple[str, ...] = ("discarded", "cancelled")
CANCEL_STATES: tuple[str, ...] = ("available", "scheduled", "retryable")

ENGINES: tuple[str, ...] = ("local", "oban")

# Transaction-level advisory lock kinds (see locks.key): held while checking and inserting.
ENQUEUE_BAND = 0x51534E03
ENQUEUE_TARGET = 0x51534E04

REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "state",
    "queue",
    "worker",
    "args",
    "errors",
    "attempt",
    "max_attempts",
    "priority",
    "attempted_by",
    "tags",
    "meta",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)

NOW = "timezone('UTC', now())"


class ObanUnavailable(QsnapError):
    """The database has no usable oban_jobs table (or qsnap may not write to it)."""


class AlreadyQueued(QsnapError):
    """A live job for the same band (or target) exists; it is named so it can be watched."""

    def __init__(self, message: str, job_id: int, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- detection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObanInfo:
    """Where oban_jobs lives and what qsnap may do with it; plain data for any thread."""

    schema: str
    version: int | None = None
    state_type: str = "oban_job_state"  # qualified name of the state enum
    missing: tuple[str, ...] = ()
    can_insert: bool = True
    can_update: bool = True

    @property
    def table(self) -> str:
        return f"{quote_ident(self.schema)}.oban_jobs"

    @property
    def usable(self) -> bool:
        return not self.missing

    @property
    def insert_channel(self) -> str:
        return f"{self.schema}.oban_insert"

    @property
    def signal_channel(self) -> str:
        return f"{self.schema}.oban_signal"

    @property
    def problem(self) -> str | None:
        if self.missing:
            return (
                f"{self.schema}.oban_jobs lacks columns {', '.join(self.missing)} "
                "(Oban's migrations before version 9?)"
            )
        return None


def detect(conn: Connection) -> ObanInfo | None:
    """oban_jobs on the search path (first schema in search-path order), or None."""
    rows = conn.execute(
        text(
            """
            select c.table_schema, array_agg(c.column_name::text),
                   max(c.udt_schema) filter (where c.column_name = 'state'),
                   max(c.udt_name) filter (where c.column_name = 'state')
            from information_schema.columns c
            where c.table_name = 'oban_jobs'
              and c.table_schema = any(current_schemas(false))
            group by c.table_schema
            order by array_position(current_schemas(false), c.table_schema::name)
            """
        )
    ).all()
    if not rows:
        return None
    schema, columns, udt_schema, udt_name = rows[0]
    missing = tuple(c for c in REQUIRED_COLUMNS if c not in set(columns))
    qualified = f"{quote_ident(schema)}.oban_jobs"
    comment, can_insert, can_update = conn.execute(
        text(
            "select obj_description(to_regclass(:t), 'pg_class'), "
            "has_table_privilege(:t, 'INSERT'), has_table_privilege(:t, 'UPDATE')"
        ),
        {"t": qualified},
    ).one()
    read_only = conn.execute(text("show transaction_read_only")).scalar() == "on"
    version = int(comment) if comment and str(comment).strip().isdigit() else None
    state_type = (
        f"{quote_ident(udt_schema)}.{quote_ident(udt_name)}" if udt_schema and udt_name else "text"
    )
    return ObanInfo(
        schema=schema,
        version=version,
        state_type=state_type,
        missing=missing,
        can_insert=bool(can_insert) and not read_only,
        can_update=bool(can_update) and not read_only,
    )


def search_path(conn: Connection) -> str:
    names = conn.execute(text("select current_schemas(false)")).scalar() or []
    return ", ".join(names) or "(empty)"


def require(conn: Connection, *, write: bool = False) -> ObanInfo:
    """The usable oban_jobs table, or ObanUnavailable saying exactly what is wrong."""
    info = detect(conn)
    if info is None:
        raise ObanUnavailable(
            "this database has no oban_jobs table (searched the schemas on the search path: "
            f"{search_path(conn)}), so there are no Qlarius workers to run jobs on"
        )
    if info.problem:
        raise ObanUnavailable(info.problem)
    if write and not (info.can_insert and info.can_update):
        raise ObanUnavailable(
            f"this session may not write to {info.schema}.oban_jobs "
            "(read-only, or INSERT/UPDATE not granted)"
        )
    return info


# --- jobs as plain data ----------------------------------------------------------------------


def _parse_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class AttemptError:
    """One entry of oban_jobs.errors: {"at", "attempt", "error"} as Oban.Job.format_attempt."""

    attempt: int
    at: datetime | None
    error: str

    @property
    def first_line(self) -> str:
        lines = self.error.strip().splitlines()
        return lines[0] if lines else ""


def _errors(raw: object) -> tuple[AttemptError, ...]:
    out = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            out.append(AttemptError(0, None, str(entry)))
            continue
        attempt = entry.get("attempt")
        out.append(
            AttemptError(
                attempt if isinstance(attempt, int) else 0,
                _parse_at(entry.get("at")),
                str(entry.get("error", "")),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class ObanJob:
    id: int
    state: str
    queue: str
    worker: str
    args: dict
    attempt: int
    max_attempts: int
    priority: int
    attempted_by: tuple[str, ...]
    errors: tuple[AttemptError, ...]
    inserted_at: datetime | None
    scheduled_at: datetime | None
    attempted_at: datetime | None = None
    completed_at: datetime | None = None
    discarded_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def node(self) -> str | None:
        """The node of the last attempt: attempted_by is [node, producer uuid]."""
        return self.attempted_by[0] if self.attempted_by else None

    @property
    def short_worker(self) -> str:
        return SHORT_WORKERS.get(self.worker, self.worker.rsplit(".", 1)[-1])

    def _arg(self, key: str) -> int | None:
        value = self.args.get(key) if isinstance(self.args, dict) else None
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def band_id(self) -> int | None:
        return self._arg("band_id")

    @property
    def target_id(self) -> int | None:
        return self._arg("target_id")

    @property
    def subject(self) -> str:
        if self.band_id is not None:
            return f"band {self.band_id}"
        if self.target_id is not None:
            return f"target {self.target_id}"
        return json.dumps(self.args, sort_keys=True)

    @property
    def ended_at(self) -> datetime | None:
        return {
            "completed": self.completed_at,
            "discarded": self.discarded_at,
            "cancelled": self.cancelled_at,
        }.get(self.state)

    @property
    def duration(self) -> float | None:
        """Seconds from the last attempt's start to the end, for an ended job."""
        if self.attempted_at and self.ended_at:
            return max(0.0, (self.ended_at - self.attempted_at).total_seconds())
        return None

    @property
    def last_error(self) -> AttemptError | None:
        return self.errors[-1] if self.errors else None

    def to_json(self) -> dict:
        def stamp(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "state": self.state,
            "queue": self.queue,
            "worker": self.worker,
            "args": self.args,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "node": self.node,
            "attempted_by": list(self.attempted_by),
            "inserted_at": stamp(self.inserted_at),
            "scheduled_at": stamp(self.scheduled_at),
            "attempted_at": stamp(self.attempted_at),
            "completed_at": stamp(self.completed_at),
            "discarded_at": stamp(self.discarded_at),
            "cancelled_at": stamp(self.cancelled_at),
            "errors": [
                {"attempt": e.attempt, "at": stamp(e.at), "error": e.error} for e in self.errors
            ],
        }


def _columns() -> str:
    return (
        "id, state::text, queue, worker, args, attempt, max_attempts, priority, "
        "coalesce(attempted_by, '{}'), coalesce(to_jsonb(errors), '[]'::jsonb), "
        "inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at"
    )


def _job(row) -> ObanJob:
    (
        job_id,
        state,
        queue,
        worker,
        args,
        attempt,
        max_attempts,
        priority,
        attempted_by,
        errors,
        inserted_at,
        scheduled_at,
        attempted_at,
        completed_at,
        discarded_at,
        cancelled_at,
    ) = row
    return ObanJob(
        int(job_id),
        state,
        queue,
        worker,
        args if isinstance(args, dict) else {"value": args},
        int(attempt),
        int(max_attempts),
        int(priority or 0),
        tuple(attempted_by or ()),
        _errors(errors),
        inserted_at,
        scheduled_at,
        attempted_at,
        completed_at,
        discarded_at,
        cancelled_at,
    )


def list_jobs(
    conn: Connection,
    info: ObanInfo,
    *,
    states: Iterable[str] | None = None,
    workers: Iterable[str] | None = WORKERS,
    limit: int = 200,
) -> list[ObanJob]:
    """qsnap's jobs (by default both Qlarius workers), newest first."""
    clauses, params = _filters(info, states, workers)
    rows = conn.execute(
        text(
            f"select {_columns()} from {info.table} where {' and '.join(clauses)} "
            "order by id desc limit :limit"
        ),
        {**params, "limit": limit},
    ).all()
    return [_job(r) for r in rows]


def state_counts(
    conn: Connection, info: ObanInfo, *, workers: Iterable[str] | None = WORKERS
) -> dict[str, int]:
    """Jobs per state (every state present, zero when none)."""
    clauses, params = _filters(info, None, workers)
    rows = conn.execute(
        text(
            f"select state::text, count(*) from {info.table} where {' and '.join(clauses)} "
            "group by 1"
        ),
        params,
    ).all()
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


def _filters(
    info: ObanInfo, states: Iterable[str] | None, workers: Iterable[str] | None
) -> tuple[list[str], dict]:
    clauses, params = ["true"], {}
    if states is not None:
        wanted = [s for s in dict.fromkeys(states)]
        unknown = [s for s in wanted if s not in STATES]
        if unknown:
            raise UsageError(f"unknown job state {unknown[0]!r} (choose from {', '.join(STATES)})")
        clauses.append(f"state = any(cast(:states as {info.state_type}[]))")
        params["states"] = wanted
    if workers is not None:
        clauses.append("worker = any(cast(:workers as text[]))")
        params["workers"] = list(workers)
    return clauses, params


def get_jobs(conn: Connection, info: ObanInfo, job_ids: Iterable[int]) -> dict[int, ObanJob]:
    ids = list(dict.fromkeys(int(i) for i in job_ids))
    if not ids:
        return {}
    rows = conn.execute(
        text(f"select {_columns()} from {info.table} where id = any(cast(:ids as bigint[]))"),
        {"ids": ids},
    ).all()
    return {job.id: job for job in map(_job, rows)}


def get_job(conn: Connection, info: ObanInfo, job_id: int) -> ObanJob:
    job = get_jobs(conn, info, [job_id]).get(job_id)
    if job is None:
        raise UsageError(f"Oban job {job_id} does not exist")
    return job


def band_jobs_since(
    conn: Connection, info: ObanInfo, band_ids: Iterable[int], since: datetime
) -> list[ObanJob]:
    """Band jobs for these bands inserted at or after ``since`` (those a populate job made)."""
    keys = [str(b) for b in band_ids]
    if not keys:
        return []
    rows = conn.execute(
        text(
            f"select {_columns()} from {info.table} where worker = :w "
            "and args->>'band_id' = any(cast(:keys as text[])) and inserted_at >= :since "
            "order by id"
        ),
        {"w": WORKER_BAND, "keys": keys, "since": since},
    ).all()
    return [_job(r) for r in rows]


@dataclass(frozen=True)
class BandProgress:
    band_id: int
    missing: int
    population: int

    @property
    def done(self) -> int:
        return self.population - self.missing


def band_progress(conn: Connection, band_ids: Iterable[int]) -> dict[int, BandProgress]:
    """The progress of band jobs read from the data: NULL snapshots left per band."""
    ids = list(dict.fromkeys(int(b) for b in band_ids))
    if not ids:
        return {}
    rows = conn.execute(
        text(
            "select b.id, count(tp.id) filter (where tp.matching_tags_snapshot is null), "
            "count(tp.id) from unnest(cast(:ids as bigint[])) as b(id) "
            "left join target_populations tp on tp.target_band_id = b.id group by b.id"
        ),
        {"ids": ids},
    ).all()
    return {int(b): BandProgress(int(b), int(m), int(p)) for b, m, p in rows}


# --- enqueue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    """A job qsnap inserted, or (refused) the live job that was already there."""

    job_id: int
    worker: str
    band_id: int | None = None
    target_id: int | None = None
    refused: bool = False
    state: str = "available"

    @property
    def subject(self) -> str:
        return f"band {self.band_id}" if self.band_id is not None else f"target {self.target_id}"

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "worker": self.worker,
            "band_id": self.band_id,
            "target_id": self.target_id,
            "refused": self.refused,
            "state": self.state,
        }


def _live_job(
    conn: Connection,
    info: ObanInfo,
    worker: str,
    object_id: int,
    *,
    exclude: int | None = None,
) -> tuple[int, str] | None:
    row = conn.execute(
        text(
            f"select id, state::text from {info.table} "
            f"where worker = :w and state = any(cast(:states as {info.state_type}[])) "
            "and args->>:key = :value and id <> :exclude order by id limit 1"
        ),
        {
            "w": worker,
            "states": list(ACTIVE_STATES),
            "key": ARG_KEYS[worker],
            "value": str(object_id),
            "exclude": exclude or 0,
        },
    ).first()
    return (int(row[0]), row[1]) if row else None


def targets_being_populated(conn: Connection, target_ids: Iterable[int]) -> set[int]:
    """Targets with a live populate job on the Qlarius workers: busy there, so not stuck."""
    info = detect(conn)
    if info is None:
        return set()
    rows = conn.execute(
        text(
            f"select distinct (args->>'target_id') from {info.table} "
            f"where worker = :w and state = any(cast(:states as {info.state_type}[])) "
            "and args->>'target_id' = any(:ids)"
        ),
        {
            "w": WORKER_POPULATE,
            "states": list(ACTIVE_STATES),
            "ids": [str(t) for t in target_ids],
        },
    ).scalars()
    return {int(r) for r in rows if r is not None and r.isdigit()}


def _insert(conn: Connection, info: ObanInfo, worker: str, args: dict) -> int:
    job_id = conn.execute(
        text(
            f"insert into {info.table} (state, queue, worker, args, errors, attempt, "
            "max_attempts, priority, tags, meta, inserted_at, scheduled_at) "
            "values ('available', :queue, :worker, cast(:args as jsonb), '{}', 0, "
            f":max_attempts, :priority, '{{}}', '{{}}', {NOW}, {NOW}) returning id"
        ),
        {
            "queue": QUEUE,
            "worker": worker,
            "args": json.dumps(args, separators=(",", ":")),
            "max_attempts": MAX_ATTEMPTS,
            "priority": PRIORITY,
        },
    ).scalar_one()
    return int(job_id)


def notify_insert(conn: Connection, info: ObanInfo, queue: str = QUEUE) -> None:
    """Wake the queue's producers (delivered when the transaction commits)."""
    conn.execute(
        text("select pg_notify(:channel, :payload)"),
        {
            "channel": info.insert_channel,
            "payload": json.dumps({"queue": queue}, separators=(",", ":")),
        },
    )


def _lock(conn: Connection, kind: int, object_id: int) -> None:
    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": locks.key(kind, object_id)})


def enqueue_band(engine: Engine, band_id: int, *, info: ObanInfo | None = None) -> Enqueued:
    """Insert a SnapshotBandPopulationsWorker job for the band; AlreadyQueued if one is live."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        target_id = band_target(conn, band_id)
        _lock(conn, ENQUEUE_BAND, band_id)
        live = _live_job(conn, info, WORKER_BAND, band_id)
        if live is not None:
            raise AlreadyQueued(
                f"band {band_id} already has Oban job {live[0]} ({live[1]}); not enqueued",
                *live,
            )
        job_id = _insert(conn, info, WORKER_BAND, {"band_id": band_id})
        notify_insert(conn, info)
    return Enqueued(job_id, WORKER_BAND, band_id=band_id, target_id=target_id)


def enqueue_bands(
    engine: Engine, band_ids: Iterable[int], *, info: ObanInfo | None = None
) -> list[Enqueued]:
    """One job per band, each in its own transaction; a refused band reports the live job."""
    out = []
    for band_id in band_ids:
        try:
            out.append(enqueue_band(engine, band_id, info=info))
        except AlreadyQueued as refused:
            out.append(
                Enqueued(refused.job_id, WORKER_BAND, band_id, refused=True, state=refused.state)
            )
    return out


def enqueue_populate(engine: Engine, target_id: int, *, info: ObanInfo | None = None) -> Enqueued:
    """Insert a PopulateTargetWorker job and mark the target populating, in one transaction."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        title = require_target(conn, target_id)
        _lock(conn, ENQUEUE_TARGET, target_id)
        if locks.held_elsewhere(conn, locks.TARGET, [target_id]):
            raise TargetBusy(
                f"target {target_id} ({title}) is being refreshed by a qsnap session on "
                "this computer; try again when it has finished"
            )
        live = _live_job(conn, info, WORKER_POPULATE, target_id)
        if live is not None:
            raise AlreadyQueued(
                f"target {target_id} ({title}) already has Oban job {live[0]} ({live[1]}); "
                "not enqueued",
                *live,
            )
        job_id = _insert(conn, info, WORKER_POPULATE, {"target_id": target_id})
        conn.execute(
            text(
                "update targets set population_status = 'populating', "
                "updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC') "
                "where id = :t"
            ),
            {"t": target_id},
        )
        notify_insert(conn, info)
    return Enqueued(job_id, WORKER_POPULATE, target_id=target_id)


# --- retry and cancel ------------------------------------------------------------------------


def _locked_job(conn: Connection, info: ObanInfo, job_id: int) -> ObanJob:
    row = conn.execute(
        text(f"select {_columns()} from {info.table} where id = :id for update"), {"id": job_id}
    ).first()
    if row is None:
        raise UsageError(f"Oban job {job_id} does not exist")
    return _job(row)


def retry_job(engine: Engine, job_id: int, *, info: ObanInfo | None = None) -> ObanJob:
    """Oban.retry_job for a discarded or cancelled job; returns the job as it now stands."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        job = _locked_job(conn, info, job_id)
        if job.state not in RETRY_STATES:
            raise UsageError(
                f"Oban job {job_id} is {job.state}: only discarded or cancelled jobs are retried"
            )
        key = job.band_id if job.worker == WORKER_BAND else job.target_id
        if job.worker in ARG_KEYS and key is not None:
            kind = ENQUEUE_BAND if job.worker == WORKER_BAND else ENQUEUE_TARGET
            _lock(conn, kind, key)
            live = _live_job(conn, info, job.worker, key, exclude=job_id)
            if live is not None:
                raise AlreadyQueued(
                    f"{job.subject} already has Oban job {live[0]} ({live[1]}); "
                    f"job {job_id} not retried",
                    *live,
                )
        row = conn.execute(
            text(
                f"update {info.table} set state = 'available', "
                "max_attempts = greatest(max_attempts, attempt + 1), "
                f"scheduled_at = {NOW}, completed_at = null, cancelled_at = null, "
                "discarded_at = null "
                "where id = :id and state not in ('available', 'executing') "
                f"returning {_columns()}"
            ),
            {"id": job_id},
        ).one()
        notify_insert(conn, info, job.queue)
    return _job(row)


@dataclass(frozen=True)
class CancelOutcome:
    job_id: int
    requested: bool  # True: executing, a pkill signal was sent; False: the row is cancelled
    state: str

    @property
    def text(self) -> str:
        if self.requested:
            return f"job {self.job_id} is executing: asked its node to kill it"
        return f"job {self.job_id} cancelled"


def cancel_job(engine: Engine, job_id: int, *, info: ObanInfo | None = None) -> CancelOutcome:
    """Oban.cancel_job: available/scheduled/retryable -> cancelled; executing -> pkill signal."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        job = _locked_job(conn, info, job_id)
        if job.state in CANCEL_STATES:
            state = conn.execute(
                text(
                    f"update {info.table} set state = 'cancelled', cancelled_at = {NOW} "
                    "where id = :id returning state::text"
                ),
                {"id": job_id},
            ).scalar_one()
            return CancelOutcome(job_id, False, state)
        if job.state == "executing":
            conn.execute(
                text("select pg_notify(:channel, :payload)"),
                {
                    "channel": info.signal_channel,
                    "payload": json.dumps(
                        {"action": "pkill", "job_id": job_id}, separators=(",", ":")
                    ),
                },
            )
            return CancelOutcome(job_id, True, job.state)
        raise UsageError(f"Oban job {job_id} is already {job.state}: nothing to cancel")


# --- watching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What one poll saw happen to a job."""

    job: ObanJob
    before: ObanJob | None

    @property
    def state_changed(self) -> bool:
        return self.before is None or self.before.state != self.job.state

    @property
    def new_errors(self) -> tuple[AttemptError, ...]:
        seen = len(self.before.errors) if self.before else 0
        return self.job.errors[seen:]

    def lines(self) -> list[str]:
        """The change in words, one line each, as ``qsnap --wait`` prints it."""
        job = self.job
        head = f"job {job.id} ({job.subject})"
        out = [f"{head}: attempt {e.attempt} failed: {e.first_line}" for e in self.new_errors]
        if self.state_changed:
            moved = f"{self.before.state} -> {job.state}" if self.before else job.state
            detail = ""
            if job.state == "executing":
                node = f" on {job.node}" if job.node else ""
                detail = f" (attempt {job.attempt} of {job.max_attempts}{node})"
            elif job.state in ("retryable", "scheduled") and job.scheduled_at:
                detail = f" (next attempt at {job.scheduled_at:%H:%M:%S} UTC)"
            elif job.ended and job.duration is not None:
                detail = (
                    f" (after {job.attempt} of {job.max_attempts} attempts, {job.duration:.1f}s)"
                )
            out.append(f"{head}: {moved}{detail}")
        return out


def changes(before: dict[int, ObanJob], after: dict[int, ObanJob]) -> list[Change]:
    out = []
    for job_id, job in sorted(after.items()):
        old = before.get(job_id)
        change = Change(job, old)
        if old is None or change.state_changed or change.new_errors or old.attempt != job.attempt:
            out.append(change)
    return out


@dataclass
class WaitResult:
    jobs: dict[int, ObanJob] = field(default_factory=dict)
    timed_out: bool = False
    stopped: bool = False

    @property
    def failed(self) -> list[ObanJob]:
        return [j for j in self.jobs.values() if j.state in ("discarded", "cancelled")]


def wait_for_jobs(
    engine: Engine,
    info: ObanInfo,
    job_ids: Iterable[int],
    *,
    on_change: Callable[[Change], None] | None = None,
    on_progress: Callable[[BandProgress], None] | None = None,
    follow_target: tuple[int, datetime] | None = None,
    poll: float = 2.0,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> WaitResult:
    """Poll the jobs until every one has ended (completed, discarded or cancelled).

    ``follow_target=(target_id, since)`` also watches the band jobs of that target's bands
    inserted since then, as a PopulateTargetWorker enqueues them. Band progress is reported
    while a band job executes (NULL snapshots left), whenever it changes.
    """
    stop = stop or threading.Event()
    ids = list(dict.fromkeys(int(i) for i in job_ids))
    result = WaitResult()
    reported: dict[int, int] = {}
    band_ids: list[int] = []
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        with engine.connect() as conn:
            now = get_jobs(conn, info, ids)
            if follow_target is not None:
                # read after the populate job: band jobs it made before it ended are seen now
                if not band_ids:
                    band_ids = [
                        int(b)
                        for b in conn.execute(
                            text("select id from target_bands where target_id = :t order by id"),
                            {"t": follow_target[0]},
                        ).scalars()
                    ]
                for job in band_jobs_since(conn, info, band_ids, follow_target[1]):
                    if job.id not in now:
                        ids.append(job.id)
                        now[job.id] = job
            executing = [j.band_id for j in now.values() if j.state == "executing" and j.band_id]
            progress = band_progress(conn, executing) if on_progress and executing else {}
        for change in changes(result.jobs, now):
            if on_change:
                on_change(change)
        for band_id, p in progress.items():
            if reported.get(band_id) != p.missing:
                reported[band_id] = p.missing
                on_progress(p)
        result.jobs = now
        pending_populate = follow_target is not None and any(
            j.worker == WORKER_POPULATE and not j.ended for j in now.values()
        )
        if now and all(j.ended for j in now.values()) and not pending_populate:
            return result
        if len(now) < len(ids) and not any(j.active for j in now.values()):
            return result  # the rest were deleted (pruned) while we watched
        if deadline is not None and time.monotonic() >= deadline:
            result.timed_out = True
            return result
        if stop.wait(poll):
            result.stopped = True
            return result


def resolve_worker(name: str) -> str:
    """A worker from operator input: snapshot/band, populate/target, or a full worker name."""
    short = {
        "snapshot": WORKER_BAND,
        "band": WORKER_BAND,
        "populate": WORKER_POPULATE,
        "target": WORKER_POPULATE,
    }
    value = str(name).strip()
    if not value:
        raise UsageError("--worker needs a name: snapshot, populate or a worker module")
    return short.get(value.lower(), value)
