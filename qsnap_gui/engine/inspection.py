"""The me_file inspector (Qt-free): why a me_file sits in each band, and is the snapshot still true.

``inspect_me_file`` reads everything about one me_file with six set-based, parameterised
queries (me_file, memberships, band order, band groups, tags, traits), whatever the number of
memberships or tags, and returns plain frozen dataclasses that may cross threads.

Snapshots are read as ``matching_tags_snapshot::text`` and parsed here, row by row, with the
same ``json.loads`` psycopg's jsonb loader would use: a value nested too deeply for it (it
raises RecursionError) then spoils only its own row, which is reported as invalid with the
stored text kept (clipped) for display, instead of failing the whole query.

Stale check ("is what we stored still true?"): the stored tree is compared with what the
reference ``codec.build_snapshot`` gives from the me_file's current tags and the band's current
groups, i.e. what a force re-snapshot would write now. Child tags are matched on
(parent id, trait id): a pair only in the rebuilt tree is *added*, only in the stored tree is
*removed*, in both with another value is *changed* (stored value -> current value).
``up_to_date`` means the stored tree equals the rebuilt one up to the order of tied entries
(names and display orders included); the form (envelope or bare array) is the shape's
business, not the stale check's.

Population rows without a band, of a deleted band, or of a deleted me_file are orphans: shown,
never written. A me_file without a me_files row can still be inspected while it has tags or
population rows (the application keeps such me_file ids as members).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, text

from qsnap_gui.domain.codec import (
    Decoded,
    ParentTrait,
    Shape,
    TagRow,
    TraitInfo,
    band_metadata,
    build_snapshot,
    decode,
    is_broken,
    same_up_to_ties,
    shape_sql,
    to_nested,
)
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.snapshot_sql import carry_sql, snapshot_select_sql
from qsnap_gui.store.queries import carrier_tables

RAW_FALLBACK_CHARS = 64_000
"""How much of an unreadable (too deeply nested) value's text is kept for display."""

NOW_SQL = "date_trunc('second', clock_timestamp() at time zone 'UTC')"
_MAX_BIGINT = 2**63 - 1

# Shapes whose tree can be compared with a rebuilt snapshot.
_COMPARABLE = (Shape.ENVELOPE, Shape.NULL_VALUES, Shape.BARE_ARRAY, Shape.LEGACY_FLAT)
# Shapes that hold a tree under "tags" (or as the value itself): ``Membership.tags``.
_HAS_TREE = _COMPARABLE


# --- the report -----------------------------------------------------------------------------


class TraitRef(NamedTuple):
    trait_id: int
    trait_name: str | None  # None: the trait no longer exists


class TagRef(NamedTuple):
    trait_id: int
    trait_name: str | None
    tag_value: str | None


class TagDiff(NamedTuple):
    parent_id: int
    trait_id: int
    value: str | None


class TagChange(NamedTuple):
    parent_id: int
    trait_id: int
    stored_value: str | None
    current_value: str | None


@dataclass(frozen=True)
class GroupCheck:
    """One trait group of a band, judged against the me_file's current tags."""

    group_id: int
    title: str
    traits: tuple[TraitRef, ...]  # every trait that satisfies the group
    tags: tuple[TagRef, ...]  # the me_file's tags on those traits

    @property
    def satisfied(self) -> bool:
        return bool(self.tags)

    def to_json_satisfied(self) -> dict:
        return {
            "group_id": self.group_id,
            "title": self.title,
            "tags": [list(t) for t in self.tags],
        }

    def to_json_missing(self) -> dict:
        return {
            "group_id": self.group_id,
            "title": self.title,
            "traits": [list(t) for t in self.traits],
        }


@dataclass(frozen=True)
class StaleCheck:
    comparable: bool
    up_to_date: bool = False
    added: tuple[TagDiff, ...] = ()
    removed: tuple[TagDiff, ...] = ()
    changed: tuple[TagChange, ...] = ()
    note: str | None = None  # why not comparable, or what else differs
    rebuilt: dict | None = field(default=None, compare=False)  # what force would write now

    def to_json(self) -> dict | None:
        if not self.comparable:
            return None
        return {
            "up_to_date": self.up_to_date,
            "added": [list(t) for t in self.added],
            "removed": [list(t) for t in self.removed],
            "changed": [list(t) for t in self.changed],
        }


