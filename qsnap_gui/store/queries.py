"""Read-side queries shared by the command line and the window: plain dataclasses out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import SHAPES, shape_sql
from qsnap_gui.domain.errors import UsageError


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
