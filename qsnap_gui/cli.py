"""The ``qsnap`` command line: the same core the window uses, for consoles and schedules.

Exit codes: 0 success, 1 a job failed, 2 bad usage, unknown id, connection or schema problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from . import __version__
from .db import (
    DEPOPULATE_PRIVILEGES,
    POPULATE_PRIVILEGES,
    SNAPSHOT_PRIVILEGES,
    Database,
    open_database,
    server_reason,
)
from .dsn import mask_text
from .errors import JobFailed, QsnapError, UsageError
from .snapshots import DEFAULT_BATCH_SIZE, BandResult, JobState, Mode, Progress

Handler = Callable[[argparse.Namespace, Database], int]


class ProgressPrinter:
    """Band progress on stderr: one redrawn line on a terminal, plain lines otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()
        self.state: dict[int, Progress] = {}
        self.last_step: dict[int, int] = {}

    def __call__(self, p: Progress) -> None:
        with self.lock:
            self.state[p.band_id] = p
            if self.tty:
                parts = []
                for band_id, q in sorted(self.state.items()):
                    pct = 100 * q.rows_done // q.rows_total if q.rows_total else 0
                    bar = "#" * (pct // 10) + "." * (10 - pct // 10)
                    parts.append(f"band {band_id} [{bar}] {pct:3d}% {q.state}")
                self.stream.write("\r" + "  ".join(parts)[:200])
                self.stream.flush()
                return
            if p.state is JobState.RUNNING and p.batches and self._worth_a_line(p):
                self.stream.write(
                    f"band {p.band_id}: batch {p.batch}/{p.batches} "
                    f"({p.rows_done}/{p.rows_total} rows)\n"
                )
            elif p.state is not JobState.RUNNING:
                detail = f": {p.message}" if p.message and p.message != str(p.state) else ""
                self.stream.write(f"band {p.band_id}: {p.state}{detail}\n")

    def _worth_a_line(self, p: Progress) -> bool:
        """The first and last batch and every 5% between, so logs stay readable."""
        step = p.batch * 20 // p.batches
        if p.batch in (1, p.batches) or step != self.last_step.get(p.band_id):
            self.last_step[p.band_id] = step
            return True
        return False

    def done(self) -> None:
        if self.tty and self.state:
            self.stream.write("\n")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def require_write(args: argparse.Namespace, db: Database, action: str, needed: tuple) -> None:
    """Refuse a write up front (exit 2, nothing written): read-only session or role too weak.

    With ``--engine oban`` the writes are the job rows, which oban.require checks.
    """
    if db.read_only:
        raise UsageError(f"{action} writes to the database: connect without --read-only")
    if getattr(args, "engine", "local") != "local":
        return
    from .db import missing_privileges

    missing = missing_privileges(db, *needed)
    if missing:
        raise UsageError(f"{action}: your database role lacks {', '.join(missing)}")


def _fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(lines)


def cmd_targets(args: argparse.Namespace, db: Database) -> int:
    from .queries import list_targets

    with db.engine.connect() as conn:
        targets = list_targets(conn)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": t.id,
                        "title": t.title,
                        "population_status": t.population_status,
                        "stuck": t.stuck,
                        "last_populated_at": t.last_populated_at.isoformat()
                        if t.last_populated_at
                        else None,
                        "population": t.population,
                        "missing_snapshots": t.missing,
                        "coverage": round(t.coverage, 4),
                    }
                    for t in targets
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print(
        table(
            ["id", "title", "status", "last populated", "population", "missing", "coverage"],
            [
                [
                    t.id,
                    t.title,
                    t.status_label,
                    _fmt_time(t.last_populated_at),
                    t.population,
                    t.missing,
                    f"{100 * t.coverage:.1f}%" if t.population else "-",
                ]
                for t in targets
            ],
        )
    )
    return 0


def cmd_bands(args: argparse.Namespace, db: Database) -> int:
    from .codec import SHAPES
    from .queries import list_bands, parse_id, require_target

    target_id = parse_id(args.target_id, "target")
    with db.engine.connect() as conn:
        require_target(conn, target_id)
        bands = list_bands(conn, target_id)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "label": b.label,
                        "band_id": b.id,
                        "title": b.title,
                        "is_bullseye": b.is_bullseye,
                        "trait_groups": [{"id": g.id, "title": g.title} for g in b.groups],
                        "population": b.population,
                        "shapes": b.shapes,
                    }
                    for b in bands
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    shape_names = [str(s) for s in SHAPES]
    print(
        table(
            ["label", "band", "trait groups", "population", *shape_names],
            [
                [
                    b.label,
                    b.id,
                    "; ".join(f"{g.id} {g.title}" for g in b.groups) or "(none)",
                    b.population,
                    *(b.shapes.get(s, 0) for s in shape_names),
                ]
                for b in bands
            ],
        )
    )
    return 0


