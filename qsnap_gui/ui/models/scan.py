"""The backfill scan's bands, a checkbox per band that has something to fix."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal

from qsnap_gui.domain.jobs import Mode
from qsnap_gui.domain.shapes import shape_label
from qsnap_gui.engine.backfill import BandPlan, ScanResult, ScanRow
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.models.base import DISPLAY, RIGHT, SORT_ROLE, Index, TableModel
from qsnap_gui.ui.palette import AMBER, DIM

BAND_ROLE = Qt.ItemDataRole.UserRole + 1

MODE_TIPS = {
    Mode.MISSING: "missing mode: fills NULL snapshots only",
    Mode.REPAIR: "repair mode: fills NULL snapshots and rebuilds broken ones",
    Mode.FORCE: "force mode: rebuilds every row of the band, writes those that changed (it has stale snapshots)",
}


def count_cell(value: int | None) -> str:
    return "—" if value is None else fmt.count(value)


class ScanModel(TableModel):
    """All bands with something to fix start checked."""

    COLUMNS = (
        "Target",
        "Band",
        "Population",
        "Missing",
        "Broken",
        "Stale",
        "Mode",
        "Rows to write",
    )
    TIPS = {
        5: "Well-formed snapshots that differ from a fresh one (the deep check)",
        7: "Rows the band job will write (force mode: the stale, broken and missing ones)",
    }
    checksChanged = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.plans: dict[int, BandPlan] = {}
        self.checked: set[int] = set()

    @property
    def rows(self) -> list[ScanRow]:
        return self._rows

    def set_scan(self, result: ScanResult | None, plans: list[BandPlan]) -> None:
        self.beginResetModel()
        self._rows = list(result.rows) if result else []
        self.plans = {p.band_id: p for p in plans}
        self.checked = set(self.plans)
        self.endResetModel()
        self.checksChanged.emit()

    def set_all(self, checked: bool) -> None:
        self.checked = set(self.plans) if checked else set()
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, 0))
        self.checksChanged.emit()

    def checked_plans(self) -> list[BandPlan]:
        return [self.plans[r.band_id] for r in self._rows if r.band_id in self.checked]

    def flags(self, index: Index) -> Qt.ItemFlag:
        row: ScanRow | None = self.row_at(index)
        if row is None:
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0 and row.band_id in self.plans:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: Index, role: int = DISPLAY):
        row: ScanRow | None = self.row_at(index)
        if row is None:
            return None
        plan = self.plans.get(row.band_id)
        column = index.column()
        if role == BAND_ROLE:
            return row.band_id
        if role == Qt.ItemDataRole.CheckStateRole and column == 0 and plan is not None:
            checked = row.band_id in self.checked
            return Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
        if role in (SORT_ROLE, DISPLAY):
            key, text = self._values(row, plan)[column]
            return key if role == SORT_ROLE else text
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= column <= 7 and column != 6:
            return RIGHT
        if role == Qt.ItemDataRole.ForegroundRole:
            if plan is None:
                return DIM
            if column == 4 and row.broken or column == 5 and row.stale:
                return AMBER
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 4 and row.shapes:
                parts = [
                    f"{shape_label(k).lower()}: {fmt.count(v)}" for k, v in row.shapes.items() if v
                ]
                return "Broken shapes: " + (", ".join(parts) or "none")
            if column == 6 and plan is not None:
                return MODE_TIPS[plan.mode]
        return None

    @staticmethod
    def _values(row: ScanRow, plan: BandPlan | None) -> list[tuple[object, str]]:
        """(sort key, text) per column."""
        return [
            (row.target_title, f"{row.target_title}\u2002#{row.target_id}"),
            (row.label, f"{row.label}\u2002(band {row.band_id})"),
            (row.population, fmt.count(row.population)),
            (row.missing or 0, count_cell(row.missing)),
            (row.broken or 0, count_cell(row.broken)),
            (row.stale or 0, count_cell(row.stale)),
            (plan.mode.value if plan else "", plan.mode.value if plan else "nothing to fix"),
            (plan.rows if plan else 0, fmt.count(plan.rows) if plan else ""),
        ]

    def setData(self, index: Index, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        row: ScanRow | None = self.row_at(index)
        if row is None or role != Qt.ItemDataRole.CheckStateRole or index.column() != 0:
            return False
        if row.band_id not in self.plans:
            return False
        state = value if isinstance(value, Qt.CheckState) else Qt.CheckState(int(value))
        if state == Qt.CheckState.Checked:
            self.checked.add(row.band_id)
        else:
            self.checked.discard(row.band_id)
        self.dataChanged.emit(index, index, [role])
        self.checksChanged.emit()
        return True
