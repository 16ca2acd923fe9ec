"""The targets table and its filter/sort proxy.

Thousands of targets stay instant: the model sorts its own rows in Python (one key per row)
and the proxy filters on each row's text, built once; Qt's proxy would call back into Python
for every comparison of a sort and every cell of a filter.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, Signal

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

log = logging.getLogger(__name__)

COUNTING = "counting…"  # coverage not read yet


def status_text(target: TargetRow) -> str:
    """The engine reads a NULL status as not_populated already."""
    return "stuck" if target.stuck else target.population_status.replace("_", " ")


class TargetsModel(TableModel):
    COLUMNS = ("ID", "Title", "Status", "Last populated (UTC)", "Population", "Coverage")
    ID, TITLE, STATUS, LAST, POPULATION, COVERAGE = range(6)
    FILTERED = (ID, TITLE, STATUS)  # what the filter field says it filters on
    TIPS = {
        COVERAGE: "Share of populations holding a snapshot (not NULL)",
        STATUS: "Stuck: left in 'populating' with no job running",
    }

    coverageWanted = Signal()  # rows came without their NULL snapshots counted  # noqa: N815

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._read: list[TargetRow] = []
        self._busy: frozenset[int] = frozenset()
        self._sort = (self.ID, Qt.SortOrder.AscendingOrder)
        self._row_of: dict[int, int] = {}
        self._texts: list[str] | None = None  # each row's cells, casefolded, for the filter

    def set_rows(self, rows: list[TargetRow]) -> None:
        """Rows as read; those without coverage ask for it (``coverageWanted``)."""
        self._read = list(rows)
        self._show()
        if any(t.missing is None for t in rows):
            self.coverageWanted.emit()

    def set_missing(self, missing: dict[int, int]) -> None:
        """The NULL snapshots per target counted after the rows (absent: none)."""
        self._read = [
            replace(t, missing=missing.get(t.id, 0)) if t.missing is None else t for t in self._read
        ]
        self._show()

    def counting(self) -> bool:
        """Whether some row's coverage is still being counted."""
        return any(t.missing is None for t in self._rows)

    def set_busy(self, target_ids: set[int]) -> bool:
        """Targets this session's own jobs work on: populating while they run is busy, not
        stuck (the targets list only knows of locks on whole targets, not on bands).
        Returns whether that changed anything."""
        busy = frozenset(target_ids)
        if busy == self._busy:
            return False
        self._busy = busy
        self._show()
        return True

    def rows(self) -> list[TargetRow]:
        return list(self._rows)

    def target(self, target_id: int | None) -> TargetRow | None:
        row = self._row_of.get(target_id)
        return None if row is None else self._rows[row]

    def row_of(self, target_id: int) -> int | None:
        return self._row_of.get(target_id)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort the rows themselves (ties in the order read, by id), keeping the selection."""
        if 0 <= column < len(self.COLUMNS) and (column, order) != self._sort:
            self._sort = (column, order)
            self._show(changed=False)

    def matches(self, row: int, needle: str) -> bool:
        """Whether the row's id, title or status contains ``needle`` (casefolded)."""
        if self._texts is None:
            self._texts = [self._text(t) for t in self._rows]
        return 0 <= row < len(self._texts) and needle in self._texts[row]

    def _text(self, t: TargetRow) -> str:
        try:
            return "\n".join(self._display(t, col) for col in self.FILTERED).casefold()
        except Exception as exc:  # a row that cannot be shown is shown as an error cell
            log.debug("target %s has no filter text: %s", t.id, exc)
            return ""

    def _key(self, t: TargetRow, column: int) -> tuple:
        try:
            return (0, self._sort_key(t, column))
        except Exception as exc:
            log.debug("target %s has no sort key: %s", t.id, exc)
            return (1,)

    def _show(self, changed: bool = True) -> None:
        """Show the rows read (busy targets not stuck) in the current order: the same targets
        move in place, so selection and scroll survive; others reset the table. ``changed``:
        their cells may have changed too (not only their order)."""
        rows = [replace(t, stuck=False) if t.id in self._busy else t for t in self._read]
        column, order = self._sort
        rows.sort(key=lambda t: self._key(t, column), reverse=order == Qt.SortOrder.DescendingOrder)
        if not rows or {t.id for t in rows} != set(self._row_of):
            self.beginResetModel()
            self._set(rows)
            self.endResetModel()
            return
        self.layoutAboutToBeChanged.emit()
        before = [t.id for t in self._rows]
        self._set(rows)
        persistent = self.persistentIndexList()
        moved = [self.index(self._row_of[before[i.row()]], i.column()) for i in persistent]
        self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()
        if changed:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(rows) - 1, len(self.COLUMNS) - 1)
            )

    def _set(self, rows: list[TargetRow]) -> None:
        self._rows = rows
        self._row_of = {t.id: i for i, t in enumerate(rows)}
        self._texts = None

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
            return t.coverage if t.population else None  # None: the text, no bar
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.ID, self.POPULATION):
            return RIGHT
        if role == Qt.ItemDataRole.DecorationRole and col == self.STATUS:
            return icon("stuck" if t.stuck else t.population_status.replace("_", "-"))
        if role == Qt.ItemDataRole.BackgroundRole and t.stuck:
            return STUCK_BG
        if role == Qt.ItemDataRole.ForegroundRole and col == self.COVERAGE:
            return DIM if t.coverage is None else None
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
        if t.coverage is None:
            return COUNTING
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
        if t.coverage is None:
            return -2.0
        return t.coverage if t.population else -1.0

    def _tooltip(self, t: TargetRow, col: int) -> str | None:
        if col == self.STATUS and t.stuck:
            return (
                "Left in 'populating' with no job running: qsnap was stopped mid-way.\n"
                "Resume it to finish the snapshot stage and mark it populated."
            )
        if col == self.COVERAGE and t.coverage is None:
            return "Counting the rows without a snapshot…"
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
    """Filters on every column's text and sorts by the model's own sort, without a call into
    Python per comparison or per cell."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self._needle = ""

    def set_filter_text(self, text: str) -> None:
        """Rows whose text contains ``text``, whatever the case."""
        self.beginFilterChange()
        self._needle = text.casefold()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:  # noqa: N802
        if not self._needle:
            return True
        model = self.sourceModel()
        if isinstance(model, TargetsModel):
            return model.matches(source_row, self._needle)
        return super().filterAcceptsRow(source_row, source_parent)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """The model sorts itself; this proxy keeps its order (and only filters)."""
        model = self.sourceModel()
        if isinstance(model, TargetsModel):
            model.sort(column, order)
        else:
            super().sort(column, order)
