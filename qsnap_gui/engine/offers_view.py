"""Why was this person shown this ad? A me_file's offers and ad events, each with the snapshot it
was made from, decoded as the inspector decodes a population's, and compared with the snapshot
its population (same me_file and band) holds now. Qt-free and read-only.

The application copies a population's snapshot into the offers and ad events made from it, so
the copy says which tags the offer was made from; the population's snapshot may have moved on
since (a force re-snapshot, a refresh that removed the pair). The comparison says so in one
line: "made from the same tags" (equal up to the order of tied entries), "tags changed since:
+Rent, -Own" (child entries by value, the trait's name where the value is blank), "population
no longer exists", or why nothing can be compared (a snapshot missing or broken).

Bounded: the newest ``PAGE`` of each kind per call, paged by offset. Where a table is absent,
lacks a column read here, or the role may not read one of those columns, that kind is None;
where neither kind can be read the whole section is None, never an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import (
    Decoded,
    ParentTrait,
    Shape,
    TagRow,
    is_broken,
    same_up_to_ties,
    to_nested,
)
from qsnap_gui.engine.inspection import (
    BAND_ORDER_SQL,
    BandPos,
    parse_snapshot,
    pretty_json,
)

PAGE = 200
"""The newest rows of each kind one call returns, at most."""

OFFERS, AD_EVENTS = "offers", "ad_events"
KINDS = (OFFERS, AD_EVENTS)
KIND_WORDS = {OFFERS: "offer", AD_EVENTS: "ad event"}

# columns read per kind: the ones without which the kind is not shown, and the ones read where
# present (NULL otherwise)
_NEEDED = {
    OFFERS: ("id", "me_file_id", "target_band_id", "campaign_id", "matching_tags_snapshot"),
    AD_EVENTS: ("id", "me_file_id", "target_band_id", "matching_tags_snapshot"),
}
_OPTIONAL = {
    OFFERS: ("created_at",),
    AD_EVENTS: ("created_at", "campaign_id", "offer_id", "target_id"),
}
_TREE = (Shape.ENVELOPE, Shape.NULL_VALUES, Shape.BARE_ARRAY, Shape.LEGACY_FLAT)
_LINE_ITEMS = 10
LEFT_NULL = "; its population's is filled: backfill copies it"


class Verdict(StrEnum):
    SAME = "same"
    SAME_TAGS = "same_tags"
    CHANGED = "changed"
    SNAPSHOT_MISSING = "snapshot_missing"
    SNAPSHOT_BROKEN = "snapshot_broken"
    NO_BAND = "no_band"
    POPULATION_GONE = "population_gone"
    POPULATION_SNAPSHOT_MISSING = "population_snapshot_missing"
    POPULATION_SNAPSHOT_BROKEN = "population_snapshot_broken"


class Population(NamedTuple):
    """The population row of an offer's (me_file, band), as it is now."""

    population_id: int
    decoded: Decoded
    good: bool  # filled and not broken: what a backfill copies into offers left NULL


class TagLabel(NamedTuple):
    """One child entry that differs: where it sits, its value, and how the line names it."""

    parent_id: int
    trait_id: int
    value: str | None
    label: str


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    line: str
    population_id: int | None = None  # None: no population row for the (me_file, band)
    population_shape: str | None = None
    added: tuple[TagLabel, ...] = ()  # in the population's snapshot now, not in this one
    removed: tuple[TagLabel, ...] = ()  # in this snapshot, no longer in the population's

    def to_json(self) -> dict:
        return {
            "verdict": str(self.verdict),
            "line": self.line,
            "population_id": self.population_id,
            "population_shape": self.population_shape,
            "added": [list(t) for t in self.added],
            "removed": [list(t) for t in self.removed],
        }


@dataclass(frozen=True)
class CarrierRow:
    """One offer or ad event of the me_file."""

    kind: str  # OFFERS or AD_EVENTS
    id: int
    campaign_id: int | None
    offer_id: int | None  # ad events: the offer it was shown from (nullable); offers: None
    target_id: int | None
    target_title: str | None
    band_id: int | None  # None: an ad event that names no band
    band_label: str
    band_title: str | None
    created_at: datetime | None
    shape: str
    decoded: Decoded
    comparison: Comparison
    raw: Any = field(compare=False)  # the stored value as parsed (None: NULL or unreadable)
    raw_text: str | None = field(compare=False)  # stored jsonb text (clipped if unreadable)
    readable: bool = True
    parent_names: dict[int, str] = field(default_factory=dict, compare=False)  # legacy flat

    @property
    def tags(self) -> list | None:
        return to_nested(self.decoded.parents) if self.decoded.shape in _TREE else None

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "target_id": self.target_id,
            "target_title": self.target_title,
            "band_id": self.band_id,
            "band_label": self.band_label,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "shape": self.shape,
            "error": self.decoded.error,
            "tags": self.tags,
            "comparison": self.comparison.to_json(),
        }
        if self.kind == AD_EVENTS:
            out["offer_id"] = self.offer_id
        return out


