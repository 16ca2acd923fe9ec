"""The inspector's widgets and how they sit, made to read in a dock a third of a 1280 px window
wide: title rows, the memberships table, then one membership's badges over tabs (snapshot tree,
why it matched, stale check, raw JSON), each tab the full height of the dock."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTabWidget,
    QTreeView,
    QTreeWidget,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.ui.inspector.common import fit_headers, fixed_font, pill
from qsnap_gui.ui.inspector.stale import StalePanel
from qsnap_gui.ui.models.snapshot_tree import SnapshotTreeModel
from qsnap_gui.ui.widgets import ElidedLabel

# band and population ids are in each row's tooltip and under the table for the chosen row
MEMBERSHIP_COLUMNS = ("Target", "Band", "Shape", "Updated (UTC)")
SHAPE_COLUMN = 2
TREE_TAB, WHY_TAB, STALE_TAB, RAW_TAB = range(4)


class InspectorLayout:
    """Builds the widgets onto ``owner`` (the InspectorWidget), which wires their signals."""

    def __init__(self, owner: QWidget) -> None:
        self.owner = owner

    def build(self) -> tuple[QVBoxLayout, QSplitter]:
        """The title rows and the body (memberships over one membership's details)."""
        return self._head(), self._body()

    def _head(self) -> QVBoxLayout:
        w = self.owner
        w.title = ElidedLabel("No me_file open")
        w.title.setObjectName("paneTitle")
        font = QFont(w.title.font())
        font.setPointSizeF(font.pointSizeF() + 2)
        font.setBold(True)
        w.title.setFont(font)
        w.subtitle = ElidedLabel("")
        w.subtitle.setObjectName("paneSubtitle")
        w.refresh_button = QPushButton("Reload")
        w.refresh_button.setToolTip("Read this me_file again")
        w.refresh_button.setEnabled(False)
        w.copy_button = QPushButton("Copy JSON")
        w.copy_button.setToolTip(
            "Copy the stored snapshot of this membership (or offer, or ad event) as JSON"
        )
        w.csv_button = QPushButton("Save tree as CSV…")
        w.csv_button.setToolTip(
            "Save the snapshot tree of this membership (or offer, or ad event) as a CSV file"
        )
        row = QHBoxLayout()
        row.addWidget(w.subtitle, 1)
        for button in (w.refresh_button, w.copy_button, w.csv_button):
            row.addWidget(button)
        head = QVBoxLayout()
        head.setSpacing(2)
        head.addWidget(w.title)
        head.addLayout(row)
        return head

    def _memberships(self) -> QTableWidget:
        table = QTableWidget(0, len(MEMBERSHIP_COLUMNS))
        table.setHorizontalHeaderLabels(MEMBERSHIP_COLUMNS)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        table.setShowGrid(False)
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 10)
        table.setAlternatingRowColors(True)
        header = table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        fit_headers(header, stretch=0)
        return table

    def _tree(self) -> QTreeView:
        w = self.owner
        w.tree_model = SnapshotTreeModel(parent=w)
        tree = QTreeView()
        tree.setModel(w.tree_model)
        tree.setUniformRowHeights(True)
        tree.setAlternatingRowColors(True)
        tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        fit_headers(tree.header(), stretch=0)
        return tree

    def _why(self) -> QTreeWidget:
        w = self.owner
        w.why = QTreeWidget()
        w.why.setColumnCount(3)
        w.why.setHeaderLabels(["Group / trait", "Trait id", "Tag value"])
        w.why.setUniformRowHeights(True)
        w.why.setAlternatingRowColors(True)
        fit_headers(w.why.header(), stretch=0)
        return w.why

    def _raw(self) -> QPlainTextEdit:
        w = self.owner
        w.raw = QPlainTextEdit()
        w.raw.setReadOnly(True)
        w.raw.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        w.raw.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        w.raw.setFont(fixed_font())
        return w.raw

    def _badges(self) -> QVBoxLayout:
        """The membership's verdicts, always in view whichever tab is open."""
        w = self.owner
        w.shape_badge = pill()
        w.stale_badge = pill()
        w.resnapshot_button = QPushButton("Re-snapshot this row")
        w.resnapshot_button.setToolTip(
            "Rewrite this population's snapshot from the me_file's tags now (force)"
        )
        badges = QHBoxLayout()
        badges.addWidget(w.shape_badge)
        badges.addWidget(w.stale_badge)
        badges.addStretch(1)
        badges.addWidget(w.resnapshot_button)
        w.snapshot_info = ElidedLabel()
        w.snapshot_info.setObjectName("paneSubtitle")
        w.never_bar = QFrame()
        never = QHBoxLayout(w.never_bar)
        never.setContentsMargins(0, 0, 0, 0)
        never.addWidget(QLabel("This row was never snapshotted."))
        w.snapshot_now_button = QPushButton("Snapshot this row now")
        never.addWidget(w.snapshot_now_button)
        never.addStretch(1)
        column = QVBoxLayout()
        column.setSpacing(4)
        column.addLayout(badges)
        column.addWidget(w.snapshot_info)
        column.addWidget(w.never_bar)
        return column

    def _details(self) -> QWidget:
        w = self.owner
        w.stale = StalePanel()
        w.stale_status = w.stale.status
        w.stale_list = w.stale.list
        w.tabs = QTabWidget()
        w.tabs.setDocumentMode(True)
        w.tabs.addTab(self._tree(), "Snapshot tree")
        w.tabs.addTab(self._why(), "Why it matched")
        w.tabs.addTab(w.stale, "Stale check")
        w.tabs.addTab(self._raw(), "Raw JSON")
        w.tree = w.tabs.widget(TREE_TAB)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addLayout(self._badges())
        layout.addWidget(w.tabs, 1)
        return page

    def _body(self) -> QSplitter:
        w = self.owner
        w.memberships = self._memberships()
        body = QSplitter(Qt.Orientation.Vertical)
        body.setChildrenCollapsible(False)
        body.addWidget(w.memberships)
        body.addWidget(self._details())
        body.setStretchFactor(0, 0)
        body.setStretchFactor(1, 1)
        return body
