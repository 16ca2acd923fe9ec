"""Jobs on Qlarius's Oban workers in the window (issue 9).

* A "Run on" choice in the toolbar (this computer / Qlarius workers), shown only when the
  database has an ``oban_jobs`` table; with Qlarius workers chosen, Snapshot band (missing),
  Snapshot all bands and Refresh Population enqueue Oban jobs instead of running here.
* The Oban jobs beside the local ones in the Jobs dock: state, attempt x of max, node, times,
  progress of a band job (NULL snapshots left), the error of each attempt; Retry and Cancel.
* The pending-jobs view (Jobs > Qlarius worker jobs…): every snapshot and population job in
  ``oban_jobs``, filterable by state and worker, with counts per state.

All database work is ``qsnap_gui.engine.oban`` (no SQL here), run on this module's own reader pool;
results come back as plain dataclasses. The monitor polls every ``POLL_MS`` while the window
is shown and stops while it is hidden or minimised.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from functools import partial

from PySide6.QtCore import (
    QEvent,
    QObject,
    QPoint,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.engine import oban
from qsnap_gui.engine.oban import BandProgress, ObanInfo, ObanJob
from qsnap_gui.store.db import Database
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.delegates import JobProgressDelegate
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.item_models import AMBER, BLUE, DIM, GREEN, JOB_ROLE, STUCK_FG, TableModel
from qsnap_gui.ui.tasks import TaskRunner

POLL_MS = 2000
LOCAL, WORKERS = 0, 1

STATE_ICONS = {
    "available": "state-queued",
    "scheduled": "state-waiting",
    "executing": "state-running",
    "retryable": "state-retrying",
    "completed": "state-succeeded",
    "discarded": "state-failed",
    "cancelled": "state-cancelled",
}
STATE_COLORS = {
    "available": DIM,
    "scheduled": DIM,
    "executing": BLUE,
    "retryable": AMBER,
    "completed": GREEN,
    "discarded": STUCK_FG,
    "cancelled": QColor("#64748b"),
}
WORKER_CHOICES = (
    ("Both Qlarius workers", None),
    ("SnapshotBandPopulationsWorker", oban.WORKER_BAND),
    ("PopulateTargetWorker", oban.WORKER_POPULATE),
)


# --- reader-thread work: plain data in, plain data out ---------------------------------------


@dataclass(frozen=True)
class PendingFilter:
    states: tuple[str, ...] = ()  # empty: every state
    worker: str | None = None  # None: both Qlarius workers


@dataclass(frozen=True)
class ObanPoll:
    """One look at oban_jobs: the dock's jobs, band progress, and the pending view if open."""

    jobs: tuple[ObanJob, ...]
    progress: dict[int, BandProgress] = field(default_factory=dict)
    pending: tuple[ObanJob, ...] | None = None
    counts: dict[str, int] | None = None
    pending_filter: PendingFilter | None = None
    at: float = 0.0


def poll_once(
    database: Database, info: ObanInfo, session_ids: tuple[int, ...], pending: PendingFilter | None
) -> ObanPoll:
    """Runs on a reader thread: the session's jobs plus every live job of the two workers."""
    with database.engine.connect() as conn:
        jobs = {j.id: j for j in oban.list_jobs(conn, info, states=oban.ACTIVE_STATES)}
        jobs.update(oban.get_jobs(conn, info, session_ids))
        pending_jobs = counts = None
        if pending is not None:
            workers = [pending.worker] if pending.worker else list(oban.WORKERS)
            counts = oban.state_counts(conn, info, workers=workers)
            pending_jobs = tuple(
                oban.list_jobs(conn, info, states=pending.states or None, workers=workers)
            )
        shown = list(jobs.values()) + list(pending_jobs or ())
        bands = [j.band_id for j in shown if j.worker == oban.WORKER_BAND and j.band_id]
        progress = oban.band_progress(conn, bands)
    ordered = tuple(sorted(jobs.values(), key=lambda j: j.id, reverse=True))
    return ObanPoll(ordered, progress, pending_jobs, counts, pending, time.time())


