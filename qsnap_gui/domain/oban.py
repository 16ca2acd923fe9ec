"""Oban's job table as plain data: the Qlarius workers, the job states of each schema version,
where the table lives and what one job row says. No SQL here (``store.oban_jobs`` reads and
writes the table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from qsnap_gui.domain.errors import QsnapError

WORKER_BAND = "Qlarius.Jobs.SnapshotBandPopulationsWorker"
WORKER_POPULATE = "Qlarius.Jobs.PopulateTargetWorker"
WORKER_BACKFILL = "Qlarius.Jobs.BackfillMissingSnapshotsWorker"
WORKERS: tuple[str, ...] = (WORKER_BAND, WORKER_POPULATE, WORKER_BACKFILL)
SHORT_WORKERS = {WORKER_BAND: "snapshot", WORKER_POPULATE: "populate", WORKER_BACKFILL: "backfill"}
ARG_KEYS = {WORKER_BAND: "band_id", WORKER_POPULATE: "target_id"}
# The queue of each worker's ``use Oban.Worker`` declaration; all three say max_attempts: 3.
QUEUES = {WORKER_BAND: "targets", WORKER_POPULATE: "targets", WORKER_BACKFILL: "maintenance"}
MAX_ATTEMPTS = 3
PRIORITY = 0

STATES: tuple[str, ...] = (
    "available",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)
# Version 14 adds ``suspended`` BEFORE 'scheduled' in the enum.
ALL_STATES: tuple[str, ...] = ("available", "suspended", *STATES[1:])
ACTIVE_STATES: tuple[str, ...] = ("available", "scheduled", "executing", "retryable")
ENDED_STATES: tuple[str, ...] = ("completed", "discarded", "cancelled")
RETRY_STATES: tuple[str, ...] = ("discarded", "cancelled")
CHECKED_VERSIONS: tuple[int, ...] = (12, 13, 14)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "state",
    "queue",
    "worker",
    "args",
    "errors",
    "attempt",
    "max_attempts",
    "priority",
    "attempted_by",
    "tags",
    "meta",
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)
# What the busy check reads: present since Oban's first migration.
BUSY_COLUMNS: tuple[str, ...] = ("id", "state", "worker", "args")


class ObanUnavailable(QsnapError):
    """The database has no usable oban_jobs table (or qsnap may not read or write it)."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def job_subject(band_id: int | None, target_id: int | None) -> str:
    """What a Qlarius job works on, as the job lists say it: a band, a target, or every target."""
    if band_id is not None:
        return f"band {band_id}"
    if target_id is not None:
        return f"target {target_id}"
    return "every target"


@dataclass(frozen=True)
class ObanInfo:
    """Where oban_jobs lives and what qsnap may do with it; plain data for any thread."""

    schema: str
    version: int | None = None
    state_type: str = "oban_job_state"  # qualified name of the state enum
    states: tuple[str, ...] = STATES
    missing: tuple[str, ...] = ()
    can_read: bool = True
    can_insert: bool = True
    can_update: bool = True

    @property
    def table(self) -> str:
        return f"{quote_ident(self.schema)}.oban_jobs"

    @property
    def name(self) -> str:
        return f"{self.schema}.oban_jobs"

    @property
    def usable(self) -> bool:
        return not self.missing

    @property
    def insert_channel(self) -> str:
        return f"{self.schema}.oban_insert"

    @property
    def signal_channel(self) -> str:
        return f"{self.schema}.oban_signal"

    @property
    def problem(self) -> str | None:
        if self.missing:
            return (
                f"{self.name} lacks columns {', '.join(self.missing)} "
                "(Oban's migrations before version 9?)"
            )
        return None

    @property
    def note(self) -> str | None:
        """A version qsnap was not checked against (it still works with the columns it has)."""
        if self.version in CHECKED_VERSIONS:
            return None
        found = f"schema version {self.version}" if self.version else "no schema version"
        return (
            f"{self.name} has {found}; qsnap was checked against Oban's schema versions "
            f"{CHECKED_VERSIONS[0]}-{CHECKED_VERSIONS[-1]}"
        )


# --- jobs as plain data ----------------------------------------------------------------------


def _parse_at(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=None) if moment.tzinfo else moment


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class AttemptError:
    """One entry of oban_jobs.errors: {"at", "attempt", "error"} as Oban.Job.format_attempt."""

    attempt: int
    at: datetime | None
    error: str

    @property
    def first_line(self) -> str:
        lines = self.error.strip().splitlines()
        return lines[0] if lines else ""


def parse_errors(raw: object) -> tuple[AttemptError, ...]:
    out = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            out.append(AttemptError(0, None, str(entry)))
            continue
        attempt = entry.get("attempt")
        out.append(
            AttemptError(
                attempt if isinstance(attempt, int) else 0,
                _parse_at(entry.get("at")),
                str(entry.get("error", "")),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class ObanJob:
    id: int
    state: str
    queue: str
    worker: str
    args: dict
    attempt: int
    max_attempts: int
    priority: int
    attempted_by: tuple[str, ...]
    errors: tuple[AttemptError, ...]
    inserted_at: datetime | None
    scheduled_at: datetime | None
    attempted_at: datetime | None = None
    completed_at: datetime | None = None
    discarded_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def node(self) -> str | None:
        """The node of the last attempt: attempted_by is [node, producer uuid]."""
        return self.attempted_by[0] if self.attempted_by else None

    @property
    def short_worker(self) -> str:
        return SHORT_WORKERS.get(self.worker, self.worker.rsplit(".", 1)[-1])

    def _arg(self, key: str) -> int | None:
        value = self.args.get(key) if isinstance(self.args, dict) else None
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def band_id(self) -> int | None:
        return self._arg("band_id")

    @property
    def target_id(self) -> int | None:
        return self._arg("target_id")

    @property
    def subject(self) -> str:
        if self.band_id is not None or self.target_id is not None or self.worker == WORKER_BACKFILL:
            return job_subject(self.band_id, self.target_id)
        return json.dumps(self.args, sort_keys=True)

    @property
    def ended_at(self) -> datetime | None:
        return {
            "completed": self.completed_at,
            "discarded": self.discarded_at,
            "cancelled": self.cancelled_at,
        }.get(self.state)

    @property
    def duration(self) -> float | None:
        """Seconds from the last attempt's start to the end, for an ended job."""
        if self.attempted_at and self.ended_at:
            return max(0.0, (self.ended_at - self.attempted_at).total_seconds())
        return None

    @property
    def last_error(self) -> AttemptError | None:
        return self.errors[-1] if self.errors else None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "queue": self.queue,
            "worker": self.worker,
            "args": self.args,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "node": self.node,
            "attempted_by": list(self.attempted_by),
            "inserted_at": _stamp(self.inserted_at),
            "scheduled_at": _stamp(self.scheduled_at),
            "attempted_at": _stamp(self.attempted_at),
            "completed_at": _stamp(self.completed_at),
            "discarded_at": _stamp(self.discarded_at),
            "cancelled_at": _stamp(self.cancelled_at),
            "errors": [
                {"attempt": e.attempt, "at": _stamp(e.at), "error": e.error} for e in self.errors
            ],
        }


@dataclass(frozen=True)
class BandProgress:
    band_id: int
    missing: int
    population: int

    @property
    def done(self) -> int:
        return self.population - self.missing
