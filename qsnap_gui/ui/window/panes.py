"""The window's widgets: the connecting page, the targets and bands panes, the docks, the menus,
the toolbar and the status bar. Each builder puts its widgets on the window by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableView,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.ui.delegates import CoverageDelegate, JobProgressDelegate
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.models import BandsModel, JobsModel, TargetsModel
from qsnap_gui.ui.widgets import Banner, ElidedLabel, LogView, badge

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow


def table(parent: QWidget) -> QTableView:
    view = QTableView(parent)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(28)
    view.horizontalHeader().setHighlightSections(False)
    view.horizontalHeader().setDefaultAlignment(
        Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
    )
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    return view


def widths(view: QTableView, columns: dict[int, int], stretch: int | None = None) -> None:
    """At least as wide as each header's title, so no title is cut; the ``stretch`` column
    takes the room left, and gives it back first, down to its own title's width."""
    header = view.horizontalHeader()
    for column, width in columns.items():
        header.resizeSection(column, max(width, header.sectionSizeHint(column)))
    if stretch is not None:
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(header.sectionSizeHint(stretch))


def menu_of(parent: QWidget, *actions: QAction | None, title: str = "") -> QMenu:
    """A menu of ``actions``; None is a separator."""
    menu = QMenu(title, parent)
    menu.setToolTipsVisible(True)
    for action in actions:
        menu.addSeparator() if action is None else menu.addAction(action)
    return menu


def build_central(w: MainWindow) -> None:
    """A stack: the connecting page, then the banner over the bands pane."""
    w.stack = QStackedWidget()
    w.setCentralWidget(w.stack)
    w.stack.addWidget(_connecting_page(w))
    page = QWidget()
    layout = QVBoxLayout(page)
    layout.setContentsMargins(6, 6, 6, 0)
    w.banner = Banner()
    layout.addWidget(w.banner)
    layout.addWidget(_bands_pane(w), 1)
    w.stack.addWidget(page)


def _connecting_page(w: MainWindow) -> QWidget:
    logo = QLabel()
    logo.setPixmap(icon("qsnap").pixmap(72, 72))
    logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
    w.connecting_message = QLabel("Not connected")
    w.connecting_message.setObjectName("connectingMessage")
    w.connecting_message.setAlignment(Qt.AlignmentFlag.AlignCenter)
    w.connecting_message.setWordWrap(True)
    w.connecting_busy = QProgressBar()
    w.connecting_busy.setRange(0, 0)
    w.connecting_busy.setTextVisible(False)
    w.connecting_busy.setFixedWidth(280)
    w.connecting_busy.setMaximumHeight(8)
    w.connecting_error = QLabel()
    w.connecting_error.setObjectName("connectingError")
    w.connecting_error.setAlignment(Qt.AlignmentFlag.AlignCenter)
    w.connecting_error.setWordWrap(True)
    w.connecting_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    w.retry_button = QPushButton(icon("reload"), "Retry")
    w.retry_button.clicked.connect(w.connection.retry)
    connect_button = QPushButton(icon("connect"), "Connect…")
    connect_button.clicked.connect(w.commands.show_connect)
    buttons = QHBoxLayout()
    buttons.addStretch()
    buttons.addWidget(w.retry_button)
    buttons.addWidget(connect_button)
    buttons.addStretch()
    w.connecting_buttons = QWidget()
    w.connecting_buttons.setLayout(buttons)
    page = QWidget()
    outer = QVBoxLayout(page)
    outer.addStretch(2)
    for widget in (logo, w.connecting_message, w.connecting_error):
        outer.addWidget(widget)
    outer.addWidget(w.connecting_busy, 0, Qt.AlignmentFlag.AlignHCenter)
    outer.addWidget(w.connecting_buttons)
    outer.addStretch(3)
    w.connecting_busy.hide()
    w.retry_button.hide()
    return page