@dataclass(frozen=True)
class Membership:
    population_id: int
    target_id: int | None  # None: the band no longer exists (or belongs to no target)
    target_title: str | None  # None: the target no longer exists
    band_id: int | None  # None: the population row names no band (an orphan)
    band_label: str
    band_title: str | None
    shape: str
    tags: list | None  # decoded nested-array form; None when the value holds no tree
    updated_at: datetime | None
    created_at: datetime | None
    decoded: Decoded
    raw: Any = field(compare=False)  # the stored value as parsed (None: NULL or unreadable)
    raw_text: str | None = field(compare=False)  # stored jsonb text (clipped if unreadable)
    readable: bool
    groups: tuple[GroupCheck, ...]  # every trait group of the band
    is_innermost: bool
    next_band_id: int | None
    next_band_label: str | None
    next_band_groups: tuple[GroupCheck, ...] | None  # every group of the next band inward
    has_tags: bool  # the me_file has at least one tag (bands without groups need only that)
    stale: StaleCheck
    broken: bool = False  # repair would rebuild it (blank values only where the tags disagree)

    @property
    def band_exists(self) -> bool:
        return self.target_id is not None

    @property
    def satisfied_groups(self) -> tuple[GroupCheck, ...]:
        return tuple(g for g in self.groups if g.satisfied)

    @property
    def failed_groups(self) -> tuple[GroupCheck, ...]:
        return tuple(g for g in self.groups if not g.satisfied)

    @property
    def next_band_missing_groups(self) -> tuple[GroupCheck, ...] | None:
        if self.next_band_groups is None:
            return None
        return tuple(g for g in self.next_band_groups if not g.satisfied)

    def to_json(self) -> dict:
        missing = self.next_band_missing_groups
        return {
            "target_id": self.target_id,
            "target_title": self.target_title,
            "band_id": self.band_id,
            "band_label": self.band_label,
            "population_id": self.population_id,
            "shape": self.shape,
            "broken": self.broken,
            "tags": self.tags,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "satisfied_groups": [g.to_json_satisfied() for g in self.satisfied_groups],
            "next_band_missing_groups": None
            if missing is None
            else [g.to_json_missing() for g in missing],
            "stale": self.stale.to_json(),
        }


@dataclass(frozen=True)
class InspectReport:
    me_file_id: int
    display_name: str | None
    tag_count: int
    memberships: tuple[Membership, ...]
    me_file_exists: bool = True  # False: tags or populations of a deleted me_file

    def to_json(self) -> dict:
        return {
            "me_file_id": self.me_file_id,
            "display_name": self.display_name,
            "me_file_exists": self.me_file_exists,
            "memberships": [m.to_json() for m in self.memberships],
        }

    def membership(self, population_id: int) -> Membership | None:
        for m in self.memberships:
            if m.population_id == population_id:
                return m
        return None


# --- reading --------------------------------------------------------------------------------


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


_ME_FILE_SQL = text("select id, display_name from me_files where id = :m")
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
    if not 0 < me_file_id <= _MAX_BIGINT:
        raise UsageError(f"me_file {me_file_id} does not exist")
    row = conn.execute(_ME_FILE_SQL, {"m": me_file_id}).first()
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


# --- the stale check ------------------------------------------------------------------------


def _children(parents: Iterable[ParentTrait]) -> dict[tuple[int, int], list[str | None]]:
    out: dict[tuple[int, int], list[str | None]] = {}
    for p in parents:
        for c in p.children:
            out.setdefault((p.trait_id, c.trait_id), []).append(c.value)
    return out


def _sort_key(item: tuple) -> tuple:
    return (item[0], item[1], *((v is None, v or "") for v in item[2:]))


def _diff_values(
    was: list[str | None], now: list[str | None]
) -> tuple[list[str | None], list[str | None], list[tuple[str | None, str | None]]]:
    """(removed, added, changed) values of one (parent, trait) key, as multisets."""
    if len(was) == 1 and len(now) == 1:
        return ([], [], []) if was[0] == now[0] else ([], [], [(was[0], now[0])])
    was, now = list(was), list(now)
    for v in list(was):
        if v in now:
            now.remove(v)
            was.remove(v)
    pairs = min(len(was), len(now))
    return was[pairs:], now[pairs:], list(zip(was[:pairs], now[:pairs], strict=True))


