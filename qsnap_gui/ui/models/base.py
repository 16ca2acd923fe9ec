"""What every item model of the window shares: its roles, the table base, and the guard.

Qt calls a model's methods from its paint and layout code; an exception there would surface as
a traceback in the middle of a repaint, again on every repaint. The guard turns it into a cell
reading "⚠ error" (its tooltip gives the reason) and logs the cause once, with its traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont

from qsnap_gui.ui.palette import RED

log = logging.getLogger(__name__)

SORT_ROLE = Qt.ItemDataRole.UserRole
ID_ROLE = Qt.ItemDataRole.UserRole + 1
COVERAGE_ROLE = Qt.ItemDataRole.UserRole + 2
JOB_ROLE = Qt.ItemDataRole.UserRole + 3

DISPLAY = Qt.ItemDataRole.DisplayRole
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
Index = QModelIndex | QPersistentModelIndex

ERROR_TEXT = "⚠ error"

_reported: set[tuple[str, str, str]] = set()


def _reason(model: object, method: str, exc: Exception) -> str:
    """The one-line cause; logged with its traceback the first time it is seen."""
    reason = f"{type(exc).__name__}: {exc}"
    key = (type(model).__qualname__, method, reason)
    if key not in _reported:
        _reported.add(key)
        log.error("%s.%s failed: %s", type(model).__name__, method, reason, exc_info=exc)
    return reason


def _error_cell(role: int, reason: str):
    if role == DISPLAY:
        return ERROR_TEXT
    if role == Qt.ItemDataRole.ToolTipRole:
        return f"This cell could not be shown: {reason}"
    if role == Qt.ItemDataRole.ForegroundRole:
        return RED
    return None


def _role(args: tuple, kwargs: dict) -> int:
    return args[1] if len(args) > 1 else kwargs.get("role", DISPLAY)


FALLBACKS: dict[str, Callable[[tuple, dict, str], object]] = {
    "data": lambda args, kwargs, reason: _error_cell(_role(args, kwargs), reason),
    "headerData": lambda args, kwargs, reason: None,
    "rowCount": lambda args, kwargs, reason: 0,
    "columnCount": lambda args, kwargs, reason: 0,
    "hasChildren": lambda args, kwargs, reason: False,
    "flags": lambda args, kwargs, reason: Qt.ItemFlag.ItemIsEnabled,
    "index": lambda args, kwargs, reason: QModelIndex(),
    "parent": lambda args, kwargs, reason: QModelIndex(),
    "setData": lambda args, kwargs, reason: False,
}


def _guarded(name: str, fn: Callable) -> Callable:
    fallback = FALLBACKS[name]

    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            return fallback(args, kwargs, _reason(self, name, exc))

    method.guarded = True
    return method


def guard_model(cls: type) -> type:
    """Wrap the Qt-facing methods ``cls`` defines itself (its bases are wrapped on their own)."""
    for name in FALLBACKS:
        fn = cls.__dict__.get(name)
        if callable(fn) and not getattr(fn, "guarded", False):
            setattr(cls, name, _guarded(name, fn))
    return cls


def bold() -> QFont:
    font = QFont()
    font.setBold(True)
    return font


class TableModel(QAbstractTableModel):
    """A flat table of plain rows; subclasses are guarded as they are defined."""

    COLUMNS: tuple[str, ...] = ()
    TIPS: dict[int, str] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        guard_model(cls)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list = []

    def rowCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY):
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.COLUMNS):
            return None
        if role == DISPLAY:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.TIPS.get(section)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return (
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemNeverHasChildren
        )

    def row_at(self, index: Index):
        """The plain row behind ``index``, or None for an index outside the table."""
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        return self._rows[index.row()]

    def _replace(self, rows: list, same: bool) -> None:
        """Same rows in the same order: update in place so selection and scroll survive."""
        if same and rows:
            self._rows = rows
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(rows) - 1, len(self.COLUMNS) - 1)
            )
            return
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()


guard_model(TableModel)