def _summary(results: list[BandResult]) -> int:
    failed = 0
    for r in results:
        line = f"band {r.band_id}: {r.state}, {r.rows_written} rows written in {r.elapsed:.2f}s"
        if r.attempts > 1:
            line += f" ({r.attempts} attempts)"
        if r.error and r.state is JobState.FAILED:
            line += f": {r.error}"
        print(line)
        failed += r.state is not JobState.SUCCEEDED
    total = sum(r.rows_written for r in results)
    print(f"total: {total} rows written, {len(results) - failed} of {len(results)} bands succeeded")
    return 1 if failed else 0


def cmd_snapshot(args: argparse.Namespace, db: Database) -> int:
    from .population import outermost_first
    from .queries import band_target, parse_id, require_target
    from .snapshots import snapshot_bands

    with db.engine.connect() as conn:
        if args.band is not None:
            band_ids = [parse_id(args.band, "band")]
            band_target(conn, band_ids[0])
        else:
            target_id = parse_id(args.target, "target")
            require_target(conn, target_id)
            band_ids = outermost_first(conn, target_id)
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    require_write(args, db, "snapshot", SNAPSHOT_PRIVILEGES)
    if args.engine == "oban":
        return _snapshot_on_oban(args, db, band_ids)
    printer = ProgressPrinter()
    results = snapshot_bands(
        db.engine,
        band_ids,
        mode=Mode(args.mode),
        batch_size=args.batch_size,
        progress=printer,
        log_line=say if args.verbose else (lambda line: None),
    )
    printer.done()
    return _summary(results)


def cmd_populate(args: argparse.Namespace, db: Database) -> int:
    from .population import refresh_population
    from .queries import parse_id

    target_id = parse_id(args.target_id, "target")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    require_write(args, db, "populate", POPULATE_PRIVILEGES)
    if args.engine == "oban":
        return _populate_on_oban(args, db, target_id)
    printer = ProgressPrinter()
    result = refresh_population(
        db.engine,
        target_id,
        stage=say,
        resume=args.resume,
        batch_size=args.batch_size,
        progress=printer,
        log_line=say if args.verbose else (lambda line: None),
    )
    printer.done()
    if result.diff:
        d = result.diff
        print(
            f"target {target_id}: {d.total} me_files in {len(result.bands)} bands "
            f"({d.kept} kept, {d.inserted} inserted, {d.deleted} deleted, {d.moved} moved)"
        )
    code = _summary(result.bands) if result.bands else 0
    print(f"target {target_id} is now {result.status}")
    return code


