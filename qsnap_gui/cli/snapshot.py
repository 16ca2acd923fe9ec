"""``qsnap snapshot``: band jobs, here or on the Qlarius workers."""

from __future__ import annotations

import argparse

from qsnap_gui.cli.interrupt import Interrupts
from qsnap_gui.cli.oban import snapshot_on_oban
from qsnap_gui.cli.output import ProgressPrinter, print_summary, require_write, say
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshots import Mode
from qsnap_gui.store.db import (
    SNAPSHOT_PRIVILEGES,
    Database,
)


def cmd_snapshot(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.flows import snapshot_bands
    from qsnap_gui.engine.population import outermost_first
    from qsnap_gui.store.queries import band_target, parse_id, require_target

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
        return snapshot_on_oban(args, db, band_ids)
    printer = ProgressPrinter()
    with Interrupts() as interrupts:
        results = snapshot_bands(
            db.engine,
            band_ids,
            mode=Mode(args.mode),
            batch_size=args.batch_size,
            progress=printer,
            log_line=say if args.verbose else (lambda line: None),
            cancel=interrupts.cancel,
        )
    printer.done()
    code = print_summary(results)
    stopped = interrupts.exit_code("run the same command again to snapshot the rest")
    return code if stopped is None else stopped
