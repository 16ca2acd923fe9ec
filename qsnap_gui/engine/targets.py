"""The targets list with each target's counts and whether it is stuck, busy or idle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.engine.oban import targets_being_populated
from qsnap_gui.store import locks, queries


@dataclass(frozen=True)
class TargetRow:
    id: int
    title: str | None
    population_status: str | None
    last_populated_at: datetime | None
    population: int
    missing: int
    orphans: int | None = None
    stuck: bool = False

    @property
    def display_title(self) -> str:
        """The title, or "(untitled #5)" for a target whose title is NULL."""
        return self.title if self.title is not None else f"(untitled #{self.id})"

    @property
    def snapshotted(self) -> int:
        return self.population - self.missing

    @property
    def coverage(self) -> float:
        """Share of rows holding a snapshot (1.0 for an empty target).

        Counted from the index on NULL snapshots, without reading one: whether a snapshot
        is well formed is the band table's per-shape counts, which read every row.
        """
        return self.snapshotted / self.population if self.population else 1.0

    @property
    def status_label(self) -> str:
        return "stuck (populating, no job running)" if self.stuck else self.population_status


def list_targets(conn: Connection, *, orphans: bool = False) -> list[TargetRow]:
    """Every target; a NULL status reads as not_populated.

    ``population`` counts the rows with a me_file id (what jobs write), ``missing`` those whose
    snapshot is NULL: both from indexes, so the list stays instant at millions of rows. With
    ``orphans``, also the rows whose me_file is NULL or deleted (one pass over me_files);
    otherwise ``orphans`` is None.
    """
    rows = conn.execute(
        text(
            "select t.id, t.title, coalesce(t.population_status, 'not_populated'), "
            "t.last_populated_at from targets t order by t.id"
        )
    ).all()
    band_target = dict(
        conn.execute(
            text("select b.id, b.target_id from target_bands b where b.target_id is not null")
        ).all()
    )
    totals: dict[int, list] = {r[0]: [0, 0, 0 if orphans else None] for r in rows}
    for band_id, c in queries.band_counts(conn, list(band_target)).items():
        total = totals.get(band_target[band_id])
        if total is not None:
            total[0] += c.population
            total[1] += c.missing
    if orphans:
        for band_id, n in queries.band_orphans(conn, list(band_target)).items():
            total = totals.get(band_target[band_id])
            if total is not None:
                total[2] += n
    populating = [r[0] for r in rows if r[2] == "populating"]
    busy = locks.held_elsewhere(conn, locks.TARGET, populating) if populating else set()
    if set(populating) - busy:
        busy |= targets_being_populated(conn, set(populating) - busy)
    return [
        TargetRow(*r, *totals[r[0]], stuck=(r[2] == "populating" and r[0] not in busy))
        for r in rows
    ]


def get_target(conn: Connection, target_id: int) -> TargetRow:
    for row in list_targets_by_id(conn, [target_id]):
        return row
    raise UsageError(f"target {target_id} does not exist")


def list_targets_by_id(conn: Connection, ids: list[int]) -> list[TargetRow]:
    wanted = set(ids)
    return [t for t in list_targets(conn) if t.id in wanted]
