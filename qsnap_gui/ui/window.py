"""The main window: the selected target's bands in the centre; the targets, the jobs and their
log in docks (targets above by default: the bands table needs the full width). Reads go through a
TaskRunner and jobs through a JobController, so the GUI thread never waits on the database."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from PySide6.QtCore import QByteArray, QModelIndex, QPoint, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableView,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui import __version__
from qsnap_gui.engine.population import depopulate
from qsnap_gui.engine.snapshots import JobState
from qsnap_gui.engine import targets
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.store import queries
from qsnap_gui.store.db import (
    POPULATE_PRIVILEGES,
    SNAPSHOT_PRIVILEGES,
    Database,
    missing_privileges,
    open_database,
)
from qsnap_gui.store.dsn import mask_url, resolve_url
from qsnap_gui.store.queries import BandRow
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.backfill_wizard import BackfillWizard
from qsnap_gui.ui.delegates import CoverageDelegate, JobProgressDelegate
from qsnap_gui.ui.dialogs import ConnectDialog, PreferencesDialog
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.inspector import InspectorWidget, SearchField
from qsnap_gui.ui.item_models import (
    ID_ROLE,
    BandsModel,
    JobsModel,
    TargetsModel,
    TargetsProxy,
    job_text,
    status_text,
)
from qsnap_gui.ui.jobs import JobController, JobInfo, JobKind
from qsnap_gui.ui.oban_view import ObanIntegration
from qsnap_gui.ui.settings import Preferences
from qsnap_gui.ui.tasks import TaskRunner
from qsnap_gui.ui.widgets import Banner, LogView, badge

RELOAD_DELAY_MS = 150
JOB_REDRAW_MS = (
    50  # progress reaches the tables at most 20 times a second, however small the batches
)


def _read(engine, fn: Callable, *args):
    """Runs on a reader thread, on its own connection."""
    with engine.connect() as conn:
        return fn(conn, *args)


def _first(*reasons: str | None) -> str | None:
    return next((r for r in reasons if r), None)


def _table(parent: QWidget) -> QTableView:
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


def _widths(view: QTableView, widths: dict[int, int], stretch: int | None = None) -> None:
    """At least as wide as each header's title, so no title is cut."""
    header = view.horizontalHeader()
    for column, width in widths.items():
        header.resizeSection(column, max(width, header.sectionSizeHint(column)))
    if stretch is not None:
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)


