"""The table of Oban jobs (dock and pending view) and the Retry/Cancel actions on its rows."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, QPoint, Qt, Slot
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QWidget

from qsnap_gui.domain.oban import ENDED_STATES, RETRY_STATES, WORKER_BAND, BandProgress, ObanJob
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.delegates import JobProgressDelegate
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.models.base import JOB_ROLE, TableModel
from qsnap_gui.ui.oban.monitor import ObanMonitor
from qsnap_gui.ui.palette import AMBER, BLUE, DIM, GREEN
from qsnap_gui.ui.palette import RED as STUCK_FG

STATE_ICONS = {
    "available": "state-queued",
    "suspended": "state-waiting",
    "scheduled": "state-waiting",
    "executing": "state-running",
    "retryable": "state-retrying",
    "completed": "state-succeeded",
    "discarded": "state-failed",
    "cancelled": "state-cancelled",
}
STATE_COLORS = {
    "available": DIM,
    "suspended": DIM,
    "scheduled": DIM,
    "executing": BLUE,
    "retryable": AMBER,
    "completed": GREEN,
    "discarded": STUCK_FG,
    "cancelled": QColor("#64748b"),
}


@dataclass(frozen=True)
class _Bar:
    """What JobProgressDelegate draws for an executing band job (duck-typed like JobInfo)."""

    rows_done: int
    rows_total: int
    active: bool = True


def when(value) -> str:
    return value.strftime("%H:%M:%S") if value else ""


def errors_text(job: ObanJob, *, full: bool = True) -> str:
    """Each attempt's error from oban_jobs.errors (the first line of each unless ``full``)."""
    if not job.errors:
        return "no error recorded"
    return "\n".join(
        f"attempt {e.attempt} at {when(e.at) or '?'} UTC: "
        + (e.error.strip() if full else e.first_line)
        for e in job.errors
    )


class ObanJobsModel(TableModel):
    COLUMNS = (
        "Oban #",
        "Worker",
        "Target / band",
        "State",
        "Attempt",
        "Node",
        "Progress",
        "Inserted (UTC)",
        "Started",
        "Ended",
        "Last error",
    )
    ID, WORKER, SUBJECT, STATE, ATTEMPT, NODE, PROGRESS, INSERTED, STARTED, ENDED, ERROR = range(11)
    TIPS = {
        NODE: "The node of the last attempt (attempted_by)",
        PROGRESS: "A band job's progress, read from the data: snapshots filled of "
        "the band's populations (NULL ones are left)",
        INSERTED: "Times in UTC",
    }

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[ObanJob] = []
        self._progress: dict[int, BandProgress] = {}

    def set_jobs(self, jobs, progress: dict[int, BandProgress]) -> None:
        jobs = list(jobs)
        self._progress = dict(progress)
        self._replace(jobs, [j.id for j in jobs] == [j.id for j in self._rows])

    def job(self, row: int) -> ObanJob | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def jobs(self) -> list[ObanJob]:
        return list(self._rows)

    def row_of(self, job_id: int) -> int | None:
        return next((i for i, j in enumerate(self._rows) if j.id == job_id), None)

    def _progress_of(self, job: ObanJob) -> BandProgress | None:
        return self._progress.get(job.band_id) if job.worker == WORKER_BAND else None

    def data(self, index, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        job = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(job, col)
        if role == JOB_ROLE and col == self.PROGRESS:
            p = self._progress_of(job)
            if job.state == "executing" and p is not None and p.population:
                return _Bar(p.done, p.population)
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == self.STATE:
            return icon(STATE_ICONS.get(job.state, "state-queued"))
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == self.STATE:
                return STATE_COLORS.get(job.state)
            if col == self.ERROR:
                return STUCK_FG
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.ID, self.ATTEMPT):
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.ERROR and job.errors:
                return errors_text(job)
            if col == self.NODE and job.attempted_by:
                return "attempted_by: " + ", ".join(job.attempted_by)
            if col == self.SUBJECT:
                return f"{job.worker} {job.args}"
        return None

    def _display(self, job: ObanJob, col: int) -> str:
        if col == self.ID:
            return str(job.id)
        if col == self.WORKER:
            return job.short_worker
        if col == self.SUBJECT:
            return job.subject
        if col == self.STATE:
            return job.state
        if col == self.ATTEMPT:
            return f"{job.attempt} of {job.max_attempts}"
        if col == self.NODE:
            return job.node or ""
        if col == self.PROGRESS:
            p = self._progress_of(job)
            if p is None:
                return ""
            if not p.population:
                return "no populations"
            return f"{fmt.count(p.done)} / {fmt.count(p.population)} · {fmt.count(p.missing)} left"
        if col == self.INSERTED:
            return when(job.inserted_at)
        if col == self.STARTED:
            return when(job.attempted_at)
        if col == self.ENDED:
            return when(job.ended_at)
        error = job.last_error
        return f"attempt {error.attempt}: {error.first_line}" if error else ""


