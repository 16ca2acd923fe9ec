"""Loading one me_file's report: its memberships, why it sits in each band, its snapshots.

``inspect_me_file`` reads everything about one me_file with six set-based, parameterised
queries (me_file, memberships, band order, band groups, tags, traits), whatever the number of
memberships or tags, and returns plain frozen dataclasses that may cross threads.

Snapshots are read as ``matching_tags_snapshot::text`` and parsed here, row by row, with the
same ``json.loads`` psycopg's jsonb loader would use: a value nested too deeply for it (it
raises RecursionError) then spoils only its own row, which is reported as invalid with the
stored text kept (clipped) for display, instead of failing the whole query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
    to_nested,
)
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.inspection.report import (
    GroupCheck,
    InspectReport,
    Membership,
    TagRef,
    TraitRef,
)
from qsnap_gui.engine.inspection.stale import COMPARABLE, compare_snapshot

RAW_FALLBACK_CHARS = 64_000
"""How much of an unreadable (too deeply nested) value's text is kept for display."""

MAX_BIGINT = 2**63 - 1

# Shapes that hold a tree under "tags" (or as the value itself): ``Membership.tags``.
_HAS_TREE = COMPARABLE


def parse_snapshot(raw_text: str | None) -> tuple[Any, Decoded, bool, str | None]:
    """(value, decoded, readable, text kept) for one stored jsonb text; never raises."""
    if raw_text is None:
        return None, decode(None), True, None
    try:
        value = json.loads(raw_text)
    except RecursionError:
        clipped = raw_text[:RAW_FALLBACK_CHARS]
        message = f"nested too deeply to read ({len(raw_text):,} characters); shown raw" + (
            " and clipped" if len(clipped) < len(raw_text) else ""
        )
        return None, Decoded(Shape.INVALID, error=message), False, clipped
    except ValueError as exc:  # PostgreSQL never hands out bad JSON, but never crash on it
        return None, Decoded(Shape.INVALID, error=f"unreadable JSON: {exc}"), False, raw_text
    return value, decode(value, sql_null=False), True, raw_text


def _tree_of(decoded: Decoded) -> list | None:
    return to_nested(decoded.parents) if decoded.shape in _HAS_TREE else None


ME_FILE_SQL = text("select id, display_name from me_files where id = :m")
# a me_file id without a me_files row that still has tags or population rows
_TRACES_SQL = text(
    "select exists (select 1 from me_file_tags where me_file_id = :m) "
    "or exists (select 1 from target_populations where me_file_id = :m)"
)

_MEMBERSHIPS_SQL = """
    select tp.id, tp.target_band_id, b.target_id, t.title, b.title,
           tp.matching_tags_snapshot::text, tp.created_at, tp.updated_at
    from target_populations tp
    left join target_bands b on b.id = tp.target_band_id
    left join targets t on t.id = b.target_id
    where tp.me_file_id = :m {band_filter}
    order by b.target_id nulls last, tp.target_band_id nulls last, tp.id
"""

# queries.band_order for several targets at once (same order, same labels).
BAND_ORDER_SQL = text(
    """
    with b as (
        select b.id, b.target_id, b.title, b.is_bullseye = '1' as bullseye,
               count(distinct g.id) as ngroups
        from target_bands b
        left join target_band_trait_groups bg on bg.target_band_id = b.id
        left join trait_groups g on g.id = bg.trait_group_id
        where b.target_id = any(cast(:targets as bigint[]))
        group by b.id, b.target_id, b.title, b.is_bullseye
    )
    select id, target_id, bullseye,
           row_number() over (partition by target_id order by ngroups desc, id) - 1 as idx
    from b
    """
)

_GROUPS_SQL = text(
    """
    select distinct bg.target_band_id, g.id, g.title, gt.trait_id
    from target_band_trait_groups bg
    join trait_groups g on g.id = bg.trait_group_id
    left join trait_group_traits gt on gt.trait_group_id = g.id
    where bg.target_band_id = any(cast(:bands as bigint[]))
    """
)

_TAGS_SQL = text(
    "select id, trait_id, tag_value from me_file_tags where me_file_id = :m order by id"
)

_TRAITS_SQL = text(
    """
    with wanted as (
        select id, trait_name, display_order, parent_trait_id
        from traits where id = any(cast(:ids as bigint[]))
    )
    select id, trait_name, display_order, parent_trait_id from wanted
    union
    select p.id, p.trait_name, p.display_order, p.parent_trait_id
    from traits p where p.id in (select parent_trait_id from wanted)
    """
)


@dataclass(frozen=True)
class BandPos:
    band_id: int
    target_id: int
    bullseye: bool
    index: int

    @property
    def label(self) -> str:
        return "Bullseye" if self.bullseye else f"Ring {self.index}"


