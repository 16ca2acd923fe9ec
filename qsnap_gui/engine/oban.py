"""Qlarius's Oban workers as a second job engine, and the application's own refreshes. No Qt here.

qsnap can hand work to the Elixir nodes of a Qlarius installation instead of running it on this
computer: it inserts the rows an Oban node picks up, watches them in ``oban_jobs`` and retries
or cancels them as ``Oban.retry_job`` and ``Oban.cancel_job`` do. The SQL is in
``store.oban_jobs``; this module holds the flows (locks, checks, waiting).

What each flow inserts
----------------------
Exactly the row ``Worker.new(args) |> Oban.insert()`` writes for the worker (see
``store.oban_jobs.insert_job``), then, in the same transaction, the insert notification
``pg_notify('<prefix>.oban_insert', '{"queue":"<queue>"}')`` that wakes idle producers:

* ``enqueue_populate``: ``PopulateTargetWorker`` ``{"target_id": T}`` on queue ``targets``, and
  the target set to ``populating`` in the same transaction, as ``Targets.trigger_population``
  does. The application's worker now writes the snapshots itself, inline.
* ``enqueue_backfill``: one ``BackfillMissingSnapshotsWorker`` ``{}`` on queue ``maintenance``,
  the job the application's cron inserts every hour. It fills NULL population snapshots of every
  target and copies them to offers and ad events still NULL; it repairs no broken shape and
  writes nothing for a me_file with no matching tag (that population stays NULL).
* ``enqueue_band``: ``SnapshotBandPopulationsWorker`` ``{"band_id": B}`` on queue ``targets``.
  The application marks this worker deprecated; callers warn, and check ``snapshot_worker_doubt``.

One live job per band, target and backfill
------------------------------------------
Oban's uniqueness is checked by the inserting client, so qsnap checks its own: a job is not
inserted while one of the same worker (for the same band or target) is available, scheduled,
executing or retryable; the caller gets that job instead (``Enqueued.refused``) and may follow
it. Check and insert run in one transaction holding a transaction-level advisory lock, so two
qsnap sessions cannot both pass the check; the Elixir application does not take that lock.

Retry and cancel
----------------
``retry_job`` is ``Oban.retry_job`` for a discarded or cancelled job only (Oban also retries
completed, retryable and scheduled ones; qsnap does not), refused beside another live job of the
same band or target. ``cancel_job`` is ``Oban.cancel_job``: any job not yet ended, executing
included, becomes ``cancelled`` with ``cancelled_at``, then the node is sent
``{"action":"pkill","job_id":N}`` on ``<prefix>.oban_signal``. A node that never hears it
cannot run the job again: Oban's Lifeline only rescues rows still ``executing``.

The application refreshing a target
-----------------------------------
``application_refresh`` says whether a ``PopulateTargetWorker`` job for the target is live (the
application is refreshing it: busy, not stuck), or that qsnap cannot tell (``oban_jobs`` exists
but this role may not read it), or nothing (no ``oban_jobs``). It never raises for a privilege.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from qsnap_gui.domain.errors import QsnapError, TargetBusy, UsageError
from qsnap_gui.domain.oban import (
    ARG_KEYS,
    RETRY_STATES,
    WORKER_BACKFILL,
    WORKER_BAND,
    WORKER_POPULATE,
    AttemptError,
    BandProgress,
    ObanInfo,
    ObanJob,
    job_subject,
)
from qsnap_gui.store import locks
from qsnap_gui.store.oban_jobs import (
    band_progress,
    cancel_row,
    detect,
    get_jobs,
    insert_job,
    last_completed,
    live_job,
    live_populate_jobs,
    lock_job,
    notify_insert,
    notify_pkill,
    require,
    retry_row,
)
from qsnap_gui.store.queries import band_target, require_target

ENGINES: tuple[str, ...] = ("local", "oban")

# Transaction-level advisory lock kinds (see store.locks): held while checking and inserting.
ENQUEUE_BAND = 0x51534E03
ENQUEUE_TARGET = 0x51534E04
ENQUEUE_BACKFILL = 0x51534E05

DEPRECATED = (
    "Qlarius marks SnapshotBandPopulationsWorker deprecated (PopulateTargetWorker writes the "
    "snapshots inline now) and may remove it; a job for a removed worker ends discarded"
)
BACKFILL_SCOPE = (
    "BackfillMissingSnapshotsWorker fills the NULL snapshots of every target and copies them "
    "to offers and ad events still NULL; it repairs no broken shape and leaves NULL the "
    "populations whose me_file has no matching tag (qsnap --engine local fills those)"
)


class AlreadyQueued(QsnapError):
    """A live job for the same band (or target) exists; it is named so it can be followed."""

    def __init__(self, message: str, job_id: int, state: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state


# --- enqueue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enqueued:
    """A job qsnap inserted, or (refused) the live job that was already there."""

    job_id: int
    worker: str
    band_id: int | None = None
    target_id: int | None = None
    refused: bool = False
    state: str = "available"

    @property
    def subject(self) -> str:
        return job_subject(self.band_id, self.target_id)

    @property
    def line(self) -> str:
        if self.refused:
            return (
                f"{self.subject}: already queued as job {self.job_id} ({self.state}), "
                "not enqueued again"
            )
        return f"{self.subject}: enqueued Oban job {self.job_id}"

    def to_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "worker": self.worker,
            "band_id": self.band_id,
            "target_id": self.target_id,
            "refused": self.refused,
            "state": self.state,
        }


def _refuse(subject: str, live: tuple[int, str]) -> AlreadyQueued:
    return AlreadyQueued(
        f"{subject} already queued as job {live[0]} ({live[1]}); not enqueued again", *live
    )


def enqueue_band(engine: Engine, band_id: int, *, info: ObanInfo | None = None) -> Enqueued:
    """Insert a SnapshotBandPopulationsWorker job for the band; AlreadyQueued if one is live."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        target_id = band_target(conn, band_id)
        locks.xact_lock(conn, ENQUEUE_BAND, band_id)
        live = live_job(conn, info, WORKER_BAND, band_id)
        if live is not None:
            raise _refuse(f"band {band_id}", live)
        job_id = insert_job(conn, info, WORKER_BAND, {"band_id": band_id})
        notify_insert(conn, info, "targets")
    return Enqueued(job_id, WORKER_BAND, band_id=band_id, target_id=target_id)