@dataclass(frozen=True)
class CarrierPage:
    """Rows ``offset`` to ``offset + len(rows)`` of one kind, newest first."""

    kind: str
    total: int
    offset: int
    rows: tuple[CarrierRow, ...]
    has_more: bool

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.rows)

    def to_json(self) -> dict:
        return {
            "total": self.total,
            "offset": self.offset,
            "has_more": self.has_more,
            "rows": [r.to_json() for r in self.rows],
        }


@dataclass(frozen=True)
class OffersSection:
    me_file_id: int
    offers: CarrierPage | None  # None: this database has no readable offers table
    ad_events: CarrierPage | None

    def page(self, kind: str) -> CarrierPage | None:
        return self.offers if kind == OFFERS else self.ad_events

    def to_json(self) -> dict:
        return {
            OFFERS: None if self.offers is None else self.offers.to_json(),
            AD_EVENTS: None if self.ad_events is None else self.ad_events.to_json(),
        }


# --- which kinds can be read ----------------------------------------------------------------

_COLUMNS_SQL = text(
    """
    select a.attname, has_column_privilege(a.attrelid, a.attnum, 'SELECT')
    from pg_attribute a
    where a.attrelid = to_regclass(:table) and a.attnum > 0 and not a.attisdropped
      and a.attname = any(:names)
    """
)


def readable_kinds(conn: Connection) -> dict[str, frozenset[str]]:
    """Each kind this role can read here -> the optional columns it may read too."""
    out = {}
    for kind in KINDS:
        names = [*_NEEDED[kind], *_OPTIONAL[kind]]
        readable = {
            n for n, ok in conn.execute(_COLUMNS_SQL, {"table": kind, "names": names}) if ok
        }
        if readable.issuperset(_NEEDED[kind]):
            out[kind] = frozenset(readable.intersection(_OPTIONAL[kind]))
    return out


# --- reading --------------------------------------------------------------------------------


def _select_sql(kind: str, optional: frozenset[str], band_filter: bool, offers: bool) -> str:
    """The page query of one kind (``offers``: the offers table may be read too); every piece
    is a constant of this module."""

    def col(name: str, cast: str = "int") -> str:
        return f"c.{name}" if name in optional or name in _NEEDED[kind] else f"null::{cast}"

    campaign = col("campaign_id")
    if kind == AD_EVENTS and offers and "offer_id" in optional:
        # an ad event's campaign is its offer's, where the ad event does not say
        campaign = (
            f"coalesce({campaign}, (select o.campaign_id from offers o where o.id = c.offer_id))"
        )
    created = col("created_at", "timestamp")
    # an ad event names its target itself too: shown where its band is gone
    target = "coalesce(b.target_id, c.target_id)" if "target_id" in optional else "b.target_id"
    where = "c.me_file_id = :m" + (" and c.target_band_id = :b" if band_filter else "")
    return f"""
        select c.id, {campaign}, {col("offer_id")}, c.target_band_id, b.id, b.target_id,
               {target}, t.title, b.title, c.matching_tags_snapshot::text, {created}
        from {kind} c
        left join target_bands b on b.id = c.target_band_id
        left join targets t on t.id = {target}
        where {where}
        order by {created} desc nulls last, c.id desc
        limit :n offset :o
    """


def _count_sql(kind: str, band_filter: bool) -> str:
    return f"select count(*) from {kind} where me_file_id = :m" + (
        " and target_band_id = :b" if band_filter else ""
    )


_POPULATIONS_SQL = text(
    """
    select distinct on (target_band_id) target_band_id, id, matching_tags_snapshot::text
    from target_populations
    where me_file_id = :m and target_band_id = any(cast(:bands as bigint[]))
    order by target_band_id, id
    """
)

_TAGS_SQL = text(
    "select id, trait_id, tag_value from me_file_tags where me_file_id = :m order by id"
)

_TRAIT_NAMES_SQL = text("select id, trait_name from traits where id = any(cast(:ids as bigint[]))")


def offers_section(
    conn: Connection,
    me_file_id: int,
    *,
    band_id: int | None = None,
    offset: int = 0,
    limit: int = PAGE,
    kinds: Iterable[str] = KINDS,
) -> OffersSection | None:
    """The newest ``limit`` (at most PAGE) offers and ad events of a me_file from ``offset``
    (of ``kinds`` only: the others are None); None where neither table can be read."""
    wanted = tuple(kinds)
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kind {unknown[0]!r}")
    readable = readable_kinds(conn)
    if not readable:
        return None
    pages = {
        kind: _page(conn, kind, optional, OFFERS in readable, me_file_id, band_id, offset, limit)
        for kind, optional in readable.items()
        if kind in wanted
    }
    return OffersSection(me_file_id, pages.get(OFFERS), pages.get(AD_EVENTS))