def _detect(database: Database) -> ObanInfo | None:
    with database.engine.connect() as conn:
        info = oban.detect(conn)
    return info if info is not None and info.usable else None


# --- the monitor -----------------------------------------------------------------------------


class ObanMonitor(QObject):
    """Detects oban_jobs, polls it while the window is shown, and runs Oban operations."""

    availabilityChanged = Signal(object)  # ObanInfo | None
    polled = Signal(object)  # ObanPoll
    logLine = Signal(str)
    message = Signal(str, bool)  # text, is an error
    dataChanged = Signal()  # a job moved or a band's NULL count changed: reload the counts

    def __init__(self, window: QWidget, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self.runner = TaskRunner(self, threads=2)
        self.database: Database | None = None
        self.info: ObanInfo | None = None
        self.session_ids: set[int] = set()
        self.pending_filter: PendingFilter | None = None
        self.last: ObanPoll | None = None
        self.polls = 0
        self._generation = 0
        self._ops = itertools.count(1)
        self._last_error: str | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)
        window.installEventFilter(self)

    # --- lifecycle ----------------------------------------------------------------------------

    def set_database(self, database: Database | None) -> None:
        self._generation += 1
        self._timer.stop()
        self.database, self.info, self.last = database, None, None
        self.session_ids.clear()
        self._last_error = None
        self.availabilityChanged.emit(None)
        if database is None:
            self.runner.wait(3000)
            return
        self.runner.secret = database.url
        gen = self._generation
        self.runner.run(
            "oban-detect",
            partial(_detect, database),
            partial(self._detected, gen),
            partial(self._detect_failed, gen),
        )

    def _detected(self, gen: int, info: ObanInfo | None) -> None:
        if gen != self._generation:
            return
        self.info = info
        self.availabilityChanged.emit(info)
        if info is not None:
            self.logLine.emit(
                f"Qlarius workers available: {info.schema}.oban_jobs"
                + (f" (Oban migration {info.version})" if info.version else "")
            )
            self._timer.start()
            self.poll_now()

    def _detect_failed(self, gen: int, text: str) -> None:
        if gen == self._generation:
            self.logLine.emit(f"could not look for oban_jobs: {text}")

    @property
    def available(self) -> bool:
        return self.info is not None

    @property
    def paused(self) -> bool:
        """No polling while the window is hidden or minimised."""
        return not self._window.isVisible() or self._window.isMinimized()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._window and event.type() in (
            QEvent.Type.Show,
            QEvent.Type.WindowStateChange,
        ):
            QTimer.singleShot(0, self.poll_now)
        return False

    # --- polling ------------------------------------------------------------------------------

    @Slot()
    def _tick(self) -> None:
        if not self.paused:
            self.poll_now()

    @Slot()
    def poll_now(self) -> None:
        if self.info is None or self.database is None or self.paused:
            return
        if self.runner.busy("oban-poll"):
            return
        gen = self._generation
        self.runner.run(
            "oban-poll",
            partial(
                poll_once,
                self.database,
                self.info,
                tuple(sorted(self.session_ids)),
                self.pending_filter,
            ),
            partial(self._polled, gen),
            partial(self._poll_failed, gen),
        )

    def _polled(self, gen: int, poll: ObanPoll) -> None:
        if gen != self._generation:
            return
        self.polls += 1
        self._last_error = None
        before = {j.id: j for j in self.last.jobs} if self.last else None
        moved = False
        if before is not None:
            now = {j.id: j for j in poll.jobs}
            for change in oban.changes(before, now):
                if change.before is None and change.job.id not in self.session_ids:
                    continue  # someone else's job appearing: shown, not logged
                for line in change.lines():
                    self.logLine.emit(line)
                moved = moved or change.state_changed
            old = self.last.progress
            moved = moved or any(
                old.get(b) is None or old[b].missing != p.missing for b, p in poll.progress.items()
            )
        self.last = poll
        self.polled.emit(poll)
        if moved:
            self.dataChanged.emit()

    def _poll_failed(self, gen: int, text: str) -> None:
        if gen == self._generation and text != self._last_error:
            self._last_error = text
            self.logLine.emit(f"cannot read oban_jobs: {text}")
            self.message.emit(f"Qlarius workers: cannot read oban_jobs: {text}", True)

    def live_job(self, *, band_id: int | None = None, target_id: int | None = None):
        """The live job of this band (or target) the last poll saw, if any."""
        for job in self.last.jobs if self.last else ():
            if not job.active:
                continue
            if band_id is not None and job.worker == oban.WORKER_BAND and job.band_id == band_id:
                return job
            if (
                target_id is not None
                and job.worker == oban.WORKER_POPULATE
                and job.target_id == target_id
            ):
                return job
        return None

    # --- operations ---------------------------------------------------------------------------

    def _run(self, fn, done, what: str) -> None:
        if self.database is None or self.info is None:
            return
        gen = self._generation
        self.runner.run(
            f"oban-op {next(self._ops)}",
            fn,
            partial(self._op_done, gen, done),
            partial(self._op_failed, gen, what),
        )

    def _op_done(self, gen: int, done, result) -> None:
        if gen == self._generation:
            done(result)
            self.poll_now()

    def _op_failed(self, gen: int, what: str, text: str) -> None:
        if gen == self._generation:
            self.logLine.emit(f"{what}: {text}")
            self.message.emit(f"{what}: {text}", True)
            self.poll_now()

    def enqueue_bands(self, band_ids: list[int], label: str) -> None:
        engine, info = self.database.engine, self.info
        self._run(
            partial(oban.enqueue_bands, engine, band_ids, info=info),
            partial(self._enqueued, label),
            f"{label}: not enqueued",
        )

    def enqueue_refresh(self, target_id: int, label: str) -> None:
        engine, info = self.database.engine, self.info

        def enqueue() -> list[oban.Enqueued]:
            return [oban.enqueue_populate(engine, target_id, info=info)]

        self._run(enqueue, partial(self._enqueued, label), f"{label}: not enqueued")

    def _enqueued(self, label: str, results: list[oban.Enqueued]) -> None:
        for r in results:
            self.session_ids.add(r.job_id)
            if r.refused:
                line = f"{r.subject}: already queued as Oban job {r.job_id} ({r.state})"
            else:
                line = f"{r.subject}: enqueued Oban job {r.job_id} on the Qlarius workers"
            self.logLine.emit(line)
        made = [r for r in results if not r.refused]
        text = f"{label}: {len(made)} job{'s' * (len(made) != 1)} enqueued on Qlarius workers"
        if len(made) < len(results):
            text += f", {len(results) - len(made)} already queued"
        self.message.emit(text, False)
        self.dataChanged.emit()

    def retry(self, job_id: int) -> None:
        engine, info = self.database.engine, self.info
        self.session_ids.add(job_id)  # a job operated on here stays in the dock
        self._run(
            partial(oban.retry_job, engine, job_id, info=info),
            self._retried,
            f"Oban job {job_id} not retried",
        )

    def _retried(self, job: ObanJob) -> None:
        self.session_ids.add(job.id)
        text = f"job {job.id} ({job.subject}): retried, available (max attempts {job.max_attempts})"
        self.logLine.emit(text)
        self.message.emit(text, False)

    def cancel(self, job_id: int) -> None:
        engine, info = self.database.engine, self.info
        self.session_ids.add(job_id)
        self._run(
            partial(oban.cancel_job, engine, job_id, info=info),
            self._cancelled,
            f"Oban job {job_id} not cancelled",
        )

    def _cancelled(self, outcome: oban.CancelOutcome) -> None:
        self.logLine.emit(outcome.text)
        self.message.emit(outcome.text, False)


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bar:
    """What JobProgressDelegate draws for an executing band job (duck-typed like JobInfo)."""

    rows_done: int
    rows_total: int
    active: bool = True


