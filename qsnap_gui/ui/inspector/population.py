"""A band's population, page by page (keyset on id), filterable by snapshot shape."""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import QModelIndex, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.codec import Shape
from qsnap_gui.domain.shapes import Colour, shape_label
from qsnap_gui.engine import views
from qsnap_gui.engine.inspection import PopulationPage
from qsnap_gui.store.db import Database
from qsnap_gui.ui.models.population import PopulationModel
from qsnap_gui.ui.tasks import TaskRunner


class BandPopulationView(QWidget):
    """A band's population rows, keyset-paged by id, filterable by shape."""

    meFileActivated = Signal(int)  # noqa: N815
    pageLoaded = Signal(int)  # rows shown in total  # noqa: N815
    loadFailed = Signal(str)  # noqa: N815

    PAGE = 200

    def __init__(
        self,
        database: Database,
        band_id: int,
        parent: QWidget | None = None,
        *,
        page_size: int = PAGE,
        shape: Shape | str | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.band_id = int(band_id)
        self.page_size = max(1, int(page_size))
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self._has_more = False
        self._shape: Shape | None = None if shape is None else Shape(shape)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        bar = QHBoxLayout()
        self.heading = QLabel(title or f"Population of band {self.band_id}")
        font = QFont(self.heading.font())
        font.setBold(True)
        self.heading.setFont(font)
        self.shape_filter = QComboBox()
        self.shape_filter.addItem("All shapes", None)
        for each in Shape:
            self.shape_filter.addItem(shape_label(each), str(each))
        self.shape_filter.setCurrentIndex(
            self.shape_filter.findData(None if self._shape is None else str(self._shape))
        )
        self.shape_filter.currentIndexChanged.connect(self._filter_changed)
        self.more_button = QPushButton("Load more")
        self.more_button.clicked.connect(self.load_more)
        self.count_label = QLabel()
        bar.addWidget(self.heading)
        bar.addStretch(1)
        bar.addWidget(QLabel("Shape:"))
        bar.addWidget(self.shape_filter)
        layout.addLayout(bar)

        self.model = PopulationModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(self._activated)
        self.table.activated.connect(self._activated)
        self.table.verticalScrollBar().valueChanged.connect(self._scrolled)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        layout.addWidget(self.table, 1)
        foot = QHBoxLayout()
        foot.addWidget(self.count_label, 1)
        foot.addWidget(self.more_button)
        layout.addLayout(foot)
        self.reload()

    def shape(self) -> Shape | None:
        return self._shape

    def set_shape(self, shape: Shape | str | None) -> None:
        value = None if shape is None else str(Shape(shape))
        index = self.shape_filter.findData(value)
        if index != self.shape_filter.currentIndex():
            self.shape_filter.setCurrentIndex(index)
        else:
            self.reload()

    @Slot()
    def reload(self) -> None:
        self.model.clear()
        self._has_more = False
        self._fetch(0)

    @Slot()
    def load_more(self) -> None:
        if self._has_more and not self.runner.busy("page"):
            last = self.model.rows[-1].population_id if self.model.rows else 0
            self._fetch(last)

    def _fetch(self, after_id: int) -> None:
        work = partial(
            views.band_population_page,
            self.database,
            self.band_id,
            self._shape,
            after_id=after_id,
            limit=self.page_size,
        )
        self.more_button.setEnabled(False)
        self.count_label.setText("Loading…")
        self.runner.run("page", work, self._page_loaded, self._failed)

    def _page_loaded(self, page: PopulationPage) -> None:
        self.model.append(page.rows)
        self._has_more = page.has_more
        self.more_button.setEnabled(page.has_more)
        n = len(self.model.rows)
        what = "row" if n == 1 else "rows"
        self.count_label.setText(
            f"{n:,} {what} shown" + (", more available" if page.has_more else "")
        )
        for col in (0, 1, 3, 4):
            self.table.resizeColumnToContents(col)
        self.pageLoaded.emit(n)

    def _failed(self, message: str) -> None:
        self.count_label.setText(message)
        self.count_label.setStyleSheet(f"color: {Colour.RED};")
        self.more_button.setEnabled(self._has_more)
        self.loadFailed.emit(message)

    @Slot(int)
    def _filter_changed(self, _index: int) -> None:
        data = self.shape_filter.currentData()
        self._shape = None if data is None else Shape(data)
        self.reload()

    @Slot(int)
    def _scrolled(self, value: int) -> None:
        if value >= self.table.verticalScrollBar().maximum() and self._has_more:
            self.load_more()

    @Slot(QModelIndex)
    def _activated(self, index: QModelIndex) -> None:
        if index.isValid() and 0 <= index.row() < len(self.model.rows):
            self.meFileActivated.emit(self.model.rows[index.row()].me_file_id)

    def activate_row(self, row: int) -> None:
        self._activated(self.model.index(row, 0))
