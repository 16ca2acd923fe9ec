"""The backfill's threads and jobs: the scan on Qt's global pool, the band jobs on the window's
JobController, and the recount of each band once its job has ended (on a pool of its own).

The pages only show what these report. Worker threads call the core and emit plain data.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal, Slot

from qsnap_gui.domain.jobs import CancelFlag, JobState
from qsnap_gui.engine import backfill, views
from qsnap_gui.engine.backfill import BandOutcome, BandPlan, Category, ScanRow
from qsnap_gui.store.db import Database
from qsnap_gui.ui.jobs import JobController, JobInfo
from qsnap_gui.ui.tasks import TaskRunner, error_text

PROGRESS_INTERVAL_S = 0.05


# --- the scan -------------------------------------------------------------------------------


class ScanSignals(QObject):
    """Created on the GUI thread, so its signals reach the page through queued connections."""

    progress = Signal(int, int, str)
    finished = Signal(object)  # backfill.ScanResult
    cancelled = Signal()
    failed = Signal(str)


class ScanTask(QRunnable):
    """Runs ``backfill.scan`` on its own connection; hands over plain data only.

    It runs on Qt's global pool with its signals owned by the application, so closing or
    deleting the wizard never waits for a scan: the wizard cancels it, and a late result
    reaches no receiver. ``ended`` is set once it has emitted its last signal.
    """

    def __init__(
        self,
        database: Database,
        target_ids: list[int] | None,
        include: frozenset[Category],
        cancel: CancelFlag,
        signals: ScanSignals,
    ) -> None:
        super().__init__()
        self.database = database
        self.target_ids = target_ids
        self.include = include
        self.cancel = cancel
        self.signals = signals
        self.ended = threading.Event()
        self._last = 0.0

    def run(self) -> None:
        try:
            self._scan()
        finally:
            self.ended.set()

    def _scan(self) -> None:
        try:
            result = views.scan_backfill(
                self.database,
                self.target_ids,
                self.include,
                cancel=self.cancel,
                progress=self._progress,
            )
        except backfill.ScanCancelled:
            self._emit(self.signals.cancelled)
            return
        except Exception as exc:
            if self.cancel.is_set():
                self._emit(self.signals.cancelled)
            else:
                self._emit(self.signals.failed, error_text(exc, self.database.url))
            return
        self._emit(self.signals.finished, result)

    def _progress(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self._emit(self.signals.progress, done, total, message)

    @staticmethod
    def _emit(signal, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the wizard is gone: nobody to tell
            signal.emit(*args)


class Scanner(QObject):
    """One scan at a time: starting another cancels the one in flight, whose news is dropped."""

    progress = Signal(int, int, str)
    finished = Signal(object)  # backfill.ScanResult
    cancelled = Signal()
    failed = Signal(str)

    def __init__(self, database: Database, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.database = database
        self._cancel: CancelFlag | None = None
        self._task: ScanTask | None = None

    @property
    def scanning(self) -> bool:
        return self._cancel is not None

    def start(self, target_ids: list[int] | None, include: frozenset[Category]) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        self._cancel = cancel = CancelFlag()
        app = QCoreApplication.instance()
        signals = ScanSignals(app)
        for ended in (signals.finished, signals.cancelled, signals.failed):
            ended.connect(signals.deleteLater)
        app.aboutToQuit.connect(cancel.cancel)  # quitting never waits for a deep check
        signals.progress.connect(partial(self._on_progress, cancel))
        signals.finished.connect(partial(self._on_finished, cancel))
        signals.cancelled.connect(partial(self._on_cancelled, cancel))
        signals.failed.connect(partial(self._on_failed, cancel))
        self._task = ScanTask(self.database, target_ids, include, cancel, signals)
        QThreadPool.globalInstance().start(self._task)

    def cancel(self) -> bool:
        """Ask the scan in flight to stop; False when none is running."""
        if self._cancel is None:
            return False
        self._cancel.cancel()
        return True

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Until the latest scan has ended (cancel it first to make that quick)."""
        return self._task is None or self._task.ended.wait(timeout_ms / 1000)

    def _current(self, cancel: CancelFlag) -> bool:
        """Only the latest scan's signals count; older ones were cancelled and replaced."""
        with contextlib.suppress(RuntimeError, TypeError, SystemError):
            QCoreApplication.instance().aboutToQuit.disconnect(cancel.cancel)
        if cancel is not self._cancel:
            return False
        self._cancel = None
        return True

    def _on_progress(self, cancel: CancelFlag, done: int, total: int, message: str) -> None:
        if cancel is self._cancel:
            self.progress.emit(done, total, message)

    def _on_finished(self, cancel: CancelFlag, result: backfill.ScanResult) -> None:
        if self._current(cancel):
            self.finished.emit(result)

    def _on_cancelled(self, cancel: CancelFlag) -> None:
        if self._current(cancel):
            self.cancelled.emit()

    def _on_failed(self, cancel: CancelFlag, message: str) -> None:
        if self._current(cancel):
            self.failed.emit(message)


# --- the run --------------------------------------------------------------------------------


