"""Band snapshot and Refresh Population jobs on the window's own thread pool.

The pattern of superqt's thread workers and vorta's job manager: one QRunnable per job, a
signals QObject per job created on the GUI thread (parented to the controller, so it is
deleted there and never by a worker dropping its reference), live jobs kept referenced until
their end has been handled, cancellation through the core's CancelFlag. Workers hand over
plain data only: Progress, BandResult, DiffCounts, ids and text.

A refresh runs as RefreshFlow.start on the pool, one band job per band, then RefreshFlow.finish
once every band job has ended, whatever its outcome (DOMAIN.md, Refresh Population step 5).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum

from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThreadPool, Signal, Slot

from qsnap_gui.engine.population import DiffCounts, RefreshFlow
from qsnap_gui.engine.snapshots import (
    DEFAULT_BATCH_SIZE,
    MAX_ATTEMPTS,
    BandResult,
    CancelFlag,
    JobState,
    Mode,
    Progress,
    snapshot_band,
)
from qsnap_gui.store import queries
from qsnap_gui.store.db import Database
from qsnap_gui.ui.tasks import error_text

ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.WAITING, JobState.RUNNING, JobState.RETRYING})


class JobKind(StrEnum):
    SNAPSHOT = "snapshot"
    REFRESH = "refresh"


@dataclass
class JobInfo:
    id: int
    kind: JobKind
    target_id: int | None
    band_id: int | None
    label: str
    mode: str
    state: JobState = JobState.QUEUED
    attempt: int = 1
    max_attempts: int = MAX_ATTEMPTS
    rows_done: int = 0
    rows_total: int = 0
    batch: int = 0
    batches: int = 0
    rows_written: int = 0
    started: float | None = None  # wall clock (time.time()) when a worker picked it up
    elapsed: float = 0.0
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def rate(self) -> float:
        return self.rows_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.state is not JobState.RUNNING or not self.rows_total or self.rate <= 0:
            return None
        return (self.rows_total - self.rows_done) / self.rate


def default_threads() -> int:
    """One thread per band job up to the number of CPUs, at least two.

    QThreadPool starts threads only as jobs arrive, so the cap is all that needs choosing.
    """
    return max(2, os.cpu_count() or 2)


@dataclass(frozen=True)
class _BandEnded:
    result: BandResult
    target_id: int | None


@dataclass(frozen=True)
class _RefreshStarted:
    title: str = ""
    diff: DiffCounts | None = None
    bands: tuple[tuple[int, str], ...] = ()  # (band id, label), outermost first
    cancelled: bool = False
    error: str | None = None


@dataclass(frozen=True)
class _RefreshFinished:
    status: str = ""
    error: str | None = None


class _JobSignals(QObject):
    began = Signal(int, float)
    progress = Signal(int, object)
    log = Signal(str)
    ended = Signal(int, object)


class _BandRunnable(QRunnable):
    def __init__(self, job_id: int, signals: _JobSignals, database: Database, job: _Job) -> None:
        super().__init__()
        self.job_id = job_id
        self.signals = signals
        self.database = database
        self.band_id = job.info.band_id
        self.target_id = job.info.target_id
        self.mode = job.info.mode
        self.batch_size = job.batch_size
        self.cancel = job.cancel
        self.max_attempts = job.info.max_attempts
        self.backoff = job.backoff

    def run(self) -> None:
        signals = self.signals
        signals.began.emit(self.job_id, time.time())
        target_id = self.target_id
        try:
            if self.cancel.is_set():
                result = BandResult(self.band_id, JobState.CANCELLED, attempts=0)
            else:
                if target_id is None:
                    with self.database.engine.connect() as conn:
                        target_id = queries.band_target(conn, self.band_id)
                result = snapshot_band(
                    self.database.engine,
                    self.band_id,
                    mode=self.mode,
                    batch_size=self.batch_size,
                    progress=self._progress,
                    cancel=self.cancel,
                    log_line=signals.log.emit,
                    max_attempts=self.max_attempts,
                    backoff=self.backoff,
                )
        except Exception as exc:  # snapshot_band reports database trouble itself; be safe anyway
            message = f"band {self.band_id}: {error_text(exc, self.database.url)}"
            signals.log.emit(message)
            result = BandResult(self.band_id, JobState.FAILED, error=message)
        signals.ended.emit(self.job_id, _BandEnded(result, target_id))

    def _progress(self, progress: Progress) -> None:
        self.signals.progress.emit(self.job_id, progress)


class _RefreshStartRunnable(QRunnable):
    def __init__(self, job_id: int, signals: _JobSignals, database: Database, job: _Job) -> None:
        super().__init__()
        self.job_id = job_id
        self.signals = signals
        self.database = database
        self.flow = job.flow
        self.cancel = job.cancel

    def run(self) -> None:
        self.signals.began.emit(self.job_id, time.time())
        if self.cancel.is_set():
            self.signals.ended.emit(self.job_id, _RefreshStarted(cancelled=True))
            return
        try:
            diff = self.flow.start()
        except Exception as exc:
            message = error_text(exc, self.database.url)
            self.signals.log.emit(f"target {self.flow.target_id}: {message}")
            self.signals.ended.emit(self.job_id, _RefreshStarted(error=message))
            return
        self.signals.ended.emit(
            self.job_id, _RefreshStarted(self.flow.title, diff, self._labelled(self.flow.band_ids))
        )

    def _labelled(self, band_ids: list[int]) -> tuple[tuple[int, str], ...]:
        """Bullseye / Ring N for the job list; plain ids if that read fails (the lock is held)."""
        try:
            with self.database.engine.connect() as conn:
                labels = {b.id: b.label for b in queries.band_order(conn, self.flow.target_id)}
        except Exception:
            labels = {}
        return tuple((b, labels.get(b, f"band {b}")) for b in band_ids)


class _RefreshFinishRunnable(QRunnable):
    def __init__(self, job_id: int, signals: _JobSignals, database: Database, job: _Job) -> None:
        super().__init__()
        self.job_id = job_id
        self.signals = signals
        self.database = database
        self.flow = job.flow

    def run(self) -> None:
        try:
            payload = _RefreshFinished(status=self.flow.finish())
        except Exception as exc:
            payload = _RefreshFinished(error=error_text(exc, self.database.url))
        self.signals.ended.emit(self.job_id, payload)


@dataclass
class _Job:
    info: JobInfo
    cancel: CancelFlag = field(default_factory=CancelFlag)
    batch_size: int = DEFAULT_BATCH_SIZE
    backoff: float = 1.0
    resume: bool = False
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    flow: RefreshFlow | None = None
    runnable: QRunnable | None = None
    signals: _JobSignals | None = None


class JobController(QObject):
    """Runs the session's jobs; every signal is emitted on the GUI thread."""

    jobAdded = Signal(int)
    jobChanged = Signal(int)
    jobFinished = Signal(int)
    logLine = Signal(str)
    targetChanged = Signal(int)

    def __init__(
        self, database: Database, parent: QObject | None = None, max_threads: int | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.batch_size = DEFAULT_BATCH_SIZE
        self.max_attempts = MAX_ATTEMPTS
        self.backoff = 1.0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads or default_threads())
        self._ids = itertools.count(1)
        self._jobs: dict[int, _Job] = {}
        self._live: dict[int, _Job] = {}

    @property
    def max_threads(self) -> int:
        return self._pool.maxThreadCount()

    @max_threads.setter
    def max_threads(self, value: int | None) -> None:
        self._pool.setMaxThreadCount(value or default_threads())

    # --- submitting ---------------------------------------------------------------------------

    def submit_band(
        self,
        band_id: int,
        *,
        target_id: int | None = None,
        label: str = "",
        mode: str = "missing",
        batch_size: int | None = None,
    ) -> int:
        return self._submit_band(band_id, target_id, label, Mode(mode), batch_size, parent=None)

    def submit_refresh(self, target_id: int, *, resume: bool = False) -> int:
        job_id = next(self._ids)
        verb = "Resume" if resume else "Refresh"
        job = _Job(
            JobInfo(
                job_id,
                JobKind.REFRESH,
                target_id,
                None,
                f"{verb} target {target_id}",
                str(Mode.MISSING),
                max_attempts=1,
            ),
            resume=resume,
            flow=RefreshFlow(self.database.engine, target_id, resume=resume),
        )
        self._add(job)
        self._start(job, _RefreshStartRunnable)
        return job_id

    def retry(self, job_id: int) -> int:
        job = self._jobs[job_id]
        info = job.info
        if info.active:
            raise ValueError(f"job {job_id} is still {info.state}")
        if info.kind is JobKind.REFRESH:
            return self.submit_refresh(info.target_id, resume=job.resume)
        return self.submit_band(
            info.band_id,
            target_id=info.target_id,
            label=info.label,
            mode=info.mode,
            batch_size=job.batch_size,
        )

    # --- cancelling ---------------------------------------------------------------------------

    def cancel(self, job_id: int) -> None:
        job = self._jobs[job_id]
        if not job.info.active:
            return
        job.cancel.cancel()
        for child in job.children:
            self.cancel(child)
        if job.info.started is None and job.runnable is not None:
            if self._pool.tryTake(job.runnable):
                self._never_ran(job)
            return
        self.logLine.emit(f"cancelling {job.info.label}: it stops after the batch in flight")

    def cancel_all(self) -> None:
        for job_id in list(self._live):
            if job_id in self._live:
                self.cancel(job_id)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Cancel everything and wait; refreshes still get their status step."""
        self.cancel_all()
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._pool.waitForDone(remaining):
                return False
            # Deliver the workers' queued signals: ends of band jobs submit refresh finishes.
            QCoreApplication.sendPostedEvents(self, 0)
            if not self._live:
                return True
            if time.monotonic() >= deadline:
                return False

    # --- reading ------------------------------------------------------------------------------

    def job(self, job_id: int) -> JobInfo:
        return replace(self._jobs[job_id].info)

    def jobs(self) -> list[JobInfo]:
        return [replace(job.info) for job in self._jobs.values()]

    def active(self) -> list[JobInfo]:
        return [replace(job.info) for job in self._jobs.values() if job.info.active]

    # --- internals ----------------------------------------------------------------------------

    def _submit_band(
        self,
        band_id: int,
        target_id: int | None,
        label: str,
        mode: Mode,
        batch_size: int | None,
        parent: int | None,
    ) -> int:
        job_id = next(self._ids)
        job = _Job(
            JobInfo(
                job_id,
                JobKind.SNAPSHOT,
                target_id,
                band_id,
                label or f"band {band_id}",
                str(mode),
                max_attempts=self.max_attempts,
            ),
            batch_size=batch_size or self.batch_size,
            backoff=self.backoff,
            parent=parent,
        )
        self._add(job)
        if parent is not None:
            self._jobs[parent].children.append(job_id)
        self._start(job, _BandRunnable)
        return job_id

    def _add(self, job: _Job) -> None:
        self._jobs[job.info.id] = job
        self._live[job.info.id] = job
        self.jobAdded.emit(job.info.id)

    def _start(self, job: _Job, runnable_type: type[QRunnable]) -> None:
        signals = _JobSignals(self)
        signals.began.connect(self._on_began)
        signals.progress.connect(self._on_progress)
        signals.log.connect(self._on_log)
        signals.ended.connect(self._on_ended)
        if job.signals is not None:
            job.signals.deleteLater()
        job.signals = signals
        job.runnable = runnable_type(job.info.id, signals, self.database, job)
        self._pool.start(job.runnable)

    def _never_ran(self, job: _Job) -> None:
        """A queued job taken off the pool before a thread picked it up."""
        if job.info.kind is JobKind.SNAPSHOT:
            payload = _BandEnded(
                BandResult(job.info.band_id, JobState.CANCELLED, attempts=0), job.info.target_id
            )
        else:
            payload = _RefreshStarted(cancelled=True)
        self._on_ended(job.info.id, payload)

    @Slot(int, float)
    def _on_began(self, job_id: int, started: float) -> None:
        info = self._jobs[job_id].info
        if info.started is None:
            info.started = started
        if info.state is JobState.QUEUED:
            info.state = JobState.RUNNING
        self.jobChanged.emit(job_id)

    @Slot(int, object)
    def _on_progress(self, job_id: int, p: Progress) -> None:
        job = self._jobs[job_id]
        info = job.info
        info.state = p.state
        info.attempt = p.attempt
        if p.elapsed:
            info.elapsed = p.elapsed
        if p.state is JobState.RUNNING:
            info.rows_done, info.rows_total = p.rows_done, p.rows_total
            info.batch, info.batches = p.batch, p.batches
        elif p.state is JobState.SUCCEEDED:
            info.rows_done, info.rows_total = p.rows_total, p.rows_total
            info.batch, info.batches = p.batches, p.batches
        if p.state in (JobState.RETRYING, JobState.FAILED) and p.message:
            info.error = p.message
        self.jobChanged.emit(job_id)
        if job.parent is not None:
            self._aggregate(job.parent)

    @Slot(str)
    def _on_log(self, line: str) -> None:
        self.logLine.emit(line)

    @Slot(int, object)
    def _on_ended(self, job_id: int, payload: object) -> None:
        job = self._jobs[job_id]
        if isinstance(payload, _BandEnded):
            self._band_ended(job, payload)
        elif isinstance(payload, _RefreshStarted):
            self._refresh_started(job, payload)
        else:
            self._refresh_finished(job, payload)

    def _band_ended(self, job: _Job, ended: _BandEnded) -> None:
        info, result = job.info, ended.result
        info.state = result.state
        info.rows_written = result.rows_written
        info.attempt = max(result.attempts, 1)
        info.elapsed = result.elapsed or info.elapsed
        info.target_id = ended.target_id
        if result.state is JobState.SUCCEEDED:
            info.rows_done = info.rows_total = result.rows_total
            info.batch = info.batches = result.batches
            info.error = None
        elif result.state is JobState.FAILED:
            info.error = result.error or info.error
        self._end(job)
        if ended.target_id is not None:
            self.targetChanged.emit(ended.target_id)
        if job.parent is not None:
            self._aggregate(job.parent)
            self._maybe_finish_refresh(self._jobs[job.parent])

    def _refresh_started(self, job: _Job, started: _RefreshStarted) -> None:
        info = job.info
        if started.error or started.cancelled:
            info.state = JobState.FAILED if started.error else JobState.CANCELLED
            info.error = started.error
            info.elapsed = time.time() - info.started if info.started else 0.0
            self._end(job)
            if started.error:
                self.targetChanged.emit(info.target_id)
            return
        verb = "Resume" if job.resume else "Refresh"
        info.label = f"{verb} {started.title}"
        info.state = JobState.RUNNING
        if started.diff:
            d = started.diff
            self.logLine.emit(
                f"{started.title}: {d.total:,} populations ({d.inserted:,} new, "
                f"{d.deleted:,} removed, {d.moved:,} moved); snapshotting "
                f"{len(started.bands)} bands"
            )
        self.jobChanged.emit(info.id)
        self.targetChanged.emit(info.target_id)
        if job.cancel.is_set() or not started.bands:
            self._start(job, _RefreshFinishRunnable)
            return
        for band_id, label in started.bands:
            self._submit_band(
                band_id,
                info.target_id,
                f"{started.title} · {label}",
                Mode.MISSING,
                None,
                parent=info.id,
            )

    def _maybe_finish_refresh(self, job: _Job) -> None:
        if all(not self._jobs[c].info.active for c in job.children):
            self._start(job, _RefreshFinishRunnable)

    def _refresh_finished(self, job: _Job, finished: _RefreshFinished) -> None:
        info = job.info
        children = [self._jobs[c].info for c in job.children]
        failed = [c for c in children if c.state is JobState.FAILED]
        info.elapsed = time.time() - info.started if info.started else 0.0
        if finished.error:
            info.state = JobState.FAILED
            info.error = f"could not mark the target populated: {finished.error}"
        elif failed:
            info.state = JobState.FAILED
            info.error = (
                f"{len(failed)} of {len(children)} band jobs failed "
                f"(target {finished.status}): {failed[0].error}"
            )
        elif job.cancel.is_set() or any(c.state is JobState.CANCELLED for c in children):
            info.state = JobState.CANCELLED
        else:
            info.state = JobState.SUCCEEDED
        self._end(job)
        self.targetChanged.emit(info.target_id)

    def _aggregate(self, parent_id: int) -> None:
        parent = self._jobs[parent_id].info
        children = [self._jobs[c].info for c in self._jobs[parent_id].children]
        parent.rows_done = sum(c.rows_done for c in children)
        parent.rows_total = sum(c.rows_total for c in children)
        parent.rows_written = sum(c.rows_written for c in children)
        parent.batch = sum(c.batch for c in children)
        parent.batches = sum(c.batches for c in children)
        if parent.started is not None:
            parent.elapsed = time.time() - parent.started
        self.jobChanged.emit(parent_id)

    def _end(self, job: _Job) -> None:
        job_id = job.info.id
        self._live.pop(job_id, None)
        if job.signals is not None:
            job.signals.deleteLater()
            job.signals = None
        job.runnable = None
        self.jobChanged.emit(job_id)
        self.jobFinished.emit(job_id)
