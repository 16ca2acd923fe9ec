"""The main window: the selected target's bands in the centre; the targets, the jobs and their
log in docks (targets above by default: the bands table needs the full width). Reads go through
a TaskRunner and jobs through a JobController, so the GUI thread never waits on the database.

The window holds the state (database, selection, models) and reads; its parts live beside it:
``actions`` (what may run, as tables), ``commands`` (what actions do), ``panes`` (widgets),
``connection`` (getting and releasing a database), ``job_feed`` (job news into the views).
"""

from __future__ import annotations

import logging
from functools import partial

from PySide6.QtCore import QByteArray, QSettings, QTimer, Signal, Slot
from PySide6.QtGui import QCloseEvent, QShowEvent
from PySide6.QtWidgets import QMainWindow

from qsnap_gui.engine import views
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.engine.views import BandRow
from qsnap_gui.store.db import Database
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.inspector import InspectorWidget, SearchField
from qsnap_gui.ui.jobs import JobController, JobInfo
from qsnap_gui.ui.log_bridge import DockHandler
from qsnap_gui.ui.models import (
    ID_ROLE,
    BandsModel,
    JobsModel,
    TargetsModel,
    TargetsProxy,
    status_text,
)
from qsnap_gui.ui.models.targets import COUNTING
from qsnap_gui.ui.oban import ObanIntegration
from qsnap_gui.ui.settings import Preferences
from qsnap_gui.ui.tasks import TaskRunner
from qsnap_gui.ui.window import actions, panes
from qsnap_gui.ui.window.commands import Commands
from qsnap_gui.ui.window.connection import Connection
from qsnap_gui.ui.window.job_feed import JobFeed
from qsnap_gui.ui.window.shape_counts import ShapeCountCache

