"""The Jobs dock's table, and a job's state in one line as the band rows show it."""

from __future__ import annotations

import time

from PySide6.QtCore import QModelIndex, Qt

from qsnap_gui.domain.jobs import JobState
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobInfo, JobKind
from qsnap_gui.ui.models.base import DISPLAY, ID_ROLE, JOB_ROLE, RIGHT, Index, TableModel
from qsnap_gui.ui.palette import RED, STATE_COLORS


def job_text(info: JobInfo) -> str:
    """A job's state in one line, as a band row and the status bar show it."""
    state = info.state
    if state is JobState.QUEUED:
        return "queued"
    if state is JobState.WAITING:
        note = info.note or "band busy in another session"
        return note if note.startswith("waiting") else f"waiting: {note}"
    if state is JobState.RUNNING and info.rows_total:
        parts = [
            f"{fmt.count(info.rows_done)} / {fmt.count(info.rows_total)}",
            f"batch {info.batch} of {info.batches}",
        ]
        if info.rate:
            parts.append(fmt.rate(info.rate))
        if info.eta is not None:
            parts.append(f"{fmt.duration(info.eta)} left")
        return " · ".join(parts)
    if state is JobState.RUNNING:
        again = f" (attempt {info.attempt} of {info.max_attempts})" if info.attempt > 1 else ""
        return f"computing snapshots…{again}"
    if state is JobState.RETRYING:
        return f"retrying: attempt {info.attempt} of {info.max_attempts}"
    if state is JobState.SUCCEEDED:
        return f"done · {fmt.count(info.rows_written)} rows in {fmt.duration(info.elapsed)}"
    if state is JobState.FAILED:
        return f"failed after {info.attempt} of {info.max_attempts} attempts"
    return f"cancelled · {fmt.count(info.rows_written)} rows kept"


class JobsModel(TableModel):
    COLUMNS = ("#", "Kind", "Target / band", "State", "Attempt", "Rows", "Elapsed", "Last error")
    NUMBER, KIND, LABEL, STATE, ATTEMPT, ROWS, ELAPSED, ERROR = range(8)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._row_of: dict[int, int] = {}

    def clear(self) -> None:
        self._row_of.clear()
        self._replace([], False)

    def info(self, row: int) -> JobInfo | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def update(self, info: JobInfo) -> None:
        row = self._row_of.get(info.id)
        if row is None:
            row = len(self._rows)
            self.beginInsertRows(QModelIndex(), row, row)
            self._rows.append(info)
            self._row_of[info.id] = row
            self.endInsertRows()
            return
        self._rows[row] = info
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

    def tick(self) -> None:
        """Live elapsed times of the running jobs."""
        for row, info in enumerate(self._rows):
            if info.active and info.started is not None:
                cell = self.index(row, self.ELAPSED)
                self.dataChanged.emit(cell, cell)

    def data(self, index: Index, role: int = DISPLAY):
        info: JobInfo | None = self.row_at(index)
        if info is None:
            return None
        col = index.column()
        if role == DISPLAY:
            return self._display(info, col)
        if role == ID_ROLE:
            return info.id
        if role == JOB_ROLE and col == self.ROWS:
            return info
        if role == Qt.ItemDataRole.DecorationRole and col == self.STATE:
            return icon(f"state-{info.state}")
        if role == Qt.ItemDataRole.ForegroundRole and col in (self.STATE, self.ERROR):
            return STATE_COLORS[info.state] if col == self.STATE else RED
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (
            self.NUMBER,
            self.ATTEMPT,
            self.ELAPSED,
        ):
            return RIGHT
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.ERROR and info.error:
                return info.error
            if col == self.LABEL:
                band = f", band {info.band_id}" if info.band_id is not None else ""
                return f"target {info.target_id}{band}"
        return None

    def _display(self, info: JobInfo, col: int) -> str:
        if col == self.NUMBER:
            return str(info.id)
        if col == self.KIND:
            return str(info.kind) if info.kind is JobKind.REFRESH else f"snapshot ({info.mode})"
        if col == self.LABEL:
            return info.label
        if col == self.STATE:
            return str(info.state)
        if col == self.ATTEMPT:
            if info.kind is JobKind.REFRESH:
                return "—"
            return f"{info.attempt} of {info.max_attempts}"
        if col == self.ROWS:
            return f"{fmt.count(info.rows_done)} / {fmt.count(info.rows_total)}"
        if col == self.ELAPSED:
            if info.active and info.started is not None:
                return fmt.duration(time.time() - info.started)
            return fmt.duration(info.elapsed) if info.started is not None else ""
        return info.error or ""
