"""Read-side queries shared by the command line and the window: plain dataclasses out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, text

from . import locks
from .codec import SHAPES, needs_repair_sql, shape_sql
from .errors import UsageError


@dataclass(frozen=True)
class TargetRow:
    id: int
    title: str
    population_status: str
    last_populated_at: datetime | None
    population: int
    missing: int
    good: int
    stuck: bool = False

    @property
    def coverage(self) -> float:
        """Share of rows holding a well-formed snapshot (1.0 for an empty target)."""
        return self.good / self.population if self.population else 1.0

    @property
    def status_label(self) -> str:
        return "stuck (populating, no job running)" if self.stuck else self.population_status


@dataclass(frozen=True)
class TraitGroupRef:
    id: int
    title: str


@dataclass(frozen=True)
class BandRow:
    id: int
    target_id: int
    title: str | None
    label: str
    is_bullseye: bool
    groups: tuple[TraitGroupRef, ...]
    population: int = 0
    shapes: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return self.shapes.get("missing", 0)


def parse_id(value: object, what: str) -> int:
    """An id from operator input, or a clear UsageError."""
    shown = str(value).strip()
    # ASCII digits only: int() would also take "1_0" (as 10) and non-ASCII digits
    if not re.fullmatch(r"[+-]?[0-9]+", shown):
        raise UsageError(f"{what} id must be a whole number, got {shown[:40]!r}")
    number = int(shown[:40])  # longer: out of range anyway (and int() refuses 4,300 digits)
    if number <= 0 or number >= 2**63 or len(shown) > 40:
        raise UsageError(f"{what} id must be a positive number below 2**63, got {shown[:40]}")
    return number


def list_targets(conn: Connection) -> list[TargetRow]:
    rows = conn.execute(
        text(
            f"""
            with pop as (
                select b.target_id, count(*) as population,
                       count(*) filter (where tp.matching_tags_snapshot is null) as missing,
                       count(*) filter (where not ({needs_repair_sql("tp.matching_tags_snapshot")}))
                           as good
                from target_populations tp join target_bands b on b.id = tp.target_band_id
                group by b.target_id
            )
            select t.id, t.title, t.population_status, t.last_populated_at,
                   coalesce(p.population, 0), coalesce(p.missing, 0), coalesce(p.good, 0)
            from targets t left join pop p on p.target_id = t.id
            order by t.id
            """
        )
    ).all()
    populating = [r[0] for r in rows if r[2] == "populating"]
    busy = locks.held_elsewhere(conn, locks.TARGET, populating) if populating else set()
    if set(populating) - busy:
        from .oban import targets_being_populated

        busy |= targets_being_populated(conn, set(populating) - busy)
    return [TargetRow(*r, stuck=(r[2] == "populating" and r[0] not in busy)) for r in rows]


def get_target(conn: Connection, target_id: int) -> TargetRow:
    for row in list_targets_by_id(conn, [target_id]):
        return row
    raise UsageError(f"target {target_id} does not exist")


def list_targets_by_id(conn: Connection, ids: list[int]) -> list[TargetRow]:
    wanted = set(ids)
    return [t for t in list_targets(conn) if t.id in wanted]


def band_order(conn: Connection, target_id: int) -> list[BandRow]:
    """The target's bands, innermost (most trait groups) first, labelled per DOMAIN.md."""
    rows = conn.execute(
        text(
            """
            select b.id, b.title, b.is_bullseye = '1' as bullseye,
                   coalesce(array_agg(g.id order by g.id) filter (where g.id is not null), '{}'),
                   coalesce(array_agg(coalesce(g.title, '(deleted group ' || bg.trait_group_id || ')')
                                      order by g.id) filter (where bg.id is not null), '{}'),
                   count(distinct bg.trait_group_id) as ngroups
            from target_bands b
            left join target_band_trait_groups bg on bg.target_band_id = b.id
            left join trait_groups g on g.id = bg.trait_group_id
            where b.target_id = :t
            group by b.id
            order by ngroups desc, bullseye desc, b.id
            """
        ),
        {"t": target_id},
    ).all()
    bands = []
    for index, (band_id, title, bullseye, group_ids, group_titles, _n) in enumerate(rows):
        label = "Bullseye" if bullseye else f"Ring {index}"
        groups = tuple(
            TraitGroupRef(gid, gtitle) for gid, gtitle in zip(group_ids, group_titles, strict=False)
        )
        bands.append(BandRow(band_id, target_id, title, label, bullseye, groups))
    return bands


def list_bands(conn: Connection, target_id: int) -> list[BandRow]:
    """Bands with population and per-shape counts."""
    bands = band_order(conn, target_id)
    if not bands:
        return bands
    counts = conn.execute(
        text(
            f"""
            select tp.target_band_id, {shape_sql("tp.matching_tags_snapshot")} as shape, count(*)
            from target_populations tp
            where tp.target_band_id = any(:ids)
            group by 1, 2
            """
        ),
        {"ids": [b.id for b in bands]},
    ).all()
    per_band: dict[int, dict[str, int]] = {b.id: dict.fromkeys(SHAPES, 0) for b in bands}
    for band_id, shape, count in counts:
        per_band[band_id][shape] = count
    return [
        BandRow(
            b.id,
            b.target_id,
            b.title,
            b.label,
            b.is_bullseye,
            b.groups,
            population=sum(per_band[b.id].values()),
            shapes={str(k): v for k, v in per_band[b.id].items()},
        )
        for b in bands
    ]


def band_target(conn: Connection, band_id: int) -> int:
    """The target a band belongs to, or a clear UsageError."""
    target_id = conn.execute(
        text("select target_id from target_bands where id = :b"), {"b": band_id}
    ).scalar()
    if target_id is None:
        raise UsageError(f"band {band_id} does not exist")
    return target_id


def require_target(conn: Connection, target_id: int) -> str:
    title = conn.execute(text("select title from targets where id = :t"), {"t": target_id}).scalar()
    if title is None:
        raise UsageError(f"target {target_id} does not exist")
    return title
