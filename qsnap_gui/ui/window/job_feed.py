"""The controller's news about jobs, brought to the Jobs table, the band rows and the status bar.

Batches may end hundreds of times a second: changes are gathered and drawn on a timer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Slot

from qsnap_gui.domain.jobs import JobState
from qsnap_gui.ui.jobs import JobController, JobInfo
from qsnap_gui.ui.models import job_text

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow

JOB_REDRAW_MS = 50  # progress reaches the tables at most 20 times a second

log = logging.getLogger("qsnap_gui.jobs")


class JobFeed(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self._dirty: set[int] = set()
        self._after_jobs: Callable[[], None] | None = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(JOB_REDRAW_MS)
        self._timer.timeout.connect(self.flush)

    @property
    def stopping(self) -> bool:
        return self._after_jobs is not None

    def attach(self, controller: JobController) -> None:
        controller.jobAdded.connect(self._added)
        controller.jobChanged.connect(self._changed)
        controller.jobFinished.connect(self._finished)
        controller.logLine.connect(self._log_line)
        controller.membershipApplied.connect(self.w.shape_counts.membership_applied)
        controller.targetChanged.connect(self.w.target_changed)

    def detach(self, controller: JobController) -> None:
        for signal in (
            controller.jobAdded,
            controller.jobChanged,
            controller.jobFinished,
            controller.logLine,
            controller.membershipApplied,
            controller.targetChanged,
        ):
            signal.disconnect()
        self._dirty.clear()
        self._timer.stop()
        self.w.targets_model.set_busy(set())

    def stop_jobs_then(self, callback: Callable[[], None]) -> None:
        """Cancel every job and run ``callback`` once they have all ended, without blocking."""
        controller = self.w.controller
        if controller is None or not controller.active():
            callback()
            return
        self._after_jobs = callback
        count = len(controller.active())
        controller.cancel_all()
        self.w.statusBar().showMessage(f"Stopping {count} jobs after their batch in flight…")

    @Slot(str)
    def _log_line(self, line: str) -> None:
        log.info("%s", line)

    @Slot(int)
    def _added(self, job_id: int) -> None:
        self._dirty.add(job_id)
        self.flush()

    @Slot(int)
    def _changed(self, job_id: int) -> None:
        self._dirty.add(job_id)
        if not self._timer.isActive():
            self._timer.start()

    @Slot()
    def flush(self) -> None:
        self._timer.stop()
        dirty, self._dirty = sorted(self._dirty), set()
        w = self.w
        if w.controller is None:
            return
        for job_id in dirty:
            info = w.controller.job(job_id)
            w.jobs_model.update(info)
            if info.band_id is not None and w.bands_model.target_id == info.target_id:
                w.bands_model.set_job(info)
            if w.clicked_job is not None and w.clicked_job.id == job_id:
                w.clicked_job = info
        busy = {j.target_id for j in w.controller.active() if j.target_id is not None}
        if w.targets_model.set_busy(busy):
            w.count_targets()
            w.update_header()
        w.update_actions()

    def _reload_inspector(self, info: JobInfo) -> None:
        """The inspector reads its me_file again when the job may have written its rows: a
        band job that wrote to one of its bands, or a refresh or backfill."""
        inspector = self.w.inspector
        report = inspector.report if inspector is not None else None
        if report is None:
            return
        if info.band_id is None or (
            info.rows_written and any(m.band_id == info.band_id for m in report.memberships)
        ):
            inspector.refresh()

    @Slot(int)
    def _finished(self, job_id: int) -> None:
        self._dirty.add(job_id)
        self.flush()
        w = self.w
        info = w.controller.job(job_id)
        w.shape_counts.job_ended(info)
        self._reload_inspector(info)
        w.statusBar().showMessage(f"{info.label}: {job_text(info)}", 8000)
        if info.state is JobState.FAILED:
            w.banner.show_message(
                f"{info.label} failed: {info.error or 'see the log'}",
                action="Retry",
                callback=partial(w.commands.retry, job_id),
            )
        if self._after_jobs is not None and not w.controller.active():
            callback, self._after_jobs = self._after_jobs, None
            callback()