def compare_snapshot(stored: Decoded, rebuilt: dict) -> StaleCheck:
    """Compare a decoded stored snapshot with the envelope a re-snapshot would write now."""
    shape = stored.shape
    if shape not in _COMPARABLE:
        reason = {
            Shape.MISSING: "not comparable: never snapshotted",
            Shape.EMPTY_OBJECT: "not comparable: the stored empty object says nothing",
        }.get(shape, f"not comparable: invalid snapshot ({stored.error})")
        return StaleCheck(comparable=False, note=reason, rebuilt=rebuilt)
    current = decode(rebuilt)
    legacy = shape is Shape.LEGACY_FLAT
    if not legacy and same_up_to_ties(stored.parents, current.parents):
        return StaleCheck(comparable=True, up_to_date=True, rebuilt=rebuilt)
    old, new = _children(stored.parents), _children(current.parents)
    added: list[TagDiff] = []
    removed: list[TagDiff] = []
    changed: list[TagChange] = []
    for key, now in new.items():
        if key not in old:
            added.extend(TagDiff(*key, v) for v in now)
    for key, was in old.items():
        now = new.get(key)
        if now is None:
            removed.extend(TagDiff(*key, v) for v in was)
        elif legacy:
            # the legacy form holds trait names, not values: compare by trait only, and show
            # the extra entries with their value now / the name the legacy entry gave
            extra = len(now) - len(was)
            added.extend(TagDiff(*key, v) for v in now[len(now) - extra :] if extra > 0)
            removed.extend(TagDiff(*key, v) for v in was[len(was) + extra :] if extra < 0)
        else:
            gone, came, swapped = _diff_values(was, now)
            removed.extend(TagDiff(*key, v) for v in gone)
            added.extend(TagDiff(*key, v) for v in came)
            changed.extend(TagChange(*key, a, b) for a, b in swapped)
    up_to_date = False
    note = None
    if legacy:
        note = "legacy flat form holds no values: compared by trait only; repair rewrites it"
    elif not (added or removed or changed):
        note = "same tags, but parent names, display orders or order differ from the traits now"
    return StaleCheck(
        comparable=True,
        up_to_date=up_to_date,
        added=tuple(sorted(added, key=_sort_key)),
        removed=tuple(sorted(removed, key=_sort_key)),
        changed=tuple(sorted(changed, key=_sort_key)),
        note=note,
        rebuilt=rebuilt,
    )


# --- search and paging ----------------------------------------------------------------------


@dataclass(frozen=True)
class MeFileHit:
    id: int
    display_name: str | None


class SearchPage(NamedTuple):
    rows: tuple[MeFileHit, ...]
    has_more: bool


