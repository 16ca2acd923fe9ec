"""What MainWindow asks of the Qlarius workers: the "Run on" choice, the dock panel, the pending
view, and the reasons to disable actions while an Oban job holds a band or target."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMessageBox, QSplitter, QWidget

from qsnap_gui.domain.oban import ObanInfo
from qsnap_gui.engine import oban
from qsnap_gui.store.db import Database
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.oban.monitor import ObanMonitor
from qsnap_gui.ui.oban.panels import ObanJobsPanel, ObanPendingDialog

LOCAL, WORKERS = 0, 1


def _disable(action: QAction, reason: str) -> None:
    """The window's own enable(): imported here, when first used, as the window imports us."""
    from qsnap_gui.ui.window.actions import enable

    enable(action, reason)


log = logging.getLogger("qsnap_gui.oban")


class ObanIntegration(QObject):
    """The few things MainWindow asks: which engine runs jobs, and the widgets to show."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.monitor = ObanMonitor(window, self)
        self.monitor.logLine.connect(self._log_line)
        self.monitor.message.connect(self._message)
        self.monitor.dataChanged.connect(window._reload_timer.start)
        self.monitor.availabilityChanged.connect(self._availability)
        self.monitor.polled.connect(lambda _poll: window._update_actions())
        self.monitor.confirmSnapshot.connect(self._confirm_snapshot)
        self.confirm_box: QMessageBox | None = None

        # "Run on", in the toolbar, hidden until oban_jobs is found
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(8, 0, 4, 0)
        row.addWidget(QLabel("Run on:"))
        self.run_on = QComboBox()
        self.run_on.addItem(icon("database"), "This computer")
        self.run_on.addItem(icon("connect"), "Qlarius workers")
        self.run_on.setToolTip(
            "Where Snapshot and Refresh Population run: this computer's thread pool, or "
            "Qlarius's Oban workers (jobs enqueued in oban_jobs)"
        )
        self.run_on.currentIndexChanged.connect(lambda _i: window._update_actions())
        row.addWidget(self.run_on)
        self.run_on_action = window.toolbar.addWidget(box)
        self.run_on_action.setVisible(False)

        # the Oban jobs beside the local ones
        self.panel = ObanJobsPanel(self.monitor)
        self.panel.pending_button.clicked.connect(self.show_pending)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(window.jobs_view)
        self.split.addWidget(self.panel)
        self.split.setStretchFactor(0, 2)
        self.split.setStretchFactor(1, 3)
        window.jobs_dock.setWidget(self.split)
        self.panel.hide()

        self.act_pending = QAction(icon("filter"), "&Qlarius worker jobs…", window)
        self.act_pending.setStatusTip("Pending and past jobs in oban_jobs, by state and worker")
        self.act_pending.triggered.connect(self.show_pending)
        self.act_pending.setVisible(False)
        for action in window.menuBar().actions():
            if action.text() == "&Jobs" and action.menu() is not None:
                action.menu().addSeparator()
                action.menu().addAction(self.act_pending)
        self.pending_dialog: ObanPendingDialog | None = None

    # --- asked by the window ----------------------------------------------------------------

    @Slot(str)
    def _log_line(self, line: str) -> None:
        """Into the log file and, through it, the Log dock, like the job runner's lines."""
        log.info("%s", line)

    def set_database(self, database: Database | None) -> None:
        if self.pending_dialog is not None:
            self.pending_dialog.close()
            self.pending_dialog.deleteLater()
            self.pending_dialog = None  # the next database may have other states
        self.monitor.set_database(database)

    def runs_jobs(self) -> bool:
        """True when the snapshot and refresh actions go to the Qlarius workers."""
        return self.monitor.available and self.run_on.currentIndex() == WORKERS

    def submit_bands(self, target, bands) -> None:
        label = target.title if len(bands) > 1 else f"{target.title} · {bands[0].label}"
        self.monitor.enqueue_bands([b.id for b in bands], label)

    def submit_refresh(self, target) -> None:
        self.monitor.enqueue_refresh(target.id, f"Refresh Population of {target.title}")

    def update_actions(self) -> None:
        """Extra reasons to disable actions when the jobs go to the Qlarius workers."""
        w = self.window
        self._guard_resume()
        if not self.runs_jobs():
            return
        only_missing = "the Qlarius workers fill missing snapshots only: run on this computer"
        for action in (w.act_snap_repair, w.act_snap_force):
            if action.isEnabled():
                _disable(action, only_missing)
        band, target = w.current_band(), w.current_target()
        live = self.monitor.live_job(band_id=band.id) if band else None
        if live is not None and w.act_snap_missing.isEnabled():
            _disable(w.act_snap_missing, f"Oban job {live.id} is {live.state} on this band")
        live = self.monitor.live_job(target_id=target.id) if target else None
        if live is not None and w.act_refresh.isEnabled():
            _disable(w.act_refresh, f"Oban job {live.id} is {live.state} on this target")

    def _guard_resume(self) -> None:
        """Whatever runs jobs: a target an Oban job is refreshing is not stuck, whatever the
        targets table says (it only knows qsnap's own locks)."""
        w = self.window
        target = w.current_target()
        live = self.monitor.live_job(target_id=target.id) if target else None
        if live is not None and w.act_resume.isEnabled():
            _disable(w.act_resume, f"Oban job {live.id} is {live.state} on this target")

    # --- internals --------------------------------------------------------------------------

    @Slot(object, str, str)
    def _confirm_snapshot(self, band_ids: list[int], label: str, doubt: str) -> None:
        """The window's --yes: enqueue on the deprecated worker only once the operator agrees."""
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Snapshot on Qlarius workers",
            f"{oban.DEPRECATED}.\n\nAnd {doubt}.\n\nEnqueue {len(band_ids)} snapshot "
            "job(s) anyway? Running them on this computer needs no worker.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self.window,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.finished.connect(lambda _result: self._confirmed(box, band_ids, label))
        self.confirm_box = box
        box.open()

    def _confirmed(self, box: QMessageBox, band_ids: list[int], label: str) -> None:
        self.confirm_box = None
        box.deleteLater()
        if box.standardButton(box.clickedButton()) == QMessageBox.StandardButton.Yes:
            self.monitor.enqueue_bands(band_ids, label, confirmed=True)
        else:
            self.monitor.logLine.emit(f"{label}: not enqueued (the snapshot worker is deprecated)")

    @Slot(object)
    def _availability(self, info: ObanInfo | None) -> None:
        self.run_on_action.setVisible(info is not None)
        self.panel.setVisible(info is not None)
        self.act_pending.setVisible(info is not None)
        if info is None:
            self.run_on.setCurrentIndex(LOCAL)
            self.panel.model.set_jobs([], {})
        else:
            self.panel.title.setText(f"On Qlarius workers ({info.schema}.oban_jobs)")
            width = max(self.split.width(), 1000)
            self.split.setSizes([width * 2 // 5, width * 3 // 5])
        self.window._update_actions()

    @Slot(str, bool)
    def _message(self, text: str, error: bool) -> None:
        self.window.statusBar().showMessage(text, 8000)
        if error:
            self.window.banner.show_message(text)

    @Slot()
    def show_pending(self) -> ObanPendingDialog | None:
        if not self.monitor.available:
            return None
        if self.pending_dialog is None:
            self.pending_dialog = ObanPendingDialog(self.monitor, self.window)
        self.pending_dialog.show()
        self.pending_dialog.raise_()
        return self.pending_dialog
