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
                    fmt_time(t.last_populated_at),
                    t.population,
                    t.missing,
                    f"{100 * t.coverage:.1f}%" if t.population else "-",
                ]
                for t in targets
            ],
        )
    )
    return 0
