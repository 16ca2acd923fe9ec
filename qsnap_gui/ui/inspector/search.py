"""The toolbar's me_file search: an id or a display-name prefix, results in a paged popup."""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import QPoint, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.shapes import Colour
from qsnap_gui.engine import views
from qsnap_gui.engine.inspection import MeFileHit, SearchPage
from qsnap_gui.store.db import Database
from qsnap_gui.ui.tasks import TaskRunner


class SearchField(QWidget):
    """me_file id or display-name prefix; Enter searches, a single hit opens at once.

    Put it in a toolbar and add ``focus_action`` (Ctrl+F) to the window.
    """

    meFileActivated = Signal(int)  # noqa: N815
    resultsShown = Signal(int)  # rows listed  # noqa: N815
    searchFailed = Signal(str)  # noqa: N815
    noticed = Signal(str)  # a message for the status bar  # noqa: N815

    PAGE = 50
    MORE_ROLE = Qt.ItemDataRole.UserRole + 10

    def __init__(
        self, database: Database, parent: QWidget | None = None, *, page_size: int = PAGE
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.page_size = max(1, int(page_size))
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self._query = ""
        self._rows: list[MeFileHit] = []
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("me_file id or name…  (Ctrl+F)")
        self.edit.setClearButtonEnabled(True)
        self.edit.setMinimumWidth(220)
        self.edit.setMaximumWidth(360)
        self.edit.returnPressed.connect(lambda: self.search())
        self.edit.textEdited.connect(self._edited)
        layout.addWidget(self.edit)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)

        self.popup = QFrame(self, Qt.WindowType.Popup)
        popup_layout = QVBoxLayout(self.popup)
        popup_layout.setContentsMargins(1, 1, 1, 1)
        self.results = QListWidget()
        self.results.setUniformItemSizes(True)
        self.results.itemActivated.connect(self._activate_item)
        self.results.itemClicked.connect(self._activate_item)
        popup_layout.addWidget(self.results)
        self.popup.resize(360, 300)

        self.focus_action = QAction("Find me_file", self)
        self.focus_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Find))
        self.focus_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.focus_action.triggered.connect(self.focus_search)

    @Slot()
    def focus_search(self) -> None:
        self.edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.edit.selectAll()

    def search(self, text: str | None = None) -> None:
        """Search for ``text`` (default: what the field holds)."""
        if text is not None:
            self.edit.setText(text)
        query = self.edit.text().strip()
        if not query:
            return
        self._query = query
        self._rows = []
        self._fetch(0)

    def load_more(self) -> None:
        self._fetch(len(self._rows))

    def _fetch(self, offset: int) -> None:
        query = self._query
        work = partial(
            views.search_me_files, self.database, query, limit=self.page_size, offset=offset
        )
        self.edit.setToolTip(f"Searching {query!r}…")
        self.runner.run("search", work, lambda result: self._shown(result, offset), self._failed)

    def _shown(self, page: SearchPage, offset: int) -> None:
        self.edit.setToolTip("")
        if offset == 0 and len(page.rows) == 1 and not page.has_more:
            self.popup.hide()
            self.resultsShown.emit(1)
            self.meFileActivated.emit(page.rows[0].id)
            return
        self._rows.extend(page.rows)
        if not self._rows:
            self._nothing_found()
            return
        self.results.clear()
        for hit in self._rows:
            name = hit.display_name if hit.display_name is not None else "(no name)"
            item = QListWidgetItem(f"{name}  ·  #{hit.id}")
            item.setToolTip(f"me_file {hit.id}: {name}")
            item.setData(Qt.ItemDataRole.UserRole, hit.id)
            self.results.addItem(item)
        if page.has_more:
            more = QListWidgetItem("More results…")
            more.setData(self.MORE_ROLE, True)
            font = more.font()
            font.setItalic(True)
            more.setFont(font)
            self.results.addItem(more)
        self._show_popup()
        self.results.setCurrentRow(min(offset, self.results.count() - 1))
        self.resultsShown.emit(len(self._rows))

    def _nothing_found(self) -> None:
        """Said beside the field, not in a popup: a popup would take the keys typed next."""
        message = f"No me_file matches {self._query!r}"
        self.popup.hide()
        self.edit.setToolTip(message)
        self.edit.setStyleSheet(f"QLineEdit {{ border: 1px solid {Colour.RED}; }}")
        self.noticed.emit(message)
        self.resultsShown.emit(0)

    @Slot()
    def _edited(self) -> None:
        self.edit.setStyleSheet("")
        self.edit.setToolTip("")

    def _show_popup(self) -> None:
        self.popup.move(self.edit.mapToGlobal(QPoint(0, self.edit.height())))
        self.popup.resize(min(max(self.edit.width(), 360), 520), 300)
        self.popup.show()
        self.results.setFocus()

    def _failed(self, message: str) -> None:
        self.edit.setToolTip(message)
        self.noticed.emit(f"Search failed: {message}")
        self.searchFailed.emit(message)

    def activate_row(self, row: int) -> None:
        item = self.results.item(row)
        if item is not None:
            self._activate_item(item)

    @Slot(QListWidgetItem)
    def _activate_item(self, item: QListWidgetItem) -> None:
        if item.data(self.MORE_ROLE):
            self.load_more()
            return
        me_file_id = item.data(Qt.ItemDataRole.UserRole)
        if me_file_id is None:
            return
        self.popup.hide()
        self.meFileActivated.emit(int(me_file_id))