def _when(value) -> str:
    return value.strftime("%H:%M:%S") if value else ""


def errors_text(job: ObanJob, *, full: bool = True) -> str:
    """Each attempt's error from oban_jobs.errors (the first line of each unless ``full``)."""
    if not job.errors:
        return "no error recorded"
    return "\n".join(
        f"attempt {e.attempt} at {_when(e.at) or '?'} UTC: "
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
        return self._progress.get(job.band_id) if job.worker == oban.WORKER_BAND else None

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
            return _when(job.inserted_at)
        if col == self.STARTED:
            return _when(job.attempted_at)
        if col == self.ENDED:
            return _when(job.ended_at)
        error = job.last_error
        return f"attempt {error.attempt}: {error.first_line}" if error else ""


def _jobs_table(parent: QWidget, model: ObanJobsModel) -> QTableView:
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


class _JobActions(QObject):
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
        self.retry.setEnabled(job is not None and job.state in oban.RETRY_STATES)
        self.retry.setToolTip(
            "Run it again: available now, one more attempt if they are spent"
            if job is None or job.state in oban.RETRY_STATES
            else f"Only discarded or cancelled jobs can be retried (this one is {job.state})"
        )
        cancellable = job is not None and (
            job.state in oban.CANCEL_STATES or job.state == "executing"
        )
        self.cancel.setEnabled(cancellable)
        if job is not None and job.state == "executing":
            self.cancel.setText("&Cancel Oban job (ask its node to kill it)")
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
        if job is not None and job.state in oban.RETRY_STATES:
            self.monitor.retry(job.id)

    @Slot()
    def _cancel(self) -> None:
        job = self.selected()
        if job is not None and (job.state in oban.CANCEL_STATES or job.state == "executing"):
            self.monitor.cancel(job.id)


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
        self.view = _jobs_table(self, self.model)
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
        self.actions = _JobActions(monitor, self.view, self.model)
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
            f"{_when(job.inserted_at)}, scheduled {_when(job.scheduled_at)} UTC"
        )
        text = head + "\n" + errors_text(job, full=False)
        if self.details.toPlainText() != text:
            self.details.setPlainText(text)
            self.details.setToolTip(errors_text(job) if job.errors else "")


