"""How the window gets a database and lets it go: connecting off the GUI thread (the embedded
demo may take a while to start), the Connect dialog, and what belongs to one database (its job
controller, its inspector and search field, the Oban view)."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QWidget

from qsnap_gui.store.db import Database, open_database
from qsnap_gui.store.dsn import mask_url, resolve_url
from qsnap_gui.tools.demo import ensure_demo_database
from qsnap_gui.ui.dialogs import ConnectDialog
from qsnap_gui.ui.inspector import InspectorWidget
from qsnap_gui.ui.jobs import JobController

if TYPE_CHECKING:
    from qsnap_gui.ui.window.main_window import MainWindow

log = logging.getLogger(__name__)


def window_title(database: Database) -> str:
    """``user@host/db``, never the password nor the whole URL; Qt adds the application's
    name itself."""
    user = database.url.username
    title = f"{user}@{database.where}" if user else database.where
    title += " [demo]" if database.is_demo else ""
    return title + (" [read-only]" if database.read_only else "")


class Connection(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.w = window
        self.owns_database = False
        self.last_dsn: tuple[str | None, bool] | None = None
        self._dialog: ConnectDialog | None = None

    def connect_to(self, dsn: str | None, *, read_only: bool = False) -> None:
        w = self.w
        self.last_dsn = (dsn, read_only)
        raw = resolve_url(dsn)
        if raw is None:
            message = (
                "Starting the embedded demo database…\n"
                "The first start creates it, which takes a few seconds."
            )
        else:
            message = f"Connecting to {mask_url(raw)}…"
        w.connecting_message.setText(message)
        w.connecting_error.clear()
        w.connecting_busy.show()
        w.retry_button.hide()
        w.connecting_buttons.hide()
        w.stack.setCurrentIndex(0)
        w.statusBar().showMessage(message.splitlines()[0])
        w.runner.run(
            "connect",
            partial(open_database, dsn, read_only=read_only, demo_url=ensure_demo_database),
            self._connected,
            self._failed,
        )

    def _connected(self, database: Database) -> None:
        if self.w.closed:
            database.dispose()
            return
        self.set_database(database, owned=True)

    def _failed(self, message: str) -> None:
        w = self.w
        w.connecting_busy.hide()
        w.connecting_message.setText("Could not connect")
        w.connecting_error.setText(message)
        w.retry_button.setVisible(self.last_dsn is not None)
        w.connecting_buttons.show()
        w.statusBar().showMessage("Could not connect", 10000)
        log.warning("could not connect: %s", message)
        w.connectFailed.emit(message)

    @Slot()
    def retry(self) -> None:
        if self.last_dsn is not None:
            dsn, read_only = self.last_dsn
            self.connect_to(dsn, read_only=read_only)

    def set_database(self, database: Database, *, owned: bool) -> None:
        w = self.w
        w.database = database
        self.owns_database = owned
        w.runner.secret = database.url
        w.shape_counts.set_secret(database.url)
        w.shape_counts.forget_all()
        w.controller = JobController(database, w, max_threads=w.preferences.threads or None)
        w.apply_preferences()
        w.job_feed.attach(w.controller)
        self._build_inspector(database)
        w.oban.set_database(database)
        w.jobs_model.clear()
        w.bands_model.clear()
        w.targets_model.set_rows([])
        w.forget_selection()
        w.setWindowTitle(window_title(database))
        w.connection_label.setText(database.where)
        w.connection_label.setToolTip(database.display)
        w.demo_badge.setVisible(database.is_demo)
        w.read_only_badge.setVisible(database.read_only)
        w.stack.setCurrentIndex(1)
        w.banner.hide()
        log.info("connected to %s", database.display)
        w.statusBar().showMessage(f"Connected to {database.where}", 5000)
        w.update_actions()
        w.reload()

    def show_dialog(self) -> None:
        w = self.w
        if self._dialog is None:
            self._dialog = ConnectDialog(w.runner, w)
        dialog = self._dialog
        dialog.prepare(w.database.read_only if w.database else w.read_only)
        if dialog.exec() != ConnectDialog.DialogCode.Accepted or dialog.database is None:
            return
        database = dialog.database
        dialog.database = None
        active = w.controller.active() if w.controller else []
        if active and not w.commands.ask(
            "Jobs are running",
            f"{len(active)} jobs are running on {w.database.where}. "
            f"Cancel them and connect to {database.where}?",
        ):
            database.dispose()
            return
        w.job_feed.stop_jobs_then(partial(self._replace, database))

    def _build_inspector(self, database: Database) -> None:
        """The inspector and its toolbar search field belong to one database."""
        w = self.w
        w.inspector = InspectorWidget(database)
        w.inspector.snapshotWritten.connect(w.shape_counts.forget_all)
        w.inspector.snapshotWritten.connect(w.reload_soon)
        w.inspector_dock.setWidget(w.inspector)
        w.search_field = w.inspector.search_field(w.toolbar)
        w.search_field.meFileActivated.connect(w.reveal_inspector)
        w.search_field.noticed.connect(lambda text: w.statusBar().showMessage(text, 8000))
        self._search_action = w.toolbar.addWidget(w.search_field)

    def _drop_inspector(self) -> None:
        w = self.w
        if w.search_field is not None:
            w.toolbar.removeAction(self._search_action)
            w.search_field.deleteLater()
            w.search_field = None
        if w.inspector is not None:
            w.inspector_dock.setWidget(QWidget())
            w.inspector.deleteLater()
            w.inspector = None

    def _replace(self, database: Database) -> None:
        self.release()
        self.set_database(database, owned=True)

    def release(self) -> None:
        w = self.w
        w.oban.set_database(None)
        self._drop_inspector()
        if w.controller is not None:
            w.controller.shutdown(2000)
            w.job_feed.detach(w.controller)
            w.controller.deleteLater()
            w.controller = None
        if w.database is not None and self.owns_database:
            w.database.dispose()
        w.database = None