def escape_like(value: str) -> str:
    """A LIKE pattern matching ``value`` literally (escape character: backslash)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_me_files(conn: Connection, text_: str, limit: int = 50, offset: int = 0) -> SearchPage:
    """me_files by id when ``text_`` is a number, else by case-insensitive display-name prefix.

    Paged by (display_name, id); ``has_more`` says whether a next page exists.
    """
    query = (text_ or "").strip()
    limit = max(1, int(limit))
    offset = max(0, int(offset))
    if not query:
        return SearchPage((), False)
    if query.isascii() and query.isdigit():
        number = int(query)
        if offset or not 0 < number <= _MAX_BIGINT:
            return SearchPage((), False)
        row = conn.execute(_ME_FILE_SQL, {"m": number}).first()
        return SearchPage((MeFileHit(row[0], row[1]),) if row else (), False)
    rows = conn.execute(
        text(
            "select id, display_name from me_files "
            "where display_name ilike :pattern escape '\\' "
            "order by display_name, id limit :n offset :o"
        ),
        {"pattern": escape_like(query) + "%", "n": limit + 1, "o": offset},
    ).all()
    return SearchPage(tuple(MeFileHit(r[0], r[1]) for r in rows[:limit]), len(rows) > limit)


@dataclass(frozen=True)
class PopulationRow:
    population_id: int
    me_file_id: int
    display_name: str | None  # None: the me_file no longer exists
    shape: str
    updated_at: datetime | None


@dataclass(frozen=True)
class PopulationPage:
    rows: tuple[PopulationRow, ...]
    has_more: bool

    @property
    def last_id(self) -> int | None:
        """The ``after_id`` for the next page."""
        return self.rows[-1].population_id if self.rows else None


def band_population_page(
    conn: Connection,
    band_id: int,
    shape: str | Shape | None = None,
    after_id: int = 0,
    limit: int = 200,
) -> PopulationPage:
    """A band's population rows with id > ``after_id``, in id order, optionally of one shape."""
    if shape is not None:
        try:
            shape = Shape(shape)
        except ValueError:
            known = ", ".join(s.value for s in Shape)
            raise UsageError(f"unknown shape {str(shape)[:40]!r} (one of {known})") from None
    limit = max(1, int(limit))
    rows = conn.execute(
        text(
            f"""
            select * from (
                select tp.id, tp.me_file_id, f.display_name,
                       {shape_sql("tp.matching_tags_snapshot")} as shape, tp.updated_at
                from target_populations tp
                left join me_files f on f.id = tp.me_file_id
                where tp.target_band_id = :band and tp.id > :after
                order by tp.id
            ) p
            where cast(:shape as text) is null or p.shape = cast(:shape as text)
            order by p.id
            limit :n
            """
        ),
        {
            "band": band_id,
            "after": after_id,
            "shape": None if shape is None else str(shape),
            "n": limit + 1,
        },
    ).all()
    return PopulationPage(tuple(PopulationRow(*r) for r in rows[:limit]), len(rows) > limit)


# --- force re-snapshot of one row -----------------------------------------------------------


def resnapshot_row(engine: Engine, population_id: int) -> dict:
    """Rewrite one population's snapshot (force), built by the engine's own SQL; one transaction.

    Writes only matching_tags_snapshot and updated_at, and carries the new value into the
    NULL snapshots of the same (me_file, band)'s offers and ad events; returns the new value.
    An orphan row (no me_file, no band, or a deleted band) is refused: it is never written.
    """
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "select tp.target_band_id, tp.me_file_id, b.id from target_populations tp "
                "left join target_bands b on b.id = tp.target_band_id where tp.id = :p "
                "for update of tp"
            ),
            {"p": population_id},
        ).first()
        if row is None:
            raise UsageError(f"population {population_id} does not exist")
        band_id, me_file_id, band_row = row
        if band_id is None or me_file_id is None or band_row is None:
            what = "no band" if band_id is None else "no me_file" if me_file_id is None else None
            why = f"names {what}" if what else f"belongs to band {band_id}, which does not exist"
            raise UsageError(f"population {population_id} {why}: an orphan row, never written")
        rows_sql = (
            "select tp.id, tp.me_file_id from target_populations tp "
            "where tp.id = :pid and tp.target_band_id = :band"
        )
        value = conn.execute(
            text(
                f"""
                with s as ({snapshot_select_sql(rows_sql)}), u as (
                    update target_populations tp
                    set matching_tags_snapshot = s.snap, updated_at = {NOW_SQL}
                    from s
                    where tp.id = s.id
                    returning tp.me_file_id, tp.matching_tags_snapshot as snap
                ){carry_sql(carrier_tables(conn))}
                select snap from u
                """
            ),
            {"pid": population_id, "band": band_id},
        ).scalar_one()
    return value


# --- text -----------------------------------------------------------------------------------


def pretty_json(value: Any, fallback: str | None = None) -> str:
    """Indented JSON where arrays of scalars (child entries) stay on one line.

    A value too deep to walk gives ``fallback`` (the stored text) instead.
    """
    try:
        return _pretty(value, "")
    except RecursionError:
        return fallback if fallback is not None else "(too deeply nested to show)"


