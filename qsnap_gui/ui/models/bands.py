"""The selected target's bands: counts per snapshot shape and each band's latest job.

Population and missing arrive with the rows; the other shape columns show "…" until
:meth:`BandsModel.set_shape_counts` brings them (they are read in the background).
"""

from __future__ import annotations

from PySide6.QtCore import Qt

from qsnap_gui.domain.codec import SHAPES, Shape
from qsnap_gui.domain.shapes import shape_info
from qsnap_gui.engine.views import BandRow, ShapeCounts, with_shapes
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobInfo
from qsnap_gui.ui.models.base import (
    DISPLAY,
    ID_ROLE,
    JOB_ROLE,
    RIGHT,
    SORT_ROLE,
    Index,
    TableModel,
    bold,
)
from qsnap_gui.ui.models.jobs import job_text
from qsnap_gui.ui.palette import BULLSEYE_BG, DIM, STATE_COLORS, shape_color

FIRST_SHAPE = 4  # the first per-shape count column
COUNTING = "…"  # a shape count still being read


class BandsModel(TableModel):
    BAND, ID, GROUPS, POPULATION = range(4)
    FIRST_SHAPE = FIRST_SHAPE
    JOB = FIRST_SHAPE + len(SHAPES)
    COLUMNS = (
        "Band",
        "ID",
        "Trait groups",
        "Population",
        *(shape_info(s).label.replace(" ", "\n", 1) for s in SHAPES),  # narrow: two lines
        "Job",
    )
    TIPS = {
        GROUPS: "The band's trait groups; a me_file must satisfy every one",
        JOB: "The band's latest job in this session",
        **{FIRST_SHAPE + i: shape_info(s).tip for i, s in enumerate(SHAPES)},
    }

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
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

    def set_shape_counts(self, counts: dict[int, ShapeCounts]) -> None:
        """Fill the shape columns of the bands whose counts were read."""
        for row, band in enumerate(self._rows):
            if band.id in counts:
                self._rows[row] = with_shapes(band, counts[band.id])
                self.dataChanged.emit(
                    self.index(row, self.FIRST_SHAPE), self.index(row, self.JOB - 1)
                )

    def counting(self, band: BandRow, shape: Shape) -> bool:
        """Whether this cell waits for the background count (missing never does)."""
        return shape is not Shape.MISSING and not band.shapes_known

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
        b: BandRow | None = self.row_at(index)
        if b is None:
            return None
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
            return bold()
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
            if self.counting(b, shape):
                return -1 if sort else COUNTING
            n = b.missing if shape is Shape.MISSING else b.shapes.get(str(shape), 0)
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
            if self.counting(b, shape):
                return DIM
            if not (b.missing if shape is Shape.MISSING else b.shapes.get(str(shape), 0)):
                return DIM
            return None if shape is Shape.ENVELOPE else shape_color(shape)  # good needs no ink
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
        if shape is not None and self.counting(b, shape):
            return f"{shape_info(shape).tip}\nCounting in the background (reads every snapshot)…"
        return shape_info(shape).tip if shape is not None else None