def _page(
    conn: Connection,
    kind: str,
    optional: frozenset[str],
    offers_readable: bool,
    me_file_id: int,
    band_id: int | None,
    offset: int,
    limit: int,
) -> CarrierPage:
    limit = max(1, min(int(limit), PAGE))
    offset = max(0, int(offset))
    params: dict[str, object] = {"m": me_file_id, "n": limit + 1, "o": offset}
    if band_id is not None:
        params["b"] = band_id
    filtered = band_id is not None
    total = conn.execute(text(_count_sql(kind, filtered)), params).scalar_one()
    sql = _select_sql(kind, optional, filtered, offers_readable)
    fetched = conn.execute(text(sql), params).all()
    rows = fetched[:limit]
    bands = sorted({r[3] for r in rows if r[3] is not None})
    populations: dict[int, Population] = {}
    if bands:
        found = [
            (b_id, pop_id, parse_snapshot(snap)[1])
            for b_id, pop_id, snap in conn.execute(
                _POPULATIONS_SQL, {"m": me_file_id, "bands": bands}
            )
        ]
        # blank values are broken only where the tags have a value now (DOMAIN.md)
        tags = []
        if any(d.shape is Shape.NULL_VALUES for _b, _p, d in found):
            tags = [TagRow(*t) for t in conn.execute(_TAGS_SQL, {"m": me_file_id})]
        for b_id, pop_id, decoded in found:
            good = decoded.shape is not Shape.MISSING and not is_broken(decoded, tags)
            populations[b_id] = Population(pop_id, decoded, good)
    labels = _band_labels(conn, {r[5] for r in rows if r[5] is not None})

    parsed = [parse_snapshot(r[9]) for r in rows]
    diffs = [
        _diff(p[1], populations[r[3]].decoded) if r[3] in populations else None
        for r, p in zip(rows, parsed, strict=True)
    ]
    wanted = {e[1] for d in diffs if d for side in d for e in side}
    # the legacy flat form names no parent: named from the traits now
    wanted |= {
        p.trait_id for _v, d, _r, _k in parsed if d.shape is Shape.LEGACY_FLAT for p in d.parents
    }
    names = dict(conn.execute(_TRAIT_NAMES_SQL, {"ids": sorted(wanted)}).all()) if wanted else {}

    out = []
    for r, (value, decoded, readable, kept), diff in zip(rows, parsed, diffs, strict=True):
        c_id, campaign, offer_id, b_id, band_row, _band_target, target_id, t_title, b_title = r[:9]
        if b_id is None:
            band_label = "(no band)"
        elif band_row is None:
            band_label = "(deleted band)"
        else:
            pos = labels.get(b_id)
            band_label = pos.label if pos else "(band of no target)"
        out.append(
            CarrierRow(
                kind=kind,
                id=c_id,
                campaign_id=campaign,
                offer_id=offer_id,
                target_id=target_id,
                target_title=t_title,
                band_id=b_id,
                band_label=band_label,
                band_title=b_title,
                created_at=r[10],
                shape=str(decoded.shape),
                decoded=decoded,
                comparison=compare(kind, decoded, b_id, populations.get(b_id), diff, names),
                raw=value,
                raw_text=kept,
                readable=readable,
                parent_names={
                    p.trait_id: names[p.trait_id]
                    for p in decoded.parents
                    if p.name is None and names.get(p.trait_id)
                },
            )
        )
    return CarrierPage(kind, total, offset, tuple(out), len(fetched) > limit)


def _band_labels(conn: Connection, target_ids: Iterable[int]) -> dict[int, BandPos]:
    targets = sorted(target_ids)
    if not targets:
        return {}
    return {
        b_id: BandPos(b_id, t_id, bool(bullseye), idx)
        for b_id, t_id, bullseye, idx in conn.execute(BAND_ORDER_SQL, {"targets": targets})
    }


# --- comparing ------------------------------------------------------------------------------

_Entry = tuple[int, int, str | None]  # (parent id, trait id, value; blank as None)


def _entries(parents: Iterable[ParentTrait], *, by_trait: bool) -> Counter[_Entry]:
    return Counter(
        (p.trait_id, c.trait_id, None if by_trait or c.is_blank else c.value)
        for p in parents
        for c in p.children
    )


def _diff(own: Decoded, pop: Decoded) -> tuple[list[_Entry], list[_Entry]] | None:
    """(added since, removed since) child entries, as multisets; None when not comparable.

    The legacy flat form holds trait names where values belong: where either side has it, the
    entries are compared by trait only.
    """
    if own.shape not in _TREE or pop.shape not in _TREE:
        return None
    by_trait = Shape.LEGACY_FLAT in (own.shape, pop.shape)
    was = _entries(own.parents, by_trait=by_trait)
    now = _entries(pop.parents, by_trait=by_trait)
    return sorted((now - was).elements(), key=_key), sorted((was - now).elements(), key=_key)


