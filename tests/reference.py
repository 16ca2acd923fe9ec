"""A plain-Python reference of DOMAIN.md, read from the tables with simple selects.

It shares no SQL with the engines: band order and labels, Refresh Population's membership
(step 2), each population's snapshot (``codec.build_snapshot``), which stored snapshots are
broken or stale, and what offers and ad events hold after a write.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import (
    Decoded,
    Shape,
    TagRow,
    TraitInfo,
    band_metadata,
    build_snapshot,
    decode,
    is_broken,
    same_up_to_ties,
)

CARRIERS = ("offers", "ad_events")


def traits(conn: Connection) -> dict[int, TraitInfo]:
    rows = conn.execute(text("select id, trait_name, display_order, parent_trait_id from traits"))
    return {r[0]: TraitInfo(r[0], r[1], r[2], r[3]) for r in rows}


def band_groups(conn: Connection) -> dict[int, set[int]]:
    """band -> its distinct trait groups that exist (links to missing groups are dropped)."""
    existing = set(conn.execute(text("select id from trait_groups")).scalars())
    out: dict[int, set[int]] = defaultdict(set)
    for band, group in conn.execute(
        text("select target_band_id, trait_group_id from target_band_trait_groups")
    ):
        if band is not None and group in existing:
            out[band].add(group)
    return out


def group_traits(conn: Connection) -> dict[int, set[int]]:
    out: dict[int, set[int]] = defaultdict(set)
    for group, trait in conn.execute(
        text("select trait_group_id, trait_id from trait_group_traits")
    ):
        if group is not None and trait is not None:
            out[group].add(trait)
    return out


def bands_of(conn: Connection, target_id: int) -> list[tuple[int, bool]]:
    rows = conn.execute(
        text("select id, is_bullseye from target_bands where target_id = :t"), {"t": target_id}
    )
    return [(b, e == "1") for b, e in rows]


def labels(conn: Connection, target_id: int) -> dict[int, str]:
    """Most groups first, then lower id first; the bullseye is "Bullseye", others "Ring N"."""
    groups = band_groups(conn)
    bands = sorted(bands_of(conn, target_id), key=lambda b: (-len(groups[b[0]]), b[0]))
    return {b: "Bullseye" if e else f"Ring {n}" for n, (b, e) in enumerate(bands)}


def refresh_order(conn: Connection, target_id: int) -> list[int]:
    """Fewest groups first, then lower id first (outermost first)."""
    groups = band_groups(conn)
    return sorted((b for b, _ in bands_of(conn, target_id)), key=lambda b: (len(groups[b]), b))


def me_file_tags(conn: Connection) -> dict[int, list[TagRow]]:
    out: dict[int, list[TagRow]] = defaultdict(list)
    for tag_id, me_file, trait, value in conn.execute(
        text("select id, me_file_id, trait_id, tag_value from me_file_tags")
    ):
        out[me_file].append(TagRow(tag_id, trait, value))
    return out


def membership(conn: Connection, target_id: int) -> dict[int, int]:
    """me_file -> band (DOMAIN.md step 2): candidates from me_file_tags alone, each band keeps
    the previous band's candidates that satisfy all of its groups, the last one wins."""
    groups = band_groups(conn)
    members_of = group_traits(conn)
    tagged = {m: {t.trait_id for t in tags} for m, tags in me_file_tags(conn).items()}
    candidates = set(tagged)
    assigned: dict[int, int] = {}
    for band in refresh_order(conn, target_id):
        candidates = {m for m in candidates if all(tagged[m] & members_of[g] for g in groups[band])}
        for m in candidates:
            assigned[m] = band
    return assigned


def band_snapshot_builder(conn: Connection):
    """A function (band, me_file) -> the envelope a snapshot of that population holds."""
    info = traits(conn)
    groups = band_groups(conn)
    members_of = group_traits(conn)
    tags = me_file_tags(conn)
    metadata: dict[int, dict] = {}

    def build(band: int, me_file: int) -> dict:
        if band not in metadata:
            trait_ids = [t for g in groups[band] for t in members_of[g]]
            metadata[band] = band_metadata(trait_ids, info)
        return build_snapshot(tags[me_file], metadata[band], info)

    return build


