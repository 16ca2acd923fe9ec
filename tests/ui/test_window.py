"""The window around the jobs: connecting, permissions, preferences, errors, closing, screenshots."""

from __future__ import annotations

import os

import psycopg
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QImage
from sqlalchemy.engine import make_url
from uihelp import (
    answer_yes,
    band,
    bands_by_size,
    libpq,
    null_out,
    run_gui,
    select_band,
    select_target,
    target_cell,
)

from qsnap_gui.engine.snapshots import JobState
from qsnap_gui.store.db import open_database
from qsnap_gui.ui.dialogs import ConnectDialog, PreferencesDialog
from qsnap_gui.ui.models import TargetsModel
from qsnap_gui.ui.palette import STUCK_BG
from qsnap_gui.ui.settings import Preferences, recent_connections
from qsnap_gui.ui.tasks import TaskRunner
from qsnap_gui.ui.window import MainWindow

WRITE_ACTIONS = ("act_refresh", "act_snapshot_all", "act_snap_missing", "act_depopulate")


def test_read_only_disables_writes_and_says_why(fresh_url, make_window, qtbot):
    database = open_database(fresh_url, read_only=True)
    try:
        window = make_window(database)
        select_target(window, qtbot, 1)
        for name in WRITE_ACTIONS:
            action = getattr(window, name)
            assert not action.isEnabled()
            assert "Unavailable: connected read-only" in action.toolTip()
        assert "only a stuck target" in window.act_resume.toolTip()
        assert "no job is running on the selection" in window.act_cancel.toolTip()
        assert window.read_only_badge.isVisibleTo(window)
        assert "[read-only]" in window.windowTitle()
    finally:
        database.dispose()


def test_a_role_without_write_privileges_is_told_which(fresh_url, sql, make_window, qtbot):
    role = f"qsnap_reader_{os.getpid()}"
    sql.execute(f"create role {role} login")
    sql.execute(f"grant select on all tables in schema public to {role}")
    url = make_url(fresh_url).set(username=role, password=None)
    database = open_database(url.render_as_string(hide_password=False))
    try:
        window = make_window(database)
        select_target(window, qtbot, 1)
        assert not window.act_snap_missing.isEnabled()
        assert "lacks UPDATE target_populations(matching_tags_snapshot)" in (
            window.act_snap_missing.toolTip()
        )
        assert not window.act_refresh.isEnabled()
        window.controller.shutdown()
        window.close()
    finally:
        database.dispose()
        sql.execute(f"drop owned by {role}")
        sql.execute(f"drop role {role}")


def test_title_and_status_bar_say_where(database, make_window):
    window = make_window(database)
    assert database.where in window.windowTitle()
    assert window.connection_label.text() == database.where
    assert window.demo_badge.isVisibleTo(window) == database.is_demo
    assert database.is_demo, "the test template is a qsnap demo database"
    assert "[demo]" in window.windowTitle()


def test_connect_dialog_tests_first_and_never_stores_the_password(
    fresh_url, qtbot, ui_settings, make_window
):
    dialog = ConnectDialog(TaskRunner())
    qtbot.addWidget(dialog)
    dialog.prepare(read_only=False)
    dialog.show()

    dialog.url.setText("mysql://someone@somewhere/qlarius")
    qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    assert "unsupported database URL scheme 'mysql'" in dialog.status.text()
    assert dialog.isVisible() and dialog.database is None

    dialog.url.setText(make_url(fresh_url).set(password="s3cret").render_as_string(False))
    dialog.url.editingFinished.emit()
    assert "s3cret" not in dialog.url.text()
    assert dialog.password.text() == "s3cret"
    qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.result() == ConnectDialog.DialogCode.Accepted, timeout=30_000)

    database = dialog.database
    try:
        assert database.url.password == "s3cret"
        [entry] = recent_connections()
        assert make_url(entry).password is None
        assert make_url(entry).database == make_url(fresh_url).database
        QSettings().sync()
        stored = "".join(p.read_text() for p in ui_settings.rglob("*") if p.is_file())
        assert "s3cret" not in stored
        window = make_window(database)
        assert "s3cret" not in window.windowTitle() and "://" not in window.windowTitle()
        assert "s3cret" not in window.log_view.toPlainText()

        dialog.prepare(read_only=False)  # the recent entry comes back, without its password
        assert dialog.recent.currentData() == recent_connections()[0]
        assert dialog.password.text() == ""
    finally:
        database.dispose()


def test_an_unreachable_database_shows_why_with_retry(qtbot, ui_settings):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.connectFailed, timeout=30_000) as failed:
        window.connect_to("postgresql://qsnap@127.0.0.1:9/nowhere")
    assert "cannot connect to 127.0.0.1:9/nowhere" in failed.args[0]
    assert "Traceback" not in failed.args[0]
    assert window.stack.currentIndex() == 0
    assert window.connecting_error.text() == failed.args[0]
    assert window.retry_button.isVisible()
    with qtbot.waitSignal(window.connectFailed, timeout=30_000):
        qtbot.mouseClick(window.retry_button, Qt.MouseButton.LeftButton)
    for name in WRITE_ACTIONS:
        assert "Unavailable: not connected" in getattr(window, name).toolTip()


def test_a_failed_read_shows_a_banner_with_retry(database, sql, make_window, qtbot):
    window = make_window(database)
    sql.execute("alter table targets rename to targets_elsewhere")
    window.reload()
    qtbot.waitUntil(window.banner.isVisible, timeout=30_000)
    text = window.banner.message.text()
    assert text.startswith(f"Cannot read from {database.where}: ")
    assert 'relation "targets" does not exist' in text and "Traceback" not in text
    assert window.banner.action.text() == "Retry"
    sql.execute("alter table targets_elsewhere rename to targets")
    with qtbot.waitSignal(window.loaded, timeout=30_000):
        qtbot.mouseClick(window.banner.action, Qt.MouseButton.LeftButton)
    assert not window.banner.isVisible()
    assert window.targets_model.rowCount() > 0


