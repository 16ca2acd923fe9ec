"""The inspector's widgets and how they sit: title row, memberships, snapshot tabs, side panels."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
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

from qsnap_gui.ui.inspector.common import fixed_font, pill
from qsnap_gui.ui.inspector.stale import StalePanel
from qsnap_gui.ui.models.snapshot_tree import SnapshotTreeModel

MEMBERSHIP_COLUMNS = ("Target", "Band", "Band id", "Population", "Shape", "Updated")


class InspectorLayout:
    """Builds the widgets onto ``owner`` (the InspectorWidget), which wires their signals."""

    def __init__(self, owner: QWidget) -> None:
        self.owner = owner

    def build(self) -> tuple[QHBoxLayout, QSplitter]:
        """The title row and the body (memberships over snapshot and panels)."""
        return self._head(), self._body()

    def _head(self) -> QHBoxLayout:
        w = self.owner
        w.title = QLabel("No me_file open")
        w.title.setObjectName("paneTitle")
        font = QFont(w.title.font())
        font.setPointSizeF(font.pointSizeF() + 2)
        font.setBold(True)
        w.title.setFont(font)
        w.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        w.subtitle = QLabel("")
        w.subtitle.setObjectName("paneSubtitle")
        w.refresh_button = QPushButton("Reload")
        w.refresh_button.setToolTip("Read this me_file again")
        w.refresh_button.setEnabled(False)
        w.copy_button = QPushButton("Copy JSON")
        w.copy_button.setToolTip("Copy the stored snapshot of this membership as JSON")
        w.csv_button = QPushButton("Save tree as CSV…")
        titles = QVBoxLayout()
        titles.addWidget(w.title)
        titles.addWidget(w.subtitle)
        head = QHBoxLayout()
        head.addLayout(titles, 1)
        head.addWidget(w.refresh_button)
        head.addWidget(w.copy_button)
        head.addWidget(w.csv_button)
        return head

    def _memberships(self) -> QTableWidget:
        table = QTableWidget(0, len(MEMBERSHIP_COLUMNS))
        table.setHorizontalHeaderLabels(MEMBERSHIP_COLUMNS)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.verticalHeader().hide()
        table.setAlternatingRowColors(True)
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(MEMBERSHIP_COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        return table

    def _tree(self) -> QTreeView:
        w = self.owner
        w.tree_model = SnapshotTreeModel(parent=w)
        tree = QTreeView()
        tree.setModel(w.tree_model)
        tree.setUniformRowHeights(True)
        tree.setAlternatingRowColors(True)
        tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        metrics = header.fontMetrics()
        for col, label in ((1, "Trait id"), (2, "Display order")):
            header.resizeSection(col, max(metrics.horizontalAdvance(label) + 36, 80))
        return tree

    def _tree_page(self) -> QWidget:
        """Shape and stale badges, the never-snapshotted bar, the snapshot tree."""
        w = self.owner
        w.shape_badge = pill()
        w.stale_badge = pill()
        w.snapshot_info = QLabel()
        w.snapshot_info.setWordWrap(True)
        badges = QHBoxLayout()
        badges.addWidget(w.shape_badge)
        badges.addWidget(w.stale_badge)
        badges.addWidget(w.snapshot_info, 1)
        w.never_bar = QFrame()
        never = QHBoxLayout(w.never_bar)
        never.setContentsMargins(0, 0, 0, 0)
        never.addWidget(QLabel("This row was never snapshotted."))
        w.snapshot_now_button = QPushButton("Snapshot this row now")
        never.addWidget(w.snapshot_now_button)
        never.addStretch(1)
        w.tree = self._tree()
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(badges)
        layout.addWidget(w.never_bar)
        layout.addWidget(w.tree, 1)
        return page

    def _tabs(self) -> QTabWidget:
        w = self.owner
        w.raw = QPlainTextEdit()
        w.raw.setReadOnly(True)
        w.raw.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        w.raw.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        w.raw.setFont(fixed_font())
        w.tabs = QTabWidget()
        w.tabs.addTab(self._tree_page(), "Snapshot tree")
        w.tabs.addTab(w.raw, "Raw JSON")
        return w.tabs

    def _side(self) -> QSplitter:
        """Why it matched over the stale check."""
        w = self.owner
        w.why = QTreeWidget()
        w.why.setColumnCount(3)
        w.why.setHeaderLabels(["Group / trait", "Trait id", "Tag value"])
        w.why.setUniformRowHeights(True)
        w.why.header().setStretchLastSection(True)
        why_box = QGroupBox("Why it matched")
        QVBoxLayout(why_box).addWidget(w.why)
        w.stale = StalePanel()
        w.stale_status = w.stale.status
        w.stale_list = w.stale.list
        w.resnapshot_button = w.stale.resnapshot_button
        side = QSplitter(Qt.Orientation.Vertical)
        side.addWidget(why_box)
        side.addWidget(w.stale)
        side.setStretchFactor(0, 3)
        side.setStretchFactor(1, 2)
        side.setSizes([640, 360])
        return side

    def _body(self) -> QSplitter:
        w = self.owner
        w.memberships = self._memberships()
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self._tabs())
        lower.addWidget(self._side())
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 2)
        lower.setSizes([600, 400])
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(w.memberships)
        body.addWidget(lower)
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 4)
        return body