def inspect_me_file(conn: Connection, me_file_id: int, band_id: int | None = None) -> InspectReport:
    """Everything the inspector shows about one me_file (optionally one band only)."""
    if not 0 < me_file_id <= MAX_BIGINT:
        raise UsageError(f"me_file {me_file_id} does not exist")
    row = conn.execute(ME_FILE_SQL, {"m": me_file_id}).first()
    if row is None and not conn.execute(_TRACES_SQL, {"m": me_file_id}).scalar():
        raise UsageError(f"me_file {me_file_id} does not exist")
    display_name = row[1] if row is not None else None

    params: dict[str, object] = {"m": me_file_id}
    band_filter = ""
    if band_id is not None:
        band_filter = "and tp.target_band_id = :b"
        params["b"] = band_id
    pops = conn.execute(text(_MEMBERSHIPS_SQL.format(band_filter=band_filter)), params).all()
    if band_id is not None and not pops:
        exists = conn.execute(
            text("select 1 from target_bands where id = :b"), {"b": band_id}
        ).first()
        if exists is None:
            raise UsageError(f"band {band_id} does not exist")
        raise UsageError(f"me_file {me_file_id} is not in band {band_id}")

    target_ids = sorted({p[2] for p in pops if p[2] is not None})
    positions: dict[int, BandPos] = {}
    by_target: dict[int, dict[int, BandPos]] = {}
    if target_ids:
        for b_id, t_id, bullseye, idx in conn.execute(BAND_ORDER_SQL, {"targets": target_ids}):
            pos = BandPos(b_id, t_id, bool(bullseye), idx)
            positions[b_id] = pos
            by_target.setdefault(t_id, {})[idx] = pos

    def next_inward(b_id: int) -> BandPos | None:
        pos = positions.get(b_id)
        if pos is None or pos.index == 0:
            return None
        return by_target[pos.target_id].get(pos.index - 1)

    wanted_bands = {p[1] for p in pops if p[1] is not None}
    wanted_bands |= {n.band_id for b in list(wanted_bands) if (n := next_inward(b)) is not None}
    group_rows = (
        conn.execute(_GROUPS_SQL, {"bands": sorted(wanted_bands)}).all() if wanted_bands else []
    )
    tag_rows = [TagRow(*r) for r in conn.execute(_TAGS_SQL, {"m": me_file_id})]

    trait_ids = {r[3] for r in group_rows if r[3] is not None} | {t.trait_id for t in tag_rows}
    traits: dict[int, TraitInfo] = {}
    if trait_ids:
        for t_id, name, order, parent in conn.execute(_TRAITS_SQL, {"ids": sorted(trait_ids)}):
            traits[t_id] = TraitInfo(t_id, name, order, parent)

    # band -> group -> (title, trait ids); links to deleted groups are ignored, as the
    # application ignores them
    band_groups: dict[int, dict[int, tuple[str, set[int]]]] = {}
    for b_id, g_id, title, t_id in group_rows:
        groups = band_groups.setdefault(b_id, {})
        entry = groups.setdefault(g_id, (title or f"(untitled group {g_id})", set()))
        if t_id is not None:
            entry[1].add(t_id)

    tags_by_trait: dict[int, list[TagRow]] = {}
    for tag in tag_rows:
        tags_by_trait.setdefault(tag.trait_id, []).append(tag)

    def name_of(t_id: int) -> str | None:
        info = traits.get(t_id)
        return info.name if info else None

    def checks(b_id: int) -> tuple[GroupCheck, ...]:
        out = []
        for g_id, (title, t_ids) in sorted(band_groups.get(b_id, {}).items()):
            refs = tuple(TraitRef(t, name_of(t)) for t in sorted(t_ids))
            hits = tuple(
                TagRef(tag.trait_id, name_of(tag.trait_id), tag.tag_value)
                for t in sorted(t_ids)
                for tag in tags_by_trait.get(t, ())
            )
            out.append(GroupCheck(g_id, title, refs, hits))
        return tuple(out)

    memberships = []
    for pop_id, b_id, t_id, t_title, b_title, snap_text, created, updated in pops:
        value, decoded, readable, kept_text = parse_snapshot(snap_text)
        pos = positions.get(b_id)
        nxt = next_inward(b_id)
        group_trait_ids = [t for _title, ids in band_groups.get(b_id, {}).values() for t in ids]
        rebuilt = build_snapshot(tag_rows, band_metadata(group_trait_ids, traits), traits)
        memberships.append(
            Membership(
                population_id=pop_id,
                target_id=t_id,
                target_title=t_title,
                band_id=b_id,
                band_label=pos.label if pos else "(no band)" if b_id is None else "(deleted band)",
                band_title=b_title,
                shape=str(decoded.shape),
                tags=_tree_of(decoded),
                updated_at=updated,
                created_at=created,
                decoded=decoded,
                raw=value,
                raw_text=kept_text,
                readable=readable,
                groups=checks(b_id),
                is_innermost=pos is not None and pos.index == 0,
                next_band_id=nxt.band_id if nxt else None,
                next_band_label=nxt.label if nxt else None,
                next_band_groups=checks(nxt.band_id) if nxt else None,
                has_tags=bool(tag_rows),
                stale=compare_snapshot(decoded, rebuilt),
                broken=is_broken(decoded, tag_rows),
            )
        )
    return InspectReport(
        me_file_id, display_name, len(tag_rows), tuple(memberships), me_file_exists=row is not None
    )
