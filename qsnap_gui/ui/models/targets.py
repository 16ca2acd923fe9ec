"""The targets table and its filter/sort proxy."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QSortFilterProxyModel, Qt

from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.models.base import (
    COVERAGE_ROLE,
    DISPLAY,
    ID_ROLE,
    RIGHT,
    SORT_ROLE,
    Index,
    TableModel,
    bold,
)
from qsnap_gui.ui.palette import BLUE, DIM, RED, STUCK_BG


def status_text(target: TargetRow) -> str:
    """The engine reads a NULL status as not_populated already."""
    return "stuck" if target.stuck else target.population_status.replace("_", " ")


class TargetsModel(TableModel):
    COLUMNS = ("ID", "Title", "Status", "Last populated (UTC)", "Population", "Coverage")
    ID, TITLE, STATUS, LAST, POPULATION, COVERAGE = range(6)
    TIPS = {
        COVERAGE: "Share of populations holding a well-formed snapshot envelope",
        STATUS: "Stuck: left in 'populating' with no job running",
    }

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._read: list[TargetRow] = []
        self._busy: frozenset[int] = frozenset()

    def set_rows(self, rows: list[TargetRow]) -> None:
        self._read = list(rows)
        self._show([r.id for r in rows] == [r.id for r in self._rows])

    def set_busy(self, target_ids: set[int]) -> bool:
        """Targets this session's own jobs work on: populating while they run is busy, not
        stuck (the targets list only knows of locks on whole targets, not on bands).
        Returns whether that changed anything."""
        busy = frozenset(target_ids)
        if busy == self._busy:
            return False
        self._busy = busy
        self._show(True)
        return True

    def rows(self) -> list[TargetRow]:
        return list(self._rows)

    def _show(self, same: bool) -> None:
        self._replace(
            [replace(t, stuck=False) if t.id in self._busy else t for t in self._read], same
        )

    def target(self, target_id: int | None) -> TargetRow | None:
        return next((t for t in self._rows if t.id == target_id), None)

    def row_of(self, target_id: int) -> int | None:
        return next((i for i, t in enumerate(self._rows) if t.id == target_id), None)

    def data(self, index: Index, role: int = DISPLAY):
        t: TargetRow | None = self.row_at(index)
        if t is None:
            return None
        col = index.column()
        if role == DISPLAY:
            return self._display(t, col)
        if role == SORT_ROLE:
            return self._sort_key(t, col)
        if role == ID_ROLE:
            return t.id
        if role == COVERAGE_ROLE and col == self.COVERAGE:
            return t.coverage if t.population else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.ID, self.POPULATION):
            return RIGHT
        if role == Qt.ItemDataRole.DecorationRole and col == self.STATUS:
            return icon("stuck" if t.stuck else t.population_status.replace("_", "-"))
        if role == Qt.ItemDataRole.BackgroundRole and t.stuck:
            return STUCK_BG
        if role == Qt.ItemDataRole.ForegroundRole and col == self.STATUS:
            if t.stuck:
                return RED
            return {"populating": BLUE, "not_populated": DIM}.get(t.population_status)
        if role == Qt.ItemDataRole.FontRole and t.stuck and col in (self.TITLE, self.STATUS):
            return bold()
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(t, col)
        return None

    def _display(self, t: TargetRow, col: int) -> str:
        if col == self.ID:
            return str(t.id)
        if col == self.TITLE:
            return t.display_title
        if col == self.STATUS:
            return status_text(t)
        if col == self.LAST:
            return fmt.when(t.last_populated_at)
        if col == self.POPULATION:
            return fmt.count(t.population)
        return fmt.percent(t.coverage) if t.population else "—"

    def _sort_key(self, t: TargetRow, col: int):
        if col == self.ID:
            return t.id
        if col == self.TITLE:
            return t.display_title.casefold()
        if col == self.STATUS:
            return status_text(t)
        if col == self.LAST:
            return t.last_populated_at.timestamp() if t.last_populated_at else 0.0
        if col == self.POPULATION:
            return t.population
        return t.coverage if t.population else -1.0

    def _tooltip(self, t: TargetRow, col: int) -> str | None:
        if col == self.STATUS and t.stuck:
            return (
                "Left in 'populating' with no job running: qsnap was stopped mid-way.\n"
                "Resume it to finish the snapshot stage and mark it populated."
            )
        if col == self.COVERAGE and t.population:
            return (
                f"{fmt.count(t.snapshotted)} of {fmt.count(t.population)} rows hold a snapshot; "
                f"{fmt.count(t.missing)} never snapshotted\n"
                "The band table splits them by shape"
            )
        if col == self.TITLE:
            return f"Target {t.id}: {t.display_title}"
        return None


class TargetsProxy(QSortFilterProxyModel):
    """Filters on every column's text, sorts on raw values."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
