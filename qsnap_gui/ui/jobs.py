"""The window's table of jobs: the core job runner's events turned into Qt signals.

Every flow (a band job, Refresh Population, a backfill run) is the core ``Runner``'s; this
controller lends it a ``WorkerPool`` to run on and keeps, on the GUI thread, the latest copy of
each job that the runner reported. Runner events come from worker threads and cross to the GUI
thread through one queued signal.
"""

from __future__ import annotations

import os

from PySide6.QtCore import QObject, Signal, Slot

from qsnap_gui.domain.jobs import DEFAULT_BATCH_SIZE, MAX_ATTEMPTS, JobInfo, JobKind, Mode
from qsnap_gui.engine.backfill import BandPlan
from qsnap_gui.engine.executors import thread_cap
from qsnap_gui.engine.runner import Runner
from qsnap_gui.store.db import Database
from qsnap_gui.ui.workers import WorkerPool

__all__ = ["JobController", "JobInfo", "JobKind", "default_threads"]


def default_threads() -> int:
    """One thread per band job up to the number of CPUs, at least two.

    QThreadPool starts threads only as jobs arrive, so the cap is all that needs choosing.
    """
    return max(2, os.cpu_count() or 2)


class _PoolExecutor:
    """The runner's Executor protocol over a WorkerPool."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def start(self, work) -> None:
        self.pool.start(work)

    def wait(self, timeout: float | None) -> bool:
        return self.pool.wait(timeout)


class JobController(QObject):
    """Runs the session's jobs; every signal is emitted on the GUI thread."""

    jobAdded = Signal(int)
    jobChanged = Signal(int)
    jobFinished = Signal(int)
    logLine = Signal(str)
    targetChanged = Signal(int)
    membershipApplied = Signal(int)  # a refresh of this target has applied its diff

    _event = Signal(str, object)
    _log = Signal(str)

    def __init__(
        self, database: Database, parent: QObject | None = None, max_threads: int | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self._pool = WorkerPool("jobs", 1, self)
        self._runner = Runner(
            database.engine,
            executor=_PoolExecutor(self._pool),
            on_event=self._event.emit,
            on_log=self._log.emit,
            batch_size=DEFAULT_BATCH_SIZE,
            max_attempts=MAX_ATTEMPTS,
        )
        self.max_threads = max_threads
        self._jobs: dict[int, JobInfo] = {}
        self._event.connect(self._on_event)
        self._log.connect(self._on_log)

    # --- settings the window's preferences change ---------------------------------------------

    @property
    def max_threads(self) -> int:
        return self._pool.threads

    @max_threads.setter
    def max_threads(self, value: int | None) -> None:
        self._pool.threads = thread_cap(self.database.engine, value or default_threads())

    @property
    def batch_size(self) -> int:
        return self._runner.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._runner.batch_size = value

    @property
    def max_attempts(self) -> int:
        return self._runner.max_attempts

    @max_attempts.setter
    def max_attempts(self, value: int) -> None:
        self._runner.max_attempts = value

    @property
    def group_rows(self) -> int:
        """A backfill's bands with fewer rows than this to write run together, as one group."""
        return self._runner.group_rows

    @group_rows.setter
    def group_rows(self, value: int) -> None:
        self._runner.group_rows = value

    @property
    def backoff(self) -> float:
        return self._runner.backoff

    @backoff.setter
    def backoff(self, value: float) -> None:
        self._runner.backoff = value

    # --- submitting and stopping --------------------------------------------------------------

    def submit_band(
        self,
        band_id: int,
        *,
        target_id: int | None = None,
        label: str = "",
        mode: str = "missing",
        batch_size: int | None = None,
    ) -> int:
        return self._runner.snapshot(
            band_id, mode=Mode(mode), target_id=target_id, label=label, batch_size=batch_size
        )

    def submit_bands(
        self,
        bands: list[tuple[int, str]],
        *,
        target_id: int | None = None,
        mode: str = "missing",
        batch_size: int | None = None,
    ) -> list[int]:
        """Several bands (id, label) snapshotted together, one job each."""
        return self._runner.snapshot_together(
            bands, mode=Mode(mode), target_id=target_id, batch_size=batch_size
        )

    def submit_refresh(self, target_id: int, *, resume: bool = False) -> int:
        return self._runner.refresh(target_id, resume=resume)

    def submit_backfill(self, plans: list[BandPlan], *, batch_size: int | None = None) -> int:
        return self._runner.backfill(plans, batch_size=batch_size)

    def retry(self, job_id: int) -> int:
        return self._runner.retry(job_id)

    def cancel(self, job_id: int) -> None:
        self._runner.cancel(job_id)

    def cancel_all(self) -> None:
        self._runner.cancel_all()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait; a refresh still gets its status step."""
        return self._runner.shutdown(timeout_ms / 1000)

    # --- reading ------------------------------------------------------------------------------

    def job(self, job_id: int) -> JobInfo:
        """The job as the window last heard of it (the runner's own copy if not yet heard)."""
        info = self._jobs.get(job_id)
        return info if info is not None else self._runner.job(job_id)

    def jobs(self) -> list[JobInfo]:
        return list(self._jobs.values())

    def active(self) -> list[JobInfo]:
        return [info for info in self._jobs.values() if info.active]

    # --- runner events, on the GUI thread -----------------------------------------------------

    @Slot(str, object)
    def _on_event(self, name: str, info: JobInfo) -> None:
        known = info.id in self._jobs
        self._jobs[info.id] = info
        if not known:
            self.jobAdded.emit(info.id)
        self.jobChanged.emit(info.id)
        if name == "finished":
            self.jobFinished.emit(info.id)
            if info.target_id is not None:
                self.targetChanged.emit(info.target_id)
        elif name == "membership":
            self.membershipApplied.emit(info.target_id)
            self.targetChanged.emit(info.target_id)

    @Slot(str)
    def _on_log(self, line: str) -> None:
        self.logLine.emit(line)
