"""The one job engine: band snapshot jobs, Refresh Population and backfill runs, on threads.

The command line and the window both drive their jobs through a ``Runner``; only where the
work runs differs: the command line lends it a plain thread pool, the window a Qt pool (the
``Executor`` protocol). A job never blocks a thread waiting for other jobs: a refresh is three
steps (membership, band jobs, status flip) and the runner starts the next step when the last
band job of the previous one has ended, so any number of refreshes fit in any number of
threads.

Bands snapshotted at once (Snapshot all, a refresh's bands, a backfill's small bands) run as
one group (``group.snapshot_group``): one pass over their rows and their me_files' tags, on
one thread, while each band stays a job of its own with its progress, Cancel and result.

Every change is reported through ``on_event(name, job)`` with a copy of the job (``added``,
``changed``, ``membership`` when a refresh has applied its diff, ``finished``), from whichever
thread made it. Cancelling sets the job's flag, which
the engine checks between batches; a job cancelled before it started ends at once.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from qsnap_gui.domain.errors import QsnapError
from qsnap_gui.domain.jobs import (
    DEFAULT_BATCH_SIZE,
    MAX_ATTEMPTS,
    BandResult,
    CancelFlag,
    Cancelled,
    JobInfo,
    JobKind,
    JobState,
    Mode,
    Progress,
)
from qsnap_gui.domain.words import plural
from qsnap_gui.engine.backfill import BandOutcome, BandPlan, backfill_outcomes, run_band
from qsnap_gui.engine.executors import Executor, ThreadExecutor, thread_cap
from qsnap_gui.engine.group import snapshot_group
from qsnap_gui.engine.population import RefreshFlow, RefreshResult
from qsnap_gui.engine.snapshots import describe_failure, snapshot_band
from qsnap_gui.store import queries

log = logging.getLogger(__name__)

# a backfill's bands with fewer rows than this to write run together, as one group: each band
# job of its own costs a connection, temporary tables, locks and planning (about 19 ms)
GROUP_ROWS = 5_000
# a group takes one advisory lock per band in one session: the server's lock table
# (max_locks_per_transaction x max_connections, 6,400 by default) holds about as many for all
# sessions at once, and 14,000 bands in one group ran out of it ("out of shared memory")
GROUP_BANDS = 250
# a parent job reports its children's summed progress at most this often (and when the last one
# ends); the sums themselves are kept up to date from each child's change
AGGREGATE_SECONDS = 0.25
# a child's progress that changes no state is reported at most this often per parent (and
# always when it ends): 15,000 small bands made three events each
CHILD_EVENT_SECONDS = 0.1

EventFn = Callable[[str, JobInfo], None]
LogFn = Callable[[str], None]
ProgressFn = Callable[[Progress], None]


def error_line(exc: BaseException) -> str:
    """One line an operator can act on, never a traceback (the log file keeps that)."""
    if isinstance(exc, QsnapError):
        return str(exc)
    if hasattr(exc, "orig") and hasattr(exc, "connection_invalidated"):
        return describe_failure(exc)  # a DBAPIError
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Job:
    info: JobInfo
    cancel: CancelFlag = field(default_factory=CancelFlag)
    done: threading.Event = field(default_factory=threading.Event)
    batch_size: int = DEFAULT_BATCH_SIZE
    resume: bool = False
    plan: BandPlan | None = None
    flow: RefreshFlow | None = None
    finishing: bool = False
    start_error: BaseException | None = None
    open_children: int = 0
    aggregated: float = 0.0
    child_event: float = 0.0
    sums: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)


def _counters(info: JobInfo) -> tuple[int, int, int, int, int]:
    """What a parent sums of its children."""
    return info.rows_done, info.rows_total, info.rows_written, info.batch, info.batches


def _band_result(job: _Job, state: JobState, error: str | None = None) -> object:
    """The result of a band job that never ran (cancelled first) or broke outside the engine."""
    if job.info.kind is not JobKind.SNAPSHOT:
        return None
    if job.plan is not None:
        return BandOutcome(
            job.plan.row,
            job.plan.mode,
            state,
            attempts=0,
            error=error,
            categories=job.plan.categories,
        )
    return BandResult(job.info.band_id, state, attempts=0, error=error)


class Runner:
    """Runs the session's jobs and remembers them; safe to call from any thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        executor: Executor | None = None,
        threads: int = 4,
        on_event: EventFn | None = None,
        on_progress: ProgressFn | None = None,
        on_log: LogFn | None = None,
        on_stage: LogFn | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = 1.0,
    ) -> None:
        self.engine = engine
        self.executor = executor or ThreadExecutor(thread_cap(engine, threads))
        self.batch_size = batch_size
        self.group_rows = GROUP_ROWS
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._on_event = on_event
        self._on_progress = on_progress or (lambda p: None)
        self._say = on_log or log.info
        self._stage = on_stage or self._say
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._jobs: dict[int, _Job] = {}

    # --- submitting ---------------------------------------------------------------------------

    def snapshot(
        self,
        band_id: int,
        *,
        mode: Mode | str = Mode.MISSING,
        target_id: int | None = None,
        label: str = "",
        batch_size: int | None = None,
        parent: int | None = None,
    ) -> int:
        """A band snapshot job; returns its id."""
        mode = Mode(mode)
        job = self._new(
            JobKind.SNAPSHOT, target_id, band_id, label or f"band {band_id}", str(mode), parent
        )
        job.batch_size = batch_size or self.batch_size
        self.executor.start(lambda: self._run_band(job))
        return job.info.id

    def snapshot_together(
        self,
        bands: Sequence[tuple[int, str]],
        *,
        mode: Mode | str = Mode.MISSING,
        target_id: int | None = None,
        batch_size: int | None = None,
        parent: int | None = None,
    ) -> list[int]:
        """Several bands (id, label) as one group: one pass over their rows and their me_files'
        tags, while each band stays a job of its own (progress, Cancel, result, retry)."""
        mode = Mode(mode)
        if len(bands) == 1:
            ((band_id, label),) = bands
            return [
                self.snapshot(
                    band_id,
                    mode=mode,
                    target_id=target_id,
                    label=label,
                    batch_size=batch_size,
                    parent=parent,
                )
            ]
        with self._lock:
            jobs = [
                self._make(
                    JobKind.SNAPSHOT,
                    target_id,
                    band_id,
                    label or f"band {band_id}",
                    str(mode),
                    parent,
                )
                for band_id, label in bands
            ]
            for job in jobs:
                job.batch_size = batch_size or self.batch_size
            if parent is not None:
                self._adopt(self._jobs[parent], jobs)
        if jobs:
            self.executor.start(lambda: self._run_group(jobs, mode))
        return [job.info.id for job in jobs]

    def refresh(self, target_id: int, *, resume: bool = False) -> int:
        """Refresh Population of a target (DOMAIN.md steps 1-5); returns the job id."""
        verb = "Resume" if resume else "Refresh"
        job = self._new(
            JobKind.REFRESH, target_id, None, f"{verb} target {target_id}", str(Mode.MISSING)
        )
        job.info.max_attempts = 1
        job.resume = resume
        self.executor.start(lambda: self._refresh_start(job))
        return job.info.id

    def backfill(self, plans: Iterable[BandPlan], *, batch_size: int | None = None) -> int:
        """A backfill run: one band job per plan, each counting its band again afterwards."""
        plans = list(plans)
        job = self._new(
            JobKind.BACKFILL, None, None, f"Backfill {plural(len(plans), 'band')}", "backfill"
        )
        job.info.max_attempts = 1
        self._begin(job)
        with self._lock:
            children = []
            for p in plans:
                child = self._make(
                    JobKind.SNAPSHOT,
                    p.row.target_id,
                    p.band_id,
                    f"{p.row.target_title} · {p.row.label}",
                    str(p.mode),
                    job.info.id,
                )
                child.plan = p
                child.batch_size = batch_size or self.batch_size
                children.append(child)
            self._adopt(job, children)
        if not children:
            self._end(job, JobState.SUCCEEDED, result=[])
        small: dict[Mode, list[_Job]] = {}
        for child in children:
            if child.plan.rows_built < self.group_rows:
                small.setdefault(child.plan.mode, []).append(child)
            else:
                self.executor.start(lambda child=child: self._run_band(child))
        for mode, bands in small.items():
            for start in range(0, len(bands), GROUP_BANDS):
                group = bands[start : start + GROUP_BANDS]
                if len(group) == 1:
                    self.executor.start(lambda child=group[0]: self._run_band(child))
                else:
                    self.executor.start(lambda group=group, mode=mode: self._run_group(group, mode))
        return job.info.id

    def retry(self, job_id: int) -> int:
        """The same job again (same band and mode, or the same refresh)."""
        job = self._jobs[job_id]
        info = job.info
        if info.active:
            raise ValueError(f"job {job_id} is still {info.state}")
        if info.kind is JobKind.REFRESH:
            return self.refresh(info.target_id, resume=job.resume)
        if info.kind is JobKind.BACKFILL:
            failed = [self._jobs[c].plan for c in info.children]
            return self.backfill(
                [
                    p
                    for p, c in zip(failed, info.children, strict=True)
                    if p and self._jobs[c].info.state is not JobState.SUCCEEDED
                ]
            )
        return self.snapshot(
            info.band_id,
            mode=info.mode,
            target_id=info.target_id,
            label=info.label,
            batch_size=job.batch_size,
        )

    # --- cancelling and waiting ---------------------------------------------------------------

    def cancel(self, job_id: int) -> None:
        """Stop a job after its batch in flight; one that has not started ends now."""
        with self._lock:
            job = self._jobs[job_id]
            if not job.info.active:
                return
            job.cancel.cancel()
            for child in job.info.children:
                self.cancel(child)
            if job.info.started is None and job.info.kind is JobKind.SNAPSHOT:
                self._end(
                    job,
                    JobState.CANCELLED,
                    result=BandResult(job.info.band_id, JobState.CANCELLED, attempts=0),
                )
                return
        self._say(f"cancelling {job.info.label}: it stops after the batch in flight")

    def cancel_all(self) -> None:
        for info in self.active():
            if info.parent is None:
                self.cancel(info.id)
        for info in self.active():
            self.cancel(info.id)

    def wait(self, job_id: int, timeout: float | None = None) -> bool:
        """Block until the job has ended; False when the timeout came first."""
        return self._jobs[job_id].done.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel everything and wait for the jobs (a refresh still gets its last step)."""
        self.cancel_all()
        deadline = time.monotonic() + timeout
        for job in list(self._jobs.values()):
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return self.executor.wait(max(0.0, deadline - time.monotonic()))

    # --- reading ------------------------------------------------------------------------------

    def start_error(self, job_id: int) -> BaseException | None:
        """Why a refresh could not start (unknown target, busy, …), for callers that raise it."""
        return self._jobs[job_id].start_error

    def job(self, job_id: int) -> JobInfo:
        with self._lock:
            return replace(self._jobs[job_id].info)

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            return [replace(j.info) for j in self._jobs.values()]

    def active(self) -> list[JobInfo]:
        return [info for info in self.jobs() if info.active]

    # --- the work -----------------------------------------------------------------------------

    def _run_band(self, job: _Job) -> None:
        if not self._begin(job):
            return
        info = job.info
        try:
            if info.target_id is None:
                with self.engine.connect() as conn:
                    info.target_id = queries.band_target(conn, info.band_id)
            options = dict(
                batch_size=job.batch_size,
                progress=lambda p: self._progress(job, p),
                cancel=job.cancel,
                log_line=self._say,
                max_attempts=self.max_attempts,
                backoff=self.backoff,
            )
            if job.plan is not None:
                outcome = run_band(
                    self.engine, info.band_id, job.plan.categories, before=job.plan.row, **options
                )
                self._end(job, outcome.state, result=outcome, error=outcome.error)
            else:
                result = snapshot_band(self.engine, info.band_id, mode=info.mode, **options)
                self._end(job, result.state, result=result, error=result.error)
        except Exception as exc:
            self._fail_band(job, exc)

    def _fail_band(self, job: _Job, exc: Exception) -> None:
        """End a band job that broke outside the engine (which never raises for the database)."""
        message = f"band {job.info.band_id}: {error_line(exc)}"
        log.exception("band job %s failed", job.info.id)
        self._say(message)
        self._end(
            job, JobState.FAILED, result=_band_result(job, JobState.FAILED, message), error=message
        )

    def _run_group(self, jobs: list[_Job], mode: Mode) -> None:
        live = {job.info.band_id: job for job in jobs if self._begin(job)}
        for band_id, job in list(live.items()):
            if job.info.target_id is None:
                try:
                    with self.engine.connect() as conn:
                        job.info.target_id = queries.band_target(conn, band_id)
                except Exception as exc:
                    del live[band_id]
                    self._fail_band(job, exc)
        if not live:
            return
        try:
            results = snapshot_group(
                self.engine,
                sorted(live),
                mode=mode,
                batch_size=jobs[0].batch_size,
                progress=lambda p: self._progress(live[p.band_id], p),
                cancels={band_id: job.cancel for band_id, job in live.items()},
                log_line=self._say,
                max_attempts=self.max_attempts,
                backoff=self.backoff,
            )
            plans = [job.plan for job in live.values() if job.plan is not None]
            outcomes = backfill_outcomes(self.engine, plans, results) if plans else {}
        except Exception as exc:
            for job in live.values():
                self._fail_band(job, exc)
            return
        for band_id, job in live.items():
            result = outcomes.get(band_id) or results[band_id]
            self._end(job, result.state, result=result, error=result.error)

    def _refresh_start(self, job: _Job) -> None:
        if not self._begin(job):
            return
        info = job.info
        flow = RefreshFlow(
            self.engine, info.target_id, resume=job.resume, say=self._stage, cancel=job.cancel
        )
        job.flow = flow
        try:
            diff = flow.start()
        except Cancelled:
            self._say(
                f"target {info.target_id}: refresh cancelled during its membership step; "
                f"nothing was applied (status {flow.status_after})"
            )
            self._end(
                job,
                JobState.CANCELLED,
                result=RefreshResult(info.target_id, None, status=flow.status_after),
            )
            return
        except Exception as exc:
            job.start_error = exc
            if not isinstance(exc, QsnapError):
                log.exception("refresh of target %s failed", info.target_id)
            self._say(f"target {info.target_id}: {error_line(exc)}")
            self._end(
                job,
                JobState.FAILED,
                error=error_line(exc),
                result=RefreshResult(info.target_id, None, status=flow.status_after),
            )
            return
        with self._lock:
            verb = "Resume" if job.resume else "Refresh"
            info.label = f"{verb} {flow.title}"
            info.state = JobState.RUNNING
            self._emit("membership", job)
        if diff:
            self._say(
                f"{flow.title}: {diff.total:,} populations ({diff.inserted:,} new, "
                f"{diff.deleted:,} removed, {diff.moved:,} moved); snapshotting "
                f"{plural(len(flow.band_ids), 'band')}"
            )
        if job.cancel.is_set() or not flow.band_ids:
            self._refresh_finish(job)
            return
        labels = flow.band_labels()
        self.snapshot_together(
            [
                (band_id, f"{flow.title} · {labels.get(band_id, f'band {band_id}')}")
                for band_id in flow.band_ids
            ],
            target_id=info.target_id,
            parent=info.id,
        )

    def _refresh_finish(self, job: _Job) -> None:
        info = job.info
        children = [self._jobs[c].info for c in info.children]
        cancelled = job.cancel.is_set() or any(c.state is JobState.CANCELLED for c in children)
        bands = [c.result for c in children if isinstance(c.result, BandResult)]
        flow = job.flow
        try:
            status = flow.finish(cancelled=cancelled)
        except Exception as exc:
            if not isinstance(exc, QsnapError):
                log.exception("refresh of target %s could not end", info.target_id)
            message = f"could not mark the target populated: {error_line(exc)}"
            self._say(f"target {info.target_id}: {message}")
            self._end(
                job,
                JobState.FAILED,
                error=message,
                result=RefreshResult(info.target_id, flow.diff, bands, status="populating"),
            )
            return
        result = RefreshResult(info.target_id, flow.diff, bands, status=status)
        failed = [c for c in children if c.state is JobState.FAILED]
        if failed:
            error = (
                f"{len(failed)} of {len(children)} band jobs failed "
                f"(target {status}): {failed[0].error}"
            )
            self._end(job, JobState.FAILED, error=error, result=result)
        elif cancelled:
            self._end(job, JobState.CANCELLED, result=result)
        else:
            self._end(job, JobState.SUCCEEDED, result=result)

    # --- bookkeeping --------------------------------------------------------------------------

    def _new(
        self,
        kind: JobKind,
        target_id: int | None,
        band_id: int | None,
        label: str,
        mode: str,
        parent: int | None = None,
    ) -> _Job:
        with self._lock:
            job = self._make(kind, target_id, band_id, label, mode, parent)
            if parent is not None:
                self._adopt(self._jobs[parent], [job])
            return job

    def _make(
        self,
        kind: JobKind,
        target_id: int | None,
        band_id: int | None,
        label: str,
        mode: str,
        parent: int | None,
    ) -> _Job:
        """A job known to the runner (``added``); a child must then be adopted by its parent."""
        job_id = next(self._ids)
        job = _Job(
            JobInfo(
                job_id,
                kind,
                target_id,
                band_id,
                label,
                mode,
                max_attempts=self.max_attempts,
                parent=parent,
            )
        )
        self._jobs[job_id] = job
        if parent is not None and self._jobs[parent].cancel.is_set():
            job.cancel.cancel()
        self._emit("added", job)
        return job

    def _adopt(self, owner: _Job, jobs: list[_Job]) -> None:
        """Children added to their parent at once (one by one, 15,000 of them were quadratic)."""
        if not jobs:
            return
        owner.info.children = (*owner.info.children, *(job.info.id for job in jobs))
        owner.open_children += len(jobs)
        self._emit("changed", owner)

    def _begin(self, job: _Job) -> bool:
        """Mark a job picked up by a thread; False when it has already ended (cancelled)."""
        with self._lock:
            if job.done.is_set():
                return False
            if job.info.started is None:
                job.info.started = time.time()
            if job.info.state is JobState.QUEUED:
                job.info.state = JobState.RUNNING
            self._emit("changed", job)
            return True

    def _progress(self, job: _Job, p: Progress) -> None:
        self._on_progress(p)
        with self._lock:
            info = job.info
            if info.state not in (
                JobState.QUEUED,
                JobState.WAITING,
                JobState.RUNNING,
                JobState.RETRYING,
            ):
                return
            before, note = info.state, info.note
            counted = _counters(info)
            info.state = p.state
            info.attempt = p.attempt
            if p.elapsed:
                info.elapsed = p.elapsed
            if p.state is JobState.RUNNING:
                info.rows_done, info.rows_total = p.rows_done, p.rows_total
                info.batch, info.batches = p.batch, p.batches
            if p.state in (JobState.RETRYING, JobState.FAILED) and p.message:
                info.error = p.message
            info.note = p.message if p.state is JobState.WAITING else ""
            if info.parent is None:
                self._emit("changed", job)
                return
            parent = self._jobs[info.parent]
            self._count(parent, counted, info)
            now = time.monotonic()
            if info.state is not before or info.note != note:
                self._emit("changed", job)
            elif now - parent.child_event >= CHILD_EVENT_SECONDS:
                parent.child_event = now
                self._emit("changed", job)
            self._aggregate(parent)

    def _end(
        self, job: _Job, state: JobState, *, result: object = None, error: str | None = None
    ) -> None:
        parent_done: _Job | None = None
        with self._lock:
            if job.done.is_set():
                return
            info = job.info
            counted = _counters(info)
            info.state = state
            info.result = result
            if info.started is not None:
                info.elapsed = max(info.elapsed, time.time() - info.started)
            if isinstance(result, (BandResult, BandOutcome)):
                self._take_result(info, result)
            if info.parent is not None:
                self._count(self._jobs[info.parent], counted, info)
            if state is JobState.FAILED:
                info.error = error or info.error
            elif state is JobState.SUCCEEDED:
                info.error = None
            job.done.set()
            self._emit("finished", job)
            if info.parent is not None:
                parent = self._jobs[info.parent]
                parent.open_children -= 1
                self._aggregate(parent, force=parent.open_children == 0)
                if parent.open_children == 0 and not parent.finishing:
                    parent.finishing = True
                    parent_done = parent
        if parent_done is not None:
            self._children_ended(parent_done)

    def _take_result(self, info: JobInfo, result: BandResult | BandOutcome) -> None:
        if isinstance(result, BandOutcome):
            info.rows_written = result.rows_written
            info.attempt = max(result.attempts, 1)
            info.elapsed = result.duration or info.elapsed
            return
        info.rows_written = result.rows_written
        info.attempt = max(result.attempts, 1)
        info.elapsed = result.elapsed or info.elapsed
        if result.state is JobState.SUCCEEDED:
            info.rows_done = info.rows_total = result.rows_total
            info.batch = info.batches = result.batches

    def _children_ended(self, parent: _Job) -> None:
        if parent.info.kind is JobKind.REFRESH:
            self.executor.start(lambda: self._refresh_finish(parent))
            return
        outcomes = [self._jobs[c].info.result for c in parent.info.children]
        states = {self._jobs[c].info.state for c in parent.info.children}
        if JobState.FAILED in states:
            failed = sum(
                1 for c in parent.info.children if self._jobs[c].info.state is JobState.FAILED
            )
            self._end(
                parent,
                JobState.FAILED,
                result=outcomes,
                error=f"{failed} of {len(outcomes)} band jobs failed",
            )
        elif JobState.CANCELLED in states or parent.cancel.is_set():
            self._end(parent, JobState.CANCELLED, result=outcomes)
        else:
            self._end(parent, JobState.SUCCEEDED, result=outcomes)

    @staticmethod
    def _count(parent: _Job, counted: tuple[int, ...], child: JobInfo) -> None:
        """The parent's sums moved by what one child's change moved (written out: it runs
        for every progress event of every child)."""
        s, c = parent.sums, counted
        parent.sums = (
            s[0] + child.rows_done - c[0],
            s[1] + child.rows_total - c[1],
            s[2] + child.rows_written - c[2],
            s[3] + child.batch - c[3],
            s[4] + child.batches - c[4],
        )

    def _aggregate(self, parent: _Job, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - parent.aggregated < AGGREGATE_SECONDS:
            return
        parent.aggregated = now
        info = parent.info
        info.rows_done, info.rows_total, info.rows_written, info.batch, info.batches = parent.sums
        if info.started is not None:
            info.elapsed = time.time() - info.started
        self._emit("changed", parent)

    def _emit(self, name: str, job: _Job) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(name, replace(job.info))
        except Exception:
            log.exception("a job event handler failed")
