"""Item models over the core's plain rows: targets, the selected target's bands, the jobs."""

from __future__ import annotations

import time

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QFont

from qsnap_gui.domain.codec import SHAPES, Shape
from qsnap_gui.engine.snapshots import JobState
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.store.queries import BandRow
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobInfo, JobKind

SORT_ROLE = Qt.ItemDataRole.UserRole
ID_ROLE = Qt.ItemDataRole.UserRole + 1
COVERAGE_ROLE = Qt.ItemDataRole.UserRole + 2
JOB_ROLE = Qt.ItemDataRole.UserRole + 3

DISPLAY = Qt.ItemDataRole.DisplayRole
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
Index = QModelIndex | QPersistentModelIndex

DIM = QColor("#94a3b8")
STUCK_BG = QColor("#fde8e8")
STUCK_FG = QColor("#b91c1c")
BLUE = QColor("#1d4ed8")
AMBER = QColor("#b45309")
GREEN = QColor("#15803d")
BULLSEYE_BG = QColor("#fff7e0")

SHAPE_TITLES = {
    Shape.MISSING: "Missing",
    Shape.ENVELOPE: "Envelope",
    Shape.BARE_ARRAY: "Bare array",
    Shape.LEGACY_FLAT: "Legacy flat",
    Shape.EMPTY_OBJECT: "Empty {}",
    Shape.NULL_VALUES: "Null values",
    Shape.INVALID: "Invalid",
}
SHAPE_TIPS = {
    Shape.MISSING: "NULL: never snapshotted; a missing-mode snapshot fills it",
    Shape.ENVELOPE: 'The current form, {"tags": [...]}, well formed',
    Shape.BARE_ARRAY: "The nested arrays without the envelope: readable, repair rewrites it",
    Shape.LEGACY_FLAT: "An old writer's flat list without values: repair rebuilds it",
    Shape.EMPTY_OBJECT: "{}: looks filled but says nothing; repair rebuilds it",
    Shape.NULL_VALUES: "A tag value is null or empty (seen on zip codes): repair rebuilds it",
    Shape.INVALID: "None of the known shapes: repair rebuilds it",
}
STATE_COLORS = {
    JobState.QUEUED: DIM,
    JobState.WAITING: AMBER,
    JobState.RUNNING: BLUE,
    JobState.RETRYING: AMBER,
    JobState.SUCCEEDED: GREEN,
    JobState.FAILED: STUCK_FG,
    JobState.CANCELLED: QColor("#64748b"),
}


def _bold() -> QFont:
    font = QFont()
    font.setBold(True)
    return font


def status_text(target: TargetRow) -> str:
    return "stuck" if target.stuck else target.population_status.replace("_", " ")


def job_text(info: JobInfo) -> str:
    """A job's state in one line, as a band row and the status bar show it."""
    state = info.state
    if state is JobState.QUEUED:
        return "queued"
    if state is JobState.WAITING:
        return "waiting: band busy in another session"
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


class TableModel(QAbstractTableModel):
    COLUMNS: tuple[str, ...] = ()
    TIPS: dict[int, str] = {}

    def rowCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY):
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.COLUMNS):
            return None
        if role == DISPLAY:
            return self.COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.TIPS.get(section)
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return (
            Qt.ItemFlag.ItemIsEnabled
            | Qt.ItemFlag.ItemIsSelectable
            | Qt.ItemFlag.ItemNeverHasChildren
        )

    def _replace(self, rows: list, same: bool) -> None:
        """Same rows in the same order: update in place so selection and scroll survive."""
        if same and rows:
            self._rows = rows
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(rows) - 1, len(self.COLUMNS) - 1)
            )
            return
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()