def test_depopulate_asks_then_empties_the_target(database, make_window, qtbot, monkeypatch):
    window = make_window(database, confirm_depopulate=True)
    asked = answer_yes(monkeypatch)
    select_target(window, qtbot, 1)
    target = window.current_target()
    window.act_depopulate.trigger()
    assert asked == [
        f"This will delete all {target.population:,} populations of {target.title} "
        "and mark it not populated. Continue?"
    ]
    qtbot.waitUntil(
        lambda: (
            target_cell(window, 1, TargetsModel.STATUS) == "not populated"
            and all(b.population == 0 for b in window.bands_model.bands())
        ),
        timeout=30_000,
    )
    assert target_cell(window, 1, TargetsModel.POPULATION) == "0"
    assert not window.act_depopulate.isEnabled()
    assert "nothing to depopulate" in window.act_depopulate.toolTip()


def test_a_stuck_target_stands_out_and_resumes(database, sql, make_window, qtbot):
    stuck = sql.execute("select id from targets where population_status = 'populating'").fetchone()
    assert stuck, "the demo has a target left in populating"
    target_id = stuck[0]
    window = make_window(database)
    select_target(window, qtbot, target_id)
    row = window.targets_model.row_of(target_id)
    assert target_cell(window, target_id, TargetsModel.STATUS) == "stuck"
    assert window.targets_model.index(row, 1).data(Qt.ItemDataRole.BackgroundRole) == STUCK_BG
    assert "1 stuck" in window.targets_count.text()
    assert window.act_resume.isEnabled()

    window.act_resume.trigger()
    qtbot.waitUntil(lambda: not window.controller.active(), timeout=60_000)
    qtbot.waitUntil(
        lambda: (
            target_cell(window, target_id, TargetsModel.STATUS) == "populated"
            and all(b.missing == 0 for b in window.bands_model.bands())
        ),
        timeout=30_000,
    )
    resume = window.controller.jobs()[0]
    assert resume.label.startswith("Resume ") and resume.state is JobState.SUCCEEDED
    assert not window.act_resume.isEnabled()


def test_preferences_apply_and_persist_with_the_layout(database, make_window, qtbot, monkeypatch):
    window = make_window(database)

    def edit(dialog):
        dialog.batch_size.setValue(250)
        dialog.threads.setValue(3)
        dialog.backoff.setValue(0.5)
        dialog.confirm_close.setChecked(True)
        return PreferencesDialog.DialogCode.Accepted

    monkeypatch.setattr(PreferencesDialog, "exec", edit)
    window.act_preferences.trigger()
    assert Preferences.load() == window.preferences
    assert (window.preferences.batch_size, window.preferences.confirm_close) == (250, True)
    assert window.controller.batch_size == 250
    assert window.controller.max_threads == 3
    assert window.controller.backoff == 0.5

    window.resize(640, 480)  # within the offscreen screen, which restoreGeometry respects
    size = window.size()  # the docks' minimum heights may have had their say
    window.log_dock.hide()
    window.controller.shutdown()
    window.close()
    again = MainWindow()
    qtbot.addWidget(again)
    assert again.size() == size and size.width() == 640
    assert again.log_dock.isHidden() and not again.jobs_dock.isHidden()
    assert again.preferences.batch_size == 250


def test_closing_while_a_job_runs_asks_cancels_and_waits(
    database, sql, fresh_url, make_window, qtbot, monkeypatch
):
    band_id = bands_by_size(sql, 1)[0]
    null_out(sql, [band_id])
    window = make_window(database, batch_size=10, confirm_close=True)
    asked = answer_yes(monkeypatch)
    select_target(window, qtbot, 1)
    select_band(window, band_id)
    with psycopg.connect(libpq(fresh_url)) as lock:
        lock.execute(
            "select id from target_populations where target_band_id = %s for update", (band_id,)
        )
        window.act_snap_missing.trigger()
        qtbot.waitUntil(lambda: window.controller.job(1).state is JobState.RUNNING)
        window.close()
        assert asked and "1 jobs are still running. Cancel them and quit?" in asked[0]
        assert window.isVisible(), "it waits for the job to stop"
        lock.rollback()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=60_000)
    assert window.controller is None
    assert window.jobs_model.info(0).state is JobState.CANCELLED
    assert band(window, band_id).missing > 0


def test_screenshot_renders_the_loaded_window(fresh_url, tmp_path):
    out = tmp_path / "shot.png"
    done = run_gui("--dsn", fresh_url, "--screenshot", str(out), "--target", "2", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1440, 880)


@pytest.mark.parametrize(
    "dsn, reason",
    [
        ("postgresql://qsnap@127.0.0.1:9/nowhere", "cannot connect to 127.0.0.1:9/nowhere"),
        ("mysql://qsnap@localhost/qlarius", "unsupported database URL scheme 'mysql'"),
    ],
)
def test_screenshot_of_a_bad_connection_fails_cleanly(dsn, reason, tmp_path):
    done = run_gui("--dsn", dsn, "--screenshot", str(tmp_path / "x.png"), tmp_path=tmp_path)
    assert done.returncode == 1
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_thread_count_saved_under_its_old_name_is_kept(qapp):
    settings = QSettings()
    settings.remove("preferences")
    settings.setValue("preferences/pool_size", 5)
    assert Preferences.load().threads == 5
    Preferences(threads=2).save()
    assert not settings.contains("preferences/pool_size")
    assert Preferences.load().threads == 2
