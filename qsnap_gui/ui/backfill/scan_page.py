"""Page 2: count, in the database, the snapshots to fix in every band of the chosen targets;
a sortable table with a checkbox per band and an estimate of the run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QSortFilterProxyModel, Qt, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWizard,
    QWizardPage,
)

from qsnap_gui.engine import backfill
from qsnap_gui.engine.backfill import CATEGORIES, BandPlan, Category, ScanResult
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.backfill.common import note
from qsnap_gui.ui.backfill.work import Scanner
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.models.base import SORT_ROLE
from qsnap_gui.ui.models.scan import BAND_ROLE, ScanModel

if TYPE_CHECKING:
    from qsnap_gui.ui.backfill.wizard import BackfillWizard


class ScanPage(QWizardPage):
    def __init__(self, wizard: BackfillWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Scan")
        self.setSubTitle(
            "Counting, in the database, the snapshots to fix in every band of the chosen targets. "
            "Uncheck the bands to leave alone."
        )
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Run backfill")
        self.result: ScanResult | None = None
        self.scanner = Scanner(wizard.database, self)
        self.scanner.progress.connect(self._on_progress)
        self.scanner.finished.connect(self._on_finished)
        self.scanner.cancelled.connect(self._on_cancelled)
        self.scanner.failed.connect(self._on_failed)

        self.status = QLabel()
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton(icon("cancel"), "Cancel scan")
        self.cancel_button.clicked.connect(self.cancel_scan)
        self.rescan_button = QPushButton(icon("reload"), "Scan again")
        self.rescan_button.clicked.connect(self.start_scan)
        self.rescan_button.hide()
        top = QHBoxLayout()
        top.addWidget(self.progress, 1)
        top.addWidget(self.cancel_button)
        top.addWidget(self.rescan_button)

        self.model = ScanModel(self)
        self.model.checksChanged.connect(self._checks_changed)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAlternatingRowColors(True)
        self.view.setShowGrid(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(26)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

        self.check_all = QPushButton("Check all")
        self.check_all.clicked.connect(lambda: self.model.set_all(True))
        self.check_none = QPushButton("Uncheck all")
        self.check_none.clicked.connect(lambda: self.model.set_all(False))
        self.totals = QLabel()
        self.totals.setWordWrap(True)
        self.estimate = note()
        self.blocked = note(name="dialogError")
        bottom = QHBoxLayout()
        bottom.addWidget(self.totals, 1)
        bottom.addWidget(self.check_all)
        bottom.addWidget(self.check_none)

        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.estimate)
        layout.addWidget(self.blocked)

    # --- scanning ---------------------------------------------------------------------------

    @property
    def scanning(self) -> bool:
        return self.scanner.scanning

    def initializePage(self) -> None:
        self.start_scan()

    def cleanupPage(self) -> None:
        """Back to the scope: stop a scan in flight, forget the result."""
        self.cancel_scan()
        self._show_result(None)

    @Slot()
    def start_scan(self) -> None:
        self._show_result(None)
        include = self.wiz.scope_page.chosen_categories()
        names = ", ".join(c.value for c in CATEGORIES if c in include)
        slow = " (with the deep stale check: slower)" if Category.STALE in include else ""
        self.status.setText(f"Scanning for {names} snapshots{slow}…")
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.cancel_button.show()
        self.rescan_button.hide()
        self.scanner.start(self.wiz.scope_page.chosen_target_ids(), include)
        self.completeChanged.emit()

    @Slot()
    def cancel_scan(self) -> None:
        if self.scanner.cancel():
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling the scan…")

    def wait(self, timeout_ms: int = 10000) -> bool:
        """Until the latest scan has ended (cancel it first to make that quick)."""
        return self.scanner.wait(timeout_ms)

    def _ended(self, value: int, text: str, status: str) -> None:
        self.cancel_button.hide()
        self.rescan_button.show()
        self.progress.setRange(0, 1)
        self.progress.setValue(value)
        self.progress.setFormat(text)
        self.status.setText(status)

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if total <= 0:
            return
        scale = max(1, total // 1_000_000 + 1)  # keep within a QProgressBar's int range
        self.progress.setRange(0, total // scale)
        self.progress.setValue(done // scale)
        self.progress.setFormat(f"%p %  {message}")

    @Slot(object)
    def _on_finished(self, result: ScanResult) -> None:
        self._ended(
            1, "done", f"Scanned {len(result.rows)} bands in {fmt.duration(result.seconds)}."
        )
        self._show_result(result)

    @Slot()
    def _on_cancelled(self) -> None:
        self._ended(0, "cancelled", "Scan cancelled. Nothing was changed.")

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._ended(0, "failed", f"The scan failed: {message}")

    def _show_result(self, result: ScanResult | None) -> None:
        self.result = result
        plans = backfill.plan(result) if result else []
        self.model.set_scan(result, plans)
        self.view.setEnabled(result is not None)
        self.check_all.setEnabled(bool(plans))
        self.check_none.setEnabled(bool(plans))
        self.view.resizeColumnsToContents()
        self._checks_changed()

    # --- selection, totals, estimate --------------------------------------------------------

    def chosen_plans(self) -> list[BandPlan]:
        return self.model.checked_plans()

    def set_checked(self, band_id: int, checked: bool) -> None:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(BAND_ROLE) == band_id:
                state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                self.proxy.setData(index, state, Qt.ItemDataRole.CheckStateRole)
                return
        raise KeyError(band_id)

    def parallel(self, bands: int) -> int:
        return max(1, min(bands, getattr(self.wiz.controller, "max_threads", 2) or 2))

    @Slot()
    def _checks_changed(self) -> None:
        result = self.result
        if result is None:
            self.totals.setText("")
            self.estimate.setText("")
            self.blocked.setText("")
            self.completeChanged.emit()
            return
        plans = self.chosen_plans()
        ids = [p.band_id for p in plans]
        totals = result.totals(ids)
        everything = result.totals()
        counted = [c for c in CATEGORIES if c in result.include]
        found = ", ".join(f"{fmt.count(everything[c.value])} {c.value}" for c in counted)
        rows = sum(p.rows for p in plans)
        chosen = ", ".join(f"{fmt.count(totals[c.value])} {c.value}" for c in counted)
        self.totals.setText(
            f"<b>Found</b> {found} in {len(result.rows)} bands. "
            f"<b>Chosen</b>: {len(plans)} of {len(self.model.plans)} bands to fix, {chosen}: "
            f"<b>{fmt.count(rows)} rows to write</b>."
        )
        parallel = self.parallel(len(plans))
        seconds = backfill.estimate_seconds(
            result, result.rows_per_second, band_ids=ids, parallel=parallel
        )
        if not plans:
            self.estimate.setText("Nothing to run: no checked band has anything to fix.")
        elif seconds is None:
            self.estimate.setText("Estimated duration: unknown (no rate could be measured).")
        else:
            self.estimate.setText(
                f"Estimated duration: about {fmt.duration(max(seconds, 0.1))} "
                f"({fmt.rate(result.rows_per_second)} measured on this database, "
                f"{parallel} band{'s' * (parallel != 1)} at a time)."
            )
        self.blocked.setText(self.wiz.write_block() or "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return (
            self.result is not None
            and not self.scanning
            and bool(self.chosen_plans())
            and self.wiz.write_block() is None
        )
