"""A band's population rows, page by page, for the band population view."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt

from qsnap_gui.domain.shapes import shape_info
from qsnap_gui.engine.inspection import PopulationRow
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.models.base import DISPLAY, RIGHT, Index, TableModel
from qsnap_gui.ui.palette import GREY, shape_color


class PopulationModel(TableModel):
    COLUMNS = ("Population", "me_file", "Display name", "Shape", "Updated")

    @property
    def rows(self) -> list[PopulationRow]:
        return self._rows

    def clear(self) -> None:
        self._replace([], False)

    def append(self, rows: tuple[PopulationRow, ...]) -> None:
        if not rows:
            return
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self._rows.extend(rows)
        self.endInsertRows()

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: Index, role: int = DISPLAY):
        r: PopulationRow | None = self.row_at(index)
        if r is None:
            return None
        col = index.column()
        if role == DISPLAY:
            if col == 0:
                return str(r.population_id)
            if col == 1:
                return str(r.me_file_id)
            if col == 2:
                return r.display_name if r.display_name is not None else "(deleted me_file)"
            if col == 3:
                return shape_info(r.shape).label
            if col == 4:
                return fmt.stamp(r.updated_at)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == 3:
                return shape_color(r.shape)
            if col == 2 and r.display_name is None:
                return GREY
        if role == Qt.ItemDataRole.ToolTipRole and col == 3:
            return shape_info(r.shape).tip
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (0, 1):
            return RIGHT
        return None
