"""``qsnap targets``: every target with its counts and status."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.cli.output import fmt_time, table
from qsnap_gui.store.db import (
    Database,
)


def cmd_targets(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.targets import list_targets
    from qsnap_gui.store.queries import population_orphans

    with db.engine.connect() as conn:
        targets = list_targets(conn, orphans=True)
        outside = population_orphans(conn)
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
                        "orphans": t.orphans,
                        "coverage": round(t.coverage, 4)
                        if t.population and t.coverage is not None
                        else None,
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
            [
                "id",
                "title",
                "status",
                "last populated",
                "population",
                "missing",
                "coverage",
                "orphans",
            ],
            [
                [
                    t.id,
                    t.display_title,
                    t.status_label,
                    fmt_time(t.last_populated_at),
                    t.population,
                    t.missing,
                    f"{100 * t.coverage:.1f}%" if t.population else "-",
                    t.orphans,
                ]
                for t in targets
            ],
        )
    )
    if outside.total:
        print(
            f"{outside.total} population rows belong to no target's band "
            f"({outside.no_band} without a band, {outside.deleted_band} of deleted bands, "
            f"{outside.band_without_target} of bands without a target): never processed"
        )
    return 0
