"""Smaller window behaviours (pytest-qt, offscreen): a retried force job asks again, a target
its own band jobs work on is busy rather than stuck, the title says user@host/db, the Connect
dialog keeps the scheme typed, a search without hits leaves the keyboard alone, the Jobs dock
follows new jobs, Save dialogs open in the documents folder then the last one, and a batch
size of 1 is kept."""

from __future__ import annotations

from pathlib import Path

import psycopg
from PySide6.QtCore import QRect, QStandardPaths, Qt
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox
from sqlalchemy.engine import make_url
from uihelp import (
    answer_yes,
    bands_by_size,
    libpq,
    null_out,
    retry_from_jobs_menu,
    select_band,
    select_target,
    target_cell,
)

from qsnap_gui.engine.snapshots import JobState
from qsnap_gui.ui.dialogs import ConnectDialog, PreferencesDialog
from qsnap_gui.ui.models import TargetsModel
from qsnap_gui.ui.settings import Preferences, recent_connections
from qsnap_gui.ui.tasks import TaskRunner

WAIT_MS = 90_000


def hold_rows(lock, band_id: int) -> None:
    """Lock the band's rows from another session: a job on the band waits at its first batch."""
    lock.execute(
        "select id from target_populations where target_band_id = %s for update", (band_id,)
    )


def answer(monkeypatch, reply) -> list[str]:
    asked: list[str] = []

    def question(parent, title, text, *args):
        asked.append(text)
        return reply

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return asked


def test_retrying_a_cancelled_force_job_asks_again(
    database, sql, fresh_url, make_window, qtbot, monkeypatch
):
    band_id = bands_by_size(sql, 1)[0]
    window = make_window(database, confirm_force=True)
    asked = answer_yes(monkeypatch)
    select_target(window, qtbot, 1)
    select_band(window, band_id)
    with psycopg.connect(libpq(fresh_url)) as lock:
        hold_rows(lock, band_id)
        window.act_snap_force.trigger()
        assert len(asked) == 1 and asked[0].startswith("This will rebuild all ")
        job_id = window.controller.jobs()[-1].id
        qtbot.waitUntil(lambda: window.controller.job(job_id).active, timeout=WAIT_MS)
        window.act_cancel.trigger()
        qtbot.waitUntil(lambda: not window.controller.job(job_id).active, timeout=WAIT_MS)
        lock.rollback()
    assert window.controller.job(job_id).state is JobState.CANCELLED

    refused = answer(monkeypatch, QMessageBox.StandardButton.No)
    retry_from_jobs_menu(window, job_id)
    assert len(refused) == 1 and refused[0].startswith(f"Retrying job {job_id} will rebuild")
    assert [j.id for j in window.controller.jobs()] == [job_id], "refused: nothing runs"

    accepted = answer(monkeypatch, QMessageBox.StandardButton.Yes)
    retry_from_jobs_menu(window, job_id)
    assert len(accepted) == 1
    rerun = window.controller.jobs()[-1]
    assert rerun.id != job_id and rerun.mode == "force" and rerun.band_id == band_id
    qtbot.waitUntil(lambda: not window.controller.job(rerun.id).active, timeout=WAIT_MS)
    assert window.controller.job(rerun.id).state is JobState.SUCCEEDED


def test_a_populating_target_is_busy_while_its_band_jobs_run(
    database, sql, fresh_url, make_window, qtbot
):
    target_id = sql.execute(
        "select id from targets where population_status = 'populating'"
    ).fetchone()[0]
    band_id = bands_by_size(sql, target_id)[0]
    null_out(sql, [band_id])
    window = make_window(database)
    select_target(window, qtbot, target_id)
    assert target_cell(window, target_id, TargetsModel.STATUS) == "stuck"
    select_band(window, band_id)
    with psycopg.connect(libpq(fresh_url)) as lock:
        hold_rows(lock, band_id)
        window.act_snap_missing.trigger()
        job_id = window.controller.jobs()[-1].id
        qtbot.waitUntil(
            lambda: target_cell(window, target_id, TargetsModel.STATUS) == "populating",
            timeout=WAIT_MS,
        )
        with qtbot.waitSignal(window.loaded, timeout=WAIT_MS):
            window.reload()  # the targets read again while the job runs: still not stuck
        assert window.controller.job(job_id).active
        assert target_cell(window, target_id, TargetsModel.STATUS) == "populating"
        assert "stuck" not in window.targets_count.text()
        assert "stuck" not in window.target_summary.text()
        assert not window.act_resume.isEnabled()
        lock.rollback()
    qtbot.waitUntil(lambda: not window.controller.job(job_id).active, timeout=WAIT_MS)
    qtbot.waitUntil(  # no job left and still populating: stuck again, and resumable
        lambda: target_cell(window, target_id, TargetsModel.STATUS) == "stuck", timeout=WAIT_MS
    )
    assert "1 stuck" in window.targets_count.text()
    assert window.act_resume.isEnabled()