def cmd_depopulate(args: argparse.Namespace, db: Database) -> int:
    from .population import depopulate
    from .queries import parse_id, require_target

    target_id = parse_id(args.target_id, "target")
    with db.engine.connect() as conn:
        title = require_target(conn, target_id)
    require_write(args, db, "depopulate", DEPOPULATE_PRIVILEGES)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("depopulate needs confirmation: pass --yes when not on a terminal")
        answer = input(f"Delete every population of target {target_id} ({title})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 0
    deleted = depopulate(db.engine, target_id)
    print(f"target {target_id}: {deleted} populations deleted, now not_populated")
    return 0


def cmd_inspect(args: argparse.Namespace, db: Database) -> int:
    from .inspection import inspect_me_file, render_text
    from .queries import parse_id

    me_file_id = parse_id(args.me_file_id, "me_file")
    band_id = parse_id(args.band, "band") if args.band is not None else None
    with db.engine.connect() as conn:
        report = inspect_me_file(conn, me_file_id, band_id=band_id)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(render_text(report))
    return 0


def cmd_backfill(args: argparse.Namespace, db: Database) -> int:
    from . import backfill as bf
    from .queries import parse_id

    chosen = bf.parse_categories([args.include])
    include = bf.effective_categories(chosen)
    note = bf.implied_note(chosen)
    if note:
        say(f"note: {note}")
    target_ids = [parse_id(t, "target") for t in args.target] if args.target else None
    if args.batch_size < 1 or args.workers < 1:
        raise UsageError("--batch-size and --workers must be at least 1")
    if args.yes:
        require_write(args, db, "backfill --yes", SNAPSHOT_PRIVILEGES)
    oban_info = _backfill_oban_check(args, db, include) if args.engine == "oban" else None

    def scan_progress(done: int, total: int, message: str) -> None:
        if sys.stderr.isatty() and total:
            sys.stderr.write(f"\rscanning: {100 * done // total:3d}% {message[:60]:<60}")
            sys.stderr.flush()

    with db.engine.connect() as conn:
        scan = bf.scan(conn, target_ids, include, progress=scan_progress)
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 80 + "\r")
    plans = bf.plan(scan)
    modes = {p.band_id: p for p in plans}
    estimate = bf.estimate_seconds(scan, scan.rows_per_second, parallel=args.workers)
    report = {
        **scan.to_json(),
        "bands": [
            {
                **r.to_json(),
                "mode": modes[r.band_id].mode.value if r.band_id in modes else None,
                "rows_to_write": modes[r.band_id].rows if r.band_id in modes else 0,
            }
            for r in scan.rows
        ],
        "estimated_seconds": round(estimate, 1) if estimate is not None else None,
    }
    counted = [c for c in bf.CATEGORIES if c in include]
    if not args.json:
        print(
            table(
                [
                    "target",
                    "band",
                    "label",
                    "population",
                    *counted,
                    "broken shapes",
                    "mode",
                    "rows",
                ],
                [
                    [
                        r.target_id,
                        r.band_id,
                        r.label,
                        r.population,
                        *(r.count(c) for c in counted),
                        ", ".join(f"{k} {v}" for k, v in r.shapes.items() if v) or "-",
                        modes[r.band_id].mode if r.band_id in modes else "-",
                        modes[r.band_id].rows if r.band_id in modes else 0,
                    ]
                    for r in scan.rows
                ],
            )
        )
        totals = scan.totals()
        rate = f" at {scan.rows_per_second:,.0f} rows/s" if scan.rows_per_second else ""
        took = f"about {estimate:,.1f}s" if estimate is not None else "unknown"
        print(
            f"to fix: {', '.join(f'{totals[c]} {c}' for c in counted)}; "
            f"{sum(p.rows for p in plans)} rows to write in {len(plans)} of {len(scan.rows)} "
            f"bands; estimated {took}{rate} (scan took {scan.seconds:.2f}s)"
        )
    if args.dry_run:
        if args.json:
            print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    if oban_info is not None:
        return _backfill_on_oban(args, db, oban_info, plans, report)
    printer = ProgressPrinter()
    outcomes = bf.run_bands(
        db.engine,
        plans,
        workers=args.workers,
        batch_size=args.batch_size,
        progress=printer,
        log_line=say if args.verbose else (lambda line: None),
    )
    printer.done()
    if args.json:
        report["results"] = [o.to_json() for o in outcomes]
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 1 if any(o.failed for o in outcomes) else 0
    if outcomes:
        print(
            table(
                ["target", "band", "label", "mode", "state", *(f"{c} fixed" for c in counted)]
                + ["still to fix", "seconds"],
                [
                    [
                        o.before.target_id,
                        o.band_id,
                        o.before.label,
                        o.mode,
                        o.state,
                        *(o.fixed(c) if o.fixed(c) is not None else "?" for c in counted),
                        sum(o.remaining(c) or 0 for c in counted) if o.after else "?",
                        f"{o.duration:.2f}",
                    ]
                    for o in outcomes
                ],
            )
        )
    return _summary(
        [
            BandResult(
                o.band_id,
                o.state,
                rows_written=o.rows_written,
                attempts=o.attempts,
                elapsed=o.duration,
                error=o.error,
            )
            for o in outcomes
        ]
    )


# --- the Qlarius workers (--engine oban) -------------------------------------------------------


def _oban_info(db: Database, *, write: bool = True, what: str = "--engine oban"):
    from .oban import ObanUnavailable, require

    with db.engine.connect() as conn:
        try:
            return require(conn, write=write)
        except ObanUnavailable as exc:
            hint = "; run with --engine local" if what == "--engine oban" else ""
            raise UsageError(f"{what}: {exc}{hint}") from None


def _print_enqueued(results) -> None:
    for r in results:
        if r.refused:
            print(f"{r.subject}: already queued as Oban job {r.job_id} ({r.state}); not enqueued")
        else:
            print(f"{r.subject}: enqueued Oban job {r.job_id}")


def _oban_wait(args: argparse.Namespace, db: Database, info, job_ids, follow=None) -> int:
    from .oban import wait_for_jobs

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


