"""The Refresh Population confirmation: what the refresh would change, computed in the
background (read-only) while the operator decides; Refresh or Cancel either way."""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from qsnap_gui.domain.jobs import CancelFlag
from qsnap_gui.engine.preview import RefreshPreview, refresh_preview
from qsnap_gui.store.db import Database
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.tasks import TaskRunner

COLUMNS = (
    ("Band", "the band, as the application labels it"),
    ("Now", "its populations now"),
    ("Kept", "pairs that stay: left untouched, their snapshots too"),
    ("Added", "new pairs (moved in included): snapshotted by the refresh"),
    ("Removed", "pairs that go (moved out included)"),
    ("Moved in", "me_files coming from another band of the target"),
    ("Moved out", "me_files leaving for another band of the target"),
    ("After", "its populations after the refresh"),
    ("Stale kept", "kept rows whose snapshot differs from their tags now (a refresh keeps it)"),
    ("Offers left", "offers pointing at a (me_file, band) that will not exist afterwards"),
)


class RefreshPreviewDialog(QDialog):
    """Asks before a Refresh Population, showing its preview once computed.

    ``accepted`` means "refresh"; ``inspect_requested`` carries a moved me_file the operator
    double-clicked. Closing the dialog stops the preview's statement on the server.
    """

    inspect_requested = Signal(int)

    def __init__(
        self,
        database: Database,
        target_id: int,
        title: str,
        runner: TaskRunner,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("refreshPreview")
        self.setWindowTitle("Refresh Population")
        self.setWindowIcon(icon("refresh-population"))
        self.target_id = target_id
        self.preview: RefreshPreview | None = None
        self._cancel = CancelFlag()
        self._closed = False  # the preview may arrive after the dialog is gone

        self.question = QLabel(
            f"This will recalculate populations for all bands of {title}. Continue?"
        )
        self.question.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(6)
        self.status = QLabel("Computing preview… (read-only: nothing is written)")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("previewTable")
        for n, (name, tip) in enumerate(COLUMNS):
            item = QTableWidgetItem(name)
            item.setToolTip(tip)
            self.table.setHorizontalHeaderItem(n, item)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.moves = QLabel()
        self.moves.setWordWrap(True)
        self.sample_label = QLabel("Moved me_files (double-click to inspect):")
        self.sample = QListWidget()
        self.sample.setObjectName("movedSample")
        self.sample.setMaximumHeight(140)
        self.sample.itemDoubleClicked.connect(self._inspect)
        for w in (self.table, self.moves, self.sample_label, self.sample):
            w.hide()

        buttons = QDialogButtonBox()
        self.refresh_button = QPushButton(icon("refresh-population"), "Refresh")
        self.refresh_button.setDefault(True)
        buttons.addButton(self.refresh_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(self.question)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        layout.addLayout(status_row)
        layout.addWidget(self.busy)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.moves)
        layout.addWidget(self.sample_label)
        layout.addWidget(self.sample)
        layout.addWidget(buttons)
        self.resize(900, 260)

        self._database = database
        self._runner = runner
        self._run(stale=False)

    def _run(self, *, stale: bool) -> None:
        """Counts first (about the cost of the refresh's membership step), then again with
        the stale check, which builds every kept snapshot and takes longer."""
        self._runner.run(
            f"refresh-preview-{self.target_id}-{'stale' if stale else 'counts'}",
            partial(refresh_preview, self._database, self.target_id, self._cancel, stale=stale),
            self._show,
            self._failed if not stale else self._stale_failed,
        )

    def done(self, result: int) -> None:
        self._closed = True
        self._cancel.cancel()
        super().done(result)

    def _show(self, preview: RefreshPreview) -> None:
        if self._closed:
            return
        self.preview = preview
        if not preview.bands:
            self.busy.hide()
            self.status.setText("This target has no bands: a refresh populates nothing.")
            return
        self.status.setText(self._summary(preview))
        if preview.stale_checked:
            self.busy.hide()
        else:
            self.status.setText(f"{self.status.text()} Checking the kept snapshots for staleness…")
            self._run(stale=True)
        self.table.setRowCount(len(preview.bands))
        for row, b in enumerate(preview.bands):
            offers = "–" if b.offers_left is None else fmt.count(b.offers_left)
            values = [
                f"{b.label} ({b.band_id})",
                fmt.count(b.before),
                fmt.count(b.kept),
                fmt.count(b.added),
                fmt.count(b.removed),
                fmt.count(b.moved_in),
                fmt.count(b.moved_out),
                fmt.count(b.after),
                "…" if b.stale is None else fmt.count(b.stale),
                offers,
            ]
            for col, value in enumerate(values):
                item = QTableWidgetItem(value)
                if col:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(row, col, item)
            if b.offers_by_refresh:
                self.table.item(row, len(values) - 1).setToolTip(
                    f"{fmt.count(b.offers_by_refresh)} of them because of this refresh"
                )
        self.table.show()
        # the whole table shows, without scroll bars: a few bands, ten columns
        self.table.resizeColumnsToContents()
        frame = 2 * self.table.frameWidth()
        width = sum(self.table.columnWidth(c) for c in range(self.table.columnCount()))
        self.table.setMinimumWidth(width + frame + 24)
        height = self.table.horizontalHeader().sizeHint().height() + frame + 2
        height += sum(self.table.rowHeight(r) for r in range(self.table.rowCount()))
        self.table.setFixedHeight(height)
        if preview.moves:
            self.moves.setText(
                "Moves: "
                + ", ".join(
                    f"{preview.label(m.from_band)} → {preview.label(m.to_band)}: "
                    f"{fmt.count(m.count)}"
                    for m in preview.moves
                )
            )
            self.moves.show()
        self.sample.clear()
        if preview.sample:
            for s in preview.sample:
                item = QListWidgetItem(
                    f"me_file {s.me_file_id}: {preview.label(s.from_band)} → "
                    f"{preview.label(s.to_band)}"
                )
                item.setData(Qt.ItemDataRole.UserRole, s.me_file_id)
                self.sample.addItem(item)
            self.sample_label.show()
            self.sample.show()
        self.adjustSize()

    @staticmethod
    def _summary(p: RefreshPreview) -> str:
        if not p.changes:
            text = f"No change: all {fmt.count(p.kept)} populations stay where they are."
        else:
            text = (
                f"{fmt.count(p.kept)} kept, {fmt.count(p.added)} added, "
                f"{fmt.count(p.removed)} removed; {fmt.count(p.moved)} me_files change band."
            )
        stale = p.stale
        if stale:
            text += f" {fmt.count(stale)} kept snapshots are stale (a refresh keeps them)."
        return text

    def _failed(self, message: str) -> None:
        if self._closed:
            return
        self.busy.hide()
        self.status.setProperty("kind", "error")
        self.status.setStyleSheet("color: #b3261e")
        self.status.setText(f"{message} (you may still refresh)")

    def _stale_failed(self, message: str) -> None:
        if self._closed:
            return
        self.busy.hide()
        assert self.preview is not None
        self.status.setText(f"{self._summary(self.preview)} The stale check failed: {message}")

    @Slot(QListWidgetItem)
    def _inspect(self, item: QListWidgetItem) -> None:
        self.inspect_requested.emit(int(item.data(Qt.ItemDataRole.UserRole)))
