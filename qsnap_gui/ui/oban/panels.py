"""The Jobs dock's Oban panel and the pending-jobs view (Jobs > Qlarius worker jobs…)."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.oban import STATES, WORKER_BACKFILL, WORKER_BAND, WORKER_POPULATE
from qsnap_gui.engine.oban_poll import ObanPoll, PendingFilter
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.oban.jobs_table import JobActions, ObanJobsModel, errors_text, jobs_table, when
from qsnap_gui.ui.oban.monitor import ObanMonitor

WORKER_CHOICES = (
    ("All three Qlarius workers", None),
    ("SnapshotBandPopulationsWorker", WORKER_BAND),
    ("PopulateTargetWorker", WORKER_POPULATE),
    ("BackfillMissingSnapshotsWorker", WORKER_BACKFILL),
)


class ObanJobsPanel(QWidget):
    """The Jobs dock's Oban side: the session's and every live Qlarius worker job."""

    def __init__(self, monitor: ObanMonitor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.monitor = monitor
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 0, 0)
        head = QHBoxLayout()
        self.title = QLabel("On Qlarius workers")
        self.title.setObjectName("paneSubtitle")
        self.summary = QLabel()
        self.summary.setObjectName("paneSubtitle")
        self.pending_button = QPushButton(icon("filter"), "Pending jobs…")
        self.pending_button.setToolTip("Every snapshot and population job in oban_jobs, filtered")
        head.addWidget(self.title)
        head.addStretch()
        head.addWidget(self.summary)
        head.addWidget(self.pending_button)
        layout.addLayout(head)
        self.model = ObanJobsModel(self)
        self.view = jobs_table(self, self.model)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setPlaceholderText("Select an Oban job to see the error of each attempt")
        self.details.setMinimumHeight(84)
        self.details.setMaximumHeight(110)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(self.details)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        layout.addWidget(split)
        self.actions = JobActions(monitor, self.view, self.model)
        self.view.selectionModel().selectionChanged.connect(self._show_details)
        self.model.dataChanged.connect(self._show_details)
        self.model.modelReset.connect(self._show_details)
        monitor.polled.connect(self._polled)

    @Slot(object)
    def _polled(self, poll: ObanPoll) -> None:
        selected = self.actions.selected()
        self.model.set_jobs(poll.jobs, poll.progress)
        if selected is not None:
            row = self.model.row_of(selected.id)
            if row is not None and not self.view.selectionModel().isRowSelected(row):
                self.view.selectRow(row)
        live = sum(j.active for j in poll.jobs)
        table = f"{self.monitor.info.schema}.oban_jobs" if self.monitor.info else "oban_jobs"
        paused = " · paused while hidden" if self.monitor.paused else ""
        self.summary.setText(f"{live} live · {table} · polled {_when_local(poll.at)}{paused}")

    @Slot()
    def _show_details(self) -> None:
        job = self.actions.selected()
        if job is None:
            self.details.clear()
            return
        nodes = ", ".join(job.attempted_by) or "none yet"
        head = (
            f"Oban job {job.id}: {job.worker} {job.args} · {job.state} · attempt {job.attempt} "
            f"of {job.max_attempts} · attempted_by {nodes} · inserted "
            f"{when(job.inserted_at)}, scheduled {when(job.scheduled_at)} UTC"
        )
        text = head + "\n" + errors_text(job, full=False)
        if self.details.toPlainText() != text:
            self.details.setPlainText(text)
            self.details.setToolTip(errors_text(job) if job.errors else "")


def _when_local(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else ""


class ObanPendingDialog(QDialog):
    """The design note's "check pending snapshot jobs", filterable, with counts per state."""

    def __init__(self, monitor: ObanMonitor, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.monitor = monitor
        self.setWindowTitle("Qlarius worker jobs")
        self.resize(1100, 520)
        layout = QVBoxLayout(self)
        filters = QHBoxLayout()
        self.state_box = QComboBox()
        self.state_box.addItem("All states", None)
        self.states = monitor.info.states if monitor.info else STATES
        for state in self.states:
            self.state_box.addItem(state, state)
        self.worker_box = QComboBox()
        for text, worker in WORKER_CHOICES:
            self.worker_box.addItem(text, worker)
        filters.addWidget(QLabel("State:"))
        filters.addWidget(self.state_box)
        filters.addSpacing(12)
        filters.addWidget(QLabel("Worker:"))
        filters.addWidget(self.worker_box)
        filters.addStretch()
        layout.addLayout(filters)
        self.counts = QLabel("reading…")
        self.counts.setObjectName("paneSubtitle")
        self.counts.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.counts)
        self.model = ObanJobsModel(self)
        self.view = jobs_table(self, self.model)
        layout.addWidget(self.view, 1)
        self.actions = JobActions(monitor, self.view, self.model)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.retry_button = buttons.addButton("Retry", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton("Cancel job", QDialogButtonBox.ButtonRole.ActionRole)
        self.retry_button.clicked.connect(self.actions.retry.trigger)
        self.cancel_button.clicked.connect(self.actions.cancel.trigger)
        self.actions.retry.changed.connect(self._sync_buttons)
        self.actions.cancel.changed.connect(self._sync_buttons)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.state_box.currentIndexChanged.connect(self._filter_changed)
        self.worker_box.currentIndexChanged.connect(self._filter_changed)
        monitor.polled.connect(self._polled)
        self.finished.connect(self._closed)
        self._sync_buttons()

    def current_filter(self) -> PendingFilter:
        state = self.state_box.currentData()
        return PendingFilter((state,) if state else (), self.worker_box.currentData())

    def set_filter(self, *, state: str | None = None, worker: str | None = None) -> None:
        self.state_box.setCurrentIndex(max(self.state_box.findData(state), 0))
        self.worker_box.setCurrentIndex(max(self.worker_box.findData(worker), 0))

    def showEvent(self, event) -> None:
        self.monitor.pending_filter = self.current_filter()
        self.monitor.poll_now()
        super().showEvent(event)

    @Slot()
    def _closed(self) -> None:
        self.monitor.pending_filter = None

    @Slot()
    def _filter_changed(self) -> None:
        self.monitor.pending_filter = self.current_filter()
        self.counts.setText("reading…")
        self.monitor.poll_now()

    @Slot()
    def _sync_buttons(self) -> None:
        self.retry_button.setEnabled(self.actions.retry.isEnabled())
        self.cancel_button.setEnabled(self.actions.cancel.isEnabled())
        self.cancel_button.setToolTip(self.actions.cancel.text().replace("&", ""))

    @Slot(object)
    def _polled(self, poll: ObanPoll) -> None:
        if poll.pending is None or poll.pending_filter != self.current_filter():
            return  # an older filter's answer, or the dialog was not open when asked
        self.model.set_jobs(poll.pending, poll.progress)
        counts = poll.counts or {}
        total = sum(counts.values())
        self.counts.setText(
            f"{total} jobs: " + " · ".join(f"{s} {counts.get(s, 0)}" for s in self.states)
        )
        for i, state in enumerate(self.states, start=1):
            self.state_box.setItemText(i, f"{state} ({counts.get(state, 0)})")