class TargetsModel(TableModel):
    COLUMNS = ("ID", "Title", "Status", "Last populated (UTC)", "Population", "Coverage")
    ID, TITLE, STATUS, LAST, POPULATION, COVERAGE = range(6)
    TIPS = {
        COVERAGE: "Share of populations holding a well-formed snapshot envelope",
        STATUS: "Stuck: left in 'populating' with no job running",
    }

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[TargetRow] = []

    def set_rows(self, rows: list[TargetRow]) -> None:
        self._replace(list(rows), [r.id for r in rows] == [r.id for r in self._rows])

    def target(self, target_id: int | None) -> TargetRow | None:
        return next((t for t in self._rows if t.id == target_id), None)

    def row_of(self, target_id: int) -> int | None:
        return next((i for i, t in enumerate(self._rows) if t.id == target_id), None)

    def data(self, index: Index, role: int = DISPLAY):
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        t = self._rows[index.row()]
        col = index.column()
        if role == DISPLAY:
            return self._display(t, col)
        if role == SORT_ROLE:
            return self._sort_key(t, col)
        if role == ID_ROLE:
            return t.id
        if role == COVERAGE_ROLE and col == self.COVERAGE:
            return t.coverage if t.population else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.ID, self.POPULATION):
            return RIGHT
        if role == Qt.ItemDataRole.DecorationRole and col == self.STATUS:
            return icon("stuck" if t.stuck else t.population_status.replace("_", "-"))
        if role == Qt.ItemDataRole.BackgroundRole and t.stuck:
            return STUCK_BG
        if role == Qt.ItemDataRole.ForegroundRole and col == self.STATUS:
            if t.stuck:
                return STUCK_FG
            return {"populating": BLUE, "not_populated": DIM}.get(t.population_status)
        if role == Qt.ItemDataRole.FontRole and t.stuck and col in (self.TITLE, self.STATUS):
            return _bold()
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(t, col)
        return None

    def _display(self, t: TargetRow, col: int) -> str:
        if col == self.ID:
            return str(t.id)
        if col == self.TITLE:
            return t.title
        if col == self.STATUS:
            return status_text(t)
        if col == self.LAST:
            return fmt.when(t.last_populated_at)
        if col == self.POPULATION:
            return fmt.count(t.population)
        return fmt.percent(t.coverage) if t.population else "—"

    def _sort_key(self, t: TargetRow, col: int):
        if col == self.ID:
            return t.id
        if col == self.TITLE:
            return t.title.casefold()
        if col == self.STATUS:
            return status_text(t)
        if col == self.LAST:
            return t.last_populated_at.timestamp() if t.last_populated_at else 0.0
        if col == self.POPULATION:
            return t.population
        return t.coverage if t.population else -1.0

    def _tooltip(self, t: TargetRow, col: int) -> str | None:
        if col == self.STATUS and t.stuck:
            return (
                "Left in 'populating' with no job running: qsnap was stopped mid-way.\n"
                "Resume it to finish the snapshot stage and mark it populated."
            )
        if col == self.COVERAGE and t.population:
            return (
                f"{fmt.count(t.good)} of {fmt.count(t.population)} rows hold a good envelope; "
                f"{fmt.count(t.missing)} never snapshotted"
            )
        if col == self.TITLE:
            return f"Target {t.id}: {t.title}"
        return None


