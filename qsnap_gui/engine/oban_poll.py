"""What the window's Oban monitor reads: one poll of oban_jobs, as plain data."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import Engine

from qsnap_gui.domain.oban import (
    ACTIVE_STATES,
    WORKER_BAND,
    WORKERS,
    BandProgress,
    ObanInfo,
    ObanJob,
)
from qsnap_gui.engine.oban import snapshot_worker_doubt
from qsnap_gui.store import oban_jobs
from qsnap_gui.store.db import Database


def _engine(source: Database | Engine) -> Engine:
    return source.engine if isinstance(source, Database) else source


@dataclass(frozen=True)
class PendingFilter:
    states: tuple[str, ...] = ()  # empty: every state
    worker: str | None = None  # None: the three Qlarius workers


@dataclass(frozen=True)
class ObanPoll:
    """One look at oban_jobs: the dock's jobs, band progress, and the pending view if open."""

    jobs: tuple[ObanJob, ...]
    progress: dict[int, BandProgress] = field(default_factory=dict)
    pending: tuple[ObanJob, ...] | None = None
    counts: dict[str, int] | None = None
    pending_filter: PendingFilter | None = None
    at: float = 0.0


def poll_once(
    source: Database | Engine,
    info: ObanInfo,
    session_ids: tuple[int, ...],
    pending: PendingFilter | None,
) -> ObanPoll:
    """The session's jobs plus every live job of the Qlarius workers (a reader thread's work)."""
    with _engine(source).connect() as conn:
        jobs = {j.id: j for j in oban_jobs.list_jobs(conn, info, states=ACTIVE_STATES)}
        jobs.update(oban_jobs.get_jobs(conn, info, session_ids))
        pending_jobs = counts = None
        if pending is not None:
            workers = [pending.worker] if pending.worker else list(WORKERS)
            counts = oban_jobs.state_counts(conn, info, workers=workers)
            pending_jobs = tuple(
                oban_jobs.list_jobs(conn, info, states=pending.states or None, workers=workers)
            )
        shown = list(jobs.values()) + list(pending_jobs or ())
        bands = [j.band_id for j in shown if j.worker == WORKER_BAND and j.band_id]
        progress = oban_jobs.band_progress(conn, bands)
    ordered = tuple(sorted(jobs.values(), key=lambda j: j.id, reverse=True))
    return ObanPoll(ordered, progress, pending_jobs, counts, pending, time.time())


def detect_table(source: Database | Engine) -> ObanInfo | None:
    """The oban_jobs table this database has, if any."""
    with _engine(source).connect() as conn:
        return oban_jobs.detect(conn)


def snapshot_doubt(source: Database | Engine, info: ObanInfo) -> str | None:
    """Why the deprecated snapshot worker may no longer run here, or None."""
    with _engine(source).connect() as conn:
        return snapshot_worker_doubt(conn, info)
