"""Finding me_files by id or name, and paging a band's population rows, for the
inspector's search and population views."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import Shape, shape_sql
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.inspection.load import MAX_BIGINT, ME_FILE_SQL


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
        if offset or not 0 < number <= MAX_BIGINT:
            return SearchPage((), False)
        row = conn.execute(ME_FILE_SQL, {"m": number}).first()
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
