"""``qsnap populate`` and ``qsnap depopulate``."""

from __future__ import annotations

import argparse
import sys

from qsnap_gui.cli.interrupt import Interrupts
from qsnap_gui.cli.oban import populate_on_oban
from qsnap_gui.cli.output import ProgressPrinter, print_summary, require_write, say
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.domain.words import plural
from qsnap_gui.store.db import (
    DEPOPULATE_PRIVILEGES,
    POPULATE_PRIVILEGES,
    Database,
)


def cmd_populate(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.flows import refresh_population
    from qsnap_gui.store.queries import parse_id

    target_id = parse_id(args.target_id, "target")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    require_write(args, db, "populate", POPULATE_PRIVILEGES)
    if args.engine == "oban":
        return populate_on_oban(args, db, target_id)
    printer = ProgressPrinter()
    with Interrupts() as interrupts:
        result = refresh_population(
            db.engine,
            target_id,
            resume=args.resume,
            batch_size=args.batch_size,
            progress=printer,
            stage=say,
            log_line=say if args.verbose else (lambda line: None),
            cancel=interrupts.cancel,
        )
    printer.done()
    if result.diff:
        d = result.diff
        print(
            f"target {target_id}: {plural(d.total, 'me_file')} in {plural(len(result.bands), 'band')} "
            f"({d.kept} kept, {d.inserted} inserted, {d.deleted} deleted, {d.moved} moved)"
        )
    code = print_summary(result.bands) if result.bands else 0
    print(f"target {target_id} is now {result.status}")
    if result.status == "populating":
        next_step = f"run `qsnap populate {target_id} --resume` to finish it"
    else:
        next_step = f"nothing was applied; run `qsnap populate {target_id}` to refresh it"
    stopped = interrupts.exit_code(next_step)
    return code if stopped is None else stopped


def cmd_depopulate(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.population import depopulate
    from qsnap_gui.store.queries import parse_id, require_target

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
