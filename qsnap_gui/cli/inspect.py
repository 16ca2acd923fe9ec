"""``qsnap inspect``: why a me_file sits in each band."""

from __future__ import annotations

import argparse
import json

from qsnap_gui.store.db import (
    Database,
)


def cmd_inspect(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.inspection import inspect_me_file, render_text
    from qsnap_gui.store.queries import parse_id

    me_file_id = parse_id(args.me_file_id, "me_file")
    band_id = parse_id(args.band, "band") if args.band is not None else None
    with db.engine.connect() as conn:
        report = inspect_me_file(conn, me_file_id, band_id=band_id)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(render_text(report))
    return 0
