"""Window fixtures: a private settings location per test, a fresh demo copy, a loaded window."""

from __future__ import annotations

import psycopg
import pytest
from PySide6.QtCore import QSettings
from uihelp import libpq

from qsnap_gui.store.db import open_database
from qsnap_gui.ui.settings import Preferences
from qsnap_gui.ui.window import MainWindow
from qsnap_gui.ui.workers import WorkerPool

QUIET = {
    "confirm_refresh": False,
    "confirm_force": False,
    "confirm_depopulate": False,
    "confirm_close": False,
    "retry_backoff": 0.05,
}


@pytest.fixture(autouse=True)
def no_work_left_running(qapp):
    """Fail a test that leaves a worker pool running work (it must await what it started).

    A few seconds of grace cover work that was cancelled and is returning.
    """
    yield
    WorkerPool.wait_all(10)
    assert WorkerPool.running_anywhere() == [], "the test left a pool with running work"


@pytest.fixture(autouse=True)
def ui_settings(qapp, tmp_path):
    """QSettings files under tmp_path: nothing leaks into the user's settings or other tests."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for kind in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(kind, QSettings.Scope.UserScope, str(tmp_path / "settings"))
        QSettings.setPath(kind, QSettings.Scope.SystemScope, str(tmp_path / "settings-system"))
    qapp.setOrganizationName("qsnap-tests")
    qapp.setApplicationName("qsnap-gui-tests")
    return tmp_path / "settings"


@pytest.fixture
def fresh_url(create_db, demo_template) -> str:
    """A demo copy of the test's own: jobs write to it."""
    return create_db("ui", template=demo_template)


@pytest.fixture
def database(fresh_url):
    db = open_database(fresh_url)
    yield db
    db.dispose()


@pytest.fixture
def sql(fresh_url):
    """A plain psycopg connection (autocommit) to the test's database, for setup and checks."""
    with psycopg.connect(libpq(fresh_url), autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_window(qtbot):
    """Factory: a shown window on a database, its data loaded, confirmations off."""
    windows: list[MainWindow] = []

    def make(database, **preferences) -> MainWindow:
        Preferences(**{**QUIET, **preferences}).save()
        window = MainWindow()
        qtbot.addWidget(window)
        window.show()
        with qtbot.waitSignal(window.loaded, timeout=30_000):
            window.set_database(database, owned=False)
        windows.append(window)
        return window

    yield make
    for window in windows:
        if window.controller is not None:
            assert window.controller.shutdown(30_000)
        window.close()
