"""The targets list with each target's counts and whether it is stuck, busy or idle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from qsnap_gui.domain.codec import good_sql
from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.oban import targets_being_populated
from qsnap_gui.store import locks


@dataclass(frozen=True)
class TargetRow:
    id: int
    title: str | None
    population_status: str | None
    last_populated_at: datetime | None
    population: int
    missing: int
    good: int
    orphans: int = 0
    stuck: bool = False

    @property
    def display_title(self) -> str:
        """The title, or "(untitled #5)" for a target whose title is NULL."""
        return self.title if self.title is not None else f"(untitled #{self.id})"

    @property
    def coverage(self) -> float:
        """Share of rows holding a well-formed snapshot (1.0 for an empty target)."""
        return self.good / self.population if self.population else 1.0

    @property
    def status_label(self) -> str:
        return "stuck (populating, no job running)" if self.stuck else self.population_status


def list_targets(conn: Connection) -> list[TargetRow]:
    """Every target; a NULL status reads as not_populated.

    ``population`` counts the rows with a me_file id (what jobs write), ``good`` those holding
    a snapshot that is not broken, ``orphans`` the rows whose me_file is NULL or deleted.
    """
    good = good_sql("tp.matching_tags_snapshot", "tp.me_file_id")
    rows = conn.execute(
        text(
            f"""
            with pop as (
                select b.target_id,
                       count(*) filter (where tp.me_file_id is not null) as population,
                       count(*) filter (where tp.me_file_id is not null
                                        and tp.matching_tags_snapshot is null) as missing,
                       count(*) filter (where tp.me_file_id is not null and {good}) as good,
                       count(*) filter (where f.id is null) as orphans
                from target_populations tp join target_bands b on b.id = tp.target_band_id
                left join me_files f on f.id = tp.me_file_id
                group by b.target_id
            )
            select t.id, t.title, coalesce(t.population_status, 'not_populated'),
                   t.last_populated_at, coalesce(p.population, 0), coalesce(p.missing, 0),
                   coalesce(p.good, 0), coalesce(p.orphans, 0)
            from targets t left join pop p on p.target_id = t.id
            order by t.id
            """
        )
    ).all()
    populating = [r[0] for r in rows if r[2] == "populating"]
    busy = locks.held_elsewhere(conn, locks.TARGET, populating) if populating else set()
    if set(populating) - busy:
        busy |= targets_being_populated(conn, set(populating) - busy)
    return [TargetRow(*r, stuck=(r[2] == "populating" and r[0] not in busy)) for r in rows]


def get_target(conn: Connection, target_id: int) -> TargetRow:
    for row in list_targets_by_id(conn, [target_id]):
        return row
    raise UsageError(f"target {target_id} does not exist")


def list_targets_by_id(conn: Connection, ids: list[int]) -> list[TargetRow]:
    wanted = set(ids)
    return [t for t in list_targets(conn) if t.id in wanted]