def _snapshot_on_oban(args: argparse.Namespace, db: Database, band_ids: list[int]) -> int:
    from .oban import enqueue_band, enqueue_bands

    if args.mode != Mode.MISSING.value:
        raise UsageError(
            f"--mode {args.mode} needs --engine local: Qlarius's snapshot worker fills "
            "missing snapshots only"
        )
    info = _oban_info(db)
    if args.batch_size != DEFAULT_BATCH_SIZE:
        say("note: --batch-size is ignored with --engine oban (the workers use their own)")
    if args.band is not None:
        results = [enqueue_band(db.engine, band_ids[0], info=info)]
    else:
        results = enqueue_bands(db.engine, band_ids, info=info)
    _print_enqueued(results)
    return _oban_wait(args, db, info, [r.job_id for r in results])


def _populate_on_oban(args: argparse.Namespace, db: Database, target_id: int) -> int:
    from sqlalchemy import text

    from .oban import enqueue_populate, get_job

    if args.resume:
        raise UsageError("--resume needs --engine local (the snapshot stage runs here)")
    info = _oban_info(db)
    queued = enqueue_populate(db.engine, target_id, info=info)
    _print_enqueued([queued])
    with db.engine.connect() as conn:
        since = get_job(conn, info, queued.job_id).inserted_at
    code = _oban_wait(args, db, info, [queued.job_id], follow=(target_id, since))
    if args.wait:
        with db.engine.connect() as conn:
            status = conn.execute(
                text("select population_status from targets where id = :t"), {"t": target_id}
            ).scalar()
        print(f"target {target_id} is now {status}")
    return code


def _backfill_oban_check(args: argparse.Namespace, db: Database, include) -> object:
    from .backfill import Category

    if args.yes and set(include) - {Category.MISSING}:
        raise UsageError(
            "--engine oban fixes missing snapshots only (Qlarius's worker has no repair or "
            "force mode): pass --include missing, or use --engine local"
        )
    return _oban_info(db, write=args.yes)


def _backfill_on_oban(args: argparse.Namespace, db: Database, info, plans, report) -> int:
    from .oban import enqueue_bands

    results = enqueue_bands(db.engine, [p.band_id for p in plans], info=info)
    if args.json:
        report["enqueued"] = [r.to_json() for r in results]
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_enqueued(results)
        say("the jobs run on the Qlarius workers: follow them with qsnap oban-jobs")
    return 0


def cmd_oban_jobs(args: argparse.Namespace, db: Database) -> int:
    from .oban import STATES, WORKERS, list_jobs, resolve_worker, state_counts

    info = _oban_info(db, write=False, what="oban-jobs")
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
                    _fmt_time(j.inserted_at),
                    _fmt_time(j.ended_at) if j.ended_at else "-",
                    (j.last_error.first_line[:60] if j.last_error else "-"),
                ]
                for j in jobs
            ],
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace, db: Database) -> int:
    from .demo import DemoSpec, generate_demo

    if args.me_files < 1:
        raise UsageError("--me-files must be at least 1")
    generate_demo(
        db.engine, DemoSpec(me_files=args.me_files, seed=args.seed), reset=args.reset, progress=say
    )
    return 0


def cmd_bench(args: argparse.Namespace, db: Database | None) -> int:
    from .bench import bench_scale, render, to_json

    if args.repeat < 1 or any(n < 100 for n in args.scale):
        raise UsageError("--repeat must be at least 1 and each --scale at least 100")
    results = [bench_scale(n, args.repeat, say) for n in args.scale]
    print(json.dumps(to_json(results), indent=2) if args.json else render(results))
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


