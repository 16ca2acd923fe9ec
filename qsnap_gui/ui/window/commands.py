"""What the window's actions do: the commands behind the menus, the toolbar and right-clicks."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QPoint, Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox, QTableView

from qsnap_gui import __version__
from qsnap_gui.domain.jobs import JobKind, Mode
from qsnap_gui.domain.words import plural
from qsnap_gui.engine.population import depopulate
from qsnap_gui.engine.targets import TargetRow
from qsnap_gui.engine.views import BandRow
from qsnap_gui.logs import log_dir
from qsnap_gui.ui import format as fmt
from qsnap_gui.ui.backfill import BackfillWizard
from qsnap_gui.ui.dialogs import PreferencesDialog
from qsnap_gui.ui.dialogs.refresh_preview import RefreshPreviewDialog
from qsnap_gui.ui.window.actions import cancellable_jobs
from qsnap_gui.ui.window.panes import menu_of

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow

log = logging.getLogger(__name__)


class Commands(QObject):
    """Each command re-checks its action, so a stale shortcut never runs a refused command."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window

    def ask(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(
            self.w,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def _say(self, text: str, ms: int = 5000) -> None:
        self.w.statusBar().showMessage(text, ms)

    # --- targets and bands ------------------------------------------------------------------

    @Slot()
    def refresh_population(self) -> None:
        w = self.w
        target = w.current_target()
        if target is None or not w.act_refresh.isEnabled():
            return
        if w.preferences.confirm_refresh:
            self._confirm_refresh(target)
            return
        self._start_refresh(target)

    def _confirm_refresh(self, target: TargetRow) -> None:
        """The confirmation shows the refresh's preview; Refresh starts it if still allowed."""
        w = self.w
        dialog = RefreshPreviewDialog(
            w.database, target.id, target.display_title, w.runner, parent=w
        )
        dialog.inspect_requested.connect(w.inspect)
        dialog.accepted.connect(partial(self._refresh_confirmed, target))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()

    def _refresh_confirmed(self, target: TargetRow) -> None:
        current = self.w.current_target()
        if current is None or current.id != target.id or not self.w.act_refresh.isEnabled():
            self._say(f"Refresh Population of {target.display_title} not started: refused now")
            return
        self._start_refresh(target)

    def _start_refresh(self, target: TargetRow) -> None:
        w = self.w
        title = target.display_title
        if w.oban.runs_jobs():
            w.oban.submit_refresh(target)
            return
        w.controller.submit_refresh(target.id)
        self._say(f"Refresh Population of {title} started")

    @Slot()
    def resume(self) -> None:
        target = self.w.current_target()
        if target is None or not self.w.act_resume.isEnabled():
            return
        self.w.controller.submit_refresh(target.id, resume=True)
        self._say(f"Resuming {target.display_title}: membership, then snapshots")

    @Slot()
    def snapshot_missing(self) -> None:
        self._snapshot("missing")

    @Slot()
    def snapshot_repair(self) -> None:
        self._snapshot("repair")

    @Slot()
    def snapshot_force(self) -> None:
        self._snapshot("force")

    def _snapshot(self, mode: str) -> None:
        w = self.w
        band, target = w.current_band(), w.current_target()
        if band is None or target is None or not w.act_snap_missing.isEnabled():
            return
        if mode == "force" and w.preferences.confirm_force:
            text = (
                f"This will rebuild all {fmt.count(band.population)} snapshots of {band.label} "
                f"(band {band.id}) of {target.display_title}, stale ones included. Continue?"
            )
            if not self.ask("Force re-snapshot", text):
                return
        self._submit_band(target, band, mode)

    def _submit_band(self, target: TargetRow, band: BandRow, mode: str) -> None:
        w = self.w
        if w.oban.runs_jobs():
            w.oban.submit_bands(target, [band])
            return
        w.controller.submit_band(
            band.id,
            target_id=target.id,
            label=f"{target.display_title} · {band.label}",
            mode=mode,
            batch_size=w.preferences.batch_size,
        )
        self._say(f"Snapshot of {band.label} ({mode}) started")

    @Slot()
    def snapshot_all(self) -> None:
        w = self.w
        target = w.current_target()
        if target is None or not w.act_snapshot_all.isEnabled():
            return
        outermost_first = list(reversed(w.bands_model.bands()))  # like a refresh
        if w.oban.runs_jobs():
            w.oban.submit_bands(target, outermost_first)
            return
        w.controller.submit_bands(
            [(band.id, f"{target.display_title} · {band.label}") for band in outermost_first],
            target_id=target.id,
            batch_size=w.preferences.batch_size,
        )
        self._say(f"Snapshot of {plural(len(outermost_first), 'band')} started")

    @Slot()
    def depopulate(self) -> None:
        w = self.w
        target = w.current_target()
        if target is None or not w.act_depopulate.isEnabled():
            return
        text = (
            f"This will delete all {fmt.count(target.population)} populations of "
            f"{target.display_title} and mark it not populated. Continue?"
        )
        if w.preferences.confirm_depopulate and not self.ask("Depopulate", text):
            return
        w.busy_targets.add(target.id)
        w.update_actions()
        w.statusBar().showMessage(f"Depopulating {target.display_title}…")
        w.runner.run(
            f"depopulate {target.id}",
            partial(depopulate, w.database.engine, target.id),
            partial(self._depopulated, target),
            partial(self._depopulate_failed, target),
        )

    def _depopulated(self, target: TargetRow, deleted: int) -> None:
        self.w.busy_targets.discard(target.id)
        message = f"Depopulated {target.display_title}: {fmt.count(deleted)} populations deleted"
        log.info("%s", message)
        self._say(message, 8000)
        self.w.reload()

    def _depopulate_failed(self, target: TargetRow, message: str) -> None:
        self.w.busy_targets.discard(target.id)
        self.w.update_actions()
        QMessageBox.warning(
            self.w, "Depopulate failed", f"{target.display_title} was not depopulated:\n{message}"
        )

    # --- jobs -------------------------------------------------------------------------------

    @Slot()
    def cancel(self) -> None:
        for job_id in cancellable_jobs(self.w):
            self.w.controller.cancel(job_id)
        self._say("Cancelling: jobs stop after their batch in flight")

    @Slot()
    def cancel_all(self) -> None:
        if self.w.controller is not None:
            self.w.controller.cancel_all()

    @Slot()
    def cancel_clicked(self) -> None:
        job = self.w.clicked_job
        if job is not None and job.active and self.w.controller is not None:
            self.w.controller.cancel(job.id)

    @Slot()
    def retry_clicked(self) -> None:
        if self.w.clicked_job is not None:
            self.retry(self.w.clicked_job.id)

    def retry(self, job_id: int) -> None:
        """Run an ended job again, asking first what starting it asked."""
        controller = self.w.controller
        if controller is None:
            return
        job = controller.job(job_id)
        if job.active:
            return
        if (
            job.kind is JobKind.SNAPSHOT
            and job.mode == Mode.FORCE
            and self.w.preferences.confirm_force
        ):
            text = (
                f"Retrying job {job.id} will rebuild every snapshot of band {job.band_id} "
                f"({job.label}), stale ones included. Continue?"
            )
            if not self.ask("Force re-snapshot", text):
                return
        controller.retry(job_id)

    # --- tools, views, settings -------------------------------------------------------------

    @Slot()
    def reload(self) -> None:
        """F5: read again, the per-shape counts included (others may have written)."""
        self.w.shape_counts.forget_all()
        self.w.reload()

    @Slot()
    def quit(self) -> None:
        self.w.close()

    @Slot()
    def show_connect(self) -> None:
        self.w.connection.show_dialog()

    @Slot()
    def focus_filter(self) -> None:
        self.w.filter.setFocus()
        self.w.filter.selectAll()

    @Slot()
    def focus_search(self) -> None:
        if self.w.search_field is not None:
            self.w.search_field.focus_search()

    @Slot()
    def show_population(self) -> None:
        w = self.w
        band, target = w.current_band(), w.current_target()
        if band is None or target is None or w.inspector is None:
            return
        view = w.inspector.population_view(band.id, w)
        view.meFileActivated.connect(w.reveal_inspector)
        view.setWindowFlag(Qt.WindowType.Window)
        view.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        view.setWindowTitle(f"{target.display_title} — {band.label} (band {band.id}) population")
        view.resize(760, 520)
        view.show()

    @Slot()
    def show_backfill(self) -> None:
        if self.w.database is not None and self.w.controller is not None:
            BackfillWizard(self.w.database, self.w.controller, self.w).show()

    @Slot()
    def show_preferences(self) -> None:
        dialog = PreferencesDialog(self.w.preferences, self.w)
        if dialog.exec() == PreferencesDialog.DialogCode.Accepted:
            self.w.preferences = dialog.preferences()
            self.w.preferences.save()
            self.w.apply_preferences()
            self._say("Preferences saved", 3000)

    @Slot()
    def open_log_folder(self) -> None:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    @Slot()
    def about(self) -> None:
        QMessageBox.about(
            self.w,
            "About qsnap",
            f"<b>qsnap {__version__}</b><br>The snapshot desk for Qlarius operators.<br>"
            "Refresh Population, snapshot jobs and their progress, on PostgreSQL.",
        )

    # --- context menus ----------------------------------------------------------------------

    def _popup(self, view: QTableView, pos: QPoint, *actions) -> None:
        menu_of(self.w, *actions).popup(view.viewport().mapToGlobal(pos))

    @Slot(QPoint)
    def targets_menu(self, pos: QPoint) -> None:
        w = self.w
        self._popup(
            w.targets_view,
            pos,
            *(w.act_refresh, w.act_snapshot_all, w.act_resume, None),
            *(w.act_cancel, w.act_depopulate, None, w.act_reload),
        )

    @Slot(QPoint)
    def bands_menu(self, pos: QPoint) -> None:
        w = self.w
        self._popup(
            w.bands_view,
            pos,
            *(w.act_snap_missing, w.act_snap_repair, w.act_snap_force, None),
            *(w.act_population, w.act_cancel, None, w.act_refresh, w.act_snapshot_all),
        )

    @Slot(QPoint)
    def jobs_menu(self, pos: QPoint) -> None:
        w = self.w
        index = w.jobs_view.indexAt(pos)
        w.clicked_job = w.jobs_model.info(index.row()) if index.isValid() else None
        if w.clicked_job is not None:
            w.jobs_view.selectRow(index.row())
        w.update_actions()
        self._popup(w.jobs_view, pos, w.act_retry, w.act_job_cancel)
