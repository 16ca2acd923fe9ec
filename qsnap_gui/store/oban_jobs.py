"""Oban's own table, ``oban_jobs``: finding it, reading its jobs, and the statements Oban runs.

qsnap never runs DDL on ``oban_jobs``. Every statement here is one Oban itself runs
(``Oban.insert``, ``Oban.retry_job``, ``Oban.cancel_job``) or a read.

Finding the table
-----------------
``detect`` looks for ``oban_jobs`` in the schemas named by the session's ``search_path``,
first match wins, and takes that schema as Oban's *prefix*: the notification channels are
``<prefix>.oban_insert`` and ``<prefix>.oban_signal``, as ``Oban.Notifiers.Postgres`` names
them. It reads the catalog (``pg_class``/``pg_attribute``) and the search_path setting itself
(not ``current_schemas``, which drops schemas without USAGE), so a table the role may not read,
or whose schema it may not use, is still found and reported as unreadable, never as absent.

Schema versions
---------------
Oban records its migration version as the table's comment (``Oban.Migrations.Postgres``
reads it back the same way). qsnap was checked against versions 12 (what production's table
carries), 13 (Oban 2.20: two indexes) and 14 (Oban 2.21 and later: the state ``suspended``).
The states are read from the ``oban_job_state`` enum itself, so every state of the version found
is listed and filtered. A table with the columns of version 9 or later works; a version outside
12-14 carries a note saying it was not checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.domain.oban import (
    ACTIVE_STATES,
    ALL_STATES,
    ARG_KEYS,
    BUSY_COLUMNS,
    MAX_ATTEMPTS,
    PRIORITY,
    QUEUES,
    REQUIRED_COLUMNS,
    STATES,
    WORKER_POPULATE,
    WORKERS,
    BandProgress,
    ObanInfo,
    ObanJob,
    ObanUnavailable,
    parse_errors,
    quote_ident,
)

NOW = "timezone('UTC', now())"

_DETECT_SQL = """
    with path as (
        select replace(trim(both '"' from trim(p.name)), '$user', current_user) as name, p.pos
        from unnest(string_to_array(current_setting('search_path'), ','))
             with ordinality as p(name, pos)
    )
    select n.nspname::text,
           array_agg(a.attname::text order by a.attnum),
           max(tn.nspname::text) filter (where a.attname = 'state'),
           max(t.typname::text) filter (where a.attname = 'state'),
           max(t.oid::bigint) filter (where a.attname = 'state'),
           obj_description(c.oid, 'pg_class'),
           has_schema_privilege(n.oid, 'USAGE')
           and coalesce(bool_and(has_column_privilege(c.oid, a.attnum, 'SELECT'))
                        filter (where a.attname = any(cast(:busy as text[]))), false),
           has_table_privilege(c.oid, 'INSERT'),
           has_table_privilege(c.oid, 'UPDATE')
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join path on path.name = n.nspname
    join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    join pg_type t on t.oid = a.atttypid
    join pg_namespace tn on tn.oid = t.typnamespace
    where c.relname = 'oban_jobs' and c.relkind in ('r', 'p')
    group by n.oid, n.nspname, c.oid
    order by min(path.pos)
    limit 1
