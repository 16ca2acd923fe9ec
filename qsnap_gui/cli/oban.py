"""``--engine oban`` and ``qsnap oban-jobs``: the Qlarius workers' side of the commands."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.cli.output import fmt_time, say, table
from qsnap_gui.domain.errors import JobFailed, UsageError
from qsnap_gui.engine.snapshots import DEFAULT_BATCH_SIZE, Mode
from qsnap_gui.store.db import (
    Database,
)


def oban_info(db: Database, *, write: bool = True, what: str = "--engine oban"):
    from qsnap_gui.engine.oban import ObanUnavailable, require

    with db.engine.connect() as conn:
        try:
            return require(conn, write=write)
        except ObanUnavailable as exc:
            hint = "; run with --engine local" if what == "--engine oban" else ""
            raise UsageError(f"{what}: {exc}{hint}") from None


def print_enqueued(results) -> None:
    for r in results:
        if r.refused:
            print(f"{r.subject}: already queued as Oban job {r.job_id} ({r.state}); not enqueued")
        else:
            print(f"{r.subject}: enqueued Oban job {r.job_id}")


def oban_wait(args: argparse.Namespace, db: Database, info, job_ids, follow=None) -> int:
    from qsnap_gui.engine.oban import wait_for_jobs

    if not args.wait:
        say("the jobs run on the Qlarius workers: follow them with qsnap oban-jobs")
        return 0

    def changed(change) -> None:
        for line in change.lines():
            print(line, flush=True)

    def progressed(p) -> None:
        say(f"band {p.band_id}: {p.missing:,} of {p.population:,} snapshots left")

    result = wait_for_jobs(
        db.engine,
        info,
        job_ids,
        on_change=changed,
        on_progress=progressed,
        follow_target=follow,
        poll=max(args.poll, 0.01),
        timeout=args.timeout or None,
    )
    if result.timed_out:
        raise JobFailed(
            f"stopped waiting after {args.timeout:g}s; the jobs go on on the Qlarius workers "
            "(qsnap oban-jobs)"
        )
    for job in sorted(result.jobs.values(), key=lambda j: j.id):
        error = (
            f": {job.last_error.first_line}" if job.last_error and job.state != "completed" else ""
        )
        print(f"job {job.id} ({job.subject}): {job.state}{error}")
    return 1 if result.failed else 0


def snapshot_on_oban(args: argparse.Namespace, db: Database, band_ids: list[int]) -> int:
    from qsnap_gui.engine.oban import enqueue_band, enqueue_bands

    if args.mode != Mode.MISSING.value:
        raise UsageError(
            f"--mode {args.mode} needs --engine local: Qlarius's snapshot worker fills "
            "missing snapshots only"
        )
    info = oban_info(db)
    if args.batch_size != DEFAULT_BATCH_SIZE:
        say("note: --batch-size is ignored with --engine oban (the workers use their own)")
    if args.band is not None:
        results = [enqueue_band(db.engine, band_ids[0], info=info)]
    else:
        results = enqueue_bands(db.engine, band_ids, info=info)
    print_enqueued(results)
    return oban_wait(args, db, info, [r.job_id for r in results])


def populate_on_oban(args: argparse.Namespace, db: Database, target_id: int) -> int:
    from sqlalchemy import text

    from qsnap_gui.engine.oban import enqueue_populate, get_job

    if args.resume:
        raise UsageError("--resume needs --engine local (the snapshot stage runs here)")
    info = oban_info(db)
    queued = enqueue_populate(db.engine, target_id, info=info)
    print_enqueued([queued])
    with db.engine.connect() as conn:
        since = get_job(conn, info, queued.job_id).inserted_at
    code = oban_wait(args, db, info, [queued.job_id], follow=(target_id, since))
    if args.wait:
        with db.engine.connect() as conn:
            status = conn.execute(
                text("select population_status from targets where id = :t"), {"t": target_id}
            ).scalar()
        print(f"target {target_id} is now {status}")
    return code


def backfill_oban_check(args: argparse.Namespace, db: Database, include) -> object:
    from qsnap_gui.engine.backfill import Category

    if args.yes and set(include) - {Category.MISSING}:
        raise UsageError(
            "--engine oban fixes missing snapshots only (Qlarius's worker has no repair or "
            "force mode): pass --include missing, or use --engine local"
        )
    return oban_info(db, write=args.yes)


def backfill_on_oban(args: argparse.Namespace, db: Database, info, plans, report) -> int:
    from qsnap_gui.engine.oban import enqueue_bands

    results = enqueue_bands(db.engine, [p.band_id for p in plans], info=info)
    if args.json:
        report["enqueued"] = [r.to_json() for r in results]
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_enqueued(results)
        say("the jobs run on the Qlarius workers: follow them with qsnap oban-jobs")
    return 0


def cmd_oban_jobs(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.oban import STATES, WORKERS, list_jobs, resolve_worker, state_counts

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
                    "table": f"{info.schema}.oban_jobs",
                    "counts": counts,
                    "jobs": [j.to_json() for j in jobs],
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print("  ".join(f"{s}: {counts[s]}" for s in STATES))
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


OBAN_STATES = [
    "available",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
]
