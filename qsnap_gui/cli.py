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
from .db import Database, open_database, server_reason
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
        self.last_line: dict[int, float] = {}

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
            if p.state is JobState.RUNNING and p.batches:
                self.stream.write(
                    f"band {p.band_id}: batch {p.batch}/{p.batches} "
                    f"({p.rows_done}/{p.rows_total} rows)\n"
                )
            elif p.state is not JobState.RUNNING:
                detail = f": {p.message}" if p.message and p.message != str(p.state) else ""
                self.stream.write(f"band {p.band_id}: {p.state}{detail}\n")

    def done(self) -> None:
        if self.tty and self.state:
            self.stream.write("\n")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
                    f"{100 * t.coverage:.1f}%",
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


def cmd_demo(args: argparse.Namespace, db: Database) -> int:
    from .demo import DemoSpec, generate_demo

    if args.me_files < 1:
        raise UsageError("--me-files must be at least 1")
    generate_demo(
        db.engine, DemoSpec(me_files=args.me_files, seed=args.seed), reset=args.reset, progress=say
    )
    return 0


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
    p.set_defaults(handler=cmd_snapshot)

    p = sub.add_parser("populate", help="Refresh Population of a target, snapshots included")
    p.add_argument("target_id", metavar="TARGET_ID")
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish a stuck target: snapshot stage and status only",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
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

    p = sub.add_parser("demo", help="create the schema and demo data in an empty database")
    p.add_argument("--me-files", type=int, default=10_000, metavar="N")
    p.add_argument("--seed", type=int, default=42, metavar="S")
    p.add_argument(
        "--reset", action="store_true", help="recreate the demo in a database qsnap created"
    )
    p.set_defaults(handler=cmd_demo, schema_free=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    db: Database | None = None
    started = time.monotonic()
    try:
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
        print(f"qsnap: database error on {where}: {mask_text(server_reason(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qsnap: interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130
    finally:
        if db is not None:
            db.dispose()


if __name__ == "__main__":
    sys.exit(main())