"""


def detect(conn: Connection) -> ObanInfo | None:
    """oban_jobs on the search path (first schema in search-path order), or None."""
    row = conn.execute(text(_DETECT_SQL), {"busy": list(BUSY_COLUMNS)}).first()
    if row is None:
        return None
    schema, columns, udt_schema, udt_name, udt_oid, comment, can_read, can_insert, can_update = row
    missing = tuple(c for c in REQUIRED_COLUMNS if c not in set(columns))
    read_only = conn.execute(text("show transaction_read_only")).scalar() == "on"
    version = int(comment) if comment and str(comment).strip().isdigit() else None
    state_type, states = "text", ALL_STATES if (version or 0) >= 14 else STATES
    if udt_schema and udt_name:
        state_type = f"{quote_ident(udt_schema)}.{quote_ident(udt_name)}"
        labels = conn.execute(
            text(
                "select array_agg(enumlabel::text order by enumsortorder) from pg_enum "
                "where enumtypid = cast(:t as oid)"
            ),
            {"t": udt_oid},
        ).scalar()
        states = tuple(labels) if labels else states
    return ObanInfo(
        schema=schema,
        version=version,
        state_type=state_type,
        states=states,
        missing=missing,
        can_read=bool(can_read) and all(c in columns for c in BUSY_COLUMNS),
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
    if not info.can_read:
        raise ObanUnavailable(
            f"this session may not read {info.name} (USAGE on schema {info.schema} or "
            "SELECT on the table not granted)"
        )
    if write and not (info.can_insert and info.can_update):
        raise ObanUnavailable(
            f"this session may not write to {info.name} (read-only, or INSERT/UPDATE not granted)"
        )
    return info


COLUMNS = (
    "id, state::text, queue, worker, args, attempt, max_attempts, priority, "
    "coalesce(attempted_by, '{}'), coalesce(to_jsonb(errors), '[]'::jsonb), "
    "inserted_at, scheduled_at, attempted_at, completed_at, discarded_at, cancelled_at"
)


def _job(row) -> ObanJob:
    job_id, state, queue, worker, args, attempt, max_attempts, priority, by, errors, *at = row
    return ObanJob(
        int(job_id),
        state,
        queue,
        worker,
        args if isinstance(args, dict) else {"value": args},
        int(attempt),
        int(max_attempts),
        int(priority or 0),
        tuple(by or ()),
        parse_errors(errors),
        *at,
    )


# --- reading ---------------------------------------------------------------------------------


def _filters(
    info: ObanInfo, states: Iterable[str] | None, workers: Iterable[str] | None
) -> tuple[list[str], dict]:
    clauses, params = ["true"], {}
    if states is not None:
        wanted = list(dict.fromkeys(states))
        unknown = [s for s in wanted if s not in info.states]
        if unknown:
            version = f" (Oban schema version {info.version})" if info.version else ""
            raise UsageError(
                f"{info.name}{version} has no job state {unknown[0]!r}; its states are "
                + ", ".join(info.states)
            )
        clauses.append(f"state = any(cast(:states as {info.state_type}[]))")
        params["states"] = wanted
    if workers is not None:
        clauses.append("worker = any(cast(:workers as text[]))")
        params["workers"] = list(workers)
    return clauses, params


def list_jobs(
    conn: Connection,
    info: ObanInfo,
    *,
    states: Iterable[str] | None = None,
    workers: Iterable[str] | None = WORKERS,
    limit: int = 200,
) -> list[ObanJob]:
    """The jobs of these workers (by default the three Qlarius snapshot workers), newest first."""
    clauses, params = _filters(info, states, workers)
    rows = conn.execute(
        text(
            f"select {COLUMNS} from {info.table} where {' and '.join(clauses)} "
            "order by id desc limit :limit"
        ),
        {**params, "limit": limit},
    ).all()
    return [_job(r) for r in rows]


def state_counts(
    conn: Connection, info: ObanInfo, *, workers: Iterable[str] | None = WORKERS
) -> dict[str, int]:
    """Jobs per state, every state of the table's version present (zero when none)."""
    clauses, params = _filters(info, None, workers)
    rows = conn.execute(
        text(
            f"select state::text, count(*) from {info.table} where {' and '.join(clauses)} "
            "group by 1"
        ),
        params,
    ).all()
    counts = dict.fromkeys(info.states, 0)
    counts.update({state: int(n) for state, n in rows})
    return counts


def get_jobs(conn: Connection, info: ObanInfo, job_ids: Iterable[int]) -> dict[int, ObanJob]:
    ids = list(dict.fromkeys(int(i) for i in job_ids))
    if not ids:
        return {}
    rows = conn.execute(
        text(f"select {COLUMNS} from {info.table} where id = any(cast(:ids as bigint[]))"),
        {"ids": ids},
    ).all()
    return {job.id: job for job in map(_job, rows)}


def get_job(conn: Connection, info: ObanInfo, job_id: int) -> ObanJob:
    job = get_jobs(conn, info, [job_id]).get(job_id)
    if job is None:
        raise UsageError(f"Oban job {job_id} does not exist")
    return job


def lock_job(conn: Connection, info: ObanInfo, job_id: int) -> ObanJob:
    """The job, its row locked until the transaction ends."""
    row = conn.execute(
        text(f"select {COLUMNS} from {info.table} where id = :id for update"), {"id": job_id}
    ).first()
    if row is None:
        raise UsageError(f"Oban job {job_id} does not exist")
    return _job(row)


def live_job(
    conn: Connection,
    info: ObanInfo,
    worker: str,
    object_id: int | None = None,
    *,
    exclude: int | None = None,
) -> tuple[int, str] | None:
    """The oldest available/scheduled/executing/retryable job of the worker (for the object)."""
    params = {"w": worker, "states": list(ACTIVE_STATES), "exclude": exclude or 0}
    subject = ""
    if worker in ARG_KEYS and object_id is not None:
        subject = "and args->>:key = :value "
        params.update(key=ARG_KEYS[worker], value=str(object_id))
    row = conn.execute(
        text(
            f"select id, state::text from {info.table} "
            f"where worker = :w and state = any(cast(:states as {info.state_type}[])) "
            f"{subject}and id <> :exclude order by id limit 1"
        ),
        params,
    ).first()
    return (int(row[0]), row[1]) if row else None


