"""``qsnap bands``: a target's bands with counts per snapshot shape."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.cli.output import table
from qsnap_gui.store.db import (
    Database,
)


def cmd_bands(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.domain.codec import SHAPES
    from qsnap_gui.domain.shapes import shape_label
    from qsnap_gui.store.queries import list_bands, parse_id, require_target, target_notes

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
                        "broken": b.broken,
                        "orphans": b.orphans,
                        "links_to_deleted_groups": b.dangling_links,
                        "notes": list(b.notes),
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
            [
                "label",
                "band",
                "trait groups",
                "population",
                *(shape_label(s).lower() for s in SHAPES),
                "broken",
                "orphans",
            ],
            [
                [
                    b.label,
                    b.id,
                    "; ".join(f"{g.id} {g.title}" for g in b.groups) or "(none)",
                    b.population,
                    *(b.shapes.get(s, 0) for s in shape_names),
                    b.broken,
                    b.orphans,
                ]
                for b in bands
            ],
        )
    )
    for note in target_notes(bands):
        print(f"warning: {note}")
    return 0
