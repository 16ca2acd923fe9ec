"""Tools > Backfill snapshots…: find every population whose snapshot is missing, broken or stale,
and fix them band by band as jobs on the window's job controller.

Four pages: Scope (targets, categories), Scan (counts per band, a checkbox per band), Run (one
job per band, in parallel), Summary (rows fixed per category, Retry failed, Save report as
CSV). The scan, the plan, the recount and the report are the core's
(``qsnap_gui.engine.backfill``); the threads and jobs behind the pages are in ``work``.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import QMessageBox, QWidget, QWizard

from qsnap_gui.engine.backfill import BandOutcome
from qsnap_gui.store.db import SNAPSHOT_PRIVILEGES, Database
from qsnap_gui.ui.access import write_block
from qsnap_gui.ui.backfill.common import Page
from qsnap_gui.ui.backfill.run_page import RunPage
from qsnap_gui.ui.backfill.scan_page import ScanPage
from qsnap_gui.ui.backfill.scope_page import ScopePage
from qsnap_gui.ui.backfill.summary_page import SummaryPage
from qsnap_gui.ui.backfill.work import BandRuns
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.jobs import JobController
from qsnap_gui.ui.tasks import TaskRunner


class BackfillWizard(QWizard):
    """Tools > Backfill snapshots…; jobs run on the window's ``controller``."""

    def __init__(
        self, database: Database, controller: JobController, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.database = database
        self.controller = controller
        self.setWindowTitle("Backfill snapshots")
        self.setWindowIcon(icon("snapshot-repair"))
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.resize(1040, 660)
        self.runner = TaskRunner(self, threads=2)
        self.runner.secret = database.url
        self.runs = BandRuns(database, controller, self)
        self.scope_page = ScopePage(self)
        self.scan_page = ScanPage(self)
        self.run_page = RunPage(self)
        self.summary_page = SummaryPage(self)
        self.setPage(Page.SCOPE, self.scope_page)
        self.setPage(Page.SCAN, self.scan_page)
        self.setPage(Page.RUN, self.run_page)
        self.setPage(Page.SUMMARY, self.summary_page)
        self.setStartId(Page.SCOPE)

    @property
    def outcomes(self) -> dict[int, BandOutcome]:
        """Band id -> the latest outcome of its job, once counted again."""
        return self.runs.outcomes

    def write_block(self) -> str | None:
        """Why this session may not run the backfill (the scan still works), or None."""
        reason = write_block(self.database, SNAPSHOT_PRIVILEGES)
        return f"{reason[0].upper()}{reason[1:]}: the run is disabled." if reason else None

    @property
    def running(self) -> bool:
        return self.run_page.running

    @Slot()
    def retry_failed(self) -> None:
        """Run the bands that did not succeed again, and show them on the Run page."""
        bands = [band_id for band_id, o in self.outcomes.items() if o.failed]
        if not bands or self.running:
            return
        self.run_page.retry(bands)
        if self.currentId() == Page.SUMMARY:
            self.back()

    def confirm_close(self) -> bool:
        jobs = len(self.run_page.live_jobs())
        answer = QMessageBox.question(
            self,
            "Backfill is running",
            f"{jobs} band job{'s' * (jobs != 1)} of this backfill {'are' if jobs != 1 else 'is'} "
            "still running. Cancel them and close? Each stops after its batch in flight; what "
            "was written stays valid.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def reject(self) -> None:
        """Cancel, Esc and the window's close button: ask first while jobs run."""
        if self.running:
            if not self.confirm_close():
                return
            self.run_page.cancel_all()
        self.scan_page.cancel_scan()
        super().reject()

    def done(self, result: int) -> None:
        # Let the scan and the recounts end before their receivers go away.
        self.scan_page.cancel_scan()
        self.scan_page.wait(10000)
        self.runner.wait(10000)
        self.runs.wait(10000)
        super().done(result)
