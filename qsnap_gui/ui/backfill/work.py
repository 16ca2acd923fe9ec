"""The backfill's work for the wizard: the scan on a worker of the shared scan pool, the run as
one core backfill job on the window's JobController (each band job counts its band again before
it ends, in the core, exactly as `qsnap backfill` does).

The pages only show what these report. Worker threads call the core and hand over plain data.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from PySide6.QtCore import QCoreApplication, QObject, Signal, Slot

from qsnap_gui.domain.jobs import CancelFlag
from qsnap_gui.engine import backfill, views
from qsnap_gui.engine.backfill import BandOutcome, BandPlan, Category
from qsnap_gui.store.db import Database
from qsnap_gui.ui.jobs import JobController, JobInfo
from qsnap_gui.ui.tasks import error_text
from qsnap_gui.ui.workers import WorkerPool

PROGRESS_INTERVAL_S = 0.05


def _scan_pool() -> WorkerPool:
    """Scans run on a pool owned by the application, so closing the wizard never waits for
    one: the wizard cancels it and a late result reaches nobody."""
    app = QCoreApplication.instance()
    pool = app.findChild(WorkerPool, "qsnap-scan-pool")
    if pool is None:
        pool = WorkerPool("scans", 2, app)
        pool.setObjectName("qsnap-scan-pool")
    return pool


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
        self._last = 0.0

    @property
    def scanning(self) -> bool:
        return self._cancel is not None

    def start(self, target_ids: list[int] | None, include: frozenset[Category]) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
        self._cancel = cancel = CancelFlag()
        QCoreApplication.instance().aboutToQuit.connect(cancel.cancel)

        def work() -> backfill.ScanResult:
            return views.scan_backfill(
                self.database,
                target_ids,
                include,
                cancel=cancel,
                progress=lambda done, total, message: self._progress(cancel, done, total, message),
            )

        _scan_pool().start(
            work,
            lambda result: self._ended(cancel, self.finished, result),
            lambda exc: self._ended(cancel, *self._failure(cancel, exc)),
        )

    def cancel(self) -> bool:
        """Ask the scan in flight to stop; False when none is running."""
        if self._cancel is None:
            return False
        self._cancel.cancel()
        return True

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Until the scans have ended (cancel first to make that quick)."""
        return _scan_pool().wait(timeout_ms / 1000)

    def _progress(self, cancel: CancelFlag, done: int, total: int, message: str) -> None:
        """On the worker: emitted across threads, at most every PROGRESS_INTERVAL_S."""
        now = time.monotonic()
        if cancel is not self._cancel or (done < total and now - self._last < PROGRESS_INTERVAL_S):
            return
        self._last = now
        with contextlib.suppress(RuntimeError):  # the wizard is gone: nobody to tell
            self.progress.emit(done, total, message)

    def _failure(self, cancel: CancelFlag, exc: BaseException) -> tuple:
        if isinstance(exc, backfill.ScanCancelled) or cancel.is_set():
            return (self.cancelled,)
        return (self.failed, error_text(exc, self.database.url))

    def _ended(self, cancel: CancelFlag, signal, *args) -> None:
        """Only the latest scan's end counts; older ones were cancelled and replaced."""
        with contextlib.suppress(RuntimeError, TypeError, SystemError):
            QCoreApplication.instance().aboutToQuit.disconnect(cancel.cancel)
        with contextlib.suppress(RuntimeError):
            if cancel is not self._cancel:
                return
            self._cancel = None
            signal.emit(*args)


# --- the run --------------------------------------------------------------------------------