def enqueue_bands(
    engine: Engine, band_ids: Iterable[int], *, info: ObanInfo | None = None
) -> list[Enqueued]:
    """One job per band, each in its own transaction; a refused band reports the live job."""
    out = []
    for band_id in band_ids:
        try:
            out.append(enqueue_band(engine, band_id, info=info))
        except AlreadyQueued as refused:
            out.append(
                Enqueued(refused.job_id, WORKER_BAND, band_id, refused=True, state=refused.state)
            )
    return out


def enqueue_populate(engine: Engine, target_id: int, *, info: ObanInfo | None = None) -> Enqueued:
    """Insert a PopulateTargetWorker job and mark the target populating, in one transaction."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        title = require_target(conn, target_id)
        locks.xact_lock(conn, ENQUEUE_TARGET, target_id)
        if locks.held_elsewhere(conn, locks.TARGET, [target_id]):
            raise TargetBusy(
                f"target {target_id} ({title}) is being refreshed by a qsnap session on "
                "this computer; try again when it has finished"
            )
        live = live_job(conn, info, WORKER_POPULATE, target_id)
        if live is not None:
            raise _refuse(f"target {target_id} ({title})", live)
        job_id = insert_job(conn, info, WORKER_POPULATE, {"target_id": target_id})
        conn.execute(
            text(
                "update targets set population_status = 'populating', "
                "updated_at = date_trunc('second', clock_timestamp() at time zone 'UTC') "
                "where id = :t"
            ),
            {"t": target_id},
        )
        notify_insert(conn, info, "targets")
    return Enqueued(job_id, WORKER_POPULATE, target_id=target_id)


def enqueue_populate_or_follow(
    engine: Engine, target_id: int, *, info: ObanInfo | None = None
) -> Enqueued:
    """enqueue_populate, or the live job already refreshing the target (refused)."""
    try:
        return enqueue_populate(engine, target_id, info=info)
    except AlreadyQueued as refused:
        return Enqueued(
            refused.job_id, WORKER_POPULATE, target_id=target_id, refused=True, state=refused.state
        )


def enqueue_backfill(engine: Engine, info: ObanInfo | None = None) -> list[Enqueued]:
    """Insert one BackfillMissingSnapshotsWorker job (args {}), or report the live one.

    The result has enqueue_bands' shape: a list, here of one job."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        locks.xact_lock(conn, ENQUEUE_BACKFILL, 1)
        live = live_job(conn, info, WORKER_BACKFILL)
        if live is not None:
            return [Enqueued(live[0], WORKER_BACKFILL, refused=True, state=live[1])]
        job_id = insert_job(conn, info, WORKER_BACKFILL, {})
        notify_insert(conn, info, "maintenance")
    return [Enqueued(job_id, WORKER_BACKFILL)]


def snapshot_worker_doubt(conn: Connection, info: ObanInfo) -> str | None:
    """Why the deprecated SnapshotBandPopulationsWorker may no longer run here, or None when a
    job of it has completed (the sign that the application still has it)."""
    if last_completed(conn, info, WORKER_BAND) is not None:
        return None
    return (
        f"no SnapshotBandPopulationsWorker job has completed in {info.name} (none ever ran, "
        "or Oban's Pruner removed them), so nothing shows the application still has this "
        "deprecated worker"
    )