def _targets_pane(w: MainWindow) -> QWidget:
    pane = QWidget()
    layout = QVBoxLayout(pane)
    layout.setContentsMargins(6, 2, 6, 0)
    w.filter = QLineEdit()
    w.filter.setPlaceholderText("Filter by id, title or status (Ctrl+Shift+F)")
    w.filter.setClearButtonEnabled(True)
    w.filter.setMaximumWidth(420)
    w.filter.addAction(icon("filter"), QLineEdit.ActionPosition.LeadingPosition)
    w.filter.textChanged.connect(w.targets_proxy.set_filter_text)
    w.targets_count = QLabel()
    w.targets_count.setObjectName("paneSubtitle")
    header = QHBoxLayout()
    header.addWidget(w.filter)
    header.addStretch()
    header.addWidget(w.targets_count)
    layout.addLayout(header)
    view = w.targets_view = table(pane)
    view.setModel(w.targets_proxy)
    view.setSortingEnabled(True)
    view.horizontalHeader().setSortIndicatorShown(True)
    view.sortByColumn(TargetsModel.ID, Qt.SortOrder.AscendingOrder)
    view.setItemDelegateForColumn(TargetsModel.COVERAGE, CoverageDelegate(view))
    widths(view, {0: 48, 2: 120, 3: 150, 4: 90, 5: 190}, stretch=TargetsModel.TITLE)
    view.selectionModel().selectionChanged.connect(w.target_selected)
    view.customContextMenuRequested.connect(w.commands.targets_menu)
    layout.addWidget(view)
    return pane


def _bands_pane(w: MainWindow) -> QWidget:
    pane = QWidget()
    layout = QVBoxLayout(pane)
    layout.setContentsMargins(4, 0, 0, 0)
    w.target_title = ElidedLabel("No target selected")
    w.target_title.setObjectName("paneTitle")
    w.target_summary = ElidedLabel()  # never wider than the pane, whole in its tooltip
    w.target_summary.setObjectName("paneSubtitle")
    # what the operator should know about the bands: tied rings the application nests the
    # other way round from their labels, links to deleted trait groups
    w.band_notes = QLabel()
    w.band_notes.setObjectName("bandNotes")
    w.band_notes.setWordWrap(True)
    w.band_notes.hide()
    layout.addWidget(w.target_title)
    layout.addWidget(w.target_summary)
    layout.addWidget(w.band_notes)
    view = w.bands_view = table(pane)
    view.setModel(w.bands_model)
    view.setItemDelegateForColumn(BandsModel.JOB, JobProgressDelegate(view))
    shape_widths = dict.fromkeys(range(BandsModel.FIRST_SHAPE, BandsModel.JOB), 64)
    widths(view, {0: 100, 1: 44, 2: 170, 3: 86, **shape_widths, BandsModel.JOB: 260})
    view.horizontalHeader().setStretchLastSection(True)
    view.selectionModel().selectionChanged.connect(w.band_selected)
    view.customContextMenuRequested.connect(w.commands.bands_menu)
    layout.addWidget(view)
    return pane


def build_docks(w: MainWindow) -> None:
    """Targets on top, Jobs and Log tabbed at the bottom, the Inspector on the right, the full
    height of the window (its tabs need it more than the targets and jobs need the width)."""
    w.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    w.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
    w.targets_dock = QDockWidget("Targets", w)
    w.targets_dock.setObjectName("targetsDock")
    w.targets_dock.setWidget(_targets_pane(w))
    w.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, w.targets_dock)
    view = w.jobs_view = table(w)
    view.setModel(w.jobs_model)
    view.setItemDelegateForColumn(JobsModel.ROWS, JobProgressDelegate(view))
    widths(view, {0: 36, 1: 130, 2: 260, 3: 96, 4: 70, 5: 150, 6: 78})
    view.horizontalHeader().setStretchLastSection(True)
    view.customContextMenuRequested.connect(w.commands.jobs_menu)
    w.jobs_model.rowsInserted.connect(lambda _p, _f, last: _scroll_to_row(view, last))
    w.jobs_dock = QDockWidget("Jobs", w)
    w.jobs_dock.setObjectName("jobsDock")
    w.jobs_dock.setWidget(view)
    w.log_view = LogView(w)
    w.log_dock = QDockWidget("Log", w)
    w.log_dock.setObjectName("logDock")
    w.log_dock.setWidget(w.log_view)
    w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, w.jobs_dock)
    w.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, w.log_dock)
    w.tabifyDockWidget(w.jobs_dock, w.log_dock)
    w.inspector_dock = QDockWidget("Inspector", w)
    w.inspector_dock.setObjectName("inspectorDock")
    w.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, w.inspector_dock)
    w.jobs_dock.raise_()