def live_populate_jobs(
    conn: Connection, info: ObanInfo, target_ids: Iterable[int]
) -> dict[int, tuple[int, str]]:
    """Per target, the oldest live PopulateTargetWorker job for it: (job id, state)."""
    keys = [str(t) for t in dict.fromkeys(target_ids)]
    if not keys:
        return {}
    rows = conn.execute(
        text(
            f"select distinct on (args->>'target_id') args->>'target_id', id, state::text "
            f"from {info.table} where worker = :w "
            f"and state = any(cast(:states as {info.state_type}[])) "
            "and args->>'target_id' = any(cast(:keys as text[])) "
            "order by args->>'target_id', id"
        ),
        {"w": WORKER_POPULATE, "states": list(ACTIVE_STATES), "keys": keys},
    ).all()
    return {int(t): (int(job_id), state) for t, job_id, state in rows}


def last_completed(conn: Connection, info: ObanInfo, worker: str) -> tuple[int, datetime] | None:
    """The newest completed job of the worker still in the table: (id, completed_at)."""
    row = conn.execute(
        text(
            f"select id, completed_at from {info.table} where worker = :w "
            "and state = 'completed' order by id desc limit 1"
        ),
        {"w": worker},
    ).first()
    return (int(row[0]), row[1]) if row else None


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


def missing_snapshots(conn: Connection) -> int:
    """Populations of existing bands whose snapshot is NULL, in every target."""
    return int(
        conn.execute(
            text(
                "select count(*) from target_populations tp join target_bands b "
                "on b.id = tp.target_band_id where tp.matching_tags_snapshot is null"
            )
        ).scalar_one()
    )


# --- Oban's own writes -----------------------------------------------------------------------


def insert_job(conn: Connection, info: ObanInfo, worker: str, args: dict) -> int:
    """The row ``Worker.new(args) |> Oban.insert()`` writes for a Qlarius worker."""
    job_id = conn.execute(
        text(
            f"insert into {info.table} (state, queue, worker, args, errors, attempt, "
            "max_attempts, priority, tags, meta, inserted_at, scheduled_at) "
            "values ('available', :queue, :worker, cast(:args as jsonb), '{}', 0, "
            f":max_attempts, :priority, '{{}}', '{{}}', {NOW}, {NOW}) returning id"
        ),
        {
            "queue": QUEUES[worker],
            "worker": worker,
            "args": json.dumps(args, separators=(",", ":")),
            "max_attempts": MAX_ATTEMPTS,
            "priority": PRIORITY,
        },
    ).scalar_one()
    return int(job_id)


def _notify(conn: Connection, channel: str, payload: dict) -> None:
    conn.execute(
        text("select pg_notify(:channel, :payload)"),
        {"channel": channel, "payload": json.dumps(payload, separators=(",", ":"))},
    )


def notify_insert(conn: Connection, info: ObanInfo, queue: str) -> None:
    """Wake the queue's producers (delivered when the transaction commits)."""
    _notify(conn, info.insert_channel, {"queue": queue})


def notify_pkill(conn: Connection, info: ObanInfo, job_id: int) -> None:
    """Ask the node running the job to kill it, as Oban.cancel_job does."""
    _notify(conn, info.signal_channel, {"action": "pkill", "job_id": job_id})


def retry_row(conn: Connection, info: ObanInfo, job_id: int) -> ObanJob:
    """Engines.Basic.retry_all_jobs for one job (not available or executing)."""
    row = conn.execute(
        text(
            f"update {info.table} set state = 'available', "
            "max_attempts = greatest(max_attempts, attempt + 1), "
            f"scheduled_at = {NOW}, completed_at = null, cancelled_at = null, "
            "discarded_at = null "
            "where id = :id and state not in ('available', 'executing') "
            f"returning {COLUMNS}"
        ),
        {"id": job_id},
    ).one()
    return _job(row)


def cancel_row(conn: Connection, info: ObanInfo, job_id: int) -> str | None:
    """Engines.Basic.cancel_job: any job not yet ended, executing included, becomes cancelled.
    Returns the new state, or None when the job had already ended."""
    return conn.execute(
        text(
            f"update {info.table} set state = 'cancelled', cancelled_at = {NOW} "
            "where id = :id and state not in ('cancelled', 'completed', 'discarded') "
            "returning state::text"
        ),
        {"id": job_id},
    ).scalar()