class TargetsProxy(QSortFilterProxyModel):
    """Filters on every column's text, sorts on raw values."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setFilterKeyColumn(-1)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)


_FIRST_SHAPE = 4  # bands table: the first per-shape count column


class BandsModel(TableModel):
    BAND, ID, GROUPS, POPULATION = range(4)
    FIRST_SHAPE = _FIRST_SHAPE
    JOB = FIRST_SHAPE + len(SHAPES)
    COLUMNS = (
        "Band",
        "ID",
        "Trait groups",
        "Population",
        *(SHAPE_TITLES[s] for s in SHAPES),
        "Job",
    )
    TIPS = {
        GROUPS: "The band's trait groups; a me_file must satisfy every one",
        JOB: "The band's latest job in this session",
        **{_FIRST_SHAPE + i: SHAPE_TIPS[s] for i, s in enumerate(SHAPES)},
    }

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[BandRow] = []
        self._jobs: dict[int, JobInfo] = {}
        self.target_id: int | None = None

    def set_bands(self, target_id: int, bands: list[BandRow]) -> None:
        same = target_id == self.target_id and [b.id for b in bands] == [b.id for b in self._rows]
        if target_id != self.target_id:
            self._jobs.clear()
        self.target_id = target_id
        self._replace(list(bands), same)

    def clear(self) -> None:
        self.target_id = None
        self._jobs.clear()
        self._replace([], False)

    def bands(self) -> list[BandRow]:
        return list(self._rows)

    def job_for(self, band_id: int) -> JobInfo | None:
        return self._jobs.get(band_id)

    def set_job(self, info: JobInfo) -> None:
        """Show the band's latest job; an older job's late news never replaces a newer one."""
        current = self._jobs.get(info.band_id)
        if current is not None and current.id > info.id:
            return
        self._jobs[info.band_id] = info
        for row, band in enumerate(self._rows):
            if band.id == info.band_id:
                cell = self.index(row, self.JOB)
                self.dataChanged.emit(cell, cell)

    def data(self, index: Index, role: int = DISPLAY):
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        b = self._rows[index.row()]
        col = index.column()
        job = self._jobs.get(b.id)
        if role in (DISPLAY, SORT_ROLE):
            return self._display(b, col, job, sort=role == SORT_ROLE)
        if role == ID_ROLE:
            return b.id
        if role == JOB_ROLE and col == self.JOB:
            return job
        if (
            role == Qt.ItemDataRole.TextAlignmentRole
            and self.ID <= col < self.JOB
            and col != self.GROUPS
        ):
            return RIGHT
        if role == Qt.ItemDataRole.DecorationRole:
            if col == self.BAND:
                return icon("bullseye" if b.is_bullseye else "ring")
            if col == self.JOB and job is not None and not job.active:
                return icon(f"state-{job.state}")
        if role == Qt.ItemDataRole.FontRole and b.is_bullseye and col == self.BAND:
            return _bold()
        if role == Qt.ItemDataRole.BackgroundRole and b.is_bullseye:
            return BULLSEYE_BG
        if role == Qt.ItemDataRole.ForegroundRole:
            return self._foreground(b, col, job)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(b, col, job)
        return None

    def _shape(self, col: int) -> Shape | None:
        return SHAPES[col - self.FIRST_SHAPE] if self.FIRST_SHAPE <= col < self.JOB else None

    def _display(self, b: BandRow, col: int, job: JobInfo | None, *, sort: bool):
        shape = self._shape(col)
        if shape is not None:
            n = b.shapes.get(str(shape), 0)
            return n if sort else fmt.count(n)
        if col == self.BAND:
            return b.label
        if col == self.ID:
            return b.id if sort else str(b.id)
        if col == self.GROUPS:
            return "; ".join(g.title for g in b.groups) if b.groups else "(no trait groups)"
        if col == self.POPULATION:
            return b.population if sort else fmt.count(b.population)
        return job_text(job) if job else ""

    def _foreground(self, b: BandRow, col: int, job: JobInfo | None):
        shape = self._shape(col)
        if shape is not None:
            if not b.shapes.get(str(shape), 0):
                return DIM
            if shape is Shape.MISSING:
                return BLUE
            return None if shape is Shape.ENVELOPE else AMBER
        if col == self.JOB and job is not None:
            return STATE_COLORS[job.state]
        if col == self.GROUPS and not b.groups:
            return DIM
        return None

    def _tooltip(self, b: BandRow, col: int, job: JobInfo | None) -> str | None:
        if col == self.BAND:
            title = f" ({b.title})" if b.title and b.title != b.label else ""
            return f"{b.label}{title}: band {b.id}, {len(b.groups)} trait groups"
        if col == self.GROUPS:
            return "\n".join(f"{g.title} (group {g.id})" for g in b.groups) or None
        if col == self.JOB and job is not None:
            return f"{job.label}: {job.state}" + (f"\n{job.error}" if job.error else "")
        shape = self._shape(col)
        return SHAPE_TIPS[shape] if shape is not None else None


class JobsModel(TableModel):
    COLUMNS = ("#", "Kind", "Target / band", "State", "Attempt", "Rows", "Elapsed", "Last error")
    NUMBER, KIND, LABEL, STATE, ATTEMPT, ROWS, ELAPSED, ERROR = range(8)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[JobInfo] = []
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
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        info = self._rows[index.row()]
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
            return STATE_COLORS[info.state] if col == self.STATE else STUCK_FG
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