@dataclass
class Track:
    job_id: int
    plan: BandPlan
    ended: bool = False
    counted: bool = False


class BandRuns(QObject):
    """The backfill's band jobs on the window's controller, each counted again once it ends.

    Other jobs of the window are never touched. Signals carry band ids.
    """

    jobChanged = Signal(int)  # noqa: N815
    jobEnded = Signal(int)  # noqa: N815  # the recount has started
    counted = Signal(int)  # its outcome is in ``outcomes``

    def __init__(
        self, database: Database, controller: JobController, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.controller = controller
        self.runner = TaskRunner(self, threads=2)
        self.runner.secret = database.url
        self.tracks: dict[int, Track] = {}  # job id -> track
        self.band_job: dict[int, int] = {}  # band id -> its latest job id
        self.outcomes: dict[int, BandOutcome] = {}  # band id -> latest outcome
        self.previous: dict[int, BandOutcome] = {}  # band id -> outcome before a retry
        controller.jobChanged.connect(self._job_changed)
        controller.jobFinished.connect(self._job_finished)

    def start(self, plans: Iterable[BandPlan]) -> None:
        """Forget the last run and submit one job per plan."""
        self.outcomes.clear()
        self.previous.clear()
        self.tracks.clear()
        self.band_job.clear()
        for plan in plans:
            row = plan.row
            job_id = self.controller.submit_band(
                plan.band_id,
                target_id=row.target_id,
                label=f"{row.target_title} · {row.label} (backfill)",
                mode=plan.mode.value,
            )
            self._track(job_id, plan)

    def retry(self, band_ids: list[int]) -> None:
        """Retry these bands' last jobs (the Summary's Retry failed)."""
        for band_id in band_ids:
            old = self.band_job[band_id]
            plan = self.tracks[old].plan
            self.previous[band_id] = self.outcomes.pop(band_id)
            self._track(self.controller.retry(old), plan)

    def cancel_all(self) -> None:
        for job_id in self.live_jobs():
            self.controller.cancel(job_id)

    def live_jobs(self) -> list[int]:
        return [t.job_id for t in self.tracks.values() if not t.ended]

    @property
    def running(self) -> bool:
        return any(not t.ended for t in self.tracks.values())

    def complete(self) -> bool:
        return bool(self.tracks) and all(t.ended and t.counted for t in self.tracks.values())

    def info(self, band_id: int) -> JobInfo:
        return self.controller.job(self.band_job[band_id])

    def plan(self, band_id: int) -> BandPlan:
        return self.tracks[self.band_job[band_id]].plan

    def rows(self) -> tuple[int, int, int]:
        """(rows done, rows in all, bands ended) over the latest job of every band."""
        done = total = ended = 0
        for job_id in self.band_job.values():
            track = self.tracks[job_id]
            info = self.controller.job(job_id)
            band_total = info.rows_total or track.plan.rows
            total += band_total
            done += band_total if track.ended else min(info.rows_done, band_total)
            ended += track.ended
        return done, total, ended

    def wait(self, timeout_ms: int) -> bool:
        return self.runner.wait(timeout_ms)

    def _track(self, job_id: int, plan: BandPlan) -> None:
        self.tracks[job_id] = Track(job_id, plan)
        self.band_job[plan.band_id] = job_id
        self.jobChanged.emit(plan.band_id)
        if not self.controller.job(job_id).active:  # ended before we looked (cancelled at once)
            self._job_finished(job_id)

    @Slot(int)
    def _job_changed(self, job_id: int) -> None:
        track = self.tracks.get(job_id)
        if track is not None and self.band_job.get(track.plan.band_id) == job_id:
            self.jobChanged.emit(track.plan.band_id)

    @Slot(int)
    def _job_finished(self, job_id: int) -> None:
        track = self.tracks.get(job_id)
        if track is None or track.ended:
            return
        track.ended = True
        plan = track.plan
        self.jobEnded.emit(plan.band_id)
        self.runner.run(
            f"count {job_id}",
            partial(views.band_counts, self.database, plan.band_id, plan.categories),
            partial(self._counted, job_id),
            partial(self._count_failed, job_id),
        )

    def _counted(self, job_id: int, after: ScanRow | None, error: str | None = None) -> None:
        track = self.tracks[job_id]
        info = self.controller.job(job_id)
        band_id = track.plan.band_id
        previous = self.previous.get(band_id)
        message = info.error if info.state is JobState.FAILED else None
        if error:
            note = f"could not count the rows after the job: {error}"
            message = f"{message}; {note}" if message else note
        self.outcomes[band_id] = BandOutcome(
            track.plan.row,
            track.plan.mode,
            info.state,
            after,
            rows_written=info.rows_written + (previous.rows_written if previous else 0),
            attempts=info.attempt + (previous.attempts if previous else 0),
            duration=info.elapsed + (previous.duration if previous else 0.0),
            error=message,
            categories=track.plan.categories,
        )
        track.counted = True
        self.counted.emit(band_id)

    def _count_failed(self, job_id: int, message: str) -> None:
        self._counted(job_id, None, message)