def _pretty(value: Any, indent: str) -> str:
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, (list, dict)) for v in value):
            return json.dumps(value, ensure_ascii=False)
        head, last = value[:-1], value[-1]
        if head and isinstance(last, list) and all(not isinstance(v, (list, dict)) for v in head):
            # a parent entry: [id, name, order, [children…]] opens on one line
            scalars = ", ".join(json.dumps(v, ensure_ascii=False) for v in head)
            return f"[{scalars}, {_pretty(last, indent)}]"
        inner = indent + "  "
        items = ",\n".join(inner + _pretty(v, inner) for v in value)
        return f"[\n{items}\n{indent}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        items = ",\n".join(
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, inner)}"
            for k, v in value.items()
        )
        return f"{{\n{items}\n{indent}}}"
    return json.dumps(value, ensure_ascii=False)


def membership_json_text(m: Membership) -> str:
    """The stored value as pretty JSON for copying or the Raw JSON tab ("null" when NULL)."""
    if not m.readable:
        return m.raw_text or ""
    return pretty_json(m.raw, m.raw_text)


SHAPE_NOTES = {
    Shape.MISSING: "never snapshotted (NULL)",
    Shape.ENVELOPE: "envelope",
    Shape.BARE_ARRAY: "bare array (old form; repair rewrites it as an envelope)",
    Shape.LEGACY_FLAT: "legacy flat (no values, no nesting; repair rebuilds it)",
    Shape.EMPTY_OBJECT: "empty object (says nothing; repair rebuilds it)",
    Shape.NULL_VALUES: "null values (some tags have no value; repair rebuilds it)",
    Shape.INVALID: "invalid",
}

NO_VALUE = "(no value)"
_LIST_LIMIT = 12


def value_text(value: str | None) -> str:
    return NO_VALUE if value is None or value == "" else value


