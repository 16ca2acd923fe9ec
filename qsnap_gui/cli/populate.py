"""``qsnap populate`` and ``qsnap depopulate``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from qsnap_gui.cli.interrupt import Interrupts
from qsnap_gui.cli.oban import populate_on_oban
from qsnap_gui.cli.output import ProgressPrinter, print_summary, require_write, say, table
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.domain.words import plural
from qsnap_gui.store.db import (
    DEPOPULATE_PRIVILEGES,
    POPULATE_PRIVILEGES,
    Database,
)

if TYPE_CHECKING:
    from qsnap_gui.engine.preview import RefreshPreview


def cmd_populate(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.flows import refresh_population
    from qsnap_gui.store.queries import parse_id

    target_id = parse_id(args.target_id, "target")
    if args.preview:
        return show_preview(args, db, target_id)
    for flag in ("json", "stale"):
        if getattr(args, flag):
            option = "--" + flag.replace("_", "-")
            raise UsageError(f"{option} goes with --preview")
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


PREVIEW_REFUSED = (
    ("resume", "--resume"),
    ("wait", "--wait"),
)


def show_preview(args: argparse.Namespace, db: Database, target_id: int) -> int:
    """``populate T --preview``: what a refresh would change, in a read-only transaction."""
    from qsnap_gui.engine.preview import preview_refresh

    for attr, flag in PREVIEW_REFUSED:
        if getattr(args, attr, False):
            raise UsageError(f"--preview writes nothing and runs no job: it cannot go with {flag}")
    if args.engine != "local":
        raise UsageError("--preview reads the database itself: it cannot go with --engine oban")
    with db.engine.connect() as conn:
        preview = preview_refresh(conn, target_id, stale=args.stale)
    if args.json:
        print(json.dumps(preview.to_json(), ensure_ascii=False, indent=2))
        return 0
    print(preview_text(preview))
    return 0


def preview_text(p: RefreshPreview) -> str:
    """The preview as the terminal shows it: one line per band, then the moves and a sample."""
    head = f"target {p.target_id} ({p.title}), {p.status}: preview of Refresh Population"
    if not p.bands:
        return f"{head}\nno bands: a refresh would populate nothing"
    offers = "offers left" if p.offers_readable else "offers left (not readable)"
    rows = [
        [
            b.label,
            b.band_id,
            b.before,
            b.kept,
            b.added,
            b.removed,
            b.moved_in,
            b.moved_out,
            b.after,
            *([b.stale] if p.stale_checked else []),
            "-" if b.offers_left is None else b.offers_left,
        ]
        for b in p.bands
    ]
    headers = ["band", "id", "now", "kept", "added", "removed", "moved in", "moved out", "after"]
    stale = ["stale kept"] if p.stale_checked else []
    lines = [head, table([*headers, *stale, offers], rows)]
    lines.append(
        f"total: {p.kept} kept, {p.added} added, {p.removed} removed, "
        f"{plural(p.moved, 'me_file')} change band"
    )
    if p.moves:
        lines.append(
            "moves: "
            + ", ".join(
                f"{p.label(m.from_band)} -> {p.label(m.to_band)}: {m.count}" for m in p.moves
            )
        )
    if p.sample:
        lines.append(
            "for example: "
            + ", ".join(
                f"{s.me_file_id} ({p.label(s.from_band)} -> {p.label(s.to_band)})" for s in p.sample
            )
        )
    if p.offers_readable and any(b.offers_left for b in p.bands):
        by_refresh = sum(b.offers_by_refresh or 0 for b in p.bands)
        lines.append(
            f"offers left pointing at a (me_file, band) that will not exist: "
            f"{sum(b.offers_left or 0 for b in p.bands)}, {by_refresh} of them because of "
            "this refresh (the application's CleanupInvalidOffersWorker acts on them)"
        )
    if not p.stale_checked:
        lines.append("kept rows with a stale snapshot: not counted (--stale counts them)")
    lines.append("nothing was written")
    return "\n".join(lines)


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