# --- retry and cancel ------------------------------------------------------------------------


def retry_job(engine: Engine, job_id: int, *, info: ObanInfo | None = None) -> ObanJob:
    """Oban.retry_job for a discarded or cancelled job; returns the job as it now stands."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        job = lock_job(conn, info, job_id)
        if job.state not in RETRY_STATES:
            raise UsageError(
                f"Oban job {job_id} is {job.state}: only discarded or cancelled jobs are retried"
            )
        key = job.band_id if job.worker == WORKER_BAND else job.target_id
        if job.worker in ARG_KEYS and key is not None:
            kind = ENQUEUE_BAND if job.worker == WORKER_BAND else ENQUEUE_TARGET
            locks.xact_lock(conn, kind, key)
            live = live_job(conn, info, job.worker, key, exclude=job_id)
            if live is not None:
                raise AlreadyQueued(
                    f"{job.subject} already has Oban job {live[0]} ({live[1]}); "
                    f"job {job_id} not retried",
                    *live,
                )
        retried = retry_row(conn, info, job_id)
        notify_insert(conn, info, job.queue)
    return retried


@dataclass(frozen=True)
class CancelOutcome:
    job_id: int
    was: str  # the state the job was cancelled in
    node: str | None = None

    @property
    def text(self) -> str:
        if self.was == "executing":
            on = f" on {self.node}" if self.node else ""
            return (
                f"job {self.job_id} cancelled (it was executing{on}: its node was asked to kill it)"
            )
        return f"job {self.job_id} cancelled"


def cancel_job(engine: Engine, job_id: int, *, info: ObanInfo | None = None) -> CancelOutcome:
    """Oban.cancel_job: any job not yet ended becomes cancelled, then its node is signalled."""
    with engine.begin() as conn:
        info = info or require(conn, write=True)
        job = lock_job(conn, info, job_id)
        if cancel_row(conn, info, job_id) is None:
            raise UsageError(f"Oban job {job_id} is already {job.state}: nothing to cancel")
        notify_pkill(conn, info, job_id)
    return CancelOutcome(job_id, job.state, job.node)


# --- the application refreshing a target -----------------------------------------------------


@dataclass(frozen=True)
class AppRefresh:
    """Is the application refreshing a target? Its live PopulateTargetWorker job (busy), or
    unknown with the reason (oban_jobs exists but cannot be read), or neither."""

    job_id: int | None = None
    state: str | None = None
    unknown: bool = False
    reason: str | None = None

    @property
    def busy(self) -> bool:
        return self.job_id is not None

    @property
    def blocks(self) -> bool:
        """Busy, or cannot be told: either way the target must not be called stuck."""
        return self.busy or self.unknown

    @property
    def label(self) -> str:
        """What the targets list shows: "busy: application job 123 executing" or why not."""
        if self.busy:
            return f"busy: application job {self.job_id} {self.state}"
        if self.unknown:
            return f"cannot tell: {self.reason}"
        return ""

    def refusal(self, target_id: int) -> str:
        """The one-line refusal of a local refresh or resume of the target."""
        if self.busy:
            return (
                f"target {target_id} is being refreshed by the application: Oban job "
                f"{self.job_id} (PopulateTargetWorker) is {self.state}; try again when it "
                "has ended (qsnap oban-jobs --worker populate)"
            )
        return (
            f"cannot tell whether the application is refreshing target {target_id}: {self.reason}"
        )


def _is_privilege_error(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "42501"


def application_refreshes(conn: Connection, target_ids: Iterable[int]) -> dict[int, AppRefresh]:
    """The targets among these that the application is refreshing, or that cannot be told."""
    ids = list(dict.fromkeys(int(t) for t in target_ids))
    info = detect(conn) if ids else None
    if info is None:
        return {}
    cannot = AppRefresh(
        unknown=True,
        reason=f"this role may not read {info.name} (it needs USAGE on schema {info.schema} "
        "and SELECT on the table)",
    )
    if not info.can_read:
        return dict.fromkeys(ids, cannot)
    try:
        with conn.begin_nested():
            live = live_populate_jobs(conn, info, ids)
    except DBAPIError as exc:
        if not _is_privilege_error(exc):
            raise
        return dict.fromkeys(ids, cannot)
    return {t: AppRefresh(job_id, state) for t, (job_id, state) in live.items()}


def application_refresh(conn: Connection, target_id: int) -> AppRefresh:
    """Whether the application is refreshing this target (see AppRefresh)."""
    return application_refreshes(conn, [target_id]).get(target_id, AppRefresh())


def targets_being_populated(conn: Connection, target_ids: Iterable[int]) -> set[int]:
    """Targets not to call stuck: the application is refreshing them, or it cannot be told."""
    return {t for t, r in application_refreshes(conn, target_ids).items() if r.blocks}


# --- watching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What one poll saw happen to a job."""

    job: ObanJob
    before: ObanJob | None
    known_state: str | None = None  # what enqueueing reported, before the first poll

    @property
    def previous_state(self) -> str | None:
        return self.before.state if self.before else self.known_state

    @property
    def state_changed(self) -> bool:
        return self.before is None or self.before.state != self.job.state

    @property
    def new_errors(self) -> tuple[AttemptError, ...]:
        seen = len(self.before.errors) if self.before else 0
        return self.job.errors[seen:]

    def lines(self) -> list[str]:
        """The change in words, one line each, as ``qsnap --wait`` prints it."""
        job = self.job
        head = f"job {job.id} ({job.subject})"
        out = [f"{head}: attempt {e.attempt} failed: {e.first_line}" for e in self.new_errors]
        if self.state_changed:
            was = self.previous_state
            moved = f"{was} -> {job.state}" if was and was != job.state else job.state
            detail = ""
            if job.state == "executing":
                node = f" on {job.node}" if job.node else ""
                detail = f" (attempt {job.attempt} of {job.max_attempts}{node})"
            elif job.state in ("retryable", "scheduled") and job.scheduled_at:
                detail = f" (next attempt at {job.scheduled_at:%H:%M:%S} UTC)"
            elif job.ended and job.duration is not None:
                detail = (
                    f" (after {job.attempt} of {job.max_attempts} attempts, {job.duration:.1f}s)"
                )
            out.append(f"{head}: {moved}{detail}")
        return out