def _clip(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _trait_list(traits: tuple[TraitRef, ...]) -> str:
    if not traits:
        return "no traits at all: no me_file can satisfy it"
    shown = [f"{t.trait_name or '(deleted trait)'} ({t.trait_id})" for t in traits[:_LIST_LIMIT]]
    more = len(traits) - len(shown)
    return "any of " + ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def _tag_list(tags: tuple[TagRef, ...]) -> str:
    shown = [
        f"{t.trait_name or '(deleted trait)'} ({t.trait_id}) = {_clip(value_text(t.tag_value), 60)}"
        for t in tags[:_LIST_LIMIT]
    ]
    more = len(tags) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def tree_lines(decoded: Decoded, limit: int = 500) -> list[str]:
    """The decoded tree as indented lines (at most ``limit`` child lines)."""
    lines: list[str] = []
    shown = 0
    total = sum(len(p.children) for p in decoded.parents)
    for p in decoded.parents:
        name = p.name if p.name is not None else f"(parent {p.trait_id})"
        lines.append(f"{_clip(name)}  [trait {p.trait_id}, order {_order(p.display_order)}]")
        for c in p.children:
            if shown >= limit:
                lines.append(f"  … {total - shown:,} more tags not shown")
                return lines
            mark = "  ! " if c.is_blank else "    "
            lines.append(
                f"{mark}{_clip(value_text(c.value))}  "
                f"[trait {c.trait_id}, order {_order(c.display_order)}]"
            )
            shown += 1
    return lines


def _order(value: int | None) -> str:
    return "-" if value is None else str(value)


def _describe_shape(m: Membership) -> str:
    shape = Shape(m.shape)
    if shape is Shape.INVALID:
        return f"invalid: {m.decoded.error}"
    if shape is Shape.ENVELOPE and not m.decoded.parents:
        return "envelope (checked: no matching tags)"
    if shape is Shape.NULL_VALUES and not m.broken:
        return "null values, as the tags have them (NULL or empty): correct"
    return SHAPE_NOTES[shape]


def why_lines(m: Membership) -> list[str]:
    lines = []
    if m.band_id is None:
        lines.append("the population row names no band (orphan population row, never written)")
        return lines
    if not m.band_exists:
        lines.append(f"band {m.band_id} no longer exists (orphan population row)")
        return lines
    if not m.groups:
        have = "has" if m.has_tags else "has NO"
        lines.append(
            "this band has no trait groups: every me_file with at least one tag matches "
            f"(this one {have} tags)"
        )
    for g in m.groups:
        if g.satisfied:
            lines.append(f"✓ group {g.group_id} {g.title!r}: {_tag_list(g.tags)}")
        else:
            lines.append(
                f"✗ group {g.group_id} {g.title!r}: no longer satisfied "
                f"(needs {_trait_list(g.traits)})"
            )
    return lines


def next_band_lines(m: Membership) -> list[str]:
    if not m.band_exists:
        return []
    missing = m.next_band_missing_groups
    if missing is None:
        if m.is_innermost:
            return [f"this is the {m.band_label} (the innermost band): there is no band inside it"]
        return ["no band inward"]
    head = f"not in {m.next_band_label} (band {m.next_band_id})"
    if not missing:
        if m.next_band_groups:
            return [f"{head}: yet it satisfies all its groups now (population is out of date)"]
        return [f"{head}: it has no trait groups (population is out of date)"]
    lines = [f"{head}: it fails {len(missing)} of {len(m.next_band_groups or ())} groups"]
    lines.extend(f"✗ group {g.group_id} {g.title!r}: {_trait_list(g.traits)}" for g in missing)
    return lines


def stale_lines(s: StaleCheck, limit: int = 50) -> list[str]:
    """The stale check in words; each of added/removed/changed clipped to ``limit`` lines."""
    if not s.comparable:
        return [s.note or "not comparable"]
    if s.up_to_date:
        return ["up to date"]
    lines = ["stale: the stored snapshot differs from the tags now"]

    def clipped(items: tuple, fmt) -> None:
        lines.extend(fmt(d) for d in items[:limit])
        if len(items) > limit:
            lines.append(f"  … and {len(items) - limit:,} more")

    clipped(
        s.added,
        lambda d: (
            f"+ added   parent {d.parent_id}, trait {d.trait_id}: {_clip(value_text(d.value))}"
        ),
    )
    clipped(
        s.removed,
        lambda d: (
            f"- removed parent {d.parent_id}, trait {d.trait_id}: {_clip(value_text(d.value))}"
        ),
    )
    clipped(
        s.changed,
        lambda d: (
            f"~ changed parent {d.parent_id}, trait {d.trait_id}: "
            f"{_clip(value_text(d.stored_value))} -> {_clip(value_text(d.current_value))}"
        ),
    )
    if s.note:
        lines.append(s.note)
    return lines


def render_text(report: InspectReport) -> str:
    name = report.display_name if report.display_name is not None else "(no name)"
    if not report.me_file_exists:
        name = "(no me_files row: a deleted me_file's tags and populations)"
    n = len(report.memberships)
    out = [
        f"me_file {report.me_file_id} {name!r}: {report.tag_count} tags, "
        f"{n} membership{'s' if n != 1 else ''}"
    ]
    if not n:
        out.append("  in no band of any target")
    for m in report.memberships:
        target = (
            f"target {m.target_id} {m.target_title!r}"
            if m.target_title is not None
            else f"target {m.target_id} (deleted)"
            if m.target_id is not None
            else "no target"
        )
        updated = m.updated_at.strftime("%Y-%m-%d %H:%M:%S") if m.updated_at else "-"
        out.append("")
        out.append(
            f"{target} · {m.band_label} (band {m.band_id}) · population row {m.population_id}"
        )
        out.append(f"  snapshot: {_describe_shape(m)} · updated {updated}")
        if Shape(m.shape) is Shape.INVALID and m.raw_text is not None:
            out.append(f"  raw: {_clip(m.raw_text, 300)}")
        out.extend("    " + line for line in tree_lines(m.decoded))
        out.append("  why it matched:")
        out.extend("    " + line for line in why_lines(m))
        out.append("  next band inward:")
        out.extend("    " + line for line in next_band_lines(m))
        out.append("  stale check:")
        out.extend("    " + line for line in stale_lines(m.stale))
    return "\n".join(out)


__all__ = [
    "GroupCheck",
    "InspectReport",
    "MeFileHit",
    "Membership",
    "PopulationPage",
    "PopulationRow",
    "SearchPage",
    "StaleCheck",
    "TagChange",
    "TagDiff",
    "TagRef",
    "TraitRef",
    "band_population_page",
    "compare_snapshot",
    "escape_like",
    "inspect_me_file",
    "membership_json_text",
    "pretty_json",
    "render_text",
    "resnapshot_row",
    "search_me_files",
]
