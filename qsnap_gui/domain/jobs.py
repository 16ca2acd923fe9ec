"""What a job is, as plain data that crosses threads: its kind, mode, state, progress and result.

The engine's runner, the command line and the window's job table all speak these types; nothing
here touches a database or Qt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_BATCH_SIZE = 500
MAX_ATTEMPTS = 3


class Mode(StrEnum):
    MISSING = "missing"
    REPAIR = "repair"
    FORCE = "force"


class JobState(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Progress:
    """Where a band job stands; plain data so it can cross threads."""

    band_id: int
    state: JobState
    rows_done: int = 0
    rows_total: int = 0
    batch: int = 0
    batches: int = 0
    elapsed: float = 0.0
    attempt: int = 1
    message: str = ""


@dataclass(frozen=True)
class BandResult:
    band_id: int
    state: JobState
    rows_written: int = 0
    rows_total: int = 0
    batches: int = 0
    attempts: int = 1
    elapsed: float = 0.0
    error: str | None = None


class CancelFlag:
    """Set by the operator; checked between batches.

    The event that ``wait`` sleeps on is made by the first wait: most flags are only ever
    read, and 15,000 band jobs made 15,000 events (a lock and a condition each).
    """

    _making = threading.Lock()

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def cancel(self) -> None:
        with self._making:
            self._set = True
            if self._event is not None:
                self._event.set()

    def is_set(self) -> bool:
        return self._set

    def wait(self, seconds: float) -> bool:
        if self._event is None:
            with self._making:
                if self._event is None:
                    self._event = threading.Event()
                    if self._set:
                        self._event.set()
        return self._event.wait(seconds)


class Cancelled(Exception):
    pass


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.WAITING, JobState.RUNNING, JobState.RETRYING})


class JobKind(StrEnum):
    SNAPSHOT = "snapshot"
    REFRESH = "refresh"
    BACKFILL = "backfill"


@dataclass
class JobInfo:
    """One job as the operator sees it; the runner hands out copies, never its own object.

    ``result`` is set when the job has ended: a BandResult (snapshot), the engine's
    RefreshResult (refresh), a BandOutcome (a backfill's band) or the list of them (backfill).
    """

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
    note: str = ""  # what the job waits for right now (a lock held elsewhere), if anything
    parent: int | None = None
    children: tuple[int, ...] = ()
    result: object = None

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