def _scroll_to_row(view: QTableView, row: int) -> None:
    """Once the view has laid out the new row: scrolling at once stops short of it, as the
    scroll range does not cover it yet."""
    index = QPersistentModelIndex(view.model().index(row, 0))
    QTimer.singleShot(0, view, lambda: index.isValid() and view.scrollTo(QModelIndex(index)))


def default_dock_sizes(w: MainWindow) -> None:
    """The first-start layout for the window's size: the inspector a good third of the width,
    the targets three tenths of the height and the jobs a fifth."""
    width, height = w.width(), w.height()
    inspector = min(max(width * 9 // 25, 440), 760)
    w.resizeDocks([w.inspector_dock], [inspector], Qt.Orientation.Horizontal)
    w.resizeDocks(
        [w.targets_dock, w.jobs_dock], [height * 3 // 10, height // 5], Qt.Orientation.Vertical
    )


def build_menus(w: MainWindow) -> None:
    bar = w.menuBar()
    for title, actions in (
        ("&File", (w.act_connect, w.act_reload, None, w.act_preferences, None, w.act_quit)),
        ("&Target", (w.act_refresh, w.act_snapshot_all, w.act_resume, None, w.act_depopulate)),
        (
            "&Band",
            (w.act_snap_missing, w.act_snap_repair, w.act_snap_force, None, w.act_population),
        ),
        ("&Jobs", (w.act_cancel, w.act_cancel_all)),
        ("T&ools", (w.act_search, w.act_backfill)),
    ):
        bar.addMenu(menu_of(w, *actions, title=title))
    view = bar.addMenu(menu_of(w, w.act_filter, None, title="&View")).menu()
    for dock in (w.targets_dock, w.jobs_dock, w.log_dock, w.inspector_dock):
        view.addAction(dock.toggleViewAction())
    bar.addMenu(menu_of(w, w.act_open_logs, None, w.act_about, title="&Help"))


def build_toolbar(w: MainWindow) -> None:
    toolbar = QToolBar("Main toolbar", w)
    toolbar.setObjectName("mainToolbar")
    toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    toolbar.setMovable(False)
    w.addToolBar(toolbar)
    toolbar.addAction(w.act_connect)
    toolbar.addAction(w.act_reload)
    toolbar.addSeparator()
    toolbar.addAction(w.act_refresh)
    snapshot_button = QToolButton(toolbar)
    snapshot_button.setDefaultAction(w.act_snap_missing)
    snapshot_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    snapshot_button.setMenu(
        menu_of(snapshot_button, w.act_snap_missing, w.act_snap_repair, w.act_snap_force)
    )
    snapshot_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
    toolbar.addWidget(snapshot_button)
    toolbar.addAction(w.act_snapshot_all)
    toolbar.addAction(w.act_resume)
    toolbar.addSeparator()
    toolbar.addAction(w.act_cancel)
    toolbar.addAction(w.act_depopulate)
    toolbar.addSeparator()
    w.toolbar = toolbar


def build_status_bar(w: MainWindow) -> None:
    status = w.statusBar()
    w.jobs_indicator = QLabel()
    w.connection_label = QLabel("not connected")
    w.demo_badge = badge("DEMO", "demoBadge", "The embedded demo database: sample data only")
    w.read_only_badge = badge("READ-ONLY", "readOnlyBadge", "Connected read-only: no writes")
    for widget in (w.jobs_indicator, w.connection_label, w.demo_badge, w.read_only_badge):
        status.addPermanentWidget(widget)