def jobs_table(parent: QWidget, model: ObanJobsModel) -> QTableView:
    view = QTableView(parent)
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(26)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    view.setItemDelegateForColumn(ObanJobsModel.PROGRESS, JobProgressDelegate(view))
    header = view.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    widths = {0: 56, 1: 64, 2: 78, 3: 98, 4: 56, 5: 120, 6: 150, 7: 60, 8: 60, 9: 60}
    for column, width in widths.items():
        header.resizeSection(column, max(width, header.sectionSizeHint(column)))
    header.setStretchLastSection(True)
    header.setSectionResizeMode(ObanJobsModel.ERROR, QHeaderView.ResizeMode.Stretch)
    return view


class JobActions(QObject):
    """Retry and Cancel on the job of a table's clicked row."""

    def __init__(self, monitor: ObanMonitor, view: QTableView, model: ObanJobsModel) -> None:
        super().__init__(view)
        self.monitor, self.view, self.model = monitor, view, model
        self.retry = QAction(icon("reload"), "Re&try Oban job", view)
        self.retry.triggered.connect(self._retry)
        self.cancel = QAction(icon("cancel"), "&Cancel Oban job", view)
        self.cancel.triggered.connect(self._cancel)
        view.customContextMenuRequested.connect(self._menu)
        view.selectionModel().selectionChanged.connect(self.update)
        model.modelReset.connect(self.update)
        model.dataChanged.connect(self.update)
        self.update()

    def selected(self) -> ObanJob | None:
        rows = self.view.selectionModel().selectedRows()
        return self.model.job(rows[0].row()) if rows else None

    @Slot()
    def update(self) -> None:
        job = self.selected()
        self.retry.setEnabled(job is not None and job.state in RETRY_STATES)
        self.retry.setToolTip(
            "Run it again: available now, one more attempt if they are spent"
            if job is None or job.state in RETRY_STATES
            else f"Only discarded or cancelled jobs can be retried (this one is {job.state})"
        )
        self.cancel.setEnabled(job is not None and job.state not in ENDED_STATES)
        if job is not None and job.state == "executing":
            self.cancel.setText("&Cancel Oban job (mark it cancelled, ask its node to kill it)")
        else:
            self.cancel.setText("&Cancel Oban job")

    @Slot(QPoint)
    def _menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        self.view.selectRow(index.row())
        self.update()
        menu = QMenu(self.view)
        menu.setToolTipsVisible(True)
        menu.addAction(self.retry)
        menu.addAction(self.cancel)
        menu.popup(self.view.viewport().mapToGlobal(pos))

    @Slot()
    def _retry(self) -> None:
        job = self.selected()
        if job is not None and job.state in RETRY_STATES:
            self.monitor.retry(job.id)

    @Slot()
    def _cancel(self) -> None:
        job = self.selected()
        if job is not None and job.state not in ENDED_STATES:
            self.monitor.cancel(job.id)