RELOAD_DELAY_MS = 150
# saved dock layouts of another version are not restored: older ones hid the inspector
LAYOUT_VERSION = 2

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    loaded = Signal()  # the targets and the selected target's bands are on screen
    connectFailed = Signal(str)

    def __init__(
        self,
        database: Database | None = None,
        *,
        read_only: bool = False,
        remember_layout: bool = True,
    ) -> None:
        super().__init__()
        self.setWindowTitle("not connected")  # Qt adds the application's name
        self.setWindowIcon(icon("qsnap"))
        self.setObjectName("qsnapMainWindow")
        self.preferences = Preferences.load()
        self.read_only = read_only
        self.database: Database | None = None
        self.controller: JobController | None = None
        self.inspector: InspectorWidget | None = None
        self.search_field: SearchField | None = None
        self.busy_targets: set[int] = set()  # being depopulated
        self.clicked_job: JobInfo | None = None  # the Jobs dock's right-clicked row
        self.closed = False
        self._may_close = False  # set once the running jobs have been stopped
        self._current_target: int | None = None
        self._current_band: int | None = None
        self._pending_target: int | None = None
        self._read_error = False
        self.remember_layout = remember_layout
        self._default_layout = True  # no saved layout: size the docks when first shown

        self.runner = TaskRunner(self, threads=3)
        self.targets_model = TargetsModel(self)
        self.targets_proxy = TargetsProxy(self)
        self.targets_proxy.setSourceModel(self.targets_model)
        self.bands_model = BandsModel(self)
        self.shape_counts = ShapeCountCache(self)
        self.jobs_model = JobsModel(self)
        self._reload_timer = QTimer(self)  # the Oban view starts it too
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.reload)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self.jobs_model.tick)
        self._tick.start()

        self.commands = Commands(self)
        self.connection = Connection(self)
        self.job_feed = JobFeed(self)
        actions.build_actions(self, self.commands)
        panes.build_central(self)
        panes.build_docks(self)
        panes.build_menus(self)
        panes.build_toolbar(self)
        panes.build_status_bar(self)
        self.log_handler = DockHandler(self)
        self.log_handler.records.connect(self.log_view.append_record)
        self.log_handler.attach()
        self.oban = ObanIntegration(self)  # Qlarius workers: Run on, Oban jobs, pending view
        self._restore_layout()
        self.update_actions()
        if database is not None:
            self.set_database(database, owned=False)

    # --- the database -----------------------------------------------------------------------

    def connect_to(self, dsn: str | None, *, read_only: bool = False) -> None:
        """Open the database off the GUI thread; the embedded one may take a while to start."""
        self.connection.connect_to(dsn, read_only=read_only)

    def set_database(self, database: Database, *, owned: bool) -> None:
        """Start working on a database; the window disposes it at the end only if it owns it."""
        self.connection.set_database(database, owned=owned)

    def apply_preferences(self) -> None:
        if self.controller is not None:
            self.controller.batch_size = self.preferences.batch_size
            self.controller.backoff = self.preferences.retry_backoff
            self.controller.max_threads = self.preferences.threads or None

    # --- reading ----------------------------------------------------------------------------

    @Slot()
    def reload(self) -> None:
        if self.database is None:
            return
        self.runner.run(
            "targets",
            partial(views.list_targets, self.database),
            self._targets_loaded,
            self._read_failed,
        )
        if self._current_target is not None:
            self._load_bands(self._current_target)

    @Slot()
    def reload_soon(self) -> None:
        """Many changes in a row (job ends, a re-snapshot) make one read."""
        self._reload_timer.start()

    @Slot(int)
    def target_changed(self, _target_id: int) -> None:
        self.reload_soon()

    def _load_bands(self, target_id: int) -> None:
        self.runner.run(
            "bands",
            partial(views.list_bands, self.database, target_id, shapes=False),
            partial(self._bands_loaded, target_id),
            self._read_failed,
        )

    def _targets_loaded(self, rows: list[TargetRow]) -> None:
        if self._read_error:
            self._read_error = False
            self.banner.hide()
        self.targets_model.set_rows(rows)
        self.count_targets()
        pending, current = self._pending_target, self._current_target
        if pending is not None and self.targets_model.row_of(pending) is None:
            self.statusBar().showMessage(f"Target {pending} does not exist", 10000)
            log.warning("target %s does not exist", pending)
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
        self.update_header()
        self.update_actions()

    def count_targets(self) -> None:
        rows = self.targets_model.rows()
        stuck = sum(t.stuck for t in rows)
        self.targets_count.setText(f"{len(rows)} targets" + (f" · {stuck} stuck" if stuck else ""))

    def _bands_loaded(self, target_id: int, bands: list[BandRow]) -> None:
        if target_id != self._current_target:
            return
        self.bands_model.set_bands(target_id, self.shape_counts.fill(target_id, bands))
        notes = list(dict.fromkeys(note for b in bands for note in b.notes))
        self.band_notes.setText("\n".join(f"⚠ {note}" for note in notes))
        self.band_notes.setVisible(bool(notes))
        band_ids = {b.id for b in bands}
        if self.controller is not None:
            for info in self.controller.jobs():
                if info.band_id in band_ids:
                    self.bands_model.set_job(info)
        if bands and not self.bands_view.selectionModel().hasSelection():
            rows = [i for i, b in enumerate(bands) if b.id == self._current_band]
            self.bands_view.selectRow(rows[0] if rows else 0)
        self.update_actions()
        self.loaded.emit()

    def _read_failed(self, message: str) -> None:
        self._read_error = True
        where = self.database.where if self.database else "the database"
        self.banner.show_message(
            f"Cannot read from {where}: {message}", action="Retry", callback=self.reload
        )
        self.statusBar().showMessage("Reading failed: see the message above the tables", 10000)
        log.warning("read failed: %s", message)

    # --- selection --------------------------------------------------------------------------

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

    def forget_selection(self) -> None:
        self._current_target = self._current_band = None

    def current_target(self) -> TargetRow | None:
        return self.targets_model.target(self._current_target)

    def current_band(self) -> BandRow | None:
        if not self.bands_view.selectionModel().hasSelection():
            return None
        return next((b for b in self.bands_model.bands() if b.id == self._current_band), None)

    @Slot()
    def target_selected(self) -> None:
        rows = self.targets_view.selectionModel().selectedRows()
        if not rows:
            return  # a model reset cleared it; the current target stays
        target_id = rows[0].data(ID_ROLE)
        if target_id != self._current_target:
            self._current_target = target_id
            self._current_band = None
            self.bands_model.clear()
            self._load_bands(target_id)
        self.update_header()
        self.update_actions()

    @Slot()
    def band_selected(self) -> None:
        rows = self.bands_view.selectionModel().selectedRows()
        if rows:
            self._current_band = rows[0].data(ID_ROLE)
        self.update_actions()

    def update_header(self) -> None:
        t = self.current_target()
        if t is None:
            self.target_title.setText("No target selected")
            self.target_summary.setText("")
            return
        self.target_title.setText(t.display_title)
        status = "⚠ stuck: populating with no job running" if t.stuck else status_text(t)
        shown = COUNTING if t.coverage is None else fmt.percent(t.coverage)
        coverage = f" · coverage {shown}" if t.population else ""
        when = fmt.when(t.last_populated_at) + (" UTC" if t.last_populated_at else "")
        self.target_summary.setText(
            f"Target {t.id} · {status} · last populated {when} · "
            f"{fmt.count(t.population)} populations{coverage}"
        )

    @Slot()
    def reveal_inspector(self) -> None:
        self.inspector_dock.show()
        self.inspector_dock.raise_()

    @Slot(int)
    def inspect(self, me_file_id: int) -> None:
        """Show a me_file in the inspector."""
        if self.inspector is not None:
            self.reveal_inspector()
            self.inspector.open_me_file(me_file_id)

    @Slot()
    def update_actions(self) -> None:
        active = actions.update_actions(self)
        self.oban.update_actions()
        running = len(active)
        self.jobs_indicator.setText(
            f"{running} job{'s' * (running != 1)} running" if running else ""
        )

    _update_actions = update_actions  # the name the Oban view calls

    # --- closing ----------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        active = self.controller.active() if self.controller else []
        if active and not self._may_close:
            event.ignore()
            if self.job_feed.stopping:
                return
            text = (
                f"{len(active)} jobs are still running. Cancel them and quit?\n\n"
                "Committed batches are kept; a cancelled Refresh Population leaves its "
                "target populating, to resume next time."
            )
            if self.preferences.confirm_close and not self.commands.ask("Jobs are running", text):
                return
            self.job_feed.stop_jobs_then(self._close_now)
            return
        self.closed = True
        self._save_layout()
        self.connection.release()
        self.runner.wait(5000)
        self._tick.stop()
        self._reload_timer.stop()
        self.log_handler.detach()
        event.accept()

    def _close_now(self) -> None:
        self._may_close = True
        self.close()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._default_layout:
            self._default_layout = False
            panes.default_dock_sizes(self)

    def _restore_layout(self) -> None:
        if not self.remember_layout:
            self.resize(1440, 880)
            return
        settings = QSettings()
        geometry = settings.value("window/geometry")
        if not (isinstance(geometry, QByteArray) and self.restoreGeometry(geometry)):
            self.resize(1440, 880)
        state = settings.value("window/state")
        if isinstance(state, QByteArray) and self.restoreState(state, LAYOUT_VERSION):
            self._default_layout = False

    def _save_layout(self) -> None:
        if not self.remember_layout:
            return
        settings = QSettings()
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/state", self.saveState(LAYOUT_VERSION))
        settings.sync()