def test_the_title_is_user_at_host_and_database(database, make_window):
    window = make_window(database)
    title = window.windowTitle()
    assert title == f"{database.url.username}@{database.where} [demo]"
    assert "://" not in title and not title.startswith("qsnap")


def test_the_connect_dialog_keeps_the_scheme_typed(fresh_url, qtbot):
    dialog = ConnectDialog(TaskRunner())
    qtbot.addWidget(dialog)
    dialog.prepare(read_only=False)
    dialog.show()
    dialog.url.setText("postgres://someone:s3cret@db.example:5433/qlarius?sslmode=require")
    dialog.url.editingFinished.emit()
    assert dialog.url.text() == "postgres://someone@db.example:5433/qlarius?sslmode=require"
    assert dialog.password.text() == "s3cret"

    typed = fresh_url.replace("postgresql+psycopg://", "postgresql://", 1)
    dialog.password.clear()
    dialog.url.setText(typed)
    dialog.url.editingFinished.emit()
    assert dialog.url.text().startswith("postgresql://")
    qtbot.mouseClick(dialog.connect_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.result() == ConnectDialog.DialogCode.Accepted, timeout=WAIT_MS)
    try:
        entry = recent_connections()[0]
        assert entry.startswith("postgresql://")
        assert make_url(entry).database == make_url(fresh_url).database
    finally:
        dialog.database.dispose()


def test_no_match_is_said_without_taking_the_keyboard(database, make_window, qtbot):
    window = make_window(database)
    field = window.search_field
    with qtbot.waitSignal(field.resultsShown, timeout=WAIT_MS) as shown:
        qtbot.keyClicks(field.edit, "nobody-by-this-name")
        qtbot.keyClick(field.edit, Qt.Key.Key_Return)
    assert shown.args == [0]
    assert not field.popup.isVisible() and QApplication.activePopupWidget() is None
    message = "No me_file matches 'nobody-by-this-name'"
    assert window.statusBar().currentMessage() == message
    assert field.edit.toolTip() == message
    qtbot.keyClicks(field.edit, "!")  # typing goes on in the field
    assert field.edit.text() == "nobody-by-this-name!"
    assert field.edit.toolTip() == ""


def test_the_jobs_dock_scrolls_to_a_new_job(database, sql, make_window, qtbot):
    window = make_window(database)
    window.resizeDocks([window.jobs_dock], [110], Qt.Orientation.Vertical)
    view = window.jobs_view
    bands = [
        (target_id, band_id)
        for target_id in (1, 2, 4, 5)
        for band_id in bands_by_size(sql, target_id)
    ]
    for target_id, band_id in bands:
        window.controller.submit_band(band_id, target_id=target_id, label=f"band {band_id}")
    qtbot.waitUntil(lambda: window.jobs_model.rowCount() == len(bands), timeout=WAIT_MS)
    last = window.jobs_model.index(len(bands) - 1, 0)

    def last_row_shown() -> bool:
        rect: QRect = view.visualRect(last)
        return view.viewport().rect().contains(rect)

    qtbot.waitUntil(last_row_shown, timeout=WAIT_MS)
    assert view.verticalScrollBar().value() > 0, "more jobs than the dock shows"
    qtbot.waitUntil(lambda: not window.controller.active(), timeout=WAIT_MS)


def test_save_as_csv_opens_in_documents_then_the_last_folder(
    database, sql, make_window, qtbot, tmp_path, monkeypatch
):
    window = make_window(database)
    me_file = sql.execute("select me_file_id from target_populations limit 1").fetchone()[0]
    with qtbot.waitSignal(window.inspector.reportLoaded, timeout=WAIT_MS):
        window.inspector.open_me_file(me_file)
    offered: list[str] = []
    chosen = tmp_path / "chosen"
    chosen.mkdir()

    def save_as(parent, caption, where, *args):
        offered.append(where)
        return str(chosen / Path(where).name), "CSV files (*.csv)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(save_as))
    documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    assert window.inspector.save_tree_csv() is not None
    assert window.inspector.save_tree_csv() is not None
    name = Path(offered[0]).name
    assert offered == [str(Path(documents) / name), str(chosen / name)]
    assert (chosen / name).is_file()


def test_preferences_keep_a_batch_size_of_one(database, make_window, qtbot, monkeypatch):
    dialog = PreferencesDialog(Preferences(batch_size=1))
    qtbot.addWidget(dialog)
    assert dialog.batch_size.value() == 1
    dialog.batch_size.lineEdit().selectAll()
    qtbot.keyClicks(dialog.batch_size, "1")
    dialog.batch_size.interpretText()
    assert dialog.preferences().batch_size == 1

    window = make_window(database)

    def edit(dialog):
        dialog.batch_size.setValue(1)
        return PreferencesDialog.DialogCode.Accepted

    monkeypatch.setattr(PreferencesDialog, "exec", edit)
    window.act_preferences.trigger()
    assert window.preferences.batch_size == 1 == Preferences.load().batch_size
    assert window.controller.batch_size == 1
