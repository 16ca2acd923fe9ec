"""Connect dialog and the system keyring: the password is remembered only when asked, reused
for a URL without one, looked up off the GUI thread, and never written to QSettings."""

from __future__ import annotations

import threading

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from PySide6.QtCore import QSettings, Qt
from sqlalchemy.engine import make_url

from qsnap_gui.store import secrets
from qsnap_gui.ui.dialogs import REMEMBER_TIP, ConnectDialog
from qsnap_gui.ui.settings import recent_connections
from qsnap_gui.ui.tasks import TaskRunner

PASSWORD = "Kr-7q2!w"  # distinctive; the test server trusts local connections and ignores it
OTHER = "Kr-unticked-5z"
WAIT_MS = 30_000


class MemoryKeyring(KeyringBackend):
    """A keyring in memory, so the test never touches the machine's own; notes who reads it."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}
        self.readers: list[threading.Thread] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.readers.append(threading.current_thread())
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


@pytest.fixture
def use_keyring():
    previous = keyring.get_keyring()

    def use(backend: KeyringBackend) -> KeyringBackend:
        keyring.set_keyring(backend)
        return backend

    yield use
    keyring.set_keyring(previous)


@pytest.fixture
def dialog(qtbot):
    runner = TaskRunner()
    made = ConnectDialog(runner)
    qtbot.addWidget(made)
    yield made
    if made.database is not None:
        made.database.dispose()
    runner.wait(WAIT_MS)


def connect(dialog: ConnectDialog, qtbot):
    """Click Connect and wait for the dialog to accept; returns the opened database."""
    dialog.setResult(0)
    qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: dialog.result() == ConnectDialog.DialogCode.Accepted or dialog.busy.isHidden(),
        timeout=WAIT_MS,
    )
    assert dialog.result() == ConnectDialog.DialogCode.Accepted, dialog.status.text()
    database, dialog.database = dialog.database, None
    return database


def open_dialog(dialog: ConnectDialog) -> None:
    dialog.prepare(read_only=False)
    dialog.show()


def type_url(dialog: ConnectDialog, url: str) -> None:
    dialog.recent.setCurrentIndex(0)  # New connection
    dialog.url.setText(url)
    dialog.url.editingFinished.emit()  # a pasted password moves to the masked field


def settings_text(root) -> str:
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files, f"no settings files under {root}"
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in files)


def test_password_remembered_on_success_then_reused_never_in_settings(
    fresh_url, dialog, qtbot, use_keyring, ui_settings, tmp_path
):
    memory = use_keyring(MemoryKeyring())
    bare = make_url(fresh_url).set(password=None)
    account = secrets.keyring_account(bare)

    open_dialog(dialog)
    assert dialog.remember.isEnabled() and not dialog.remember.isChecked()
    assert dialog.remember.toolTip() == REMEMBER_TIP

    # Unticked: the connection works and nothing is stored.
    type_url(dialog, bare.set(password=OTHER).render_as_string(hide_password=False))
    assert dialog.password.text() == OTHER and OTHER not in dialog.url.text()
    database = connect(dialog, qtbot)
    assert database.url.password == OTHER
    database.dispose()
    assert memory.store == {}

    # Ticked: stored under user@host:port/database once the connection succeeded.
    open_dialog(dialog)
    assert not dialog.remember.isChecked(), "off by default each time the dialog opens"
    type_url(dialog, bare.set(password=PASSWORD).render_as_string(hide_password=False))
    dialog.remember.setChecked(True)
    database = connect(dialog, qtbot)
    assert database.url.password == PASSWORD
    database.dispose()
    assert memory.store == {("qsnap", account): PASSWORD}
    assert dialog.keyring_message == ""

    # Next time: the recent entry has no password; the keyring supplies it, off the GUI thread.
    open_dialog(dialog)
    assert dialog.recent.currentIndex() == 2
    assert make_url(dialog.url.text()).password is None and dialog.password.text() == ""
    memory.readers.clear()
    database = connect(dialog, qtbot)
    assert database.url.password == PASSWORD
    database.dispose()
    assert memory.readers and threading.main_thread() not in memory.readers

    # A password typed into the dialog wins over the remembered one.
    open_dialog(dialog)
    dialog.password.setText(OTHER)
    database = connect(dialog, qtbot)
    assert database.url.password == OTHER
    database.dispose()
    assert memory.store == {("qsnap", account): PASSWORD}, "unticked: the entry is left alone"

    # Never in QSettings: the recent list has the URL, none of the files the password.
    QSettings().sync()
    [entry] = recent_connections()
    assert make_url(entry).password is None
    assert make_url(entry).database == bare.database
    text = settings_text(ui_settings)
    assert bare.database in text, "the settings really were written here"
    for secret in (PASSWORD, OTHER, "Kr-7q2%21w", "Kr-7q2%2521w"):
        assert secret not in text
    assert PASSWORD not in settings_text(tmp_path)


def test_without_a_keyring_the_box_is_disabled_and_says_why(fresh_url, dialog, qtbot, use_keyring):
    use_keyring(fail.Keyring())
    problem = secrets.keyring_problem()
    assert problem and "keyring" in problem

    open_dialog(dialog)
    assert not dialog.remember.isEnabled() and not dialog.remember.isChecked()
    assert dialog.remember.toolTip() == problem

    # Connecting still works: a missing keyring never stops qsnap from connecting.
    type_url(dialog, make_url(fresh_url).set(password=None).render_as_string(False))
    database = connect(dialog, qtbot)
    assert not database.url.password
    database.dispose()
    assert not dialog.remember.isEnabled(), "stays disabled after the busy state ends"
