"""The targets list with each target's counts and whether it is stuck, busy or idle.

Every count is one set-based statement over all the targets listed, whatever their number.
"""

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
    missing: int | None  # None: not counted yet (the window counts it after the list shows)
    orphans: int | None = None
    stuck: bool = False

    @property
    def display_title(self) -> str:
        """The title, or "(untitled #5)" for a target whose title is NULL."""
        return self.title if self.title is not None else f"(untitled #{self.id})"

    @property
    def snapshotted(self) -> int | None:
        if self.missing is None:
            return None
        return max(self.population - self.missing, 0)

    @property
    def coverage(self) -> float | None:
        """Share of rows holding a snapshot (1.0 for an empty target, None until counted).

        Counted from the index on NULL snapshots, without reading one: whether a snapshot
        is well formed is the band table's per-shape counts, which read every row.
        """
        if self.missing is None:
            return None
        return self.snapshotted / self.population if self.population else 1.0

    @property
    def status_label(self) -> str:
        return "stuck (populating, no job running)" if self.stuck else self.population_status


def list_targets(
    conn: Connection,
    *,
    orphans: bool = False,
    coverage: bool = True,
    ids: list[int] | None = None,
) -> list[TargetRow]:
    """Every target (or those of ``ids``); a NULL status reads as not_populated.

    ``population`` counts the rows with a me_file id (what jobs write), ``missing`` those whose
    snapshot is NULL: both from indexes, so the list stays instant at millions of rows.
    Without ``coverage``, ``missing`` is None and only the unique index is read, the fastest
    a list with populations can be; :func:`target_missing` counts the rest. With ``orphans``,
    also the rows whose me_file is NULL or deleted (one pass over me_files); otherwise
    ``orphans`` is None.
    """
    where, params = ("where t.id = any(:ids) ", {"ids": ids}) if ids is not None else ("", {})
    rows = conn.execute(
        text(
            "select t.id, t.title, coalesce(t.population_status, 'not_populated'), "
            f"t.last_populated_at from targets t {where}order by t.id"
        ),
        params,
    ).all()
    if coverage:
        counts = queries.target_counts(conn, ids)
        population = {t: c.population for t, c in counts.items()}
        missing = {t: c.missing for t, c in counts.items()}
    else:
        population = queries.target_populations(conn, ids)
    lost = queries.target_orphans(conn, ids) if orphans else {}
    populating = [r[0] for r in rows if r[2] == "populating"]
    busy = locks.held_elsewhere(conn, locks.TARGET, populating) if populating else set()
    if set(populating) - busy:
        busy |= targets_being_populated(conn, set(populating) - busy)
    return [
        TargetRow(
            *r,
            population.get(r[0], 0),
            missing.get(r[0], 0) if coverage else None,
            lost.get(r[0], 0) if orphans else None,
            stuck=(r[2] == "populating" and r[0] not in busy),
        )
        for r in rows
    ]


def target_missing(conn: Connection, ids: list[int] | None = None) -> dict[int, int]:
    """NULL snapshots per target (of every target, or those of ``ids``), in one statement:
    the coverage a list read without it lacks. Targets without any are left out."""
    return queries.target_missing(conn, ids)


def get_target(conn: Connection, target_id: int) -> TargetRow:
    for row in list_targets(conn, ids=[target_id]):
        return row
    raise UsageError(f"target {target_id} does not exist")