def changes(
    before: dict[int, ObanJob],
    after: dict[int, ObanJob],
    known_states: Mapping[int, str] | None = None,
) -> list[Change]:
    out = []
    for job_id, job in sorted(after.items()):
        old = before.get(job_id)
        change = Change(job, old, (known_states or {}).get(job_id))
        if old is None or change.state_changed or change.new_errors or old.attempt != job.attempt:
            out.append(change)
    return out


@dataclass
class WaitResult:
    jobs: dict[int, ObanJob] = field(default_factory=dict)
    timed_out: bool = False
    stopped: bool = False

    @property
    def failed(self) -> list[ObanJob]:
        return [j for j in self.jobs.values() if j.state in ("discarded", "cancelled")]


def wait_for_jobs(
    engine: Engine,
    info: ObanInfo,
    job_ids: Iterable[int],
    *,
    on_change: Callable[[Change], None] | None = None,
    on_progress: Callable[[BandProgress], None] | None = None,
    poll: float = 2.0,
    timeout: float | None = None,
    stop: threading.Event | None = None,
    known_states: Mapping[int, str] | None = None,
) -> WaitResult:
    """Poll the jobs until every one has ended (completed, discarded or cancelled).

    ``known_states`` are the states enqueueing printed: a worker may claim a job before the
    first poll, and the first change is then still told as a move from that state.
    Band progress is reported while a band job executes (NULL snapshots left), when it changes.
    """
    stop = stop or threading.Event()
    ids = list(dict.fromkeys(int(i) for i in job_ids))
    result = WaitResult()
    reported: dict[int, int] = {}
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        with engine.connect() as conn:
            now = get_jobs(conn, info, ids)
            executing = [j.band_id for j in now.values() if j.state == "executing" and j.band_id]
            progress = band_progress(conn, executing) if on_progress and executing else {}
        for change in changes(result.jobs, now, None if result.jobs else known_states):
            if on_change:
                on_change(change)
        for band_id, p in progress.items():
            if reported.get(band_id) != p.missing:
                reported[band_id] = p.missing
                on_progress(p)
        result.jobs = now
        if all(j.ended for j in now.values()):
            return result  # a job missing from the table was deleted (pruned) while we watched
        if deadline is not None and time.monotonic() >= deadline:
            result.timed_out = True
            return result
        if stop.wait(poll):
            result.stopped = True
            return result


def resolve_worker(name: str) -> str:
    """A worker from operator input: snapshot, populate, backfill, or a full worker name."""
    short = {
        "snapshot": WORKER_BAND,
        "band": WORKER_BAND,
        "populate": WORKER_POPULATE,
        "target": WORKER_POPULATE,
        "backfill": WORKER_BACKFILL,
    }
    value = str(name).strip()
    if not value:
        raise UsageError("--worker needs a name: snapshot, populate, backfill or a worker module")
    return short.get(value.lower(), value)
