"""``--engine oban`` and ``qsnap oban-jobs``: the Qlarius workers' side of the commands."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.cli.output import fmt_time, say, table
from qsnap_gui.domain.errors import JobFailed, UsageError
from qsnap_gui.engine.snapshots import DEFAULT_BATCH_SIZE, Mode
from qsnap_gui.store.db import Database


def oban_info(db: Database, *, write: bool = True, what: str = "--engine oban"):
    """The usable oban_jobs table (a note on stderr for a schema version not checked)."""
    from qsnap_gui.store.oban_jobs import ObanUnavailable, require

    with db.engine.connect() as conn:
        try:
            info = require(conn, write=write)
        except ObanUnavailable as exc:
            hint = "; run with --engine local" if what == "--engine oban" else ""
            raise UsageError(f"{what}: {exc}{hint}") from None
    if info.note:
        say(f"note: {info.note}")
    return info


def print_enqueued(results) -> None:
    for r in results:
        print(r.line)


def follow(args: argparse.Namespace, db: Database, info, queued, *, quiet: bool = False):
    """Follow the enqueued jobs to their end (``--wait``), printing each change unless quiet."""
    from qsnap_gui.engine.oban import wait_for_jobs

    def changed(change) -> None:
        for line in change.lines():
            print(line, flush=True)

    def progressed(p) -> None:
        say(f"band {p.band_id}: {p.missing:,} of {p.population:,} snapshots left")

    result = wait_for_jobs(
        db.engine,
        info,
        [q.job_id for q in queued],
        known_states={q.job_id: q.state for q in queued},
        on_change=None if quiet else changed,
        on_progress=None if quiet else progressed,
        poll=max(args.poll, 0.01),
        timeout=args.timeout or None,
    )
    if result.timed_out:
        raise JobFailed(
            f"stopped waiting after {args.timeout:g}s; the jobs go on on the Qlarius workers "
            "(qsnap oban-jobs)"
        )
    return result


def oban_wait(args: argparse.Namespace, db: Database, info, queued) -> int:
    if not args.wait:
        say("the jobs run on the Qlarius workers: follow them with qsnap oban-jobs")
        return 0
    result = follow(args, db, info, queued)
    for job in sorted(result.jobs.values(), key=lambda j: j.id):
        error = (
            f": {job.last_error.first_line}" if job.last_error and job.state != "completed" else ""
        )
        print(f"job {job.id} ({job.subject}): {job.state}{error}")
    return 1 if result.failed else 0


def snapshot_on_oban(args: argparse.Namespace, db: Database, band_ids: list[int]) -> int:
    from qsnap_gui.engine.oban import DEPRECATED, enqueue_bands, snapshot_worker_doubt

    if args.mode != Mode.MISSING.value:
        raise UsageError(
            f"--mode {args.mode} needs --engine local: Qlarius's snapshot worker fills "
            "missing snapshots only"
        )
    info = oban_info(db)
    say(f"warning: {DEPRECATED}")
    if not args.yes:
        with db.engine.connect() as conn:
            doubt = snapshot_worker_doubt(conn, info)
        if doubt:
            raise UsageError(f"{doubt}: run with --engine local, or pass --yes to enqueue anyway")
    if args.batch_size != DEFAULT_BATCH_SIZE:
        say("note: --batch-size is ignored with --engine oban (the workers use their own)")
    results = enqueue_bands(db.engine, band_ids, info=info)
    print_enqueued(results)
    return oban_wait(args, db, info, results)


def populate_on_oban(args: argparse.Namespace, db: Database, target_id: int) -> int:
    from sqlalchemy import text

    from qsnap_gui.engine.oban import enqueue_populate_or_follow

    if args.resume:
        raise UsageError("--resume needs --engine local (the snapshot stage runs here)")
    info = oban_info(db)
    queued = enqueue_populate_or_follow(db.engine, target_id, info=info)
    print_enqueued([queued])
    code = oban_wait(args, db, info, [queued])
    if args.wait:
        with db.engine.connect() as conn:
            status = conn.execute(
                text("select population_status from targets where id = :t"), {"t": target_id}
            ).scalar()
        print(f"target {target_id} is now {status or 'not_populated'}")
    return code


def backfill_oban_check(args: argparse.Namespace, db: Database, include) -> object:
    from qsnap_gui.engine.backfill import Category

    if args.yes and set(include) - {Category.MISSING}:
        raise UsageError(
            "--engine oban fixes missing snapshots only (Qlarius's BackfillMissingSnapshotsWorker "
            "has no repair or force mode): pass --include missing, or use --engine local"
        )
    return oban_info(db, write=args.yes)


def backfill_on_oban(args: argparse.Namespace, db: Database, info, plans, report) -> int:
    """One BackfillMissingSnapshotsWorker job, as the application's hourly cron inserts it."""
    from qsnap_gui.engine.oban import BACKFILL_SCOPE, enqueue_backfill
    from qsnap_gui.store.oban_jobs import missing_snapshots

    say(f"note: {BACKFILL_SCOPE}")
    if args.target:
        say("note: the worker takes no target: it fills the missing snapshots of every target")
    with db.engine.connect() as conn:
        missing = missing_snapshots(conn)
    if not missing:
        if args.json:
            report["enqueued"] = []
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            print("no population snapshot is NULL: no job enqueued")
        return 0
    results = enqueue_backfill(db.engine, info=info)
    if not args.json:
        print_enqueued(results)
    if not args.wait:
        if args.json:
            report["enqueued"] = [r.to_json() for r in results]
            print(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            say("the job runs on the Qlarius workers: follow it with qsnap oban-jobs")
        return 0
    result = follow(args, db, info, results, quiet=args.json)
    with db.engine.connect() as conn:
        left = missing_snapshots(conn)
    job = result.jobs.get(results[0].job_id)
    if args.json:
        report["enqueued"] = [r.to_json() for r in results]
        report["job"] = job.to_json() if job else None
        report["missing_left"] = left
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(f"job {results[0].job_id} (every target): {job.state if job else 'pruned'}")
        print(f"{left:,} population snapshots are still NULL")
    return 1 if result.failed else 0


def oban_job_action(args: argparse.Namespace, db: Database) -> int:
    """``oban-jobs --retry N`` / ``--cancel N``: Oban.retry_job / Oban.cancel_job on one job."""
    from qsnap_gui.engine.oban import cancel_job, retry_job

    info = oban_info(db, write=True, what="oban-jobs")
    if args.retry is not None:
        job = retry_job(db.engine, args.retry, info=info)
        print(
            f"job {job.id} ({job.subject}): retried, {job.state} "
            f"(attempt {job.attempt} of {job.max_attempts} so far)"
        )
    else:
        print(cancel_job(db.engine, args.cancel, info=info).text)
    return 0


def cmd_oban_jobs(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.oban import resolve_worker
    from qsnap_gui.store.oban_jobs import WORKERS, list_jobs, state_counts

    if args.retry is not None or args.cancel is not None:
        return oban_job_action(args, db)
    info = oban_info(db, write=False, what="oban-jobs")
    workers = [resolve_worker(w) for w in args.worker] if args.worker else list(WORKERS)
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with db.engine.connect() as conn:
        counts = state_counts(conn, info, workers=workers)
        jobs = list_jobs(conn, info, states=args.state, workers=workers, limit=args.limit)
    if args.json:
        print(
            json.dumps(
                {
                    "table": info.name,
                    "schema_version": info.version,
                    "counts": counts,
                    "jobs": [j.to_json() for j in jobs],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print("  ".join(f"{s}: {n}" for s, n in counts.items()))
    if not jobs:
        print("no jobs match")
        return 0
    print(
        table(
            ["id", "state", "worker", "args", "attempt", "node", "inserted (UTC)", "ended"]
            + ["last error"],
            [
                [
                    j.id,
                    j.state,
                    j.short_worker,
                    j.subject,
                    f"{j.attempt}/{j.max_attempts}",
                    j.node or "-",
                    fmt_time(j.inserted_at),
                    fmt_time(j.ended_at) if j.ended_at else "-",
                    (j.last_error.first_line[:60] if j.last_error else "-"),
                ]
                for j in jobs
            ],
        )
    )
    return 0
