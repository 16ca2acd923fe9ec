"""The counts the window shows after its tables: the band table's per-shape counts, which
read every snapshot of a band, and the targets list's coverage.

The table shows population and missing at once (from indexes); the per-shape counts are read on
a thread of their own, so they never hold up the table or another read, once per band, and
kept until qsnap changes the band: a job of it ends, a refresh of its target applies its
membership or ends, a re-snapshot from the inspector. F5 (Reload) counts again by hand, for
changes made by others. A band already being counted is not asked for again: a count of a
million rows takes seconds, and a second request would only queue behind the first.

The targets list shows its populations first (the unique index alone); the NULL snapshots
behind its coverage are counted right after, on a thread of their own ("counting…" until
then), as most of them may have to be read from the table.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal, Slot
from sqlalchemy.engine import URL

from qsnap_gui.engine import views
from qsnap_gui.engine.views import BandRow, ShapeCounts
from qsnap_gui.ui.jobs import JobInfo
from qsnap_gui.ui.tasks import TaskRunner

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow


class TargetCoverage(QObject):
    """Counts the NULL snapshots of targets the list shows without coverage."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self.runner = TaskRunner(self, threads=1)
        window.targets_model.coverageWanted.connect(self.count)

    @Slot()
    def count(self) -> None:
        """A newer request voids an older one's result: it was read before the rows shown."""
        if self.w.database is not None:
            self.runner.run(
                "coverage",
                partial(views.target_missing, self.w.database),
                self._counted,
                self._failed,
            )

    def _counted(self, missing: dict[int, int]) -> None:
        self.w.targets_model.set_missing(missing)
        self.w.update_header()

    def _failed(self, message: str) -> None:
        self.w.statusBar().showMessage(f"Counting coverage failed: {message}", 10000)


class ShapeCountCache(QObject):
    """Per-band shape counts: cached, read in the background, forgotten when qsnap changes them."""

    counted = Signal(int)  # target id whose bands just got their counts  # noqa: N815

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self.runner = TaskRunner(self, threads=1)
        self.coverage = TargetCoverage(window)
        self._counts: dict[int, ShapeCounts] = {}
        self._target_of: dict[int, int] = {}
        self._generation: dict[int, int] = {}  # bumped when a band's counts go stale
        self._reading: dict[int, int] = {}  # band -> generation of the count in flight
        self._requests = 0

    def set_secret(self, secret: URL | None) -> None:
        self.runner.secret = secret
        self.coverage.runner.secret = secret

    def known(self, band_id: int) -> bool:
        """Whether the band's counts are cached (and shown without reading them again)."""
        return band_id in self._counts

    def counting(self, target_id: int) -> bool:
        return any(self._target_of.get(b) == target_id for b in self._reading)

    def fill(self, target_id: int, bands: list[BandRow]) -> list[BandRow]:
        """The bands with the counts known; the others are read in the background."""
        for b in bands:
            self._target_of[b.id] = target_id
        wanted = [
            b.id
            for b in bands
            if b.id not in self._counts and self._reading.get(b.id) != self._generation.get(b.id, 0)
        ]
        if wanted and self.w.database is not None:
            started = {b: self._generation.get(b, 0) for b in wanted}
            self._reading.update(started)
            self._requests += 1  # a key per request: a newer one must not void an older one
            self.runner.run(
                f"shapes-{target_id}-{self._requests}",
                partial(views.band_shape_counts, self.w.database, wanted),
                partial(self._loaded, target_id, started),
                partial(self._failed, started),
            )
        return [
            views.with_shapes(b, self._counts[b.id]) if b.id in self._counts else b for b in bands
        ]

    def forget(self, band_ids: list[int]) -> None:
        for band_id in band_ids:
            self._counts.pop(band_id, None)
            self._generation[band_id] = self._generation.get(band_id, 0) + 1

    @Slot(int)
    def forget_target(self, target_id: int) -> None:
        self.forget([b for b, t in self._target_of.items() if t == target_id])

    @Slot()
    def forget_all(self) -> None:
        self.forget(list(self._target_of))

    @Slot(int)
    def membership_applied(self, target_id: int) -> None:
        """A refresh changed the target's rows: its bands' counts are wrong from now on, not
        only once the refresh ends."""
        self.forget_target(target_id)

    def job_ended(self, info: JobInfo) -> None:
        """A band job that wrote rows has its band counted again; a refresh, its target's
        bands; a backfill, every band."""
        if info.band_id is not None:
            if info.rows_written:
                self.forget([info.band_id])
        elif info.target_id is not None:
            self.forget_target(info.target_id)
        else:
            self.forget_all()

    def _settle(self, started: dict[int, int]) -> None:
        for band_id, generation in started.items():
            if self._reading.get(band_id) == generation:
                del self._reading[band_id]

    def _loaded(self, target_id: int, started: dict[int, int], counts: dict[int, ShapeCounts]):
        """Keep the counts of the bands nothing changed while they were read; show them."""
        self._settle(started)
        fresh = {b: c for b, c in counts.items() if self._generation.get(b, 0) == started[b]}
        self._counts.update(fresh)
        model = self.w.bands_model
        if fresh and model.target_id == target_id:
            model.set_shape_counts(fresh)
        self.counted.emit(target_id)
        if len(fresh) < len(counts) and model.target_id == target_id:
            self.fill(target_id, model.bands())

    def _failed(self, started: dict[int, int], message: str) -> None:
        self._settle(started)
        self.w.statusBar().showMessage(f"Counting snapshot shapes failed: {message}", 10000)