def _engine_options(p: argparse.ArgumentParser, *, wait: bool) -> None:
    p.add_argument(
        "--engine",
        choices=["local", "oban"],
        default="local",
        help="local: run here (default); oban: enqueue on the Qlarius workers (oban_jobs)",
    )
    if wait:
        p.add_argument(
            "--wait", action="store_true", help="with --engine oban: follow the jobs to their end"
        )
        p.add_argument(
            "--timeout", type=float, default=0, metavar="S", help="stop waiting after S seconds"
        )
        p.add_argument(
            "--poll", type=float, default=2.0, metavar="S", help="seconds between polls (2)"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsnap",
        description="Inspect and repair Qlarius target population snapshots.",
        epilog="Without --dsn, QSNAP_DATABASE_URL or DATABASE_URL, qsnap uses its embedded "
        "demo database.",
    )
    parser.add_argument("--version", action="version", version=f"qsnap {__version__}")
    parser.add_argument("--dsn", metavar="URL", help="database URL (postgres://, ecto://, …)")
    parser.add_argument(
        "--read-only", action="store_true", help="open the session read-only (browse mode)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print job log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("targets", help="list targets with population and snapshot coverage")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_targets)

    p = sub.add_parser("bands", help="list a target's bands with counts per snapshot shape")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_bands)

    p = sub.add_parser("snapshot", help="snapshot one band or every band of a target")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--band", metavar="ID", help="the band to snapshot")
    which.add_argument("--target", metavar="ID", help="snapshot all its bands in parallel")
    p.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.MISSING.value,
        help="missing: NULL only (default); repair: NULL and broken; force: every row",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    _engine_options(p, wait=True)
    p.set_defaults(handler=cmd_snapshot)

    p = sub.add_parser("populate", help="Refresh Population of a target, snapshots included")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish a stuck target: snapshot stage and status only",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    _engine_options(p, wait=True)
    p.set_defaults(handler=cmd_populate)

    p = sub.add_parser("depopulate", help="delete a target's populations")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=cmd_depopulate)

    p = sub.add_parser("inspect", help="why a me_file sits in each band, snapshot by snapshot")
    p.add_argument("me_file_id", metavar="ME_FILE_ID")
    p.add_argument("--band", metavar="ID", help="only this band")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser(
        "backfill", help="find and fix missing, broken or stale snapshots across targets"
    )
    p.add_argument(
        "--target",
        metavar="ID",
        nargs="+",
        action="extend",
        help="only these targets (default: all)",
    )
    p.add_argument(
        "--include",
        default="missing,broken",
        metavar="LIST",
        help="categories to fix, comma-separated: missing, broken, stale (default "
        "missing,broken; broken includes missing, stale includes both and rewrites every row "
        "of a band with stale rows)",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dry-run", action="store_true", help="scan and report, change nothing")
    what.add_argument("--yes", action="store_true", help="scan, then fix what the scan found")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
    p.add_argument(
        "--workers", type=int, default=4, metavar="N", help="band jobs at a time (default 4)"
    )
    _engine_options(p, wait=False)
    p.set_defaults(handler=cmd_backfill)

    p = sub.add_parser(
        "oban-jobs", help="list the snapshot and population jobs in oban_jobs, counts per state"
    )
    p.add_argument(
        "--state", choices=OBAN_STATES, action="append", help="only this state (repeatable)"
    )
    p.add_argument(
        "--worker",
        action="append",
        metavar="W",
        help="snapshot, populate or a worker name (repeatable; default both Qlarius workers)",
    )
    p.add_argument("--limit", type=int, default=200, metavar="N", help="newest N (default 200)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_oban_jobs)

    p = sub.add_parser("demo", help="create the schema and demo data in an empty database")
    p.add_argument("--me-files", type=int, default=10_000, metavar="N")
    p.add_argument("--seed", type=int, default=42, metavar="S")
    p.add_argument(
        "--reset", action="store_true", help="recreate the demo in a database qsnap created"
    )
    p.set_defaults(handler=cmd_demo, schema_free=True)

    p = sub.add_parser(
        "bench",
        help="benchmark the snapshot engine on scratch databases of the embedded server",
        description="Never touches --dsn: it creates qsnap_bench_N databases in the embedded "
        "server and times the original worker's port, qsnap and the write floor.",
    )
    p.add_argument(
        "--scale",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        metavar="N",
        help="me_files (= populations) per scale (default 10000 100000)",
    )
    p.add_argument("--repeat", type=int, default=1, metavar="R", help="runs per strategy (median)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_bench, no_database=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    db: Database | None = None
    started = time.monotonic()
    try:
        if getattr(args, "no_database", False):
            return args.handler(args, None)
        db = open_database(
            args.dsn,
            check_schema=not getattr(args, "schema_free", False),
            read_only=args.read_only,
        )
        return args.handler(args, db)
    except JobFailed as exc:
        print(f"qsnap: {exc}", file=sys.stderr)
        return 1
    except QsnapError as exc:
        print(f"qsnap: {exc}", file=sys.stderr)
        return exc.exit_code
    except DBAPIError as exc:
        where = db.where if db else "the database"
        secret = db.url if db else None
        print(
            f"qsnap: database error on {where}: {mask_text(server_reason(exc), secret)}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"qsnap: interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130
    finally:
        if db is not None:
            db.dispose()


if __name__ == "__main__":
    sys.exit(main())
