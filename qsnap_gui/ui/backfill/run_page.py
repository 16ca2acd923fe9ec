"""Page 3: every chosen band is a job on the window's job controller, in parallel, with its
progress; Cancel all stops this backfill's jobs only."""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from qsnap_gui.domain.jobs import JobState
from qsnap_gui.engine.backfill import BandPlan
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobInfo
from qsnap_gui.ui.models.scan import MODE_TIPS
from qsnap_gui.ui.palette import AMBER, GREEN, RED

if TYPE_CHECKING:
    from qsnap_gui.ui.backfill.wizard import BackfillWizard

STATE_TEXT = {
    JobState.QUEUED: "queued",
    JobState.WAITING: "waiting: the band is being snapshotted elsewhere",
    JobState.RUNNING: "running",
    JobState.RETRYING: "retrying",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


class BandLine:
    """One band job as a line of the Run page's grid: name, mode, progress bar, state."""

    def __init__(self, plan: BandPlan, grid: QGridLayout, line: int) -> None:
        row = plan.row
        self.name = QLabel(
            f"<b>{escape(row.target_title)}</b> · {escape(row.label)} "
            f"<small>(band {row.band_id})</small>"
        )
        self.mode = QLabel(plan.mode.value)
        self.mode.setToolTip(MODE_TIPS[plan.mode])
        self.bar = QProgressBar()
        self.bar.setRange(0, max(1, plan.rows))
        self.bar.setValue(0)
        self.bar.setFormat(f"0 / {fmt.count(plan.rows)} rows")
        self.state = QLabel("queued")
        self.state.setMinimumWidth(220)
        self.widgets = (self.name, self.mode, self.bar, self.state)
        for column, widget in enumerate(self.widgets):
            grid.addWidget(widget, line, column)

    def remove(self) -> None:
        for widget in self.widgets:
            widget.deleteLater()

    def show_job(self, info: JobInfo, planned: int) -> None:
        total = info.rows_total or planned
        done = info.rows_done
        if info.state is JobState.SUCCEEDED:
            done = total
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(min(done, max(1, total)))
        self.bar.setFormat(f"{fmt.count(done)} / {fmt.count(total)} rows")
        text = STATE_TEXT.get(info.state, str(info.state))
        color = None
        if info.state is JobState.RUNNING and info.batches:
            text = f"batch {info.batch} of {info.batches}"
            if info.eta is not None:
                text += f", {fmt.duration(info.eta)} left"
        elif info.state is JobState.RUNNING:
            text = "computing the snapshots, then the first batch…"
        elif info.state is JobState.RETRYING:
            text = f"retrying (attempt {info.attempt} of {info.max_attempts})"
            color = AMBER
        elif info.state is JobState.FAILED:
            text = f"failed: {info.error or 'unknown error'}"
            color = RED
        elif info.state is JobState.SUCCEEDED:
            text = f"succeeded in {fmt.duration(info.elapsed)}"
            color = GREEN
        metrics = self.state.fontMetrics()
        self.state.setText(metrics.elidedText(text, Qt.TextElideMode.ElideRight, 320))
        self.state.setToolTip(text)
        self.state.setStyleSheet(f"color: {color.name()}" if color else "")

    def show_counting(self) -> None:
        self.state.setText(self.state.text() + " · counting…")


class RunPage(QWizardPage):
    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.runs = wizard.runs
        self.setTitle("Run")
        self.setSubTitle(
            "Every chosen band is a job on the window's job controller; they run in parallel. "
            "Cancel all stops each job after its batch in flight: what was written stays valid."
        )
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Summary")
        self.rows: dict[int, BandLine] = {}  # band id -> its progress line
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.runs.jobChanged.connect(self._job_changed)
        self.runs.jobEnded.connect(self._job_ended)
        self.runs.counted.connect(self._counted)
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._update_overall)

    def _build(self) -> None:
        self.overall = QProgressBar()
        self.overall_label = QLabel()
        self.cancel_button = QPushButton(icon("cancel-all"), "Cancel all")
        self.cancel_button.clicked.connect(self.cancel_all)
        top = QGridLayout()
        top.addWidget(QLabel("<b>Overall</b>"), 0, 0)
        top.addWidget(self.overall, 0, 1)
        top.addWidget(self.cancel_button, 0, 2)
        top.addWidget(self.overall_label, 1, 1, 1, 2)
        top.setColumnStretch(1, 1)
        self.list_widget = QWidget()
        outer = QVBoxLayout(self.list_widget)
        outer.setContentsMargins(0, 0, 0, 0)
        self.grid = QGridLayout()
        self.grid.setHorizontalSpacing(12)
        self.grid.setVerticalSpacing(4)
        self.grid.setColumnStretch(2, 1)
        outer.addLayout(self.grid)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.list_widget)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)

    @property
    def band_job(self) -> dict[int, int]:
        """Band id -> its latest job id, in the order the jobs were submitted."""
        return self.runs.band_job

    def initializePage(self) -> None:
        for row in self.rows.values():
            row.remove()
        self.rows.clear()
        plans = self.wiz.scan_page.chosen_plans()
        for line, plan in enumerate(plans):
            self.rows[plan.band_id] = BandLine(plan, self.grid, line)
        self.runs.start(plans)
        self._started()

    def _started(self) -> None:
        self.started_at = time.monotonic()
        self.ended_at = None
        self.cancel_button.setEnabled(True)
        self._timer.start()
        self._update_overall()
        self.completeChanged.emit()

    def retry(self, band_ids: list[int]) -> None:
        """Retry these bands' last jobs (the Summary's Retry failed)."""
        self.runs.retry(band_ids)
        self._started()

    @property
    def running(self) -> bool:
        return self.runs.running

    @property
    def wall_seconds(self) -> float | None:
        """How long the run (or the last retry) took, once every job has ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def live_jobs(self) -> list[int]:
        return self.runs.live_jobs()

    @Slot()
    def cancel_all(self) -> None:
        """Cancel this wizard's jobs only; other jobs of the window keep running."""
        self.runs.cancel_all()
        self.cancel_button.setEnabled(False)
        self.overall_label.setText("Cancelling: each job stops after its batch in flight…")

    def _show(self, band_id: int) -> BandLine:
        line = self.rows[band_id]
        line.show_job(self.runs.info(band_id), self.runs.plan(band_id).rows)
        return line

    @Slot(int)
    def _job_changed(self, band_id: int) -> None:
        self._show(band_id)

    @Slot(int)
    def _job_ended(self, band_id: int) -> None:
        self._show(band_id).show_counting()
        self._update_overall()

    @Slot(int)
    def _counted(self, band_id: int) -> None:
        self._show(band_id)
        self._update_overall()
        self.completeChanged.emit()

    @Slot()
    def _update_overall(self) -> None:
        done, total, ended = self.runs.rows()
        scale = max(1, total // 1_000_000 + 1)
        self.overall.setRange(0, max(1, total // scale))
        self.overall.setValue(done // scale)
        self.overall.setFormat(f"{fmt.count(done)} / {fmt.count(total)} rows")
        now = self.ended_at or time.monotonic()
        elapsed = now - (self.started_at or now)
        text = f"{ended} of {len(self.band_job)} bands ended · {fmt.duration(elapsed)} elapsed"
        if self.running:
            if done and elapsed > 0:
                left = (total - done) / (done / elapsed)
                text += f" · about {fmt.duration(left)} left"
            else:
                text += " · time left: measuring…"
        else:
            self.ended_at = self.ended_at or now
            self._timer.stop()
            self.cancel_button.setEnabled(False)
            failed = [o for o in self.wiz.outcomes.values() if o.failed]
            text += " · finished" + (f", {len(failed)} not succeeded" if failed else "")
        if self.cancel_button.isEnabled() or not self.running:
            self.overall_label.setText(text)

    def isComplete(self) -> bool:
        return self.runs.complete()
