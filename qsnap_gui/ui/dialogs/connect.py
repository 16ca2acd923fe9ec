"""File > Connect…: a URL or host/port/database/user, tested before it is accepted."""

from __future__ import annotations

import contextlib
import logging
from functools import partial

from PySide6.QtCore import Qt, Slot
from PySide6.QtGui import QIntValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
from sqlalchemy.engine import URL

from qsnap_gui.domain.errors import UsageError
from qsnap_gui.store.db import Database, open_database
from qsnap_gui.store.dsn import normalize_url
from qsnap_gui.store.secrets import (
    KeyringUnavailable,
    keyring_problem,
    remember_password,
    with_remembered_password,
)
from qsnap_gui.tools.demo import ensure_demo_database
from qsnap_gui.ui.icons import icon
from qsnap_gui.ui.settings import as_typed, recent_connections, remember_connection
from qsnap_gui.ui.tasks import TaskRunner

log = logging.getLogger(__name__)

NEW, DEMO = "new", "demo"
REMEMBER_TIP = (
    "Store the password in the system keyring under user@host:port/database; "
    "it is never written to qsnap's settings"
)


class ConnectDialog(QDialog):
    """Tests the connection before accepting it; remembers it without its password.

    The password itself goes to the system keyring only when the operator ticks the box, and a
    URL without a password is completed from the keyring (off the GUI thread) before testing.
    """

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to a Qlarius database")
        self.setWindowIcon(icon("connect"))
        self.setMinimumWidth(520)
        self.runner = runner
        self.database: Database | None = None
        self._accept_after_test = False

        self.recent = QComboBox()
        self.recent.currentIndexChanged.connect(self._recent_chosen)
        self.tabs = QTabWidget()
        self.url = QLineEdit()
        self.url.setPlaceholderText("postgres://user@host:5432/qlarius")
        self.url.setClearButtonEnabled(True)
        self.url.editingFinished.connect(self._move_password_out_of_url)
        url_page = QWidget()
        url_form = QFormLayout(url_page)
        url_form.addRow("URL", self.url)
        hint = QLabel("postgres://, postgresql://, postgresql+psycopg:// or ecto:// URLs")
        hint.setObjectName("paneSubtitle")
        url_form.addRow("", hint)
        self.host = QLineEdit()
        self.host.setPlaceholderText("localhost")
        self.port = QLineEdit()
        self.port.setPlaceholderText("5432")
        self.port.setValidator(QIntValidator(1, 65535, self))
        self.dbname = QLineEdit()
        self.user = QLineEdit()
        fields_page = QWidget()
        fields_form = QFormLayout(fields_page)
        fields_form.addRow("Host", self.host)
        fields_form.addRow("Port", self.port)
        fields_form.addRow("Database", self.dbname)
        fields_form.addRow("User", self.user)
        self.tabs.addTab(url_page, "URL")
        self.tabs.addTab(fields_page, "Fields")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText("from the keyring, PGPASSWORD or ~/.pgpass if empty")
        self.remember = QCheckBox("Remember password in the system keyring")
        self.keyring_message = ""  # why the last password was not remembered, if it was not
        self._keyring_problem: str | None = None  # read again by prepare()
        self.read_only = QCheckBox("Read-only (no snapshot, refresh or depopulate)")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(6)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.test_button = self.buttons.addButton("Test", QDialogButtonBox.ButtonRole.ActionRole)
        self.connect_button = self.buttons.addButton(
            "Connect", QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.connect_button.setDefault(True)
        self.test_button.clicked.connect(self._test)
        self.buttons.accepted.connect(self._connect)
        self.buttons.rejected.connect(self.reject)

        form = QFormLayout()
        form.addRow("Connection", self.recent)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.tabs)
        password_form = QFormLayout()
        password_form.addRow("Password", self.password)
        password_form.addRow("", self.remember)
        password_form.addRow("", self.read_only)
        layout.addLayout(password_form)
        layout.addWidget(self.busy)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

    def prepare(self, read_only: bool) -> None:
        """Fresh state each time the dialog opens: recent list reread, no leftover result."""
        self.database = None
        self.read_only.setChecked(read_only)
        self.password.clear()
        self.keyring_message = ""
        self._keyring_problem = keyring_problem()
        self.remember.setChecked(False)
        self.remember.setEnabled(self._keyring_problem is None)
        self.remember.setToolTip(self._keyring_problem or REMEMBER_TIP)
        self._set_status("")
        self.recent.blockSignals(True)
        self.recent.clear()
        self.recent.addItem(icon("connect"), "New connection", NEW)
        self.recent.addItem(icon("qsnap"), "Embedded demo database", DEMO)
        for entry in recent_connections():
            self.recent.addItem(icon("database"), entry, entry)
        self.recent.setCurrentIndex(2 if self.recent.count() > 2 else 0)
        self.recent.blockSignals(False)
        self._recent_chosen(self.recent.currentIndex())

    @Slot(int)
    def _recent_chosen(self, index: int) -> None:
        choice = self.recent.itemData(index)
        self.tabs.setEnabled(choice != DEMO)
        self.password.setEnabled(choice != DEMO)
        self.remember.setEnabled(choice != DEMO and self._keyring_problem is None)
        if choice in (NEW, DEMO, None):
            return
        self.url.setText(choice)
        self.tabs.setCurrentIndex(0)
        # A hand-edited settings file: the URL tab shows it, Connect explains what is wrong.
        with contextlib.suppress(UsageError):
            self._fill_fields(normalize_url(choice))

    def _fill_fields(self, url: URL) -> None:
        self.host.setText(url.host or "")
        self.port.setText(str(url.port) if url.port else "")
        self.dbname.setText(url.database or "")
        self.user.setText(url.username or "")

    @Slot()
    def _move_password_out_of_url(self) -> None:
        """A pasted password goes to the masked field; the URL field never shows it."""
        try:
            url = normalize_url(self.url.text().strip())
        except UsageError:
            return
        if url.password:
            self.password.setText(str(url.password))
            self.url.setText(as_typed(url, self.url.text()))
        self._fill_fields(url)

    def chosen_url(self) -> str | None:
        """The URL to open, password included; None for the embedded demo database."""
        if self.recent.currentData() == DEMO:
            return None
        password = self.password.text() or None
        if self.tabs.currentIndex() == 0:
            text = self.url.text().strip()
            if not text:
                raise UsageError("enter a database URL, or pick a recent connection")
            url = normalize_url(text)
            if password:
                url = url.set(password=password)
        else:
            if not self.dbname.text().strip():
                raise UsageError("enter a database name")
            url = URL.create(
                "postgresql+psycopg",
                username=self.user.text().strip() or None,
                password=password,
                host=self.host.text().strip() or None,
                port=int(self.port.text()) if self.port.text() else None,
                database=self.dbname.text().strip(),
            )
        return url.render_as_string(hide_password=False)

    @Slot()
    def _test(self) -> None:
        self._start(accept=False)

    @Slot()
    def _connect(self) -> None:
        self._start(accept=True)

    def _start(self, *, accept: bool) -> None:
        try:
            raw = self.chosen_url()
        except UsageError as exc:
            self._set_status(str(exc), error=True)
            return
        read_only = self.read_only.isChecked()
        remember = accept and raw is not None and self.remember.isChecked()
        self._accept_after_test = accept
        self._set_busy(True)
        where = (
            "the embedded demo database (first start takes a few seconds)" if raw is None else ""
        )
        self._set_status(f"Testing the connection to {where or 'the database'}…")
        self.runner.run(
            "connect-dialog",
            partial(_open, raw, read_only, remember),
            partial(self._opened, raw is None),
            self._failed,
        )

    def _opened(self, embedded: bool, opened: tuple[Database, str]) -> None:
        database, self.keyring_message = opened
        self._set_busy(False)
        if not self.isVisible():
            database.dispose()
            return
        rights = (
            "read-only" if database.read_only else f"{len(database.privileges)} write privileges"
        )
        if not self._accept_after_test:
            self._set_status(f"✓ Connected to {database.where}: schema OK, {rights}.", ok=True)
            database.dispose()
            return
        if not embedded:  # the embedded demo has its own entry
            typed = self.url.text() if self.tabs.currentIndex() == 0 else None
            remember_connection(database.url, typed)
        self.database = database
        self.accept()

    def _failed(self, message: str) -> None:
        self._set_busy(False)
        self._set_status(message, error=True)

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        for widget in (
            self.test_button,
            self.connect_button,
            self.tabs,
            self.recent,
            self.remember,
        ):
            widget.setEnabled(not busy)
        if not busy:
            self.tabs.setEnabled(self.recent.currentData() != DEMO)
            self.remember.setEnabled(
                self.recent.currentData() != DEMO and self._keyring_problem is None
            )

    def _set_status(self, text: str, *, error: bool = False, ok: bool = False) -> None:
        self.status.setObjectName("dialogError" if error else "dialogOk" if ok else "")
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        self.status.setText(text)


def _open(raw: str | None, read_only: bool, remember: bool) -> tuple[Database, str]:
    """Runs on a worker: the demo server may need starting (and seeding) first.

    A URL without a password gets the remembered one (the keyring may block on D-Bus, hence
    here); after a successful connection the password is stored when ``remember`` asks it.
    Returns the database and why the password was not remembered ("" when it was, or was not
    asked to be).
    """
    if raw is None:
        return open_database(ensure_demo_database(), read_only=read_only), ""
    url = with_remembered_password(raw)
    database = open_database(url.render_as_string(hide_password=False), read_only=read_only)
    if not remember:
        return database, ""
    if not database.url.password:
        return database, "no password was entered, so none was remembered"
    try:
        remember_password(database.url, str(database.url.password))
    except KeyringUnavailable as exc:  # its text never holds the password
        log.warning("%s", exc)
        return database, str(exc)
    return database, ""
