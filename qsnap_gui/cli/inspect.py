"""``qsnap inspect``: why a me_file sits in each band, and with ``--offers`` why it was shown
each ad (its offers and ad events, compared with their populations)."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime

from qsnap_gui.cli.output import table
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.store.db import (
    Database,
)

TREE_LINES = 50  # tags shown per offer or ad event in the text output


def cmd_inspect(args: argparse.Namespace, db: Database) -> int:
    from qsnap_gui.engine.inspection import inspect_me_file, render_text
    from qsnap_gui.engine.offers_view import offers_section
    from qsnap_gui.store.queries import parse_id

    me_file_id = parse_id(args.me_file_id, "me_file")
    band_id = parse_id(args.band, "band") if args.band is not None else None
    if not args.offers and str(args.offset).strip() != "0":
        raise UsageError("--offset pages the offers and ad events: give --offers too")
    offset = _offset(args.offset) if args.offers else 0
    with db.engine.connect() as conn:
        report = inspect_me_file(conn, me_file_id, band_id=band_id)
        section = (
            offers_section(conn, me_file_id, band_id=band_id, offset=offset)
            if args.offers
            else None
        )
    if args.json:
        out = report.to_json()
        if args.offers:
            out["offers"] = section.offers.to_json() if section and section.offers else None
            out["ad_events"] = (
                section.ad_events.to_json() if section and section.ad_events else None
            )
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(render_text(report))
        if args.offers:
            print()
            print(render_offers(section))
    return 0


def _offset(value: object) -> int:
    shown = str(value).strip()
    if not re.fullmatch(r"[0-9]{1,9}", shown):
        raise UsageError(f"--offset must be a whole number of rows (0 or more), got {shown[:40]!r}")
    return int(shown)


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def render_offers(section) -> str:
    """A table per kind (newest first), then each row's decoded snapshot and comparison."""
    from qsnap_gui.engine.inspection import tree_lines
    from qsnap_gui.engine.offers_view import AD_EVENTS, KIND_WORDS, KINDS

    if section is None:
        return "offers and ad events: none in this database (or this role may not read them)"
    out: list[str] = []
    for kind in KINDS:
        page = section.page(kind)
        heading = kind.replace("_", " ")
        if page is None:
            out += [f"{heading}: no such table here (or this role may not read it)", ""]
            continue
        span = f"{page.offset + 1:,}-{page.next_offset:,} shown" if page.rows else "none shown"
        more = f"; more with --offset {page.next_offset}" if page.has_more else ""
        out.append(f"{heading}: {page.total:,} ({span}, newest first{more})")
        if not page.rows:
            out.append("")
            continue
        headers = ["id", "created (UTC)", "campaign", "target", "band", "shape", "compared"]
        if kind == AD_EVENTS:
            headers.insert(1, "offer")
        rows = []
        for r in page.rows:
            target = "-"
            if r.target_id is not None:
                title = r.target_title if r.target_title is not None else "(untitled)"
                target = f"{title} ({r.target_id})"
            band = "(no band)" if r.band_id is None else f"{r.band_label} ({r.band_id})"
            cells = [
                r.id,
                _stamp(r.created_at),
                _or_dash(r.campaign_id),
                target,
                band,
                r.shape,
                r.comparison.line,
            ]
            if kind == AD_EVENTS:
                cells.insert(1, _or_dash(r.offer_id))
            rows.append(cells)
        out.append(table(headers, rows))
        for r in page.rows:
            out.append(f"{KIND_WORDS[kind]} {r.id} · {r.shape} · {r.comparison.line}")
            out.extend("    " + line for line in tree_lines(r.decoded, limit=TREE_LINES))
        out.append("")
    return "\n".join(out).rstrip()
