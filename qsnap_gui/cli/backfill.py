"""``qsnap backfill``: scan, then fix missing, broken or stale snapshots."""

from __future__ import annotations

import argparse
import json
import sys

from qsnap_gui.cli.interrupt import Interrupts
from qsnap_gui.cli.output import ProgressPrinter, print_summary, require_write, say, table
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshots import BandResult
from qsnap_gui.store.db import (
    SNAPSHOT_PRIVILEGES,
    Database,
)


def cmd_backfill(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine import backfill as bf
    from qsnap_gui.store.queries import parse_id

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
    oban_info = None
    if args.engine == "oban":
        from qsnap_gui.cli.oban import backfill_oban_check

        oban_info = backfill_oban_check(args, db, include)

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
    estimate = bf.estimate_seconds(scan, scan.rows_per_second, parallel=args.workers, plans=plans)
    # the JSON report of 15,000 bands takes a second to build: only for --json and oban
    report = _report(scan, modes, estimate) if args.json or oban_info is not None else {}
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
        from qsnap_gui.cli.oban import backfill_on_oban

        return backfill_on_oban(args, db, oban_info, plans, report)
    from qsnap_gui.engine.flows import run_backfill

    printer = ProgressPrinter()
    with Interrupts() as interrupts:
        outcomes = run_backfill(
            db.engine,
            plans,
            workers=args.workers,
            batch_size=args.batch_size,
            progress=printer,
            log_line=say if args.verbose else (lambda line: None),
            cancel=interrupts.cancel,
        )
    printer.done()
    stopped = interrupts.exit_code("run the same command again to fix the rest")
    if args.json:
        report["results"] = [o.to_json() for o in outcomes]
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return stopped or (1 if any(o.failed for o in outcomes) else 0)
    if outcomes:
        print(
            table(
                ["target", "band", "label", "mode", "state", *(f"{c} fixed" for c in counted)]
                + ["still to fix", "seconds"],
                [_outcome_cells(o, counted) for o in outcomes],
            )
        )
    code = print_summary(
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
    return code if stopped is None else stopped


def _outcome_cells(o, counted: list) -> list:
    """One band's line of the results table: "?" where a count is not known."""
    fixed = [o.fixed(c) for c in counted]
    return [
        o.before.target_id,
        o.band_id,
        o.before.label,
        o.mode,
        o.state,
        *("?" if f is None else f for f in fixed),
        sum(o.remaining(c) or 0 for c in counted) if o.after else "?",
        f"{o.duration:.2f}",
    ]


def _report(scan, modes: dict, estimate: float | None) -> dict:
    """The scan as ``--json`` prints it: every band with its mode and rows to write."""
    return {
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
