"""Page 4: rows fixed per band and category, counted again after each job; Retry failed and
Save report as CSV."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from qsnap_gui.domain.jobs import JobState
from qsnap_gui.domain.shapes import Colour
from qsnap_gui.engine import backfill
from qsnap_gui.engine.backfill import CATEGORIES, BandOutcome, Category
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.backfill.common import note
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.models.base import RIGHT
from qsnap_gui.ui.models.scan import count_cell
from qsnap_gui.ui.palette import GREEN, RED
from qsnap_gui.ui.settings import remember_save_folder, save_path

if TYPE_CHECKING:
    from qsnap_gui.ui.backfill.wizard import BackfillWizard


class SummaryPage(QWizardPage):
    COLUMNS = [
        "Target",
        "Band",
        "Mode",
        "Result",
        "Missing fixed",
        "Broken fixed",
        "Stale fixed",
        "Still to fix",
        "Time",
        "Error",
    ]
    WIDTHS = (160, 124, 60, 100, 100, 96, 86, 84, 56)

    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Summary")
        self.setSubTitle("Rows fixed per band and category, counted again after each job.")
        self.headline = QLabel()
        self.headline.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column, width in enumerate(self.WIDTHS):
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.note = note()
        self.retry_button = QPushButton(icon("state-retrying"), "Retry failed")
        self.retry_button.clicked.connect(self.wiz.retry_failed)
        self.save_button = QPushButton("Save report as CSV…")
        self.save_button.clicked.connect(self._save_clicked)
        self.saved = note()
        buttons = QHBoxLayout()
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.saved, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.note)
        layout.addLayout(buttons)

    def outcomes(self) -> list[BandOutcome]:
        """In the scan's order (the order the jobs were submitted)."""
        outcomes = self.wiz.outcomes
        return [outcomes[b] for b in self.wiz.run_page.band_job if b in outcomes]

    def initializePage(self) -> None:
        outcomes = self.outcomes()
        self._fill_table(outcomes)
        failed = [o for o in outcomes if o.failed]
        self.headline.setText(self._headline(outcomes, failed))
        self.note.setText("<br>".join(_notes(outcomes, failed)))
        self.retry_button.setEnabled(bool(failed))
        self.saved.setText("")

    def _fill_table(self, outcomes: list[BandOutcome]) -> None:
        self.table.setSortingEnabled(False)
        self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.table.setRowCount(len(outcomes))
        for r, o in enumerate(outcomes):
            for c, (text, key) in enumerate(_cells(o)):
                item = _SortItem(text, key)
                if 4 <= c <= 8:
                    item.setTextAlignment(RIGHT)
                if c == 3:
                    color = GREEN if o.state is JobState.SUCCEEDED else RED
                    item.setForeground(color)
                    item.setIcon(icon(f"state-{o.state.value}"))
                if c == 0:
                    item.setToolTip(f"{o.before.target_title} (target {o.before.target_id})")
                if c == 9 and o.error:
                    item.setToolTip(o.error)
                    item.setForeground(RED)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)

    def _headline(self, outcomes: list[BandOutcome], failed: list[BandOutcome]) -> str:
        fixed = {c: sum(o.fixed(c) or 0 for o in outcomes) for c in CATEGORIES}
        wall = self.wiz.run_page.wall_seconds
        parts = ", ".join(
            f"{fmt.count(v)} {c.value}" for c, v in fixed.items() if c in self._counted()
        )
        text = (
            f"<b>{len(outcomes) - len(failed)} of {len(outcomes)} bands succeeded</b>: "
            f"{fmt.count(sum(fixed.values()))} rows fixed ({parts})"
            + (f" in {fmt.duration(wall)}." if wall is not None else ".")
        )
        if failed:
            text += (
                f" <span style='color:{Colour.RED}'><b>{len(failed)} failed or cancelled</b>: "
                "their data stays valid; Retry failed runs them again.</span>"
            )
        return text

    def _counted(self) -> frozenset[Category]:
        result = self.wiz.scan_page.result
        return result.include if result else frozenset(CATEGORIES)

    def save_report(self, path: str) -> None:
        backfill.report_csv(self.outcomes(), path)
        self.saved.setText(f"Saved {path}")

    @Slot()
    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save backfill report", save_path("backfill-report.csv"), "CSV files (*.csv)"
        )
        if not path:
            return
        try:
            self.save_report(path)
        except OSError as exc:
            QMessageBox.warning(self, "Save report", f"Could not save the report:\n{exc}")
            return
        remember_save_folder(path)


def _cells(o: BandOutcome) -> list[tuple[str, object]]:
    """(text, sort key) per column of one band's row."""
    remaining = [o.remaining(c) for c in CATEGORIES]
    still = None if o.after is None else sum(v or 0 for v in remaining)
    mode = o.mode.value if o.mode else ""
    return [
        (o.before.target_title, o.before.target_title),
        (f"{o.before.label} (band {o.band_id})", o.band_id),
        (mode, mode),
        (str(o.state), str(o.state)),
        *((count_cell(o.fixed(c)), o.fixed(c) or 0) for c in CATEGORIES),
        ("?" if still is None else fmt.count(still), still or 0),
        (fmt.duration(o.duration), o.duration),
        (o.error or "", o.error or ""),
    ]


def _notes(outcomes: list[BandOutcome], failed: list[BandOutcome]) -> list[str]:
    """The failures (first five), force mode's same-value rewrites, and what is left to fix."""
    notes = [
        f"<span style='color:{Colour.RED}'>{escape(o.before.target_title)} · "
        f"{escape(o.before.label)} (band {o.band_id}) {o.state}: "
        f"{escape(o.error or 'no error reported')}</span>"
        for o in failed[:5]
    ]
    if len(failed) > 5:
        notes.append(f"… and {len(failed) - 5} more (see the Error column).")
    unchanged = sum(o.rewritten_unchanged for o in outcomes)
    if unchanged:
        notes.append(
            f"Force mode also rewrote {fmt.count(unchanged)} current snapshots with the same "
            "value (new updated_at)."
        )
    still = sum(
        sum(o.remaining(c) or 0 for c in CATEGORIES) for o in outcomes if o.after is not None
    )
    if still:
        notes.append(
            f"{fmt.count(still)} rows still need fixing: rows of failed or cancelled bands, "
            "rows added meanwhile, or tags with blank values that rebuild as null values."
        )
    return notes


class _SortItem(QTableWidgetItem):
    """A cell that sorts by a key (numbers as numbers) and shows its text."""

    def __init__(self, text: str, key) -> None:
        super().__init__(text)
        self.key = key

    def __lt__(self, other: QTableWidgetItem) -> bool:
        key = getattr(other, "key", None)
        try:
            return self.key < key
        except TypeError:
            return str(self.key) < str(key)
