"""The inspector's "Offers & ad events" section: why was this person shown this ad?

The me_file's newest offers and ad events (a tab each, "Load more" pages on), and for the
chosen one the snapshot it was made from (the same tree as a population's) and how it compares
with the snapshot its population holds now. Read in the background through
``engine.views.offers_section``; ``availabilityChanged(False)`` tells the inspector to hide the
section where this database has no offers or ad events it may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from PySide6.QtCore import QModelIndex, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.codec import Decoded
from qsnap_gui.domain.shapes import shape_info
from qsnap_gui.engine import views
from qsnap_gui.engine.offers_view import (
    AD_EVENTS,
    KIND_WORDS,
    KINDS,
    OFFERS,
    CarrierRow,
    OffersSection,
    carrier_json_text,
)
from qsnap_gui.store.db import Database
from qsnap_gui.ui.inspector.common import (
    RAW_DISPLAY_CHARS,
    fit_headers,
    fixed_font,
    paint_pill,
    pill,
    say,
)
from qsnap_gui.ui.models.offers import OffersModel, verdict_info, where_text
from qsnap_gui.ui.models.snapshot_tree import Node, NodeKind, SnapshotTreeModel, build_nodes
from qsnap_gui.ui.tasks import TaskRunner
from qsnap_gui.ui.widgets import ElidedLabel

TITLES = {OFFERS: "Offers", AD_EVENTS: "Ad events"}


@dataclass(frozen=True)
class RowView:
    """What the GUI needs for one row: its tree and JSON, built on a worker."""

    nodes: Node
    json_text: str


@dataclass(frozen=True)
class LoadedOffers:
    me_file_id: int
    section: OffersSection | None
    views: dict[tuple[str, int], RowView]


def load_offers(
    database: Database, me_file_id: int, kinds: tuple[str, ...] = KINDS, offset: int = 0
) -> LoadedOffers:
    section = views.offers_section(database, me_file_id, kinds=kinds, offset=offset)
    shown = {}
    for kind in KINDS:
        page = section.page(kind) if section else None
        for r in page.rows if page else ():
            nodes = build_nodes(r.decoded, r.raw_text, parent_names=r.parent_names)
            shown[(kind, r.id)] = RowView(nodes, carrier_json_text(r))
    return LoadedOffers(me_file_id, section, shown)


class OffersPanel(QWidget):
    """A me_file's offers and ad events, and the chosen one's snapshot and comparison."""

    availabilityChanged = Signal(bool)  # noqa: N815
    rowShown = Signal()  # another row (or none) on show  # noqa: N815
    bandActivated = Signal(int)  # a row double-clicked: show the me_file's membership  # noqa: N815
    loaded = Signal(object)  # LoadedOffers  # noqa: N815
    loadFailed = Signal(str)  # noqa: N815

    def __init__(self, database: Database, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("offersPanel")
        self.database = database
        self.runner = TaskRunner(self)
        self.runner.secret = database.url
        self.me_file_id: int | None = None
        self.available: bool | None = None  # None: not known yet
        self.models = {kind: OffersModel(self) for kind in KINDS}
        self.tables: dict[str, QTableView] = {}
        self._views: dict[tuple[str, int], RowView] = {}
        self._totals: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._has_more: dict[str, bool] = dict.fromkeys(KINDS, False)
        self._want: tuple[str, int] | None = None
        self._build()
        self._show_row(None)

    # -- building --------------------------------------------------------------------------

    def _table(self, kind: str) -> QTableView:
        table = QTableView()
        table.setModel(self.models[kind])
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        table.setShowGrid(False)
        table.setAlternatingRowColors(True)
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 10)
        header = table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        # each column as wide as its contents, the verdict the rest (elided, the full line in
        # its tooltip): a dock a third of 1280 px wide shows every column
        for col in range(len(OffersModel.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(OffersModel.COMPARED, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        table.selectionModel().currentRowChanged.connect(
            lambda current, _previous, k=kind: self._row_changed(k, current)
        )
        table.verticalScrollBar().valueChanged.connect(lambda v, k=kind: self._scrolled(k, v))
        table.doubleClicked.connect(lambda index, k=kind: self._activated(k, index))
        table.activated.connect(lambda index, k=kind: self._activated(k, index))
        return table

    def _build(self) -> None:
        self.kinds = QTabWidget()
        self.kinds.setDocumentMode(True)
        for kind in KINDS:
            self.tables[kind] = self._table(kind)
            self.kinds.addTab(self.tables[kind], TITLES[kind])
        self.kinds.currentChanged.connect(self._kind_changed)
        self.count_label = ElidedLabel()
        self.more_button = QPushButton("Load more")
        self.more_button.setToolTip("The next 200, older")
        self.more_button.setEnabled(False)
        self.more_button.clicked.connect(lambda: self.load_more(self.current_kind()))
        foot = QHBoxLayout()
        foot.addWidget(self.count_label, 1)
        foot.addWidget(self.more_button)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.kinds, 1)
        top_layout.addLayout(foot)

        self.where = QLabel()
        self.where.setObjectName("paneSubtitle")
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.shape_badge = pill()
        self.verdict_badge = pill()
        badges = QHBoxLayout()
        badges.addWidget(self.shape_badge)
        badges.addWidget(self.verdict_badge)
        badges.addStretch(1)
        self.line = QLabel()
        self.line.setWordWrap(True)
        self.line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tree_model = SnapshotTreeModel(parent=self)
        self.tree = QTreeView()
        self.tree.setModel(self.tree_model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        fit_headers(self.tree.header(), stretch=0)
        self.raw = QPlainTextEdit()
        self.raw.setReadOnly(True)
        self.raw.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.raw.setFont(fixed_font())
        self.details = QTabWidget()
        self.details.setDocumentMode(True)
        self.details.addTab(self.tree, "Snapshot tree")
        self.details.addTab(self.raw, "Raw JSON")
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 6, 0, 0)
        bottom_layout.setSpacing(4)
        bottom_layout.addLayout(badges)
        bottom_layout.addWidget(self.where)
        bottom_layout.addWidget(self.line)
        bottom_layout.addWidget(self.details, 1)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top)
        self.splitter.addWidget(bottom)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 1)
        self.status = ElidedLabel()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.status)

    # -- public API ------------------------------------------------------------------------

    def current_kind(self) -> str:
        return KINDS[max(0, self.kinds.currentIndex())]

    def current_row(self) -> CarrierRow | None:
        kind = self.current_kind()
        return self.models[kind].row_at(self.tables[kind].currentIndex())

    def chosen_snapshot(self) -> tuple[Decoded, str, str] | None:
        """(decoded, JSON text, CSV file name) of the chosen row, for Copy JSON and Save CSV."""
        r = self.current_row()
        view = self._views.get((r.kind, r.id)) if r is not None else None
        if view is None:
            return None
        name = f"me_file_{self.me_file_id}_{KIND_WORDS[r.kind].replace(' ', '_')}_{r.id}.csv"
        return r.decoded, view.json_text, name

    def select(self, kind: str, row: int) -> None:
        self.kinds.setCurrentIndex(KINDS.index(kind))
        self.tables[kind].selectRow(row)

    @Slot(int)
    def load(self, me_file_id: int) -> None:
        """Read the me_file's newest offers and ad events (again), keeping the chosen row."""
        current = self.current_row()
        same = me_file_id == self.me_file_id
        self._want = (current.kind, current.id) if current and same else None
        self.me_file_id = int(me_file_id)
        self._say("Loading offers and ad events…")
        self.more_button.setEnabled(False)
        work = partial(load_offers, self.database, self.me_file_id)
        self.runner.run("section", work, self._loaded, self._section_failed)

    def load_more(self, kind: str) -> None:
        if self.me_file_id is None or not self._has_more[kind] or self.runner.busy("more"):
            return
        offset = len(self.models[kind].rows)
        work = partial(load_offers, self.database, self.me_file_id, (kind,), offset)
        self.more_button.setEnabled(False)
        self._say(f"Loading more {TITLES[kind].lower()}…")
        self.runner.run("more", work, partial(self._more, kind), self._failed)

    # -- loading ---------------------------------------------------------------------------

    def _set_available(self, available: bool) -> None:
        if available != self.available:
            self.available = available
            self.availabilityChanged.emit(available)

    def _loaded(self, loaded: LoadedOffers) -> None:
        if loaded.me_file_id != self.me_file_id:
            return
        section = loaded.section
        self._views = dict(loaded.views)
        for kind in KINDS:
            self.models[kind].clear()
            page = section.page(kind) if section else None
            self.kinds.setTabVisible(KINDS.index(kind), page is not None)
            self._totals[kind] = page.total if page else 0
            self._has_more[kind] = bool(page and page.has_more)
            if page:
                self.models[kind].append(page.rows)
        self._set_available(section is not None)
        if section is not None:
            if not self.kinds.isTabVisible(self.kinds.currentIndex()):
                self.kinds.setCurrentIndex(0 if section.offers is not None else 1)
            self._titles()
            self._select_wanted()
        self._say("")
        self._footer()
        self.loaded.emit(loaded)

    def _more(self, kind: str, loaded: LoadedOffers) -> None:
        page = loaded.section.page(kind) if loaded.section else None
        if loaded.me_file_id != self.me_file_id or page is None:
            self._footer()
            return
        if page.offset != len(self.models[kind].rows):
            return  # a reload came in between: its rows stand
        self._views.update(loaded.views)
        self.models[kind].append(page.rows)
        self._totals[kind] = page.total
        self._has_more[kind] = page.has_more
        self._titles()
        self._say("")
        self._footer()

    def _section_failed(self, message: str) -> None:
        """Nothing of another me_file stays on show."""
        self._views = {}
        for kind in KINDS:
            self.models[kind].clear()
            self._totals[kind] = 0
            self._has_more[kind] = False
        self._show_row(None)
        self._failed(message)

    def _failed(self, message: str) -> None:
        self._say(message, error=True)
        self._footer()
        self.loadFailed.emit(message)

    def _titles(self) -> None:
        for kind in KINDS:
            self.kinds.setTabText(KINDS.index(kind), f"{TITLES[kind]} ({self._totals[kind]:,})")

    def _footer(self) -> None:
        kind = self.current_kind()
        shown, total = len(self.models[kind].rows), self._totals[kind]
        word = TITLES[kind].lower()
        if self.available is False:
            text = "This database has no offers or ad events this role may read"
        elif not total:
            text = f"No {word} for this me_file"
        else:
            text = f"{shown:,} of {total:,} {word} shown, newest first"
        self.count_label.setText(text)
        self.more_button.setEnabled(self._has_more[kind] and not self.runner.busy("more"))

    def _select_wanted(self) -> None:
        want, self._want = self._want, None
        if want is not None:
            kind, row_id = want
            for i, r in enumerate(self.models[kind].rows):
                if r.id == row_id:
                    self.select(kind, i)
                    return
        kind = self.current_kind()
        if self.models[kind].rows:
            self.select(kind, 0)
        else:
            self._show_row(None)

    # -- showing one row -------------------------------------------------------------------

    @Slot(int)
    def _kind_changed(self, _index: int) -> None:
        self._footer()
        self._show_row(self.current_row())

    def _row_changed(self, kind: str, current: QModelIndex) -> None:
        if kind == self.current_kind():
            self._show_row(self.models[kind].row_at(current))

    def _activated(self, kind: str, index: QModelIndex) -> None:
        r = self.models[kind].row_at(index)
        if r is not None and r.band_id is not None:
            self.bandActivated.emit(r.band_id)

    def _scrolled(self, kind: str, value: int) -> None:
        if value and value >= self.tables[kind].verticalScrollBar().maximum():
            self.load_more(kind)

    def _show_row(self, r: CarrierRow | None) -> None:
        self.rowShown.emit()
        view = self._views.get((r.kind, r.id)) if r is not None else None
        if r is None or view is None:
            self.tree_model.set_root(Node(NodeKind.ROOT, ""))
            self.raw.setPlainText("")
            self.shape_badge.hide()
            self.verdict_badge.hide()
            self.where.setText(
                "Choose an offer or ad event to see the snapshot it was made from;"
                " double-click it for its membership"
            )
            self.line.setText("")
            return
        info = shape_info(r.shape)
        paint_pill(self.shape_badge, info.label, info.colour)
        self.shape_badge.setToolTip(info.tip)
        self.shape_badge.show()
        verdict = verdict_info(r.comparison.verdict)
        paint_pill(self.verdict_badge, verdict.label, verdict.colour)
        self.verdict_badge.setToolTip(r.comparison.line)
        self.verdict_badge.show()
        self.where.setText(where_text(r))
        pop = r.comparison.population_id
        self.line.setText(
            f"Compared with population row {pop}: {r.comparison.line}"
            if pop is not None
            else r.comparison.line
        )
        self.line.setStyleSheet(f"color: {verdict.colour};")
        self.tree_model.set_root(view.nodes)
        for index in self.tree_model.parent_indexes():
            self.tree.expand(index)
        text = view.json_text
        if len(text) > RAW_DISPLAY_CHARS:
            text = text[:RAW_DISPLAY_CHARS] + f"\n\n… clipped at {RAW_DISPLAY_CHARS:,} characters"
        self.raw.setPlainText(text)

    def _say(self, text: str, *, error: bool = False) -> None:
        say(self.status, text, error=error)
        self.status.setVisible(bool(text))


__all__ = ["LoadedOffers", "OffersPanel", "load_offers"]