class BandRuns(QObject):
    """The backfill's band jobs, as one core backfill job on the window's controller.

    Other jobs of the window are never touched. Signals carry band ids.
    """

    jobChanged = Signal(int)  # noqa: N815
    jobEnded = Signal(int)  # noqa: N815
    counted = Signal(int)  # its outcome (counted again by the job itself) is in ``outcomes``

    def __init__(
        self, database: Database, controller: JobController, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.controller = controller
        self.plans: dict[int, BandPlan] = {}  # band id -> its plan
        self.band_job: dict[int, int] = {}  # band id -> its latest job id
        self.outcomes: dict[int, BandOutcome] = {}  # band id -> latest outcome
        self.previous: dict[int, BandOutcome] = {}  # band id -> outcome before a retry
        self._runs: list[int] = []  # the backfill jobs submitted, latest last
        controller.jobChanged.connect(self._job_changed)
        controller.jobFinished.connect(self._job_finished)

    def start(self, plans: Iterable[BandPlan]) -> None:
        """Forget the last run and submit one backfill job of all the plans."""
        self.outcomes.clear()
        self.previous.clear()
        self.band_job.clear()
        self.plans = {p.band_id: p for p in plans}
        self._submit(list(self.plans.values()))

    def retry(self, band_ids: list[int]) -> None:
        """Run these bands again (the Summary's Retry failed)."""
        for band_id in band_ids:
            self.previous[band_id] = self.outcomes.pop(band_id)
        self._submit([self.plans[b] for b in band_ids])

    def cancel_all(self) -> None:
        for job_id in self._runs:
            self.controller.cancel(job_id)

    def live_jobs(self) -> list[int]:
        return [j for j in self.band_job.values() if self.controller.job(j).active]

    @property
    def running(self) -> bool:
        return any(self.controller.job(j).active for j in self._runs)

    def complete(self) -> bool:
        return bool(self.plans) and set(self.outcomes) == set(self.plans)

    def info(self, band_id: int) -> JobInfo:
        return self.controller.job(self.band_job[band_id])

    def plan(self, band_id: int) -> BandPlan:
        return self.plans[band_id]

    def rows(self) -> tuple[int, int, int]:
        """(rows done, rows in all, bands ended) over the latest job of every band."""
        done = total = ended = 0
        for band_id, job_id in self.band_job.items():
            info = self.controller.job(job_id)
            band_total = info.rows_total or self.plans[band_id].rows
            total += band_total
            done += band_total if not info.active else min(info.rows_done, band_total)
            ended += not info.active
        return done, total, ended

    def wait(self, timeout_ms: int) -> bool:
        """The jobs end on the controller's pool; nothing of the wizard's own to wait for."""
        return True

    def _submit(self, plans: list[BandPlan]) -> None:
        run = self.controller.submit_backfill(plans)
        self._runs.append(run)
        for child in self.controller.job(run).children:
            info = self.controller.job(child)
            self.band_job[info.band_id] = child
            self.jobChanged.emit(info.band_id)
            if not info.active:  # ended before we looked (cancelled at once)
                self._job_finished(child)

    def _band_of(self, job_id: int) -> int | None:
        info = self.controller.job(job_id)
        band_id = info.band_id
        return band_id if band_id is not None and self.band_job.get(band_id) == job_id else None

    @Slot(int)
    def _job_changed(self, job_id: int) -> None:
        band_id = self._band_of(job_id)
        if band_id is not None:
            self.jobChanged.emit(band_id)

    @Slot(int)
    def _job_finished(self, job_id: int) -> None:
        band_id = self._band_of(job_id)
        if band_id is None or band_id in self.outcomes:
            return
        outcome = self.controller.job(job_id).result
        previous = self.previous.get(band_id)
        if previous is not None:
            outcome = BandOutcome(
                outcome.before,
                outcome.mode,
                outcome.state,
                outcome.after,
                rows_written=outcome.rows_written + previous.rows_written,
                attempts=outcome.attempts + previous.attempts,
                duration=outcome.duration + previous.duration,
                error=outcome.error,
                categories=outcome.categories,
            )
        self.outcomes[band_id] = outcome
        self.jobEnded.emit(band_id)
        self.counted.emit(band_id)