@dataclass(frozen=True)
class Population:
    id: int
    band: int | None
    me_file: int | None
    snapshot: object  # as stored, parsed; None for SQL NULL
    is_null: bool  # SQL NULL (a JSON null is not)
    updated_at: object

    @property
    def decoded(self) -> Decoded:
        return decode(self.snapshot, sql_null=self.is_null)


def populations(conn: Connection) -> dict[int, Population]:
    rows = conn.execute(
        text(
            "select id, target_band_id, me_file_id, matching_tags_snapshot::text, updated_at "
            "from target_populations"
        )
    )
    return {
        r[0]: Population(
            r[0], r[1], r[2], None if r[3] is None else json.loads(r[3]), r[3] is None, r[4]
        )
        for r in rows
    }


def processed_bands(conn: Connection) -> set[int]:
    """Bands of existing targets: the only ones any job or scan touches."""
    return set(
        conn.execute(
            text("select b.id from target_bands b join targets t on t.id = b.target_id")
        ).scalars()
    )


def judge(conn: Connection) -> dict[int, str]:
    """population id -> 'orphan', 'missing', 'broken', 'stale' or 'good' by the reference."""
    build = band_snapshot_builder(conn)
    tags = me_file_tags(conn)
    bands = processed_bands(conn)
    out = {}
    for p in populations(conn).values():
        if p.band not in bands or p.me_file is None:
            out[p.id] = "orphan"
        elif p.is_null:
            out[p.id] = "missing"
        elif is_broken(p.decoded, tags[p.me_file]):
            out[p.id] = "broken"
        elif not same_up_to_ties(p.decoded.parents, decode(build(p.band, p.me_file)).parents):
            out[p.id] = "stale"
        else:
            out[p.id] = "good"
    return out


def good(conn: Connection, p: Population) -> bool:
    """Filled and not broken: what an offer or ad event may copy."""
    return not p.is_null and not is_broken(p.decoded, me_file_tags(conn)[p.me_file])


def carriers(conn: Connection) -> dict[tuple[str, int], tuple]:
    """(table, id) -> (me_file, band, snapshot text, updated_at, the rest of the row as text)."""
    out = {}
    for table in CARRIERS:
        for row in conn.execute(
            text(
                f"select c.id, c.me_file_id, c.target_band_id, c.matching_tags_snapshot::text, "
                f"c.updated_at, (to_jsonb(c) - 'matching_tags_snapshot')::text from {table} c"
            )
        ):
            out[(table, row[0])] = tuple(row[1:])
    return out


def expected_carriers(
    before: dict[tuple[str, int], tuple], conn: Connection, bands: set[int]
) -> dict[tuple[str, int], tuple]:
    """What offers and ad events hold after jobs on ``bands``: each one NULL before, of a band
    among them, takes its population's snapshot where that one is good now; nothing else
    changes."""
    pops = {(p.me_file, p.band): p for p in populations(conn).values()}
    out = {}
    for key, (me_file, band, snap, updated, rest) in before.items():
        p = pops.get((me_file, band))
        if snap is None and band in bands and p is not None and good(conn, p):
            snap = json.dumps(p.snapshot)
        out[key] = (me_file, band, snap, updated, rest)
    return out


def normalised(carrier_rows: dict[tuple[str, int], tuple]) -> dict[tuple[str, int], tuple]:
    """Snapshot texts parsed, so that two texts of the same JSON compare equal."""
    return {
        k: (m, b, None if s is None else json.loads(s), u, r)
        for k, (m, b, s, u, r) in carrier_rows.items()
    }


def left_null(conn: Connection) -> int:
    """Offers and ad events NULL beside a good snapshot of their population (of a target)."""
    pops = {(p.me_file, p.band): p for p in populations(conn).values()}
    bands = processed_bands(conn)
    return sum(
        1
        for me_file, band, snap, _u, _r in carriers(conn).values()
        if snap is None
        and band in bands
        and (p := pops.get((me_file, band))) is not None
        and good(conn, p)
    )


def is_envelope(p: Population) -> bool:
    return p.decoded.shape in (Shape.ENVELOPE, Shape.NULL_VALUES)