class MainWindow(QMainWindow):
    loaded = Signal()  # the targets and the selected target's bands are on screen
    connectFailed = Signal(str)

    def __init__(self, database: Database | None = None, *, read_only: bool = False) -> None:
        super().__init__()
        self.setWindowTitle("qsnap")
        self.setWindowIcon(icon("qsnap"))
        self.setObjectName("qsnapMainWindow")
        self.preferences = Preferences.load()
        self.read_only = read_only
        self.database: Database | None = None
        self.controller: JobController | None = None
        self._owns_database = False
        self._current_target: int | None = None
        self._current_band: int | None = None
        self._pending_target: int | None = None
        self._busy_targets: set[int] = set()
        self._after_jobs: Callable[[], None] | None = None
        self._may_close = False
        self._connect_dialog: ConnectDialog | None = None
        self._clicked_job: JobInfo | None = None
        self._closed = False
        self._read_error = False

        self.runner = TaskRunner(self, threads=3)
        self.targets_model = TargetsModel(self)
        self.targets_proxy = TargetsProxy(self)
        self.targets_proxy.setSourceModel(self.targets_model)
        self.bands_model = BandsModel(self)
        self.jobs_model = JobsModel(self)
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.reload)
        self._dirty_jobs: set[int] = set()
        self._job_timer = QTimer(self)
        self._job_timer.setSingleShot(True)
        self._job_timer.setInterval(JOB_REDRAW_MS)
        self._job_timer.timeout.connect(self._flush_jobs)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self.jobs_model.tick)
        self._tick.start()

        self._build_actions()
        self._build_central()
        self._build_docks()
        self._build_menus()
        self._build_status_bar()
        self.oban = ObanIntegration(self)  # Qlarius workers: Run on, Oban jobs, pending view
        self._restore_layout()
        self._update_actions()
        if database is not None:
            self.set_database(database, owned=False)

    # --- building ---------------------------------------------------------------------------

    def _action(self, text: str, icon_name: str, shortcut: str | None, tip: str, slot) -> QAction:
        action = QAction(icon(icon_name), text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.setProperty("tip", tip)
        action.triggered.connect(slot)
        self._enable(action, None)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_connect = a(
            "&Connect…", "connect", "Ctrl+O", "Connect to another database", self._show_connect
        )
        self.act_reload = a("&Reload", "reload", "F5", "Read targets and bands again", self.reload)
        self.act_preferences = a(
            "&Preferences…",
            "preferences",
            "Ctrl+,",
            "Batch size, threads, confirmations",
            self._show_preferences,
        )
        self.act_quit = a("&Quit", "quit", "Ctrl+Q", "Close qsnap", self.close)
        self.act_refresh = a(
            "&Refresh Population",
            "refresh-population",
            "Ctrl+R",
            "Recalculate the target's populations, then snapshot every band",
            self._refresh_population,
        )
        self.act_snapshot_all = a(
            "Snapshot &all bands",
            "snapshot-all",
            "Ctrl+Shift+A",
            "Snapshot the missing rows of every band of the target",
            self._snapshot_all,
        )
        self.act_resume = a(
            "Res&ume stuck target",
            "resume",
            "Ctrl+Shift+R",
            "Finish the snapshot stage of a target left in 'populating'",
            self._resume,
        )
        self.act_depopulate = a(
            "&Depopulate…",
            "depopulate",
            "Ctrl+Shift+Del",
            "Delete the target's populations and mark it not populated",
            self._depopulate,
        )
        self.act_snap_missing = a(
            "Snapshot band (&missing)",
            "snapshot",
            "Ctrl+B",
            "Snapshot the band's rows that have none yet",
            partial(self._snapshot, "missing"),
        )
        self.act_snap_repair = a(
            "Snapshot band (r&epair)",
            "snapshot-repair",
            "Ctrl+Shift+B",
            "Also rebuild every snapshot that is not a well-formed envelope",
            partial(self._snapshot, "repair"),
        )
        self.act_snap_force = a(
            "Snapshot band (&force)",
            "snapshot-force",
            "Ctrl+Alt+B",
            "Rebuild every snapshot of the band, stale ones included",
            partial(self._snapshot, "force"),
        )
        self.act_cancel = a(
            "&Cancel job",
            "cancel",
            "Ctrl+.",
            "Stop the selected job after its batch in flight",
            self._cancel,
        )
        self.act_cancel_all = a(
            "Cancel a&ll jobs",
            "cancel-all",
            "Ctrl+Shift+.",
            "Stop every running job",
            self._cancel_all,
        )
        self.act_retry = a("Re&try job", "reload", None, "Run the job again", self._retry)
        self.act_job_cancel = a(
            "&Cancel job",
            "cancel",
            None,
            "Stop this job after its batch in flight",
            self._cancel_clicked,
        )
        self.act_filter = a(
            "&Filter targets",
            "filter",
            "Ctrl+Shift+F",
            "Type to filter the targets",
            self._focus_filter,
        )
        self.act_search = a(
            "&Find me_file…",
            "filter",
            "Ctrl+F",
            "Find a me_file by id or display-name prefix and inspect it",
            self._focus_search,
        )
        self.act_population = a(
            "Band &population…",
            "snapshot-all",
            "Ctrl+P",
            "List the band's populations page by page; double-click inspects one",
            self._show_population,
        )
        self.act_backfill = a(
            "&Backfill snapshots…",
            "snapshot-repair",
            "Ctrl+Shift+K",
            "Find every missing or broken snapshot and fix them, band by band",
            self._show_backfill,
        )
        self.act_about = a("&About qsnap", "qsnap", None, "Version and licence", self._about)
        self.act_snap_missing.setIconText("Snapshot")
        self.act_snapshot_all.setIconText("Snapshot all")
        self.act_resume.setIconText("Resume")
        self.act_cancel.setIconText("Cancel")
        self.act_depopulate.setIconText("Depopulate")
        self.act_connect.setIconText("Connect")

    def _build_central(self) -> None:
        self.stack = QStackedWidget()
        self.setCentralWidget(self.stack)
        self.stack.addWidget(self._build_connecting_page())

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(6, 6, 6, 0)
        self.banner = Banner()
        layout.addWidget(self.banner)
        layout.addWidget(self._build_bands_pane(), 1)
        self.stack.addWidget(page)

    def _build_connecting_page(self) -> QWidget:
        page = QWidget()
        outer = QVBoxLayout(page)
        outer.addStretch(2)
        logo = QLabel()
        logo.setPixmap(icon("qsnap").pixmap(72, 72))
        logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.connecting_message = QLabel("Not connected")
        self.connecting_message.setObjectName("connectingMessage")
        self.connecting_message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.connecting_message.setWordWrap(True)
        self.connecting_busy = QProgressBar()
        self.connecting_busy.setRange(0, 0)
        self.connecting_busy.setTextVisible(False)
        self.connecting_busy.setFixedWidth(280)
        self.connecting_busy.setMaximumHeight(8)
        self.connecting_error = QLabel()
        self.connecting_error.setObjectName("connectingError")
        self.connecting_error.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.connecting_error.setWordWrap(True)
        self.connecting_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.retry_button = QPushButton(icon("reload"), "Retry")
        self.retry_button.clicked.connect(self._retry_connect)
        connect_button = QPushButton(icon("connect"), "Connect…")
        connect_button.clicked.connect(self._show_connect)
        buttons = QHBoxLayout()
        buttons.addStretch()
        buttons.addWidget(self.retry_button)
        buttons.addWidget(connect_button)
        buttons.addStretch()
        self.connecting_buttons = QWidget()
        self.connecting_buttons.setLayout(buttons)
        for widget in (logo, self.connecting_message, self.connecting_error):
            outer.addWidget(widget)
        outer.addWidget(self.connecting_busy, 0, Qt.AlignmentFlag.AlignHCenter)
        outer.addWidget(self.connecting_buttons)
        outer.addStretch(3)
        self.connecting_busy.hide()
        self.retry_button.hide()
        self._last_dsn: tuple[str | None, bool] | None = None
        return page

    def _build_targets_pane(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(6, 2, 6, 0)
        header = QHBoxLayout()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by id, title or status (Ctrl+Shift+F)")
        self.filter.setClearButtonEnabled(True)
        self.filter.setMaximumWidth(420)
        self.filter.addAction(icon("filter"), QLineEdit.ActionPosition.LeadingPosition)
        self.filter.textChanged.connect(self._filter_changed)
        self.targets_count = QLabel()
        self.targets_count.setObjectName("paneSubtitle")
        header.addWidget(self.filter)
        header.addStretch()
        header.addWidget(self.targets_count)
        layout.addLayout(header)
        self.targets_view = _table(pane)
        self.targets_view.setModel(self.targets_proxy)
        self.targets_view.setSortingEnabled(True)
        self.targets_view.horizontalHeader().setSortIndicatorShown(True)
        self.targets_view.sortByColumn(TargetsModel.ID, Qt.SortOrder.AscendingOrder)
        self.targets_view.setItemDelegateForColumn(
            TargetsModel.COVERAGE, CoverageDelegate(self.targets_view)
        )
        _widths(self.targets_view, {0: 56, 1: 320, 2: 150, 3: 180, 4: 110, 5: 220})
        self.targets_view.horizontalHeader().setStretchLastSection(True)
        self.targets_view.selectionModel().selectionChanged.connect(self._target_selected)
        self.targets_view.customContextMenuRequested.connect(self._targets_menu)
        layout.addWidget(self.targets_view)
        return pane

    def _build_bands_pane(self) -> QWidget:
        pane = QWidget()
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(4, 0, 0, 0)
        self.target_title = QLabel("No target selected")
        self.target_title.setObjectName("paneTitle")
        self.target_summary = QLabel()
        self.target_summary.setObjectName("paneSubtitle")
        self.target_summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.target_title)
        layout.addWidget(self.target_summary)
        self.bands_view = _table(pane)
        self.bands_view.setModel(self.bands_model)
        self.bands_view.setItemDelegateForColumn(
            BandsModel.JOB, JobProgressDelegate(self.bands_view)
        )
        shape_widths = dict.fromkeys(range(BandsModel.FIRST_SHAPE, BandsModel.JOB), 70)
        _widths(
            self.bands_view,
            {0: 110, 1: 50, 3: 96, **shape_widths, BandsModel.JOB: 360},
            stretch=BandsModel.GROUPS,
        )
        self.bands_view.selectionModel().selectionChanged.connect(self._band_selected)
        self.bands_view.customContextMenuRequested.connect(self._bands_menu)
        layout.addWidget(self.bands_view)
        return pane

    def _build_docks(self) -> None:
        self.targets_dock = QDockWidget("Targets", self)
        self.targets_dock.setObjectName("targetsDock")
        self.targets_dock.setWidget(self._build_targets_pane())
        self.addDockWidget(Qt.DockWidgetArea.TopDockWidgetArea, self.targets_dock)
        self.jobs_view = _table(self)
        self.jobs_view.setModel(self.jobs_model)
        self.jobs_view.setItemDelegateForColumn(JobsModel.ROWS, JobProgressDelegate(self.jobs_view))
        _widths(self.jobs_view, {0: 36, 1: 130, 2: 260, 3: 96, 4: 70, 5: 150, 6: 78})
        self.jobs_view.horizontalHeader().setStretchLastSection(True)
        self.jobs_view.customContextMenuRequested.connect(self._jobs_menu)
        self.jobs_model.rowsInserted.connect(self._job_row_added)
        self.jobs_dock = QDockWidget("Jobs", self)
        self.jobs_dock.setObjectName("jobsDock")
        self.jobs_dock.setWidget(self.jobs_view)
        self.log_view = LogView(self)
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.jobs_dock)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.tabifyDockWidget(self.jobs_dock, self.log_dock)
        self.inspector: InspectorWidget | None = None
        self.search_field: SearchField | None = None
        self._search_action: QAction | None = None
        self.inspector_dock = QDockWidget("Inspector", self)
        self.inspector_dock.setObjectName("inspectorDock")
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.inspector_dock)
        self.inspector_dock.hide()
        self.jobs_dock.raise_()
        self.resizeDocks([self.targets_dock, self.jobs_dock], [250, 230], Qt.Orientation.Vertical)

    def _build_menus(self) -> None:
        bar = self.menuBar()

        def menu(title: str, *actions: QAction | None) -> QMenu:
            m = bar.addMenu(title)
            m.setToolTipsVisible(True)
            for action in actions:
                m.addSeparator() if action is None else m.addAction(action)
            return m

        menu(
            "&File",
            self.act_connect,
            self.act_reload,
            None,
            self.act_preferences,
            None,
            self.act_quit,
        )
        menu(
            "&Target",
            self.act_refresh,
            self.act_snapshot_all,
            self.act_resume,
            None,
            self.act_depopulate,
        )
        menu(
            "&Band",
            self.act_snap_missing,
            self.act_snap_repair,
            self.act_snap_force,
            None,
            self.act_population,
        )
        menu("&Jobs", self.act_cancel, self.act_cancel_all)
        menu("T&ools", self.act_search, self.act_backfill)
        view = menu("&View", self.act_filter, None)
        view.addAction(self.targets_dock.toggleViewAction())
        view.addAction(self.jobs_dock.toggleViewAction())
        view.addAction(self.log_dock.toggleViewAction())
        view.addAction(self.inspector_dock.toggleViewAction())
        menu("&Help", self.act_about)

        toolbar = QToolBar("Main toolbar", self)
        toolbar.setObjectName("mainToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.setMovable(False)
        self.addToolBar(toolbar)
        toolbar.addAction(self.act_connect)
        toolbar.addAction(self.act_reload)
        toolbar.addSeparator()
        toolbar.addAction(self.act_refresh)
        snapshot_button = QToolButton(toolbar)
        snapshot_button.setDefaultAction(self.act_snap_missing)
        snapshot_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        snapshot_menu = QMenu(snapshot_button)
        snapshot_menu.setToolTipsVisible(True)
        snapshot_menu.addActions([self.act_snap_missing, self.act_snap_repair, self.act_snap_force])
        snapshot_button.setMenu(snapshot_menu)
        snapshot_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        toolbar.addWidget(snapshot_button)
        toolbar.addAction(self.act_snapshot_all)
        toolbar.addAction(self.act_resume)
        toolbar.addSeparator()
        toolbar.addAction(self.act_cancel)
        toolbar.addAction(self.act_depopulate)
        toolbar.addSeparator()
        self.toolbar = toolbar

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.jobs_indicator = QLabel()
        self.connection_label = QLabel("not connected")
        self.demo_badge = badge("DEMO", "demoBadge", "The embedded demo database: sample data only")
        self.read_only_badge = badge("READ-ONLY", "readOnlyBadge", "Connected read-only: no writes")
        for widget in (
            self.jobs_indicator,
            self.connection_label,
            self.demo_badge,
            self.read_only_badge,
        ):
            status.addPermanentWidget(widget)

    def _restore_layout(self) -> None:
        settings = QSettings()
        geometry = settings.value("window/geometry")
        if not (isinstance(geometry, QByteArray) and self.restoreGeometry(geometry)):
            self.resize(1440, 880)
        state = settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def _save_layout(self) -> None:
        settings = QSettings()
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/state", self.saveState())
        settings.sync()

    # --- connecting -------------------------------------------------------------------------

    def connect_to(self, dsn: str | None, *, read_only: bool = False) -> None:
        """Open the database off the GUI thread; the embedded one may take a while to start."""
        self._last_dsn = (dsn, read_only)
        raw = resolve_url(dsn)
        if raw is None:
            message = (
                "Starting the embedded demo database…\n"
                "The first start creates it, which takes a few seconds."
            )
        else:
            message = f"Connecting to {mask_url(raw)}…"
        self.connecting_message.setText(message)
        self.connecting_error.clear()
        self.connecting_busy.show()
        self.retry_button.hide()
        self.connecting_buttons.hide()
        self.stack.setCurrentIndex(0)
        self.statusBar().showMessage(message.splitlines()[0])
        self.runner.run(
            "connect",
            partial(open_database, dsn, read_only=read_only),
            self._connected,
            self._connect_failed,
        )

    def _connected(self, database: Database) -> None:
        if self._closed:
            database.dispose()
            return
        self.set_database(database, owned=True)

    def _connect_failed(self, message: str) -> None:
        self.connecting_busy.hide()
        self.connecting_message.setText("Could not connect")
        self.connecting_error.setText(message)
        self.retry_button.setVisible(self._last_dsn is not None)
        self.connecting_buttons.show()
        self.statusBar().showMessage("Could not connect", 10000)
        self.log_view.append_line(f"could not connect: {message}")
        self.connectFailed.emit(message)

    @Slot()
    def _retry_connect(self) -> None:
        if self._last_dsn is not None:
            dsn, read_only = self._last_dsn
            self.connect_to(dsn, read_only=read_only)

    def set_database(self, database: Database, *, owned: bool) -> None:
        """Start working on a database; the window disposes it at the end only if it owns it."""
        self.database = database
        self._owns_database = owned
        self.runner.secret = database.url
        self.controller = JobController(
            database, self, max_threads=self.preferences.pool_size or None
        )
        self._apply_preferences()
        self.controller.jobAdded.connect(self._job_added)
        self.controller.jobChanged.connect(self._job_changed)
        self.controller.jobFinished.connect(self._job_finished)
        self.controller.logLine.connect(self.log_view.append_line)
        self.controller.targetChanged.connect(self._target_changed)
        self._build_inspector(database)
        self.oban.set_database(database)
        self.jobs_model.clear()
        self.bands_model.clear()
        self.targets_model.set_rows([])
        self._current_target = self._current_band = None
        suffix = " [demo]" if database.is_demo else ""
        suffix += " [read-only]" if database.read_only else ""
        self.setWindowTitle(f"qsnap — {database.display}{suffix}")
        self.connection_label.setText(database.where)
        self.connection_label.setToolTip(database.display)
        self.demo_badge.setVisible(database.is_demo)
        self.read_only_badge.setVisible(database.read_only)
        self.stack.setCurrentIndex(1)
        self.banner.hide()
        self.log_view.append_line(f"connected to {database.display}")
        self.statusBar().showMessage(f"Connected to {database.where}", 5000)
        self._update_actions()
        self.reload()

    @Slot()
    def _show_connect(self) -> None:
        if self._connect_dialog is None:
            self._connect_dialog = ConnectDialog(self.runner, self)
        dialog = self._connect_dialog
        dialog.prepare(self.database.read_only if self.database else self.read_only)
        if dialog.exec() != ConnectDialog.DialogCode.Accepted or dialog.database is None:
            return
        database = dialog.database
        dialog.database = None
        active = self.controller.active() if self.controller else []
        if active and not self._ask(
            "Jobs are running",
            f"{len(active)} jobs are running on {self.database.where}. "
            f"Cancel them and connect to {database.where}?",
        ):
            database.dispose()
            return
        self._stop_jobs_then(partial(self._replace_database, database))

    def _build_inspector(self, database: Database) -> None:
        """The inspector and its toolbar search field belong to one database."""
        self.inspector = InspectorWidget(database)
        self.inspector.snapshotWritten.connect(self._snapshot_written)
        self.inspector_dock.setWidget(self.inspector)
        self.search_field = self.inspector.search_field(self.toolbar)
        self.search_field.meFileActivated.connect(self._reveal_inspector)
        self._search_action = self.toolbar.addWidget(self.search_field)

    def _drop_inspector(self) -> None:
        if self._search_action is not None:
            self.toolbar.removeAction(self._search_action)
            self._search_action = None
        if self.search_field is not None:
            self.search_field.deleteLater()
            self.search_field = None
        if self.inspector is not None:
            self.inspector_dock.setWidget(QWidget())
            self.inspector.deleteLater()
            self.inspector = None

    @Slot()
    def _reveal_inspector(self) -> None:
        self.inspector_dock.show()
        self.inspector_dock.raise_()

    @Slot(int)
    def _snapshot_written(self, _population_id: int) -> None:
        self._reload_timer.start()

    @Slot()
    def _focus_search(self) -> None:
        if self.search_field is not None:
            self.search_field.focus_search()

    @Slot()
    def _show_population(self) -> None:
        band, target = self.current_band(), self.current_target()
        if band is None or target is None or self.inspector is None:
            return
        view = self.inspector.population_view(band.id, self)
        view.meFileActivated.connect(self._reveal_inspector)
        view.setWindowFlag(Qt.WindowType.Window)
        view.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        view.setWindowTitle(f"{target.title} — {band.label} (band {band.id}) population")
        view.resize(760, 520)
        view.show()

    @Slot()
    def _show_backfill(self) -> None:
        if self.database is not None and self.controller is not None:
            BackfillWizard(self.database, self.controller, self).show()

    def _replace_database(self, database: Database) -> None:
        self._release_database()
        self.set_database(database, owned=True)

    def _release_database(self) -> None:
        self.oban.set_database(None)
        self._drop_inspector()
        if self.controller is not None:
            self.controller.shutdown(2000)
            for signal in (
                self.controller.jobAdded,
                self.controller.jobChanged,
                self.controller.jobFinished,
                self.controller.logLine,
                self.controller.targetChanged,
            ):
                signal.disconnect()
            self.controller.deleteLater()
            self.controller = None
            self._dirty_jobs.clear()
            self._job_timer.stop()
        if self.database is not None and self._owns_database:
            self.database.dispose()
        self.database = None

    # --- reading ----------------------------------------------------------------------------

    @Slot()
    def reload(self) -> None:
        if self.database is None:
            return
        engine = self.database.engine
        self.runner.run(
            "targets",
            partial(_read, engine, targets.list_targets),
            self._targets_loaded,
            self._read_failed,
        )
        if self._current_target is not None:
            self._load_bands(self._current_target)

    def _load_bands(self, target_id: int) -> None:
        self.runner.run(
            "bands",
            partial(_read, self.database.engine, queries.list_bands, target_id),
            partial(self._bands_loaded, target_id),
            self._read_failed,
        )

    def select_target(self, target_id: int) -> None:
        """Select a target by id, now or as soon as the targets are loaded."""
        self._pending_target = target_id
        if self.targets_model.row_of(target_id) is not None:
            self._select_row(target_id, reveal=True)

    def _select_row(self, target_id: int, *, reveal: bool) -> None:
        """Select the target's row; ``reveal`` clears a filter that hides it."""
        self._pending_target = None
        source = self.targets_model.index(self.targets_model.row_of(target_id), 0)
        index = self.targets_proxy.mapFromSource(source)
        if not index.isValid() and reveal:
            self.filter.clear()
            index = self.targets_proxy.mapFromSource(source)
        if index.isValid():
            self.targets_view.selectRow(index.row())
            self.targets_view.scrollTo(index)

    def _targets_loaded(self, rows: list[TargetRow]) -> None:
        if self._read_error:
            self._read_error = False
            self.banner.hide()
        self.targets_model.set_rows(rows)
        stuck = sum(t.stuck for t in rows)
        self.targets_count.setText(f"{len(rows)} targets" + (f" · {stuck} stuck" if stuck else ""))
        pending, current = self._pending_target, self._current_target
        if pending is not None and self.targets_model.row_of(pending) is None:
            self.statusBar().showMessage(f"Target {pending} does not exist", 10000)
            self.log_view.append_line(f"target {pending} does not exist")
            pending = self._pending_target = None
        if pending is not None:
            self._select_row(pending, reveal=True)
        elif current is not None and self.targets_model.row_of(current) is not None:
            self._select_row(current, reveal=False)
        elif rows:
            first = self.targets_proxy.index(0, 0)
            self._select_row(first.data(ID_ROLE) if first.isValid() else rows[0].id, reveal=True)
        else:
            self._current_target = None
            self.bands_model.clear()
            self.loaded.emit()
        self._update_header()
        self._update_actions()

    def _bands_loaded(self, target_id: int, bands: list[BandRow]) -> None:
        if target_id != self._current_target:
            return
        self.bands_model.set_bands(target_id, bands)
        band_ids = {b.id for b in bands}
        if self.controller is not None:
            for info in self.controller.jobs():
                if info.band_id in band_ids:
                    self.bands_model.set_job(info)
        if bands and not self.bands_view.selectionModel().hasSelection():
            rows = [i for i, b in enumerate(bands) if b.id == self._current_band]
            self.bands_view.selectRow(rows[0] if rows else 0)
        self._update_actions()
        self.loaded.emit()

    def _read_failed(self, message: str) -> None:
        self._read_error = True
        where = self.database.where if self.database else "the database"
        self.banner.show_message(
            f"Cannot read from {where}: {message}", action="Retry", callback=self.reload
        )
        self.statusBar().showMessage("Reading failed: see the message above the tables", 10000)
        self.log_view.append_line(f"read failed: {message}")

    @Slot(int)
    def _target_changed(self, target_id: int) -> None:
        self._reload_timer.start()

    # --- selection --------------------------------------------------------------------------

    def current_target(self) -> TargetRow | None:
        return self.targets_model.target(self._current_target)

    def current_band(self) -> BandRow | None:
        if not self.bands_view.selectionModel().hasSelection():
            return None
        return next((b for b in self.bands_model.bands() if b.id == self._current_band), None)

    @Slot()
    def _target_selected(self) -> None:
        rows = self.targets_view.selectionModel().selectedRows()
        if not rows:
            return  # a model reset cleared it; the current target stays
        target_id = rows[0].data(ID_ROLE)
        if target_id != self._current_target:
            self._current_target = target_id
            self._current_band = None
            self.bands_model.clear()
            self._load_bands(target_id)
        self._update_header()
        self._update_actions()

    @Slot()
    def _band_selected(self) -> None:
        rows = self.bands_view.selectionModel().selectedRows()
        if rows:
            self._current_band = rows[0].data(ID_ROLE)
        self._update_actions()

    @Slot(str)
    def _filter_changed(self, text: str) -> None:
        self.targets_proxy.setFilterFixedString(text)

    @Slot()
    def _focus_filter(self) -> None:
        self.filter.setFocus()
        self.filter.selectAll()

    def _update_header(self) -> None:
        t = self.current_target()
        if t is None:
            self.target_title.setText("No target selected")
            self.target_summary.setText("")
            return
        self.target_title.setText(t.title)
        status = "⚠ stuck: populating with no job running" if t.stuck else status_text(t)
        coverage = f" · coverage {fmt.percent(t.coverage)}" if t.population else ""
        when = fmt.when(t.last_populated_at) + (" UTC" if t.last_populated_at else "")
        self.target_summary.setText(
            f"Target {t.id} · {status} · last populated {when} · "
            f"{fmt.count(t.population)} populations{coverage}"
        )

    # --- actions ----------------------------------------------------------------------------

    def _enable(self, action: QAction, reason: str | None) -> None:
        action.setEnabled(reason is None)
        tip = action.property("tip") or action.text().replace("&", "")
        shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        keys = f" ({shortcut})" if shortcut else ""
        action.setToolTip(
            f"{tip}{keys}" if reason is None else f"{tip}{keys}\nUnavailable: {reason}"
        )

    def _write_block(self, privileges: tuple[str, ...]) -> str | None:
        if self.database is None:
            return "not connected"
        if self.database.read_only:
            return "connected read-only"
        missing = missing_privileges(self.database, *privileges)
        return f"your database role lacks {', '.join(missing)}" if missing else None

    @Slot()
    def _update_actions(self) -> None:
        target = self.current_target()
        band = self.current_band()
        active = self.controller.active() if self.controller else []
        on_target = [j for j in active if target and j.target_id == target.id]
        refresh_running = any(j.kind is JobKind.REFRESH for j in on_target)
        bands_loaded = target is not None and self.bands_model.target_id == target.id
        no_target = _first(
            None if self.database else "not connected", None if target else "select a target first"
        )
        busy_target = (
            "a job is running on this target"
            if on_target
            else "depopulating this target"
            if target and target.id in self._busy_targets
            else None
        )
        no_bands = (
            "this target has no bands" if bands_loaded and not self.bands_model.rowCount() else None
        )
        self._enable(
            self.act_refresh,
            _first(no_target, self._write_block(POPULATE_PRIVILEGES), busy_target, no_bands),
        )
        connected = None if self.database else "not connected"
        self._enable(self.act_search, connected)
        self._enable(self.act_backfill, connected)
        self._enable(
            self.act_population, _first(connected, None if band else "select a band first")
        )
        band_job = next((j for j in active if band and j.band_id == band.id), None)
        for action in (self.act_snap_missing, self.act_snap_repair, self.act_snap_force):
            self._enable(
                action,
                _first(
                    None if self.database else "not connected",
                    None if band else "select a band first",
                    self._write_block(SNAPSHOT_PRIVILEGES),
                    "a Refresh Population is running on this target" if refresh_running else None,
                    "a job is already running on this band" if band_job else None,
                ),
            )
        self._enable(
            self.act_snapshot_all,
            _first(
                no_target,
                self._write_block(SNAPSHOT_PRIVILEGES),
                busy_target,
                no_bands,
                None if bands_loaded else "the bands are loading",
            ),
        )
        self._enable(
            self.act_resume,
            _first(
                no_target,
                None
                if target is None or target.stuck
                else "only a stuck target (populating, no job running) can be resumed",
                self._write_block(POPULATE_PRIVILEGES),
                busy_target,
            ),
        )
        self._enable(
            self.act_depopulate,
            _first(
                no_target,
                self._write_block(POPULATE_PRIVILEGES),
                busy_target,
                "nothing to depopulate"
                if target and not target.population and target.population_status == "not_populated"
                else None,
            ),
        )
        self._enable(
            self.act_cancel, None if self._cancellable() else "no job is running on the selection"
        )
        self._enable(self.act_cancel_all, None if active else "no job is running")
        job = self._clicked_job
        self._enable(
            self.act_retry,
            _first(
                None if job else "no job selected",
                "the job is still running" if job and job.active else None,
            ),
        )
        self._enable(
            self.act_job_cancel,
            _first(
                None if job else "no job selected",
                None if job and job.active else "the job has ended",
            ),
        )
        self._enable(self.act_reload, None if self.database else "not connected")
        self.oban.update_actions()
        running = len(active)
        self.jobs_indicator.setText(
            f"{running} job{'s' * (running != 1)} running" if running else ""
        )

    def _cancellable(self) -> list[int]:
        if self.controller is None:
            return []
        active = self.controller.active()
        band = self.current_band()
        on_band = [j.id for j in active if band and j.band_id == band.id]
        if on_band:
            return on_band
        target = self.current_target()
        on_target = [j for j in active if target and j.target_id == target.id]
        refreshes = [j.id for j in on_target if j.kind is JobKind.REFRESH]
        return refreshes or [j.id for j in on_target]

    def _ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(
            self,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    @Slot()
    def _refresh_population(self) -> None:
        target = self.current_target()
        if target is None or not self.act_refresh.isEnabled():
            return
        text = f"This will recalculate populations for all bands of {target.title}. Continue?"
        if self.preferences.confirm_refresh and not self._ask("Refresh Population", text):
            return
        if self.oban.runs_jobs():
            self.oban.submit_refresh(target)
            return
        self.controller.submit_refresh(target.id)
        self.statusBar().showMessage(f"Refresh Population of {target.title} started", 5000)

    @Slot()
    def _resume(self) -> None:
        target = self.current_target()
        if target is None or not self.act_resume.isEnabled():
            return
        self.controller.submit_refresh(target.id, resume=True)
        self.statusBar().showMessage(f"Resuming {target.title}: snapshot stage", 5000)

    def _snapshot(self, mode: str) -> None:
        band, target = self.current_band(), self.current_target()
        if band is None or target is None or not self.act_snap_missing.isEnabled():
            return
        if mode == "force" and self.preferences.confirm_force:
            text = (
                f"This will rebuild all {fmt.count(band.population)} snapshots of {band.label} "
                f"(band {band.id}) of {target.title}, stale ones included. Continue?"
            )
            if not self._ask("Force re-snapshot", text):
                return
        self._submit_band(target, band, mode)

    def _submit_band(self, target: TargetRow, band: BandRow, mode: str) -> None:
        if self.oban.runs_jobs():
            self.oban.submit_bands(target, [band])
            return
        self.controller.submit_band(
            band.id,
            target_id=target.id,
            label=f"{target.title} · {band.label}",
            mode=mode,
            batch_size=self.preferences.batch_size,
        )
        self.statusBar().showMessage(f"Snapshot of {band.label} ({mode}) started", 5000)

    @Slot()
    def _snapshot_all(self) -> None:
        target = self.current_target()
        if target is None or not self.act_snapshot_all.isEnabled():
            return
        if self.oban.runs_jobs():
            self.oban.submit_bands(target, list(reversed(self.bands_model.bands())))
            return
        for band in reversed(self.bands_model.bands()):  # outermost first, like a refresh
            self._submit_band(target, band, "missing")

    @Slot()
    def _depopulate(self) -> None:
        target = self.current_target()
        if target is None or not self.act_depopulate.isEnabled():
            return
        text = (
            f"This will delete all {fmt.count(target.population)} populations of {target.title} "
            "and mark it not populated. Continue?"
        )
        if self.preferences.confirm_depopulate and not self._ask("Depopulate", text):
            return
        self._busy_targets.add(target.id)
        self._update_actions()
        self.statusBar().showMessage(f"Depopulating {target.title}…")
        self.runner.run(
            f"depopulate {target.id}",
            partial(depopulate, self.database.engine, target.id),
            partial(self._depopulated, target),
            partial(self._depopulate_failed, target),
        )

    def _depopulated(self, target: TargetRow, deleted: int) -> None:
        self._busy_targets.discard(target.id)
        message = f"Depopulated {target.title}: {fmt.count(deleted)} populations deleted"
        self.log_view.append_line(message)
        self.statusBar().showMessage(message, 8000)
        self.reload()

    def _depopulate_failed(self, target: TargetRow, message: str) -> None:
        self._busy_targets.discard(target.id)
        self._update_actions()
        QMessageBox.warning(
            self, "Depopulate failed", f"{target.title} was not depopulated:\n{message}"
        )

    @Slot()
    def _cancel(self) -> None:
        for job_id in self._cancellable():
            self.controller.cancel(job_id)
        self.statusBar().showMessage("Cancelling: jobs stop after their batch in flight", 5000)

    @Slot()
    def _cancel_all(self) -> None:
        if self.controller is not None:
            self.controller.cancel_all()

    @Slot()
    def _cancel_clicked(self) -> None:
        job = self._clicked_job
        if job is not None and job.active and self.controller is not None:
            self.controller.cancel(job.id)

    @Slot()
    def _retry(self) -> None:
        job = self._clicked_job
        if job is not None and not job.active and self.controller is not None:
            self.controller.retry(job.id)

    @Slot()
    def _show_preferences(self) -> None:
        dialog = PreferencesDialog(self.preferences, self)
        if dialog.exec() == PreferencesDialog.DialogCode.Accepted:
            self.preferences = dialog.preferences()
            self.preferences.save()
            self._apply_preferences()
            self.statusBar().showMessage("Preferences saved", 3000)

    def _apply_preferences(self) -> None:
        if self.controller is not None:
            self.controller.batch_size = self.preferences.batch_size
            self.controller.backoff = self.preferences.retry_backoff
            self.controller.max_threads = self.preferences.pool_size or None

    @Slot()
    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About qsnap",
            f"<b>qsnap {__version__}</b><br>The snapshot desk for Qlarius operators.<br>"
            "Refresh Population, snapshot jobs and their progress, on PostgreSQL.",
        )

    # --- context menus ----------------------------------------------------------------------

    def _popup(self, view: QTableView, pos: QPoint, *actions: QAction | None) -> None:
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        for action in actions:
            menu.addSeparator() if action is None else menu.addAction(action)
        menu.popup(view.viewport().mapToGlobal(pos))

    @Slot(QPoint)
    def _targets_menu(self, pos: QPoint) -> None:
        self._popup(
            self.targets_view,
            pos,
            self.act_refresh,
            self.act_snapshot_all,
            self.act_resume,
            None,
            self.act_cancel,
            self.act_depopulate,
            None,
            self.act_reload,
        )

    @Slot(QPoint)
    def _bands_menu(self, pos: QPoint) -> None:
        self._popup(
            self.bands_view,
            pos,
            self.act_snap_missing,
            self.act_snap_repair,
            self.act_snap_force,
            None,
            self.act_population,
            self.act_cancel,
            None,
            self.act_refresh,
            self.act_snapshot_all,
        )

    @Slot(QPoint)
    def _jobs_menu(self, pos: QPoint) -> None:
        index = self.jobs_view.indexAt(pos)
        self._clicked_job = self.jobs_model.info(index.row()) if index.isValid() else None
        if self._clicked_job is not None:
            self.jobs_view.selectRow(index.row())
        self._update_actions()
        self._popup(self.jobs_view, pos, self.act_retry, self.act_job_cancel)

    @Slot(QModelIndex, int, int)
    def _job_row_added(self, _parent: QModelIndex, _first_row: int, last: int) -> None:
        self.jobs_view.scrollTo(self.jobs_model.index(last, 0))

    # --- jobs -------------------------------------------------------------------------------

    @Slot(int)
    def _job_added(self, job_id: int) -> None:
        self._dirty_jobs.add(job_id)
        self._flush_jobs()

    @Slot(int)
    def _job_changed(self, job_id: int) -> None:
        """Batches may end hundreds of times a second: redraw on a timer, not per batch."""
        self._dirty_jobs.add(job_id)
        if not self._job_timer.isActive():
            self._job_timer.start()

    @Slot()
    def _flush_jobs(self) -> None:
        self._job_timer.stop()
        dirty, self._dirty_jobs = sorted(self._dirty_jobs), set()
        if self.controller is None:
            return
        for job_id in dirty:
            info = self.controller.job(job_id)
            self.jobs_model.update(info)
            if info.band_id is not None and self.bands_model.target_id == info.target_id:
                self.bands_model.set_job(info)
            if self._clicked_job is not None and self._clicked_job.id == job_id:
                self._clicked_job = info
        self._update_actions()

    @Slot(int)
    def _job_finished(self, job_id: int) -> None:
        self._dirty_jobs.add(job_id)
        self._flush_jobs()
        info = self.controller.job(job_id)
        message = f"{info.label}: {job_text(info)}"
        self.statusBar().showMessage(message, 8000)
        if info.state is JobState.FAILED:
            self.banner.show_message(
                f"{info.label} failed: {info.error or 'see the log'}",
                action="Retry",
                callback=partial(self._retry_job, job_id),
            )
        if self._after_jobs is not None and not self.controller.active():
            callback, self._after_jobs = self._after_jobs, None
            callback()

    def _retry_job(self, job_id: int) -> None:
        if self.controller is not None and not self.controller.job(job_id).active:
            self.controller.retry(job_id)

    def _stop_jobs_then(self, callback: Callable[[], None]) -> None:
        """Cancel every job and run ``callback`` once they have all ended, without blocking."""
        if self.controller is None or not self.controller.active():
            callback()
            return
        self._after_jobs = callback
        count = len(self.controller.active())
        self.controller.cancel_all()
        self.statusBar().showMessage(f"Stopping {count} jobs after their batch in flight…")

    # --- closing ----------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        active = self.controller.active() if self.controller else []
        if active and not self._may_close:
            event.ignore()
            if self._after_jobs is not None:
                return  # already stopping
            text = (
                f"{len(active)} jobs are still running. Cancel them and quit?\n\n"
                "Committed batches are kept; a cancelled Refresh Population still marks "
                "its target populated."
            )
            if self.preferences.confirm_close and not self._ask("Jobs are running", text):
                return
            self._stop_jobs_then(self._close_now)
            return
        self._closed = True
        self._save_layout()
        self._release_database()
        self.runner.wait(5000)
        self._tick.stop()
        self._reload_timer.stop()
        event.accept()

    def _close_now(self) -> None:
        self._may_close = True
        self.close()