def _key(e: _Entry) -> tuple:
    return (e[0], e[1], e[2] is not None, e[2] or "")


def _value_of(parents: tuple[ParentTrait, ...], parent_id: int, trait_id: int) -> str | None:
    for p in parents:
        if p.trait_id == parent_id:
            for c in p.children:
                if c.trait_id == trait_id and not c.is_blank:
                    return c.value
    return None


def _labelled(
    entries: list[_Entry], decoded: Decoded, names: dict[int, str | None], *, by_trait: bool
) -> tuple[TagLabel, ...]:
    """Each entry named by its value; compared by trait, by this side's value (the trait's
    name now for a legacy entry, whose name may be old); blank, by the trait's name."""
    out = []
    for parent_id, trait_id, value in entries:
        shown = value
        if by_trait:
            shown = _value_of(decoded.parents, parent_id, trait_id)
            if decoded.shape is Shape.LEGACY_FLAT:
                shown = names.get(trait_id) or shown
        if shown is None:
            name = names.get(trait_id) or f"trait {trait_id}"
            shown = f"{name} (no value)"
        out.append(TagLabel(parent_id, trait_id, value, shown))
    return tuple(out)


def _broken_text(decoded: Decoded) -> str:
    if decoded.shape is Shape.EMPTY_OBJECT:
        return "empty object {} (says nothing)"
    return f"invalid: {decoded.error}"


def _listed(signs_labels: list[str]) -> str:
    shown = signs_labels[:_LINE_ITEMS]
    more = len(signs_labels) - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def compare(
    kind: str,
    own: Decoded,
    band_id: int | None,
    population: Population | None,
    diff: tuple[list[_Entry], list[_Entry]] | None,
    names: dict[int, str | None],
) -> Comparison:
    """The one-line verdict of a carried snapshot against its population's current one."""
    word = KIND_WORDS[kind]
    pop_id = population.population_id if population else None
    pop = population.decoded if population else None
    pop_shape = str(pop.shape) if pop else None

    def verdict(v: Verdict, line: str, **more) -> Comparison:
        return Comparison(v, line, pop_id, pop_shape, **more)

    if own.shape is Shape.MISSING:
        line = f"{word} snapshot missing (NULL)"
        if population is not None and population.good:
            line += LEFT_NULL  # nothing in the application will ever fill it
        return verdict(Verdict.SNAPSHOT_MISSING, line)
    if own.shape not in _TREE:
        return verdict(Verdict.SNAPSHOT_BROKEN, f"{word} snapshot broken: {_broken_text(own)}")
    if band_id is None:
        return verdict(Verdict.NO_BAND, f"the {word} names no band: no population to compare with")
    if pop is None:
        return verdict(Verdict.POPULATION_GONE, "population no longer exists")
    if pop.shape is Shape.MISSING:
        return verdict(Verdict.POPULATION_SNAPSHOT_MISSING, "population snapshot missing (NULL)")
    if pop.shape not in _TREE or diff is None:
        return verdict(
            Verdict.POPULATION_SNAPSHOT_BROKEN, f"population snapshot broken: {_broken_text(pop)}"
        )
    legacy = Shape.LEGACY_FLAT in (own.shape, pop.shape)
    if not legacy and same_up_to_ties(own.parents, pop.parents):
        return verdict(Verdict.SAME, "made from the same tags")
    added = _labelled(diff[0], pop, names, by_trait=legacy)
    removed = _labelled(diff[1], own, names, by_trait=legacy)
    if not (added or removed):
        line = (
            "same traits (the legacy flat form holds no values)"
            if legacy
            else "same tags; parent names, display orders or blank values differ"
        )
        return verdict(Verdict.SAME_TAGS, line)
    items = [f"+{t.label}" for t in added] + [f"-{t.label}" for t in removed]
    return verdict(
        Verdict.CHANGED, f"tags changed since: {_listed(items)}", added=added, removed=removed
    )


# --- text -----------------------------------------------------------------------------------


def carrier_json_text(row: CarrierRow) -> str:
    """The stored value as pretty JSON ("null" when NULL)."""
    if not row.readable:
        return row.raw_text or ""
    if row.raw_text is None:
        return "null"
    return pretty_json(row.raw, row.raw_text)


__all__ = [
    "AD_EVENTS",
    "KINDS",
    "OFFERS",
    "PAGE",
    "CarrierPage",
    "CarrierRow",
    "Comparison",
    "OffersSection",
    "TagLabel",
    "Verdict",
    "carrier_json_text",
    "compare",
    "offers_section",
    "readable_kinds",
]
