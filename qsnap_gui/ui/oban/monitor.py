"""The Oban monitor: finds oban_jobs, polls it while the window is shown, runs Oban operations.

All database work is ``qsnap_gui.engine.oban`` and ``qsnap_gui.store.oban_jobs`` (no SQL here),
run on the monitor's own reader pool; results come back as plain dataclasses. It polls every
``POLL_MS`` while the window is shown and stops while it is hidden or minimised.
"""

from __future__ import annotations

import itertools
from functools import partial

from PySide6.QtCore import QEvent, QObject, QTimer, Signal, Slot
from PySide6.QtWidgets import QWidget

from qsnap_gui.domain.oban import (
    WORKER_BAND,
    WORKER_POPULATE,
    ObanInfo,
    ObanJob,
)
from qsnap_gui.engine import oban, oban_poll
from qsnap_gui.engine.oban_poll import ObanPoll, PendingFilter
from qsnap_gui.store.db import Database
from qsnap_gui.ui.tasks import TaskRunner

POLL_MS = 2000


# --- the monitor -----------------------------------------------------------------------------


class ObanMonitor(QObject):
    """Detects oban_jobs, polls it while the window is shown, and runs Oban operations."""

    availabilityChanged = Signal(object)  # ObanInfo | None
    polled = Signal(object)  # ObanPoll
    logLine = Signal(str)
    message = Signal(str, bool)  # text, is an error
    dataChanged = Signal()  # a job moved or a band's NULL count changed: reload the counts
    # band ids, label, why: nothing shows the deprecated snapshot worker still runs
    confirmSnapshot = Signal(object, str, str)

    def __init__(self, window: QWidget, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._window = window
        self.runner = TaskRunner(self, threads=2)
        self.database: Database | None = None
        self.info: ObanInfo | None = None
        self.session_ids: set[int] = set()
        self.pending_filter: PendingFilter | None = None
        self.last: ObanPoll | None = None
        self.polls = 0
        self._generation = 0
        self._ops = itertools.count(1)
        self._last_error: str | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._tick)
        window.installEventFilter(self)

    # --- lifecycle ----------------------------------------------------------------------------

    def set_database(self, database: Database | None) -> None:
        self._generation += 1
        self._timer.stop()
        self.database, self.info, self.last = database, None, None
        self.session_ids.clear()
        self._last_error = None
        self.availabilityChanged.emit(None)
        if database is None:
            self.runner.wait(3000)
            return
        self.runner.secret = database.url
        gen = self._generation
        self.runner.run(
            "oban-detect",
            partial(oban_poll.detect_table, database),
            partial(self._detected, gen),
            partial(self._detect_failed, gen),
        )

    def _detected(self, gen: int, info: ObanInfo | None) -> None:
        if gen != self._generation:
            return
        if info is not None and (info.problem or not info.can_read):
            why = info.problem or f"this role may not read {info.name}"
            self.logLine.emit(f"Qlarius workers not offered: {why}")
            info = None
        self.info = info
        self.availabilityChanged.emit(info)
        if info is not None:
            self.logLine.emit(
                f"Qlarius workers available: {info.name}"
                + (f" (Oban schema version {info.version})" if info.version else "")
            )
            if info.note:
                self.logLine.emit(f"note: {info.note}")
            self._timer.start()
            self.poll_now()

    def _detect_failed(self, gen: int, text: str) -> None:
        if gen == self._generation:
            self.logLine.emit(f"could not look for oban_jobs: {text}")

    @property
    def available(self) -> bool:
        return self.info is not None

    @property
    def paused(self) -> bool:
        """No polling while the window is hidden or minimised."""
        return not self._window.isVisible() or self._window.isMinimized()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._window and event.type() in (
            QEvent.Type.Show,
            QEvent.Type.WindowStateChange,
        ):
            QTimer.singleShot(0, self.poll_now)
        return False

    # --- polling ------------------------------------------------------------------------------

    @Slot()
    def _tick(self) -> None:
        if not self.paused:
            self.poll_now()

    @Slot()
    def poll_now(self) -> None:
        if self.info is None or self.database is None or self.paused:
            return
        if self.runner.busy("oban-poll"):
            return
        gen = self._generation
        self.runner.run(
            "oban-poll",
            partial(
                oban_poll.poll_once,
                self.database,
                self.info,
                tuple(sorted(self.session_ids)),
                self.pending_filter,
            ),
            partial(self._polled, gen),
            partial(self._poll_failed, gen),
        )

    def _polled(self, gen: int, poll: ObanPoll) -> None:
        if gen != self._generation:
            return
        self.polls += 1
        self._last_error = None
        before = {j.id: j for j in self.last.jobs} if self.last else None
        moved = False
        if before is not None:
            now = {j.id: j for j in poll.jobs}
            for change in oban.changes(before, now):
                if change.before is None and change.job.id not in self.session_ids:
                    continue  # someone else's job appearing: shown, not logged
                for line in change.lines():
                    self.logLine.emit(line)
                moved = moved or change.state_changed
            old = self.last.progress
            moved = moved or any(
                old.get(b) is None or old[b].missing != p.missing for b, p in poll.progress.items()
            )
        self.last = poll
        self.polled.emit(poll)
        if moved:
            self.dataChanged.emit()

    def _poll_failed(self, gen: int, text: str) -> None:
        if gen == self._generation and text != self._last_error:
            self._last_error = text
            self.logLine.emit(f"cannot read oban_jobs: {text}")
            self.message.emit(f"Qlarius workers: cannot read oban_jobs: {text}", True)

    def live_job(self, *, band_id: int | None = None, target_id: int | None = None):
        """The live job of this band (or target) the last poll saw, if any."""
        for job in self.last.jobs if self.last else ():
            if not job.active:
                continue
            if band_id is not None and job.worker == WORKER_BAND and job.band_id == band_id:
                return job
            if (
                target_id is not None
                and job.worker == WORKER_POPULATE
                and job.target_id == target_id
            ):
                return job
        return None

    # --- operations ---------------------------------------------------------------------------

    def _run(self, fn, done, what: str) -> None:
        if self.database is None or self.info is None:
            return
        gen = self._generation
        self.runner.run(
            f"oban-op {next(self._ops)}",
            fn,
            partial(self._op_done, gen, done),
            partial(self._op_failed, gen, what),
        )

    def _op_done(self, gen: int, done, result) -> None:
        if gen == self._generation:
            done(result)
            self.poll_now()

    def _op_failed(self, gen: int, what: str, text: str) -> None:
        if gen == self._generation:
            self.logLine.emit(f"{what}: {text}")
            self.message.emit(f"{what}: {text}", True)
            self.poll_now()

    def enqueue_bands(self, band_ids: list[int], label: str, *, confirmed: bool = False) -> None:
        """Snapshot jobs on the deprecated worker; unless confirmed, first ask for a sign that
        the application still runs it (confirmSnapshot is emitted when there is none)."""
        engine, info = self.database.engine, self.info
        self.logLine.emit(f"warning: {oban.DEPRECATED}")

        def enqueue() -> list[oban.Enqueued] | str:
            if not confirmed:
                doubt = oban_poll.snapshot_doubt(engine, info)
                if doubt:
                    return doubt
            return oban.enqueue_bands(engine, band_ids, info=info)

        def done(result) -> None:
            if isinstance(result, str):
                self.confirmSnapshot.emit(list(band_ids), label, result)
            else:
                self._enqueued(label, result)

        self._run(enqueue, done, f"{label}: not enqueued")

    def enqueue_refresh(self, target_id: int, label: str) -> None:
        engine, info = self.database.engine, self.info

        def enqueue() -> list[oban.Enqueued]:
            return [oban.enqueue_populate_or_follow(engine, target_id, info=info)]

        self._run(enqueue, partial(self._enqueued, label), f"{label}: not enqueued")

    def enqueue_backfill(self, label: str = "Backfill on Qlarius workers") -> None:
        """One BackfillMissingSnapshotsWorker job (or the live one), followed in the dock."""
        engine, info = self.database.engine, self.info
        self.logLine.emit(f"note: {oban.BACKFILL_SCOPE}")
        self._run(
            partial(oban.enqueue_backfill, engine, info=info),
            partial(self._enqueued, label),
            f"{label}: not enqueued",
        )

    def _enqueued(self, label: str, results: list[oban.Enqueued]) -> None:
        for r in results:
            self.session_ids.add(r.job_id)
            self.logLine.emit(r.line if r.refused else f"{r.line} on the Qlarius workers")
        made = [r for r in results if not r.refused]
        text = f"{label}: {len(made)} job{'s' * (len(made) != 1)} enqueued on Qlarius workers"
        if len(made) < len(results):
            text += f", {len(results) - len(made)} already queued"
        self.message.emit(text, False)
        self.dataChanged.emit()

    def retry(self, job_id: int) -> None:
        engine, info = self.database.engine, self.info
        self.session_ids.add(job_id)  # a job operated on here stays in the dock
        self._run(
            partial(oban.retry_job, engine, job_id, info=info),
            self._retried,
            f"Oban job {job_id} not retried",
        )

    def _retried(self, job: ObanJob) -> None:
        self.session_ids.add(job.id)
        text = f"job {job.id} ({job.subject}): retried, available (max attempts {job.max_attempts})"
        self.logLine.emit(text)
        self.message.emit(text, False)

    def cancel(self, job_id: int) -> None:
        engine, info = self.database.engine, self.info
        self.session_ids.add(job_id)
        self._run(
            partial(oban.cancel_job, engine, job_id, info=info),
            self._cancelled,
            f"Oban job {job_id} not cancelled",
        )

    def _cancelled(self, outcome: oban.CancelOutcome) -> None:
        self.logLine.emit(outcome.text)
        self.message.emit(outcome.text, False)
