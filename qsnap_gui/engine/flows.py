"""The flows as blocking calls, for the command line, the bench and tests: each submits its
jobs to a Runner on plain threads and waits for them, cancelled by a flag a signal handler sets
(or by Ctrl+C)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine

from qsnap_gui.domain.jobs import (
    DEFAULT_BATCH_SIZE,
    MAX_ATTEMPTS,
    BandResult,
    CancelFlag,
    JobInfo,
    Mode,
)
from qsnap_gui.engine.backfill import BandOutcome, BandPlan
from qsnap_gui.engine.population import RefreshResult
from qsnap_gui.engine.runner import Runner


def _runner(engine: Engine, threads: int, options: dict) -> Runner:
    return Runner(
        engine,
        threads=threads,
        on_progress=options.pop("progress", None),
        on_log=options.pop("log_line", None),
        on_stage=options.pop("stage", None),
        batch_size=options.pop("batch_size", DEFAULT_BATCH_SIZE),
        max_attempts=options.pop("max_attempts", MAX_ATTEMPTS),
        backoff=options.pop("backoff", 1.0),
    )


def drive(runner: Runner, job_ids: list[int], cancel: CancelFlag | None = None) -> list[JobInfo]:
    """Wait for the jobs to end; ``cancel`` (set by a signal handler) or Ctrl+C cancels them,
    and the wait goes on until they have stopped after their batch in flight."""
    try:
        for job_id in job_ids:
            while not runner.wait(job_id, 0.1):
                if cancel is not None and cancel.is_set():
                    runner.cancel_all()
    except KeyboardInterrupt:
        runner.cancel_all()
        for job_id in job_ids:
            runner.wait(job_id)
        raise
    finally:
        runner.executor.wait(None)
    return [runner.job(job_id) for job_id in job_ids]


def refresh_population(
    engine: Engine,
    target_id: int,
    *,
    resume: bool = False,
    cancel: CancelFlag | None = None,
    threads: int = 8,
    **options,
) -> RefreshResult:
    """Run Refresh Population to its end; a refresh that could not start raises its error."""
    runner = _runner(engine, threads, options)
    job_id = runner.refresh(target_id, resume=resume)
    (info,) = drive(runner, [job_id], cancel)
    error = runner.start_error(job_id)
    if error is not None:
        raise error
    return info.result


def snapshot_bands(
    engine: Engine,
    band_ids: Iterable[int],
    *,
    mode: Mode | str = Mode.MISSING,
    cancel: CancelFlag | None = None,
    workers: int | None = None,
    **options,
) -> list[BandResult]:
    """Snapshot several bands together: one pass over their rows and tags, a job per band."""
    band_ids = list(band_ids)
    if not band_ids:
        return []
    runner = _runner(engine, workers or len(band_ids), options)
    job_ids = runner.snapshot_together([(band_id, "") for band_id in band_ids], mode=mode)
    return [info.result for info in drive(runner, job_ids, cancel)]


def run_backfill(
    engine: Engine,
    plans: Iterable[BandPlan],
    *,
    workers: int | None = 4,
    cancel: CancelFlag | None = None,
    **options,
) -> list[BandOutcome]:
    """Run the planned band jobs (each counts its band again afterwards), in plan order."""
    plans = list(plans)
    if not plans:
        return []
    runner = _runner(engine, min(len(plans), workers or len(plans)), options)
    job_id = runner.backfill(plans)
    (info,) = drive(runner, [job_id], cancel)
    return list(info.result)