def _when_local(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else ""


# --- the pending view ------------------------------------------------------------------------


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
        for state in oban.STATES:
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
        self.view = _jobs_table(self, self.model)
        layout.addWidget(self.view, 1)
        self.actions = _JobActions(monitor, self.view, self.model)
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
            f"{total} jobs: " + " · ".join(f"{s} {counts.get(s, 0)}" for s in oban.STATES)
        )
        for i, state in enumerate(oban.STATES, start=1):
            self.state_box.setItemText(i, f"{state} ({counts.get(state, 0)})")


# --- the window's side ------------------------------------------------------------------------


class ObanIntegration(QObject):
    """The few things MainWindow asks: which engine runs jobs, and the widgets to show."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.monitor = ObanMonitor(window, self)
        self.monitor.logLine.connect(window.log_view.append_line)
        self.monitor.message.connect(self._message)
        self.monitor.dataChanged.connect(window._reload_timer.start)
        self.monitor.availabilityChanged.connect(self._availability)
        self.monitor.polled.connect(lambda _poll: window._update_actions())

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

    def set_database(self, database: Database | None) -> None:
        if self.pending_dialog is not None:
            self.pending_dialog.close()
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
                w._enable(action, only_missing)
        band, target = w.current_band(), w.current_target()
        live = self.monitor.live_job(band_id=band.id) if band else None
        if live is not None and w.act_snap_missing.isEnabled():
            w._enable(w.act_snap_missing, f"Oban job {live.id} is {live.state} on this band")
        live = self.monitor.live_job(target_id=target.id) if target else None
        if live is not None and w.act_refresh.isEnabled():
            w._enable(w.act_refresh, f"Oban job {live.id} is {live.state} on this target")

    def _guard_resume(self) -> None:
        """Whatever runs jobs: a target an Oban job is refreshing is not stuck, whatever the
        targets table says (it only knows qsnap's own locks)."""
        w = self.window
        target = w.current_target()
        live = self.monitor.live_job(target_id=target.id) if target else None
        if live is not None and w.act_resume.isEnabled():
            w._enable(w.act_resume, f"Oban job {live.id} is {live.state} on this target")

    # --- internals --------------------------------------------------------------------------

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
